//! 200 concurrent start requests over 50 games, through the job stream (two
//! start-job instances) and the gateway together, on real PostgreSQL, Redis
//! and Docker: one container per game, one `container_started` per game, and
//! every request answered with a stable outcome (`success`, `success` +
//! `replay_no_op`, or `conflict` while another request holds the game).

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::join_all;
use shared::domain::labels::LABEL_GAME_ID;
use system_tests::{docker, TestEnv, ENGINE};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "concurrency-test-token-0123456789abcdef0";
const GAMES: usize = 50;
/// Per game: this many through the stream and as many through the gateway.
const PER_SOURCE: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_starts_over_fifty_games_make_one_container_each() {
    let env = TestEnv::with(&[
        ("RTMANAGER_API_TOKENS", TOKEN),
        ("RTMANAGER_START_JOBS_CONCURRENCY", "16"),
    ])
    .await;
    let stop = CancellationToken::new();
    let starters: Vec<_> = (0..2)
        .map(|i| {
            let mut config = env.config.clone();
            config.common.process.instance = format!("start-job-{i}");
            tokio::spawn(start_job::run(
                (&config).into(),
                env.infra.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let gateway = tokio::spawn(rest_gateway::run(
        (&env.config).into(),
        env.infra.clone(),
        listener,
        stop.clone(),
    ));
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();

    let games: Vec<_> = (0..GAMES).map(|i| env.game(&format!("c{i}"))).collect();
    let stream = env.config.start_jobs.stream.clone();
    let appended = join_all(games.iter().flat_map(|game| {
        let (env, stream) = (&env, &stream);
        (0..PER_SOURCE).map(move |_| async move {
            env.xadd(stream, &[("game_id", game.as_str()), ("image_ref", ENGINE)])
                .await
        })
    }));
    let posted = join_all(games.iter().flat_map(|game| {
        let (http, base) = (&http, &base);
        (0..PER_SOURCE).map(move |_| async move {
            let response = http
                .post(format!("{base}/api/v1/internal/runtimes/{game}/start"))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(serde_json::json!({"image_ref": ENGINE}).to_string())
                .send()
                .await
                .expect("the gateway answers");
            let status = response.status().as_u16();
            let body: serde_json::Value =
                serde_json::from_slice(&response.bytes().await.unwrap_or_default())
                    .unwrap_or_default();
            (game.clone(), status, body)
        })
    }));
    let (_, answers) = tokio::join!(appended, posted);

    let results = env
        .eventually(
            "a result per stream entry",
            Duration::from_secs(300),
            || async {
                let results: Vec<_> = env
                    .read_stream(&env.config.common.streams.job_results)
                    .await
                    .into_iter()
                    .map(|(_, f)| f)
                    .collect();
                (results.len() >= GAMES * PER_SOURCE).then_some(results)
            },
        )
        .await;
    stop.cancel();
    for starter in starters {
        starter.await.unwrap().expect("start-job stops gracefully");
    }
    gateway
        .await
        .unwrap()
        .expect("rest-gateway stops gracefully");

    assert_eq!(results.len(), GAMES * PER_SOURCE, "one result per entry");
    let mut successes: HashMap<String, usize> = HashMap::new();
    for result in &results {
        let stable = match (result["outcome"].as_str(), result["error_code"].as_str()) {
            ("success", "" | "replay_no_op") => {
                *successes.entry(result["game_id"].clone()).or_default() += 1;
                true
            }
            ("failure", "conflict") => true,
            _ => false,
        };
        assert!(stable, "unexpected stream outcome: {result:?}");
    }
    for (game, status, body) in &answers {
        match status {
            200 => *successes.entry(game.to_string()).or_default() += 1,
            409 => assert_eq!(body["error"]["code"], "conflict", "{game}: {body}"),
            _ => panic!("unexpected gateway answer for {game}: {status} {body}"),
        }
    }

    let labelled = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("network={}", env.network),
        "--format",
        &format!("{{{{.Label \"{LABEL_GAME_ID}\"}}}}"),
    ]);
    let mut containers: HashMap<&str, usize> = HashMap::new();
    for game in labelled.lines().filter(|l| !l.is_empty()) {
        *containers.entry(game).or_default() += 1;
    }
    env.flush_outbox().await;
    let started: Vec<String> = env
        .read_stream(&env.config.common.streams.health_events)
        .await
        .into_iter()
        .filter(|(_, f)| f["event_type"] == "container_started")
        .map(|(_, f)| f["game_id"].clone())
        .collect();
    for game in &games {
        assert_eq!(
            containers.get(game.as_str()),
            Some(&1),
            "{game}: one container"
        );
        assert!(
            successes.get(game.as_str()).is_some_and(|n| *n >= 1),
            "{game}: started"
        );
        assert_eq!(
            started.iter().filter(|g| *g == game.as_str()).count(),
            1,
            "{game}: one container_started"
        );
        let record = env.db().get_record(game).await.unwrap().expect("a record");
        assert_eq!(record.status.as_str(), "running", "{game}");
    }
}
