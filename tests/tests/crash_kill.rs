//! Crashes at every step of the lifecycle, as real processes: a job binary
//! armed with `FAILPOINTS=<point>=return` aborts at that step (what a
//! `kill -9` there leaves: no shutdown, no lease released, nothing flushed),
//! then a fresh instance and one reconcile pass. At every point: each job
//! entry answered exactly once, one container per game, record and Docker
//! agree, no admin intent twice, and nothing is left for a second pass.
//!
//! The points: a start at each of its steps (before pull, after create,
//! after start, after commit, before the result); a stop after its intent,
//! after the Docker stop, after the mark and before the result; a restart
//! and a patch through the gateway after the inner stop, after create, after
//! start and after the inner start's commit, and a REST start of a stopped
//! game after create and after start; a failing start before its result.

use std::time::Duration;

use shared::domain::{GameId, OpSource, Outcome};
use shared::operations::StartRequest;
use system_tests::job_process::JobProcess;
use system_tests::{docker, inspect, TestEnv, ENGINE};

const TOKEN: &str = "crash-kill-token-0123456789abcdef0123456";
const DIES_WITHIN: Duration = Duration::from_secs(60);

async fn results_for(
    env: &TestEnv,
    game: &GameId,
) -> Vec<std::collections::HashMap<String, String>> {
    env.read_stream(&env.config.common.streams.job_results)
        .await
        .into_iter()
        .map(|(_, f)| f)
        .filter(|f| f["game_id"] == game.as_str())
        .collect()
}

async fn wait_results(env: &TestEnv, game: &GameId, n: usize) {
    env.eventually("the results", Duration::from_secs(120), || async {
        (results_for(env, game).await.len() >= n).then_some(())
    })
    .await;
}

/// The game's containers (by its label), as (id, running).
fn containers_of(env: &TestEnv, game: &GameId) -> Vec<(String, bool)> {
    docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=com.galaxy.game_id={game}"),
        "--filter",
        &format!("network={}", env.network),
        "--format",
        "{{.ID}}",
    ])
    .lines()
    .filter(|l| !l.is_empty())
    .map(|id| {
        let c = inspect(id).unwrap();
        (
            c["Id"].as_str().unwrap().to_owned(),
            c["State"]["Running"].as_bool().unwrap(),
        )
    })
    .collect()
}

async fn reconcile(env: &TestEnv) -> inspect_cron::inspector::PassReport {
    inspect_cron::inspector(&(&env.config).into(), &env.infra)
        .pass(true)
        .await
        .expect("reconcile pass")
}

/// Record and Docker agree: one container for the game, and the record is
/// `status` on it (running exactly when the record is).
async fn record_and_docker_agree(env: &TestEnv, game: &GameId, status: &str) {
    let containers = containers_of(env, game);
    assert_eq!(containers.len(), 1, "{game}: one container: {containers:?}");
    let record = env.db().get_record(game).await.unwrap().expect("a record");
    assert_eq!(record.status.as_str(), status, "{game}");
    assert_eq!(
        record.current_container_id.as_deref(),
        Some(containers[0].0.as_str()),
        "{game}: the record names the container"
    );
    assert_eq!(
        containers[0].1,
        status == "running",
        "{game}: {containers:?}"
    );
}

async fn start(operations: &shared::operations::Operations, game: &GameId) {
    let started = operations
        .start(&StartRequest {
            game_id: game.clone(),
            image_ref: ENGINE.into(),
            op_source: OpSource::AdminRest,
            source_ref: "crash".into(),
        })
        .await;
    assert_eq!(started.outcome, Outcome::Success, "{started:?}");
}

async fn intents_for(env: &TestEnv, game: &GameId) -> usize {
    env.admin_intents(game).await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_start_job_killed_at_any_step_is_answered_once_with_one_container() {
    // A dead holder's lease lapses after 5 s; its entry is then reclaimed.
    let env = TestEnv::with(&[
        ("RTMANAGER_GAME_LEASE_TTL_SECONDS", "5"),
        ("RTMANAGER_API_TOKENS", TOKEN),
    ])
    .await;
    for point in [
        "start-before-pull",
        "docker-after-create",
        "start-after-create",
        "start-after-commit",
        "job-before-result",
    ] {
        let game = env.game(&point.replace('-', ""));
        let armed = [("FAILPOINTS", format!("{point}=return"))];
        let doomed = JobProcess::ready(&env, "start-job", &[], &armed).await;
        env.xadd(
            &env.config.start_jobs.stream,
            &[("game_id", game.as_str()), ("image_ref", ENGINE)],
        )
        .await;
        let status = doomed.dies_within(DIES_WITHIN).await;
        assert!(!status.success(), "{point}: aborted ({status:?})");

        let fresh = JobProcess::ready(&env, "start-job", &[], &[]).await;
        wait_results(&env, &game, 1).await;
        // The entry is reclaimed once the dead holder's lease lapsed; the
        // pass settles whatever the process left.
        reconcile(&env).await;
        assert!(fresh
            .terminate_within(Duration::from_secs(40))
            .await
            .success());
        let results = results_for(&env, &game).await;
        assert_eq!(results.len(), 1, "{point}: one result: {results:?}");
        assert_eq!(results[0]["outcome"], "success", "{point}: {results:?}");
        record_and_docker_agree(&env, &game, "running").await;
        let again = reconcile(&env).await;
        assert!(
            again.adopted.is_empty()
                && again.disposed.is_empty()
                && again.observed_exits.is_empty(),
            "{point}: a second pass finds nothing: {again:?}"
        );
        env.flush_outbox().await;
        let started = env
            .read_stream(&env.config.common.streams.health_events)
            .await
            .into_iter()
            .filter(|(_, f)| {
                f["game_id"] == game.as_str() && f["event_type"] == "container_started"
            })
            .count();
        assert!(
            started <= 1,
            "{point}: container_started at most once ({started})"
        );
        assert_eq!(intents_for(&env, &game).await, 0, "{point}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stop_job_killed_at_any_step_is_answered_once_and_reported_by_no_source() {
    // A dead holder's lease lapses after 5 s; its entry is then reclaimed.
    let env = TestEnv::with(&[
        ("RTMANAGER_GAME_LEASE_TTL_SECONDS", "5"),
        ("RTMANAGER_API_TOKENS", TOKEN),
    ])
    .await;
    let operations = system_tests::operations(&env.config, &env.infra).unwrap();
    for point in [
        "stop-after-intent",
        "stop-after-container-stop",
        "stop-after-mark",
        "job-before-result",
    ] {
        let game = env.game(&point.replace('-', ""));
        start(&operations, &game).await;
        let armed = [("FAILPOINTS", format!("{point}=return"))];
        let doomed = JobProcess::ready(&env, "stop-job", &[], &armed).await;
        let now = chrono::Utc::now().timestamp_millis().to_string();
        env.xadd(
            &env.config.stop_jobs.stream,
            &[
                ("game_id", game.as_str()),
                ("reason", "cancelled"),
                ("requested_at_ms", &now),
            ],
        )
        .await;
        assert!(!doomed.dies_within(DIES_WITHIN).await.success(), "{point}");

        reconcile(&env).await;
        let fresh = JobProcess::ready(&env, "stop-job", &[], &[]).await;
        wait_results(&env, &game, 1).await;
        assert!(fresh
            .terminate_within(Duration::from_secs(40))
            .await
            .success());
        let results = results_for(&env, &game).await;
        assert_eq!(results.len(), 1, "{point}: one result: {results:?}");
        assert_eq!(results[0]["outcome"], "success", "{point}: {results:?}");
        record_and_docker_agree(&env, &game, "stopped").await;
        env.flush_outbox().await;
        let reported: Vec<String> = env
            .read_stream(&env.config.common.streams.health_events)
            .await
            .into_iter()
            .filter(|(_, f)| f["game_id"] == game.as_str())
            .map(|(_, f)| f["event_type"].clone())
            .collect();
        assert_eq!(
            reported,
            ["container_started"],
            "{point}: nothing for the stop"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_patch_or_start_of_a_stopped_game_killed_between_its_steps_is_settled_by_the_next_reconcile(
) {
    let env = TestEnv::with(&[
        ("RTMANAGER_API_TOKENS", TOKEN),
        ("RTMANAGER_GAME_LEASE_TTL_SECONDS", "5"),
    ])
    .await;
    let operations = system_tests::operations(&env.config, &env.infra).unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for (call, point) in [
        ("restart", "recreate-after-stop"),
        ("restart", "docker-after-create"),
        ("restart", "start-after-create"),
        ("restart", "start-after-commit"),
        ("patch", "recreate-after-stop"),
        ("patch", "docker-after-create"),
        ("patch", "start-after-create"),
        ("patch", "start-after-commit"),
        // A REST start of a stopped game: it replaces the kept container.
        ("start", "docker-after-create"),
        ("start", "start-after-create"),
    ] {
        let game = env.game(&format!("{call}{}", point.replace('-', "")));
        start(&operations, &game).await;
        if call == "start" {
            let stopped = operations
                .stop(
                    &shared::operations::OperationRequest {
                        game_id: game.clone(),
                        op_source: OpSource::AdminRest,
                        source_ref: "crash".into(),
                    },
                    shared::domain::StopReason::AdminRequest,
                    None,
                )
                .await;
            assert_eq!(stopped.outcome, Outcome::Success, "{stopped:?}");
        }
        let old = env.db().get_record(&game).await.unwrap().unwrap();
        let addr = format!("127.0.0.1:{}", system_tests::free_port());
        let extra = [
            ("FAILPOINTS", format!("{point}=return")),
            ("RTMANAGER_INTERNAL_HTTP_ADDR", addr.clone()),
        ];
        let doomed = JobProcess::ready(&env, "rest-gateway", &[], &extra).await;
        let body = match call {
            "patch" => serde_json::json!({"image_ref": "galaxy-test/engine:1.0.1"}).to_string(),
            "start" => serde_json::json!({"image_ref": ENGINE}).to_string(),
            _ => String::new(),
        };
        let cut = http
            .post(format!(
                "http://{addr}/api/v1/internal/runtimes/{game}/{call}"
            ))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        assert!(
            cut.is_err(),
            "{call}/{point}: the gateway died mid-call: {cut:?}"
        );
        assert!(!doomed.dies_within(DIES_WITHIN).await.success());

        // The dead holder's lease expires; then the pass settles the game.
        let leases = shared::adapters::LeaseStore::new(env.redis().clone(), Duration::from_secs(5));
        env.eventually("the lease to lapse", Duration::from_secs(60), || async {
            (!leases.is_held(&game).await.unwrap()).then_some(())
        })
        .await;
        reconcile(&env).await;
        let status = match point {
            // The inner stop was marked; no new container yet: stopped.
            "recreate-after-stop" => "stopped",
            // The old container removed, the new one created, not started:
            // the record follows it, stopped.
            "docker-after-create" => "stopped",
            // The new container runs unwatched: adopted into the record;
            // or (start-after-commit) the record already runs it.
            _ => "running",
        };
        record_and_docker_agree(&env, &game, status).await;
        if point != "recreate-after-stop" {
            let now = env.db().get_record(&game).await.unwrap().unwrap();
            assert_ne!(
                now.current_container_id, old.current_container_id,
                "{call}/{point}: the record follows the new container"
            );
        }
        let again = reconcile(&env).await;
        assert!(
            again.adopted.is_empty() && again.disposed.is_empty(),
            "{call}/{point}: nothing left: {again:?}"
        );
        // Events: the first start's, and the new container's only when the
        // inner start committed (an adoption publishes nothing); nothing for
        // the requested stops.
        env.flush_outbox().await;
        let reported: Vec<String> = env
            .read_stream(&env.config.common.streams.health_events)
            .await
            .into_iter()
            .filter(|(_, f)| f["game_id"] == game.as_str())
            .map(|(_, f)| f["event_type"].clone())
            .collect();
        let starts = if point == "start-after-commit" { 2 } else { 1 };
        assert_eq!(
            reported,
            vec!["container_started"; starts],
            "{call}/{point}: events"
        );
        assert_eq!(intents_for(&env, &game).await, 0, "{call}/{point}");
    }
}

/// A start that fails (its image cannot be pulled: there is no registry)
/// killed between its failure commit and its result: the fresh instance
/// reclaims the entry and runs it again. One result, and one admin intent
/// for the one request, though the start failed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_start_killed_before_its_result_is_answered_once_with_one_intent() {
    let env = TestEnv::with(&[("RTMANAGER_GAME_LEASE_TTL_SECONDS", "5")]).await;
    let game = env.game("failingstart");
    let armed = [("FAILPOINTS", "job-before-result=return".to_owned())];
    let doomed = JobProcess::ready(&env, "start-job", &[], &armed).await;
    env.xadd(
        &env.config.start_jobs.stream,
        &[
            ("game_id", game.as_str()),
            ("image_ref", "galaxy-test/absent:9.9.9"),
        ],
    )
    .await;
    assert!(!doomed.dies_within(DIES_WITHIN).await.success(), "aborted");
    assert_eq!(
        intents_for(&env, &game).await,
        1,
        "the failure commit staged its intent before the kill"
    );

    let fresh = JobProcess::ready(&env, "start-job", &[], &[]).await;
    wait_results(&env, &game, 1).await;
    assert!(fresh
        .terminate_within(Duration::from_secs(40))
        .await
        .success());
    let results = results_for(&env, &game).await;
    assert_eq!(results.len(), 1, "one result: {results:?}");
    assert_eq!(results[0]["outcome"], "failure", "{results:?}");
    assert_eq!(results[0]["error_code"], "image_pull_failed", "{results:?}");
    let failures: Vec<(String, String)> =
        sqlx::query_as("SELECT op_kind, outcome FROM operation_log WHERE game_id = $1 ORDER BY id")
            .bind(game.as_str())
            .fetch_all(env.db().pool())
            .await
            .unwrap();
    assert_eq!(failures.len(), 2, "the start ran twice: {failures:?}");
    assert_eq!(
        intents_for(&env, &game).await,
        1,
        "one intent per job entry"
    );
    assert!(containers_of(&env, &game).is_empty(), "no container");
}
