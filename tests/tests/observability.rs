//! The metrics of the issue-11 contract (`/work`'s
//! `metrics-contract-issue11.md`, the README's "Metrics and health"), read
//! from each real binary's `/metrics` after a scripted run: every process's
//! build, readiness and main-loop series; the operations' timings; the
//! consumers' group lag; the prober's probes and transitions; docker-events'
//! events and lease; inspect-cron's and cleanup-cron's passes; the outbox
//! backlog counted alike by every process; and the cron passes, one-shot
//! ones too, on the gateway's `/metrics`.

use std::time::Duration;

use shared::domain::{CronJob, CronPass, GameId, OpSource, Outcome};
use shared::operations::StartRequest;
use sqlx::Row;
use system_tests::job_process::JobProcess;
use system_tests::{inspect, TestEnv, ENGINE};

mod observed;

use observed::*;

const DEADLINE: Duration = Duration::from_secs(60);

/// Waits until `job`'s `/metrics` has `series` satisfying `ok`; returns
/// the text.
async fn until(env: &TestEnv, job: &JobProcess, series: &str, ok: impl Fn(f64) -> bool) -> String {
    env.eventually(&format!("{}: {series}", job.job), DEADLINE, || async {
        let text = metrics(job).await;
        sample(&text, series).filter(|v| ok(*v)).map(|_| text)
    })
    .await
}

/// `series` of `text` is there and satisfies `ok`.
fn check(job: &str, text: &str, series: &str, ok: impl Fn(f64) -> bool) {
    match sample(text, series) {
        Some(v) if ok(v) => {}
        other => panic!("{job}: {series} is {other:?}:\n{text}"),
    }
}

/// The job results about `game`, waited for until there are `n`.
async fn results(env: &TestEnv, game: &GameId, n: usize) {
    let stream = env.config.common.streams.job_results.clone();
    env.eventually(&format!("{n} result(s) for {game}"), DEADLINE, || async {
        let count = env
            .read_stream(&stream)
            .await
            .iter()
            .filter(|(_, f)| f.get("game_id").map(String::as_str) == Some(game.as_str()))
            .count();
        (count >= n).then_some(())
    })
    .await;
}

async fn engine_health(env: &TestEnv, game: &GameId, mode: &str) {
    let container = inspect(&game.container_name()).expect("engine container");
    let ip = container["NetworkSettings"]["Networks"][&env.network]["IPAddress"]
        .as_str()
        .expect("engine IP")
        .to_owned();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let answer = client
        .post(format!("http://{ip}:8080/control?health={mode}"))
        .send()
        .await
        .expect("engine control route");
    assert_eq!(answer.status(), 200, "health={mode}");
}

/// The outbox's undelivered rows, counted as the gauges must count them.
async fn backlog(env: &TestEnv) -> (f64, f64) {
    let row = sqlx::query(
        "SELECT count(*) FILTER (WHERE parked_at IS NULL) AS pending, \
                count(*) FILTER (WHERE parked_at IS NOT NULL) AS parked \
         FROM outbox WHERE delivered_at IS NULL",
    )
    .fetch_one(env.db().pool())
    .await
    .unwrap();
    (
        row.get::<i64, _>("pending") as f64,
        row.get::<i64, _>("parked") as f64,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_long_running_process_serves_its_contract_series_after_a_scripted_run() {
    let env = TestEnv::with(&settings(&[])).await;
    let t0 = now_secs();
    let fleet = Fleet::all(&env, &[]).await;
    let start_stream = env.config.start_jobs.stream.clone();
    let stop_stream = env.config.stop_jobs.stream.clone();

    // Every process: its build, its checks, its main loop.
    for job in &fleet.jobs {
        let text = until(
            &env,
            job,
            "rtmanager_main_loop_last_tick_timestamp_seconds",
            |at| at >= t0 - 1.0,
        )
        .await;
        let name = job.job.as_str();
        check(
            name,
            &text,
            &format!("rtmanager_build_info{{version=\"0.1.0\",job=\"{name}\"}}"),
            |v| v == 1.0,
        );
        for dependency in ["postgres", "redis", "docker"] {
            check(
                name,
                &text,
                &format!("rtmanager_ready{{check=\"{dependency}\"}}"),
                |v| v == 1.0,
            );
        }
        check(
            name,
            &text,
            "rtmanager_main_loop_last_tick_timestamp_seconds",
            |at| at <= now_secs() + 1.0,
        );
    }

    // A start through the stream: start-job's timings and its group.
    let game = env.game("observed");
    env.xadd(
        &start_stream,
        &[("game_id", game.as_str()), ("image_ref", ENGINE)],
    )
    .await;
    results(&env, &game, 1).await;
    let start_job = fleet.job("start-job");
    let text = until(
        &env,
        start_job,
        "rtmanager_operation_duration_seconds_count{op_kind=\"start\",outcome=\"success\"}",
        |n| n == 1.0,
    )
    .await;
    for (series, ok) in [
        ("rtmanager_lease_acquire_duration_seconds_count", 1.0),
        (
            "rtmanager_docker_api_duration_seconds_count{call=\"run\"}",
            1.0,
        ),
        (
            "rtmanager_docker_api_duration_seconds_count{call=\"pull\"}",
            1.0,
        ),
        (
            "rtmanager_health_events_total{event_type=\"container_started\"}",
            1.0,
        ),
        ("rtmanager_ready{check=\"consumer_group\"}", 1.0),
    ] {
        check("start-job", &text, series, |v| v >= ok);
    }
    check("start-job", &text, "rtmanager_lease_conflicts_total", |v| {
        v == 0.0
    });
    let on_start = format!("{{stream=\"{start_stream}\"}}");
    check(
        "start-job",
        &text,
        &format!("rtmanager_jobs_consumed_total{on_start}"),
        |v| v == 1.0,
    );
    for gauge in [
        "rtmanager_consumer_group_lag",
        "rtmanager_consumer_group_pending",
        "rtmanager_consumer_oldest_pending_age_seconds",
    ] {
        check("start-job", &text, &format!("{gauge}{on_start}"), |v| {
            v == 0.0
        });
    }

    // The prober probes it: healthy, then failing (a 500), then healthy.
    let prober = fleet.job("healthz-prober");
    let text = until(
        &env,
        prober,
        "rtmanager_probes_total{result=\"ok\",reason=\"\"}",
        |n| n >= 1.0,
    )
    .await;
    check("healthz-prober", &text, "rtmanager_prober_targets", |n| {
        n == 1.0
    });
    check(
        "healthz-prober",
        &text,
        "rtmanager_probe_duration_seconds_count",
        |n| n >= 1.0,
    );
    check(
        "healthz-prober",
        &text,
        "rtmanager_prober_round_duration_seconds_count",
        |n| n >= 1.0,
    );
    check(
        "healthz-prober",
        &text,
        "rtmanager_prober_round_lag_seconds",
        |lag| (0.0..5.0).contains(&lag),
    );
    engine_health(&env, &game, "fail").await;
    let text = until(
        &env,
        prober,
        "rtmanager_prober_streak_transitions_total{transition=\"failed\"}",
        |n| n == 1.0,
    )
    .await;
    check(
        "healthz-prober",
        &text,
        "rtmanager_probes_total{result=\"failed\",reason=\"status\"}",
        |n| n >= 3.0,
    );
    engine_health(&env, &game, "ok").await;
    until(
        &env,
        prober,
        "rtmanager_prober_streak_transitions_total{transition=\"recovered\"}",
        |n| n == 1.0,
    )
    .await;

    // inspect-cron --every inspects it, pass after pass.
    let inspect_cron = fleet.job("inspect-cron");
    let text = until(
        &env,
        inspect_cron,
        "rtmanager_inspect_containers_inspected_total",
        |n| n >= 1.0,
    )
    .await;
    check(
        "inspect-cron",
        &text,
        "rtmanager_inspect_pass_duration_seconds_count",
        |n| n >= 1.0,
    );
    check(
        "inspect-cron",
        &text,
        "rtmanager_inspect_last_success_timestamp_seconds",
        |at| at >= t0,
    );
    check(
        "inspect-cron",
        &text,
        "rtmanager_docker_api_duration_seconds_count{call=\"list\"}",
        |n| n >= 1.0,
    );

    // The gateway's discovery lists it.
    let (status, targets) = get_json(&fleet.api, "/api/v1/internal/monitoring/targets").await;
    assert_eq!(status, 200, "{targets}");
    let gateway = fleet.job("rest-gateway");
    let text = until(&env, gateway, "rtmanager_discovery_targets", |n| n == 1.0).await;
    check(
        "rest-gateway",
        &text,
        "rtmanager_http_requests_total{method=\"GET\",route=\"/api/v1/internal/monitoring/targets\",status=\"200\"}",
        |n| n == 1.0,
    );

    // A second game killed: docker-events reads the die and reports it.
    let victim = env.game("victim");
    env.xadd(
        &start_stream,
        &[("game_id", victim.as_str()), ("image_ref", ENGINE)],
    )
    .await;
    results(&env, &victim, 1).await;
    env.docker(&["kill", &victim.container_name()]);
    let docker_events = fleet.job("docker-events");
    let text = until(
        &env,
        docker_events,
        "rtmanager_health_events_total{event_type=\"container_exited\"}",
        |n| n == 1.0,
    )
    .await;
    check(
        "docker-events",
        &text,
        "rtmanager_docker_events_total{action=\"die\"}",
        |n| n >= 1.0,
    );
    check(
        "docker-events",
        &text,
        "rtmanager_docker_events_lease_held",
        |v| v == 1.0,
    );
    check(
        "docker-events",
        &text,
        "rtmanager_docker_events_reconnects_total",
        |n| n == 0.0,
    );
    check(
        "docker-events",
        &text,
        "rtmanager_docker_events_catchup_duration_seconds_count",
        |n| n == 1.0,
    );
    check(
        "docker-events",
        &text,
        "rtmanager_docker_events_catchup_containers_total",
        |n| n == 0.0,
    );
    check(
        "docker-events",
        &text,
        "rtmanager_docker_events_cursor_age_seconds",
        |age| (0.0..60.0).contains(&age),
    );

    // Its record stopped by docker-events, then aged past the retention:
    // cleanup-cron --every removes its container.
    env.eventually("the victim's record stopped", DEADLINE, || async {
        let record = env.db().get_record(&victim).await.unwrap()?;
        (record.status == shared::domain::RuntimeStatus::Stopped).then_some(())
    })
    .await;
    sqlx::query(
        "UPDATE runtime_records SET last_op_at = now() - interval '40 days' WHERE game_id = $1",
    )
    .bind(victim.as_str())
    .execute(env.db().pool())
    .await
    .unwrap();
    let cleanup_cron = fleet.job("cleanup-cron");
    let text = until(
        &env,
        cleanup_cron,
        "rtmanager_cleanup_containers_removed_total",
        |n| n == 1.0,
    )
    .await;
    check(
        "cleanup-cron",
        &text,
        "rtmanager_cleanup_passes_total{outcome=\"success\"}",
        |n| n >= 1.0,
    );
    check(
        "cleanup-cron",
        &text,
        "rtmanager_cleanup_containers_failed_total",
        |n| n == 0.0,
    );
    check(
        "cleanup-cron",
        &text,
        "rtmanager_operation_duration_seconds_count{op_kind=\"cleanup_container\",outcome=\"success\"}",
        |n| n == 1.0,
    );
    check(
        "cleanup-cron",
        &text,
        "rtmanager_docker_api_duration_seconds_count{call=\"remove\"}",
        |n| n >= 1.0,
    );

    // The first game stopped through the stream: stop-job's timings.
    env.xadd(
        &stop_stream,
        &[("game_id", game.as_str()), ("reason", "cancelled")],
    )
    .await;
    results(&env, &game, 2).await;
    let stop_job = fleet.job("stop-job");
    let text = until(
        &env,
        stop_job,
        "rtmanager_operation_duration_seconds_count{op_kind=\"stop\",outcome=\"success\"}",
        |n| n == 1.0,
    )
    .await;
    check(
        "stop-job",
        &text,
        "rtmanager_docker_api_duration_seconds_count{call=\"stop\"}",
        |n| n == 1.0,
    );
    check(
        "stop-job",
        &text,
        &format!("rtmanager_consumer_group_lag{{stream=\"{stop_stream}\"}}"),
        |v| v == 0.0,
    );

    // The passes of the --every crons, on the gateway.
    let text = until(
        &env,
        gateway,
        "rtmanager_cron_last_pass_timestamp_seconds{job=\"inspect-cron\"}",
        |at| at >= t0,
    )
    .await;
    check(
        "rest-gateway",
        &text,
        "rtmanager_cron_last_pass_timestamp_seconds{job=\"cleanup-cron\"}",
        |at| at >= t0,
    );
    check(
        "rest-gateway",
        &text,
        "rtmanager_cron_last_pass_failed{job=\"inspect-cron\"}",
        |v| v == 0.0,
    );

    // The outbox backlog: a parked row and 300 held behind it (they wait
    // for a redrive), counted alike by every process, lock holder or not.
    sqlx::query(
        "INSERT INTO outbox (stream, fields, game_id, game_seq, parked_at) \
         SELECT 'nowhere', '[]'::jsonb, 'held-game', g, CASE WHEN g = 1 THEN now() END \
         FROM generate_series(1, 301) AS g",
    )
    .execute(env.db().pool())
    .await
    .unwrap();
    for job in &fleet.jobs {
        env.eventually(
            &format!("{}'s outbox backlog", job.job),
            DEADLINE,
            || async {
                let text = metrics(job).await;
                let (pending, parked) = backlog(&env).await;
                let counted = (
                    sample(&text, "rtmanager_outbox_pending"),
                    sample(&text, "rtmanager_outbox_parked"),
                );
                (pending >= 300.0 && counted == (Some(pending), Some(parked))).then_some(text)
            },
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for job in &fleet.jobs {
        let text = metrics(job).await;
        check(
            &job.job,
            &text,
            "rtmanager_outbox_oldest_pending_age_seconds",
            |age| age > 0.0 && age < 120.0,
        );
    }
    sqlx::query("DELETE FROM outbox WHERE game_id = 'held-game'")
        .execute(env.db().pool())
        .await
        .unwrap();
    for job in &fleet.jobs {
        until(&env, job, "rtmanager_outbox_parked", |n| n == 0.0).await;
    }
}

/// The last pass of each cron job as the gateway's `/metrics` shows it.
struct CronSeries {
    last: Option<f64>,
    success: Option<f64>,
    duration: Option<f64>,
    failed: Option<f64>,
}

async fn cron_series(gateway: &JobProcess, job: &str) -> CronSeries {
    let text = metrics(gateway).await;
    let get = |name: &str| sample(&text, &format!("rtmanager_cron_{name}{{job=\"{job}\"}}"));
    CronSeries {
        last: get("last_pass_timestamp_seconds"),
        success: get("last_success_timestamp_seconds"),
        duration: get("last_pass_duration_seconds"),
        failed: get("last_pass_failed"),
    }
}

/// A one-shot run of `job` with `args`; its exit status.
async fn one_shot(env: &TestEnv, job: &str, args: &[&str]) -> std::process::ExitStatus {
    JobProcess::spawn(job, &env.vars, &[], args)
        .dies_within(DEADLINE)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_cron_passes_show_on_the_gateway_metrics_and_sync_file_sd_writes_its_textfile() {
    let env = TestEnv::with(&settings(&[])).await;
    let fleet = Fleet::start(&env, &["rest-gateway"], &[]).await;
    let gateway = fleet.job("rest-gateway");
    let game = env.game("listed");
    let started = system_tests::operations(&env.config, &env.infra)
        .unwrap()
        .start(&StartRequest {
            game_id: game.clone(),
            image_ref: ENGINE.to_owned(),
            op_source: OpSource::AdminRest,
            source_ref: "observability".into(),
        })
        .await;
    assert_eq!(started.outcome, Outcome::Success, "{started:?}");
    let none = cron_series(gateway, "inspect-cron").await;
    assert!(none.last.is_none() && none.failed.is_none(), "no pass yet");

    // inspect-cron, one pass.
    let before = now_secs();
    assert!(one_shot(&env, "inspect-cron", &[]).await.success());
    let after = now_secs();
    let inspect = cron_series(gateway, "inspect-cron").await;
    let last = inspect.last.expect("inspect-cron's last pass");
    assert!(
        (before..=after).contains(&last),
        "{before} <= {last} <= {after}"
    );
    assert_eq!(inspect.success, Some(last));
    assert_eq!(inspect.failed, Some(0.0));
    assert!(inspect
        .duration
        .is_some_and(|d| (0.0..=after - before).contains(&d)));
    let counts: sqlx::types::Json<serde_json::Value> =
        sqlx::query_scalar("SELECT counts FROM cron_passes WHERE job = 'inspect-cron'")
            .fetch_one(env.db().pool())
            .await
            .unwrap();
    assert_eq!(counts.0["inspected"], 1, "{}", counts.0);
    assert_eq!(counts.0["reconciled"], 1, "{}", counts.0);

    // sync-file-sd with a textfile: the targets, the textfile, the pass.
    let out = env.state_root.join("targets.json");
    let prom = env.state_root.join("file_sd.prom");
    let before = now_secs();
    let synced = one_shot(
        &env,
        "rest-gateway",
        &[
            "sync-file-sd",
            "--out",
            out.to_str().unwrap(),
            "--textfile",
            prom.to_str().unwrap(),
        ],
    )
    .await;
    assert!(synced.success(), "{synced}");
    let textfile = std::fs::read_to_string(&prom).unwrap();
    assert_eq!(
        sample(&textfile, "rtmanager_file_sd_targets"),
        Some(1.0),
        "{textfile}"
    );
    let at = sample(
        &textfile,
        "rtmanager_file_sd_last_success_timestamp_seconds",
    )
    .unwrap();
    assert!((before..=now_secs()).contains(&at), "{textfile}");
    let sync = cron_series(gateway, "sync-file-sd").await;
    assert_eq!((sync.failed, sync.success.is_some()), (Some(0.0), true));
    let names: Vec<_> = std::fs::read_dir(&env.state_root)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "temporary files left: {names:?}");

    // cleanup-cron, its table sabotaged: a failed pass, shown as one.
    sqlx::query("ALTER TABLE runtime_records RENAME COLUMN last_op_at TO last_op_at_gone")
        .execute(env.db().pool())
        .await
        .unwrap();
    assert!(!one_shot(&env, "cleanup-cron", &[]).await.success());
    let failed = cron_series(gateway, "cleanup-cron").await;
    assert_eq!((failed.failed, failed.success), (Some(1.0), None));
    let error: String =
        sqlx::query_scalar("SELECT error FROM cron_passes WHERE job = 'cleanup-cron'")
            .fetch_one(env.db().pool())
            .await
            .unwrap();
    assert!(error.contains("last_op_at"), "{error}");
    sqlx::query("ALTER TABLE runtime_records RENAME COLUMN last_op_at_gone TO last_op_at")
        .execute(env.db().pool())
        .await
        .unwrap();
    assert!(one_shot(&env, "cleanup-cron", &[]).await.success());
    let fixed = cron_series(gateway, "cleanup-cron").await;
    assert_eq!(fixed.failed, Some(0.0));
    assert!(fixed.success.is_some_and(|s| s >= failed.last.unwrap()));
}

#[tokio::test]
async fn cron_passes_keep_the_newest_thousand_per_job_and_the_newest_success() {
    let env = TestEnv::new().await;
    let db = env.db();
    let pass = |job, ok: bool| {
        CronPass::finished(
            job,
            chrono::Utc::now(),
            if ok {
                Ok(Default::default())
            } else {
                Err("away".to_owned())
            },
        )
    };
    db.record_cron_pass(&pass(CronJob::CleanupCron, true))
        .await
        .unwrap();
    let success_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT finished_at FROM cron_passes WHERE job = 'cleanup-cron'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    for _ in 0..1004 {
        db.record_cron_pass(&pass(CronJob::CleanupCron, false))
            .await
            .unwrap();
    }
    for _ in 0..3 {
        db.record_cron_pass(&pass(CronJob::InspectCron, true))
            .await
            .unwrap();
    }
    let rows = |job: &'static str| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM cron_passes WHERE job = $1")
            .bind(job)
            .fetch_one(db.pool())
            .await
            .unwrap()
    };
    assert_eq!(
        rows("cleanup-cron").await,
        1001,
        "the newest 1000 and the success"
    );
    assert_eq!(rows("inspect-cron").await, 3);
    let last = db.last_cron_passes().await.unwrap();
    let cleanup = last.iter().find(|p| p.job == CronJob::CleanupCron).unwrap();
    assert_eq!(cleanup.outcome, Outcome::Failure);
    assert_eq!(cleanup.last_success_at, Some(success_at));
    assert!(!last.iter().any(|p| p.job == CronJob::SyncFileSd));

    for _ in 0..2 {
        db.record_cron_pass(&pass(CronJob::CleanupCron, true))
            .await
            .unwrap();
    }
    assert_eq!(
        rows("cleanup-cron").await,
        1000,
        "the old success is gone too"
    );
    let last = db.last_cron_passes().await.unwrap();
    let cleanup = last.iter().find(|p| p.job == CronJob::CleanupCron).unwrap();
    assert_eq!(cleanup.outcome, Outcome::Success);
    assert!(cleanup.last_success_at > Some(success_at));
}
