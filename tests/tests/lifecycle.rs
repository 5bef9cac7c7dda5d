//! Stop, cleanup, restart, patch, `stop-job` and `cleanup-cron` on real
//! containers.

use std::collections::HashMap;
use std::time::Duration;

use shared::domain::{ErrorCode, GameId, OpSource, Outcome, StopReason};
use shared::operations::StartRequest;
use shared::operations::{OperationOutcome, OperationRequest, Operations};
use system_tests::contract::Contract;
use system_tests::{inspect, TestEnv, ENGINE};
use tokio_util::sync::CancellationToken;

fn lifecycle(env: &TestEnv) -> Operations {
    system_tests::operations(&env.config, &env.infra).expect("lifecycle service")
}

fn op(game: &GameId, source_ref: &str) -> OperationRequest {
    OperationRequest {
        game_id: game.clone(),
        op_source: OpSource::GmRest,
        source_ref: source_ref.to_owned(),
    }
}

async fn start(svc: &Operations, game: &GameId, image: &str) -> OperationOutcome {
    let outcome = svc
        .start(&StartRequest {
            game_id: game.clone(),
            image_ref: image.to_owned(),
            op_source: OpSource::AdminRest,
            source_ref: "start".into(),
        })
        .await;
    assert_eq!(outcome.outcome, Outcome::Success, "{outcome:?}");
    outcome
}

fn codes(outcome: &OperationOutcome) -> (Outcome, Option<ErrorCode>) {
    (outcome.outcome, outcome.error_code)
}

fn container_id(outcome: &OperationOutcome) -> String {
    outcome
        .record
        .as_ref()
        .and_then(|r| r.current_container_id.clone())
        .expect("container id")
}

#[tokio::test]
async fn stop_keeps_the_container_and_replays_are_no_ops() {
    let env = TestEnv::new().await;
    let svc = lifecycle(&env);
    let game = env.game("stop");
    let started = start(&svc, &game, ENGINE).await;
    let id = container_id(&started);
    let stopped = svc
        .stop(&op(&game, "s1"), StopReason::Cancelled, None)
        .await;
    assert_eq!(codes(&stopped), (Outcome::Success, None), "{stopped:?}");
    assert_eq!(stopped.record.as_ref().unwrap().status.as_str(), "stopped");
    assert!(stopped.record.as_ref().unwrap().stopped_at.is_some());
    let c = inspect(&id).expect("the container is kept");
    assert_eq!(c["State"]["Status"], "exited");
    // The stop intent was recorded before stopping (the sources stay quiet).
    let intents = shared::adapters::IntentStore::new(env.db().clone());
    assert!(intents
        .is_recorded(shared::domain::IntentKind::Stop, &id)
        .await
        .unwrap());
    let again = svc
        .stop(&op(&game, "s2"), StopReason::Cancelled, None)
        .await;
    assert_eq!(
        codes(&again),
        (Outcome::Success, Some(ErrorCode::ReplayNoOp))
    );
    let ops = env.operations(&game).await;
    let kinds: Vec<_> = ops
        .iter()
        .map(|o| {
            (
                o["op_kind"].as_str(),
                o["error_code"].as_str(),
                o["op_source"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("start", "", "admin_rest"),
            ("stop", "", "gm_rest"),
            ("stop", "replay_no_op", "gm_rest")
        ]
    );
}

#[tokio::test]
async fn a_stop_processed_before_its_earlier_start_wins() {
    let env = TestEnv::new().await;
    let svc = lifecycle(&env);
    let game = env.game("tomb");
    let stopped = svc
        .stop(&op(&game, "s"), StopReason::OrphanCleanup, Some(2_000))
        .await;
    assert_eq!(
        codes(&stopped),
        (Outcome::Success, Some(ErrorCode::ReplayNoOp))
    );
    let request = StartRequest {
        game_id: game.clone(),
        image_ref: ENGINE.into(),
        op_source: OpSource::LobbyStream,
        source_ref: "late".into(),
    };
    let late = svc.start_requested(&request, Some(1_000)).await;
    assert_eq!(
        codes(&late),
        (Outcome::Failure, Some(ErrorCode::Conflict)),
        "{late:?}"
    );
    assert!(inspect(&game.container_name()).is_none());
    // A start requested after the stop goes ahead.
    let later = svc.start_requested(&request, Some(3_000)).await;
    assert_eq!(codes(&later), (Outcome::Success, None), "{later:?}");
}

#[tokio::test]
async fn cleanup_removes_stopped_containers_only_and_keeps_the_state_dir() {
    let env = TestEnv::new().await;
    let svc = lifecycle(&env);
    let game = env.game("cleanup");
    let id = container_id(&start(&svc, &game, ENGINE).await);
    let refused = svc.cleanup(&op(&game, "c0")).await;
    assert_eq!(
        codes(&refused),
        (Outcome::Failure, Some(ErrorCode::Conflict))
    );
    assert!(inspect(&id).is_some());
    svc.stop(&op(&game, "s"), StopReason::Finished, None).await;
    let cleaned = svc.cleanup(&op(&game, "c1")).await;
    assert_eq!(codes(&cleaned), (Outcome::Success, None), "{cleaned:?}");
    assert_eq!(cleaned.record.as_ref().unwrap().status.as_str(), "removed");
    assert!(inspect(&id).is_none());
    assert!(
        env.state_root.join(game.as_str()).is_dir(),
        "the state directory is never deleted"
    );
    assert_eq!(
        codes(&svc.cleanup(&op(&game, "c2")).await),
        (Outcome::Success, Some(ErrorCode::ReplayNoOp))
    );
    let unknown = env.game("unknown");
    assert_eq!(
        codes(&svc.cleanup(&op(&unknown, "c3")).await),
        (Outcome::Failure, Some(ErrorCode::NotFound))
    );
    // Restart of a removed runtime is a conflict.
    assert_eq!(
        codes(&svc.restart(&op(&game, "r")).await),
        (Outcome::Failure, Some(ErrorCode::Conflict))
    );
}

#[tokio::test]
async fn restart_recreates_under_the_same_name_with_three_correlated_rows() {
    let env = TestEnv::new().await;
    let svc = lifecycle(&env);
    let game = env.game("restart");
    let old = container_id(&start(&svc, &game, ENGINE).await);
    let restarted = svc.restart(&op(&game, "corr-1")).await;
    assert_eq!(codes(&restarted), (Outcome::Success, None), "{restarted:?}");
    let new = container_id(&restarted);
    assert_ne!(new, old);
    assert!(inspect(&old).is_none());
    let c = inspect(&game.container_name()).unwrap();
    assert_eq!(c["Id"], new.as_str());
    assert_eq!(c["State"]["Status"], "running");
    assert_eq!(
        restarted.record.unwrap().engine_endpoint,
        game.engine_endpoint()
    );
    let ops = env.operations(&game).await;
    let rows: Vec<_> = ops[1..]
        .iter()
        .map(|o| {
            (
                o["op_kind"].as_str(),
                o["source_ref"].as_str(),
                o["outcome"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("stop", "corr-1", "success"),
            ("start", "corr-1", "success"),
            ("restart", "corr-1", "success")
        ]
    );
}

#[tokio::test]
async fn patch_moves_to_a_new_patch_version_and_rejects_others_before_any_docker_call() {
    let env = TestEnv::new().await;
    let svc = lifecycle(&env);
    let game = env.game("patch");
    let old = container_id(&start(&svc, &game, ENGINE).await);
    for (image, code) in [
        ("galaxy-test/engine:1.1.0", ErrorCode::SemverPatchOnly),
        ("galaxy-test/engine:2.0.0", ErrorCode::SemverPatchOnly),
        ("galaxy-test/engine:nolabels", ErrorCode::ImageRefNotSemver),
        (
            "galaxy-test/engine:9.9.9-missing",
            ErrorCode::SemverPatchOnly,
        ),
    ] {
        let refused = svc.patch(&op(&game, "p0"), image).await;
        assert_eq!(
            codes(&refused),
            (Outcome::Failure, Some(code)),
            "{image}: {refused:?}"
        );
        assert_eq!(
            inspect(&old).unwrap()["State"]["Status"],
            "running",
            "untouched by {image}"
        );
    }
    let patched = svc
        .patch(&op(&game, "p1"), "galaxy-test/engine:1.0.1")
        .await;
    assert_eq!(codes(&patched), (Outcome::Success, None), "{patched:?}");
    let record = patched.record.unwrap();
    assert_eq!(
        record.current_image_ref.as_deref(),
        Some("galaxy-test/engine:1.0.1")
    );
    let c = inspect(&game.container_name()).unwrap();
    assert_eq!(
        c["Config"]["Labels"]["com.galaxy.engine_image_ref"],
        "galaxy-test/engine:1.0.1"
    );
    assert!(inspect(&old).is_none());
}

#[tokio::test]
async fn a_patch_whose_container_exits_at_once_is_rolled_back() {
    let env = TestEnv::new().await;
    let svc = lifecycle(&env);
    let game = env.game("rollback");
    start(&svc, &game, ENGINE).await;
    let patched = svc.patch(&op(&game, "p"), "galaxy-test/engine:1.0.9").await;
    assert_eq!(
        codes(&patched),
        (Outcome::Failure, Some(ErrorCode::ContainerStartFailed)),
        "{patched:?}"
    );
    assert!(patched.error_message.contains("rolled back"), "{patched:?}");
    let record = env.db().get_record(&game).await.unwrap().unwrap();
    assert_eq!(record.status.as_str(), "running");
    assert_eq!(record.current_image_ref.as_deref(), Some(ENGINE));
    let c = inspect(&game.container_name()).unwrap();
    assert_eq!(c["State"]["Status"], "running");
    assert_eq!(c["Config"]["Labels"]["com.galaxy.engine_image_ref"], ENGINE);
}

#[tokio::test]
async fn the_ttl_pass_cleans_old_stopped_runtimes_and_absorbs_the_rest() {
    let env = TestEnv::new().await;
    let svc = lifecycle(&env);
    let (old, fresh, running) = (env.game("old"), env.game("fresh"), env.game("running"));
    for g in [&old, &fresh, &running] {
        start(&svc, g, ENGINE).await;
    }
    for g in [&old, &fresh] {
        svc.stop(&op(g, "s"), StopReason::Finished, None).await;
    }
    sqlx::query("UPDATE runtime_records SET last_op_at = now() - interval '31 days' WHERE game_id = ANY($1)")
        .bind(vec![old.to_string(), running.to_string()])
        .execute(env.db().pool())
        .await
        .unwrap();
    let report = cleanup_cron::pass(&svc, &env.infra, &(&env.config).into())
        .await
        .unwrap();
    assert_eq!(report.cleaned, [old.to_string()]);
    assert!(report.failed.is_empty());
    assert_eq!(
        env.db()
            .get_record(&old)
            .await
            .unwrap()
            .unwrap()
            .status
            .as_str(),
        "removed"
    );
    assert_eq!(
        env.db()
            .get_record(&fresh)
            .await
            .unwrap()
            .unwrap()
            .status
            .as_str(),
        "stopped"
    );
    assert_eq!(
        env.db()
            .get_record(&running)
            .await
            .unwrap()
            .unwrap()
            .status
            .as_str(),
        "running"
    );
    let ops = env.operations(&old).await;
    let last = ops.last().unwrap();
    assert_eq!(
        (last["op_kind"].as_str(), last["op_source"].as_str()),
        ("cleanup_container", "auto_ttl")
    );
}

#[tokio::test]
async fn stop_jobs_are_consumed_with_one_valid_result_each() {
    let env = TestEnv::new().await;
    let svc = lifecycle(&env);
    let game = env.game("stopjob");
    start(&svc, &game, ENGINE).await;
    let stop = CancellationToken::new();
    let handle = tokio::spawn(stop_job::run(
        (&env.config).into(),
        env.infra.clone(),
        stop.clone(),
    ));
    let stream = env.config.stop_jobs.stream.clone();
    env.xadd(
        &stream,
        &[
            ("game_id", game.as_str()),
            ("reason", "cancelled"),
            ("requested_at_ms", "1775121700000"),
        ],
    )
    .await;
    env.xadd(
        &stream,
        &[
            ("game_id", game.as_str()),
            ("reason", "bored"),
            ("requested_at_ms", "1775121700001"),
        ],
    )
    .await;
    let results: Vec<HashMap<String, String>> = env
        .eventually("two results", Duration::from_secs(60), || async {
            let r: Vec<_> = env
                .read_stream(&env.config.common.streams.job_results)
                .await
                .into_iter()
                .map(|(_, f)| f)
                .filter(|f| f["game_id"] == game.as_str())
                .collect();
            (r.len() == 2).then_some(r)
        })
        .await;
    let contract = Contract::load("runtime-jobs.asyncapi.yaml");
    for r in &results {
        contract.assert_valid("RuntimeJobResult", r);
    }
    let by_code: Vec<(&str, &str)> = results
        .iter()
        .map(|r| (r["outcome"].as_str(), r["error_code"].as_str()))
        .collect();
    assert!(by_code.contains(&("success", "")), "{by_code:?}");
    assert!(
        by_code.contains(&("failure", "invalid_request")),
        "{by_code:?}"
    );
    assert_eq!(
        env.db()
            .get_record(&game)
            .await
            .unwrap()
            .unwrap()
            .status
            .as_str(),
        "stopped"
    );
    let ops = env.operations(&game).await;
    assert_eq!(ops.last().unwrap()["op_source"], "lobby_stream");
    let dead = env.read_stream(&format!("{stream}:dead")).await;
    assert_eq!(dead.len(), 1);
    contract.assert_valid("DeadLetterEntry", &dead[0].1);
    stop.cancel();
    handle.await.unwrap().unwrap();
}

/// Health events of one game, in stream order, as event types.
async fn event_types(env: &TestEnv, game: &GameId) -> Vec<String> {
    env.read_stream(&env.config.common.streams.health_events)
        .await
        .into_iter()
        .filter(|(_, f)| f["game_id"] == game.as_str())
        .map(|(_, f)| f["event_type"].clone())
        .collect()
}

async fn killed_and_reported(env: &TestEnv, game: &GameId) {
    system_tests::docker(&["kill", &game.container_name()]);
    env.eventually(
        "the sentinel's container_exited",
        Duration::from_secs(60),
        || async {
            event_types(env, game)
                .await
                .contains(&"container_exited".to_owned())
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn rtmanagers_own_operations_make_no_failure_noise() {
    let env = TestEnv::new().await;
    let svc = lifecycle(&env);
    let (game, first, last) = (
        env.game("quiet"),
        env.game("sentinel-a"),
        env.game("sentinel-b"),
    );
    for g in [&game, &first, &last] {
        start(&svc, g, ENGINE).await;
    }
    let stop = CancellationToken::new();
    let listener = tokio::spawn(docker_events::run(
        (&env.config).into(),
        env.infra.clone(),
        stop.clone(),
    ));
    // The listener is live once it reports a first death.
    killed_and_reported(&env, &first).await;

    let quiet = op(&game, "ops");
    assert_eq!(
        codes(&svc.stop(&quiet, StopReason::AdminRequest, None).await),
        (Outcome::Success, None)
    );
    assert_eq!(codes(&svc.restart(&quiet).await), (Outcome::Success, None));
    assert_eq!(
        codes(&svc.patch(&quiet, "galaxy-test/engine:1.0.1").await),
        (Outcome::Success, None)
    );
    assert_eq!(codes(&svc.restart(&quiet).await), (Outcome::Success, None));
    assert_eq!(
        codes(&svc.stop(&quiet, StopReason::Finished, None).await),
        (Outcome::Success, None)
    );
    assert_eq!(codes(&svc.cleanup(&quiet).await), (Outcome::Success, None));

    // Events are handled in daemon order: once this later death is reported,
    // everything the operations above caused has been handled too.
    killed_and_reported(&env, &last).await;
    let types = event_types(&env, &game).await;
    assert!(
        types.iter().all(|t| t == "container_started"),
        "only starts, no failure noise: {types:?}"
    );
    assert_eq!(
        types.len(),
        4,
        "the first start, two restarts and the patch: {types:?}"
    );
    stop.cancel();
    listener.await.unwrap().unwrap();
}
