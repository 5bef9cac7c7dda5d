//! SIGTERM under load, for every long-running process, as binaries on real
//! PostgreSQL, Redis and Docker: each exits 0 within
//! `RTMANAGER_SHUTDOWN_TIMEOUT` + 10 s (the last relay pass), leaves no game
//! lease behind, and the job consumers' in-flight entries either finish or
//! stay pending for a fresh instance, which answers each exactly once. The
//! health sources stop while engines die and a `/healthz` fails: they and
//! their fresh instances report each death once, docker-events releases its
//! listener lease, and the gateway's cut-off restarts leave a state the
//! next reconcile settles.

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

/// The game's health events, in stream order.
async fn events_of(env: &TestEnv, game: &GameId) -> Vec<String> {
    env.read_stream(&env.config.common.streams.health_events)
        .await
        .into_iter()
        .filter(|(_, f)| f["game_id"] == game.as_str())
        .map(|(_, f)| f["event_type"].clone())
        .collect()
}

/// `container_started`, then at least one of `reports`, each at most once.
fn started_then_reported(seen: &[String], reports: &[&str]) -> bool {
    let Some((first, rest)) = seen.split_first() else {
        return false;
    };
    let mut distinct = rest.to_vec();
    distinct.sort();
    distinct.dedup();
    first == "container_started"
        && !rest.is_empty()
        && distinct.len() == rest.len()
        && rest.iter().all(|e| reports.contains(&e.as_str()))
}

/// `POST /control?{query}` to the game's engine on the test network.
async fn control(env: &TestEnv, http: &reqwest::Client, game: &GameId, query: &str) {
    let c = system_tests::inspect(&game.container_name()).expect("engine container");
    let ip = c["NetworkSettings"]["Networks"][&env.network]["IPAddress"]
        .as_str()
        .expect("engine IP")
        .to_owned();
    let answer = http
        .post(format!("http://{ip}:8080/control?{query}"))
        .send()
        .await
        .expect("the engine answers");
    assert!(answer.status().is_success(), "control {query}: {answer:?}");
}

/// Record and Docker agree: one container for the game, the record names
/// it, and it runs exactly when the record says `running`.
async fn record_and_docker_agree(env: &TestEnv, game: &GameId) {
    let ids = system_tests::docker(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label=com.galaxy.game_id={game}"),
        "--filter",
        &format!("network={}", env.network),
    ]);
    let ids: Vec<&str> = ids.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(ids.len(), 1, "{game}: one container: {ids:?}");
    let record = env.db().get_record(game).await.unwrap().expect("a record");
    assert_eq!(
        record.current_container_id.as_deref(),
        Some(ids[0]),
        "{game}"
    );
    let running = system_tests::inspect(ids[0]).unwrap()["State"]["Running"] == true;
    assert_eq!(
        running,
        record.status.as_str() == "running",
        "{game}: {record:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_health_sources_crons_and_gateway_exit_zero_under_load() {
    let env = TestEnv::with(&[
        ("RTMANAGER_API_TOKENS", TOKEN),
        // The prober runs on the Docker host: the engines' bridge addresses.
        ("RTMANAGER_PROBE_ADDRESS_MODE", "container_ip"),
        ("RTMANAGER_PROBE_INITIAL_GRACE", "0s"),
        ("RTMANAGER_PROBE_FAILURES_THRESHOLD", "2"),
        ("RTMANAGER_PROBE_TIMEOUT", "500ms"),
        ("RTMANAGER_PROBE_REFRESH_INTERVAL", "1s"),
        ("RTMANAGER_RECONCILE_INTERVAL", "2s"),
    ])
    .await;
    let operations = system_tests::operations(&env.config, &env.infra).unwrap();
    // Restarted through the gateway while it stops.
    let games: Vec<GameId> = (0..4).map(|i| env.game(&format!("watched{i}"))).collect();
    // Killed, and /healthz made to fail, just before the SIGTERMs: the
    // sources stopping (or their fresh instances) report each once.
    let killed: Vec<GameId> = (0..2).map(|i| env.game(&format!("killed{i}"))).collect();
    let flipped = env.game("flipped");
    let all: Vec<GameId> = games
        .iter()
        .chain(&killed)
        .chain([&flipped])
        .cloned()
        .collect();
    for game in &all {
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
    control(&env, &http, &flipped, "health=fail").await;
    for game in &killed {
        system_tests::docker(&["kill", &game.container_name()]);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (job, process) in running {
        let status = process.terminate_within(bound(&env)).await;
        assert!(status.success(), "{job}: {status:?}");
    }
    for call in calls {
        // Answered, or cut off with the connection: never left hanging.
        let _ = call.await.unwrap();
    }
    assert_eq!(leases_left(&env, &all).await, Vec::<String>::new());
    let instance: String = sqlx::query_scalar("SELECT instance_id FROM outbox_identity")
        .fetch_one(env.db().pool())
        .await
        .unwrap();
    let mut conn = env.redis().manager();
    let listener_leases: Vec<String> = redis::cmd("KEYS")
        .arg(format!("rtmanager:docker_events_lease:{instance}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        listener_leases,
        Vec::<String>::new(),
        "docker-events released its lease"
    );

    // Fresh health sources: what the stopped ones had not reported yet, they
    // report; nothing twice.
    let mut fresh = Vec::new();
    for (job, args, extra) in &processes[..3] {
        fresh.push((*job, JobProcess::ready(&env, job, args, extra).await));
    }
    let reported = async || {
        env.flush_outbox().await;
        let mut wrong = Vec::new();
        for game in &killed {
            let seen = events_of(&env, game).await;
            if !started_then_reported(&seen, &["container_exited", "inspect_unhealthy"]) {
                wrong.push(format!("{game}: {seen:?}"));
            }
        }
        let seen = events_of(&env, &flipped).await;
        if seen != ["container_started", "probe_failed"] {
            wrong.push(format!("{flipped}: {seen:?}"));
        }
        for game in &games {
            // A requested restart is reported by no source.
            let seen = events_of(&env, game).await;
            if seen.is_empty() || seen.iter().any(|e| e != "container_started") {
                wrong.push(format!("{game}: {seen:?}"));
            }
        }
        wrong
    };
    env.eventually("each death reported", Duration::from_secs(60), || async {
        reported().await.is_empty().then_some(())
    })
    .await;
    // ...and stays so over more probe rounds and reconciling passes.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(reported().await, Vec::<String>::new(), "each event once");
    for (job, process) in fresh {
        let status = process.terminate_within(bound(&env)).await;
        assert!(status.success(), "fresh {job}: {status:?}");
    }

    // A restart the gateway's drain cut off is settled by the next reconcile.
    inspect_cron::inspector(&(&env.config).into(), &env.infra)
        .pass(true)
        .await
        .expect("reconcile pass");
    for game in games.iter().chain(&killed) {
        record_and_docker_agree(&env, game).await;
    }
}
