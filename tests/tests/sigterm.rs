//! SIGTERM under load, for every long-running process, as binaries on real
//! PostgreSQL, Redis and Docker: each exits 0 within
//! `RTMANAGER_SHUTDOWN_TIMEOUT` + 10 s (the last relay pass), leaves no game
//! lease behind, and the job consumers' in-flight entries either finish or
//! stay pending for a fresh instance, which answers each exactly once.

use std::collections::HashMap;
use std::time::Duration;

use shared::domain::{GameId, OpSource, Outcome};
use shared::operations::StartRequest;
use system_tests::free_port;
use system_tests::job_process::JobProcess;
use system_tests::{TestEnv, ENGINE};

const TOKEN: &str = "sigterm-test-token-0123456789abcdef01234";

/// `RTMANAGER_SHUTDOWN_TIMEOUT` + 10 s.
fn bound(env: &TestEnv) -> Duration {
    env.config.common.process.shutdown_timeout + Duration::from_secs(10)
}

async fn leases_left(env: &TestEnv, games: &[GameId]) -> Vec<String> {
    let mut conn = env.redis().manager();
    let mut left = Vec::new();
    for game in games {
        let key = shared::adapters::redis::lease_key(game);
        let exists: bool = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if exists {
            left.push(key);
        }
    }
    left
}

/// Results on the job results stream, by game (a result names its game,
/// not its entry; each game here gets one entry per job stream).
async fn results_by_game(env: &TestEnv) -> HashMap<String, usize> {
    let mut by_game = HashMap::new();
    for (_, f) in env
        .read_stream(&env.config.common.streams.job_results)
        .await
    {
        *by_game.entry(f["game_id"].clone()).or_default() += 1;
    }
    by_game
}

async fn exactly_one_result_each(env: &TestEnv, games: &[GameId], what: &str) {
    env.eventually(what, Duration::from_secs(120), || async {
        let by_game = results_by_game(env).await;
        games
            .iter()
            .all(|g| by_game.get(g.as_str()) == Some(&1))
            .then_some(())
    })
    .await;
    // Nothing more arrives once a fresh instance has answered everything.
    let by_game = results_by_game(env).await;
    for game in games {
        assert_eq!(by_game.get(game.as_str()), Some(&1), "{game}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_job_consumers_exit_zero_under_load_and_a_fresh_instance_answers_the_rest() {
    let env = TestEnv::with(&[
        ("RTMANAGER_START_JOBS_CONCURRENCY", "4"),
        ("RTMANAGER_API_TOKENS", TOKEN),
    ])
    .await;
    let started: Vec<GameId> = (0..12).map(|i| env.game(&format!("term{i}"))).collect();
    let starter = JobProcess::ready(&env, "start-job", &[], &[]).await;
    for game in &started {
        env.xadd(
            &env.config.start_jobs.stream,
            &[("game_id", game.as_str()), ("image_ref", ENGINE)],
        )
        .await;
    }
    let status = starter.terminate_within(bound(&env)).await;
    assert!(status.success(), "start-job: {status:?}");
    assert_eq!(leases_left(&env, &started).await, Vec::<String>::new());
    let fresh = JobProcess::ready(&env, "start-job", &[], &[]).await;
    exactly_one_result_each(&env, &started, "a result per start entry").await;
    assert!(fresh.terminate_within(bound(&env)).await.success());

    let stopper = JobProcess::ready(&env, "stop-job", &[], &[]).await;
    for game in &started {
        env.xadd(
            &env.config.stop_jobs.stream,
            &[
                ("game_id", game.as_str()),
                ("reason", "cancelled"),
                (
                    "requested_at_ms",
                    &chrono::Utc::now().timestamp_millis().to_string(),
                ),
            ],
        )
        .await;
    }
    let status = stopper.terminate_within(bound(&env)).await;
    assert!(status.success(), "stop-job: {status:?}");
    assert_eq!(leases_left(&env, &started).await, Vec::<String>::new());
    let fresh = JobProcess::ready(&env, "stop-job", &[], &[]).await;
    env.eventually(
        "a result per stop entry",
        Duration::from_secs(120),
        || async {
            let by_game = results_by_game(&env).await;
            started
                .iter()
                .all(|g| by_game.get(g.as_str()) == Some(&2))
                .then_some(())
        },
    )
    .await;
    assert!(fresh.terminate_within(bound(&env)).await.success());
    let by_game = results_by_game(&env).await;
    for game in &started {
        assert_eq!(
            by_game.get(game.as_str()),
            Some(&2),
            "{game}: start and stop"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_health_sources_crons_and_gateway_exit_zero_under_load() {
    let env = TestEnv::with(&[("RTMANAGER_API_TOKENS", TOKEN)]).await;
    let operations = system_tests::operations(&env.config, &env.infra).unwrap();
    let games: Vec<GameId> = (0..4).map(|i| env.game(&format!("watched{i}"))).collect();
    for game in &games {
        let outcome = operations
            .start(&StartRequest {
                game_id: game.clone(),
                image_ref: ENGINE.into(),
                op_source: OpSource::AdminRest,
                source_ref: "sigterm".into(),
            })
            .await;
        assert_eq!(outcome.outcome, Outcome::Success, "{outcome:?}");
    }
    let http_addr = format!("127.0.0.1:{}", free_port());
    let processes = [
        ("docker-events", vec![], vec![]),
        (
            "healthz-prober",
            vec![],
            vec![("RTMANAGER_PROBE_INTERVAL", "1s".to_owned())],
        ),
        ("inspect-cron", vec!["--every", "1s"], vec![]),
        ("cleanup-cron", vec!["--every", "1s"], vec![]),
        (
            "rest-gateway",
            vec![],
            vec![("RTMANAGER_INTERNAL_HTTP_ADDR", http_addr.clone())],
        ),
    ];
    let mut running = Vec::new();
    for (job, args, extra) in &processes {
        running.push((*job, JobProcess::ready(&env, job, args, extra).await));
    }
    // Load on the gateway while everything stops: lifecycle calls in flight.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let calls: Vec<_> = games
        .iter()
        .map(|game| {
            let request = http
                .post(format!(
                    "http://{http_addr}/api/v1/internal/runtimes/{game}/restart"
                ))
                .bearer_auth(TOKEN)
                .send();
            tokio::spawn(request)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (job, process) in running {
        let status = process.terminate_within(bound(&env)).await;
        assert!(status.success(), "{job}: {status:?}");
    }
    for call in calls {
        // Answered, or cut off with the connection: never left hanging.
        let _ = call.await.unwrap();
    }
    assert_eq!(leases_left(&env, &games).await, Vec::<String>::new());
}
