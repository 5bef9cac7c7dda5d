//! The `start-job` consumer end to end: stream in, container up, result out.

use std::collections::HashMap;
use std::time::Duration;

use shared::domain::GameId;
use system_tests::contract::Contract;
use system_tests::{inspect, TestEnv, ENGINE};
use tokio_util::sync::CancellationToken;

/// Runs the consumer in this process until the returned token is cancelled.
fn spawn_consumer(
    env: &TestEnv,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let stop = CancellationToken::new();
    let handle = tokio::spawn(start_job::run(
        (&env.config).into(),
        env.infra.clone(),
        stop.clone(),
    ));
    (stop, handle)
}

async fn results_for(env: &TestEnv, game: &str) -> Vec<HashMap<String, String>> {
    env.read_stream(&env.config.common.streams.job_results)
        .await
        .into_iter()
        .map(|(_, f)| f)
        .filter(|f| f["game_id"] == game)
        .collect()
}

async fn pending(env: &TestEnv) -> i64 {
    let mut conn = env.redis().manager();
    let reply: redis::Value = redis::cmd("XPENDING")
        .arg(&env.config.start_jobs.stream)
        .arg(&env.config.start_jobs.group)
        .query_async(&mut conn)
        .await
        .unwrap();
    match reply {
        redis::Value::Array(items) => match &items[0] {
            redis::Value::Int(n) => *n,
            _ => 0,
        },
        _ => 0,
    }
}

#[tokio::test]
async fn a_start_job_yields_a_running_container_and_one_valid_result() {
    let env = TestEnv::new().await;
    let game = env.game("job");
    let (stop, handle) = spawn_consumer(&env);
    let entry_id = env
        .xadd(
            &env.config.start_jobs.stream,
            &[
                ("game_id", game.as_str()),
                ("image_ref", ENGINE),
                ("requested_at_ms", "1775121700000"),
            ],
        )
        .await;
    let results = env
        .eventually("the job result", Duration::from_secs(60), || async {
            let r = results_for(&env, game.as_str()).await;
            (!r.is_empty()).then_some(r)
        })
        .await;
    assert_eq!(results.len(), 1);
    let result = &results[0];
    Contract::load("runtime-jobs.asyncapi.yaml").assert_valid("RuntimeJobResult", result);
    assert_eq!(result["outcome"], "success");
    assert_eq!(result["error_code"], "");
    assert_eq!(
        result["engine_endpoint"],
        format!("http://galaxy-game-{game}:8080")
    );
    assert_eq!(
        inspect(&game.container_name()).unwrap()["Id"],
        result["container_id"].as_str()
    );
    let ops = env.operations(&game).await;
    assert_eq!(
        (ops[0]["op_source"].as_str(), ops[0]["source_ref"].as_str()),
        ("lobby_stream", entry_id.as_str())
    );
    env.eventually("the ack", Duration::from_secs(10), || async {
        (pending(&env).await == 0).then_some(())
    })
    .await;

    // The same job again is a replay, answered once more.
    env.xadd(
        &env.config.start_jobs.stream,
        &[
            ("game_id", game.as_str()),
            ("image_ref", ENGINE),
            ("requested_at_ms", "1775121700001"),
        ],
    )
    .await;
    let results = env
        .eventually("the replay result", Duration::from_secs(30), || async {
            let r = results_for(&env, game.as_str()).await;
            (r.len() == 2).then_some(r)
        })
        .await;
    assert_eq!(results[1]["error_code"], "replay_no_op");
    stop.cancel();
    handle.await.unwrap().expect("graceful stop");
}

#[tokio::test]
async fn malformed_entries_are_dead_lettered_answered_and_never_block_the_loop() {
    let env = TestEnv::new().await;
    let (stop, handle) = spawn_consumer(&env);
    let long = "a".repeat(52);
    let bad_ids = ["../x", "", long.as_str(), "a b", "gäme", "x/../../etc"];
    for id in bad_ids {
        env.xadd(
            &env.config.start_jobs.stream,
            &[("game_id", id), ("image_ref", ENGINE)],
        )
        .await;
    }
    env.xadd(&env.config.start_jobs.stream, &[("image_ref", ENGINE)])
        .await;
    let no_image = env.game("noimage");
    env.xadd(
        &env.config.start_jobs.stream,
        &[("game_id", no_image.as_str())],
    )
    .await;
    let bad_time = env.game("badtime");
    env.xadd(
        &env.config.start_jobs.stream,
        &[
            ("game_id", bad_time.as_str()),
            ("image_ref", ENGINE),
            ("requested_at_ms", "soon"),
        ],
    )
    .await;
    // A good job behind them still runs.
    let good = env.game("good");
    env.xadd(
        &env.config.start_jobs.stream,
        &[("game_id", good.as_str()), ("image_ref", ENGINE)],
    )
    .await;

    env.eventually("the good job's result", Duration::from_secs(60), || async {
        (results_for(&env, good.as_str()).await.len() == 1).then_some(())
    })
    .await;
    let dead_stream = format!("{}:dead", env.config.start_jobs.stream);
    let dead = env
        .eventually("nine dead letters", Duration::from_secs(30), || async {
            let d = env.read_stream(&dead_stream).await;
            (d.len() == 9).then_some(d)
        })
        .await;
    let jobs = Contract::load("runtime-jobs.asyncapi.yaml");
    for (_, fields) in &dead {
        jobs.assert_valid("DeadLetterEntry", fields);
        assert_eq!(fields["source_stream"], env.config.start_jobs.stream);
    }
    let all_results = env
        .read_stream(&env.config.common.streams.job_results)
        .await;
    for (_, fields) in &all_results {
        jobs.assert_valid("RuntimeJobResult", fields);
    }
    // Every entry with a readable game id is answered with invalid_request.
    for id in [
        "../x",
        long.as_str(),
        "a b",
        "gäme",
        "x/../../etc",
        no_image.as_str(),
        bad_time.as_str(),
    ] {
        let r = results_for(&env, id).await;
        assert_eq!(r.len(), 1, "{id:?}");
        assert_eq!(
            (r[0]["outcome"].as_str(), r[0]["error_code"].as_str()),
            ("failure", "invalid_request")
        );
    }
    assert_eq!(
        all_results.len(),
        8,
        "seven invalid_request answers and the good one"
    );
    // Nothing was created for them.
    let dirs: Vec<_> = std::fs::read_dir(&env.state_root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(dirs, [std::ffi::OsString::from(good.as_str())]);
    assert!(
        !std::path::Path::new("/tmp/etc").exists() && !env.state_root.join("..").join("x").exists()
    );
    assert!(inspect("galaxy-game-../x").is_none() && inspect("galaxy-game-a b").is_none());
    env.eventually("all acked", Duration::from_secs(10), || async {
        (pending(&env).await == 0).then_some(())
    })
    .await;
    stop.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_entry_of_a_crashed_consumer_is_reclaimed_and_answered_once() {
    let env = TestEnv::new().await;
    let game = env.game("reclaim");
    let busy = env.game("busy");
    // A consumer that read two entries and crashed before answering.
    let stream = env.config.start_jobs.stream.clone();
    let group = env.config.start_jobs.group.clone();
    let mut conn = env.redis().manager();
    let _: String = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg(&group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .unwrap();
    env.xadd(
        &stream,
        &[("game_id", game.as_str()), ("image_ref", ENGINE)],
    )
    .await;
    env.xadd(
        &stream,
        &[("game_id", busy.as_str()), ("image_ref", ENGINE)],
    )
    .await;
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&group)
        .arg("crashed")
        .arg("COUNT")
        .arg(2)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    // The second game's lease is held (its first owner may still be working).
    let leases =
        shared::adapters::redis::LeaseStore::new(env.infra.redis.clone(), Duration::from_secs(60));
    let held = leases.try_acquire(&busy).await.unwrap().expect("lease");

    let (stop, handle) = spawn_consumer(&env);
    env.eventually(
        "the reclaimed job's result",
        Duration::from_secs(60),
        || async { (results_for(&env, game.as_str()).await.len() == 1).then_some(()) },
    )
    .await;
    // Several reclaim rounds (idle 2 s) later, the busy game is still unanswered and pending.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(results_for(&env, busy.as_str()).await.is_empty());
    assert_eq!(pending(&env).await, 1);
    assert!(inspect(&busy.container_name()).is_none());
    held.release().await;
    env.eventually("the busy job's result", Duration::from_secs(60), || async {
        (results_for(&env, busy.as_str()).await.len() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        results_for(&env, game.as_str()).await.len(),
        1,
        "exactly once"
    );
    assert_eq!(
        results_for(&env, busy.as_str()).await.len(),
        1,
        "exactly once"
    );
    assert_eq!(pending(&env).await, 0);
    stop.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn slow_starts_of_different_games_run_side_by_side() {
    // A Lobby that answers the diagnostic fetch after 1.5 s makes each start slow.
    let lobby = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lobby_url = format!("http://{}", lobby.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = lobby.accept().await.unwrap();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                tokio::time::sleep(Duration::from_millis(1500)).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                    )
                    .await;
            });
        }
    });
    let env = TestEnv::with(&[
        ("RTMANAGER_LOBBY_INTERNAL_BASE_URL", &lobby_url),
        ("RTMANAGER_START_JOBS_CONCURRENCY", "2"),
    ])
    .await;
    let (a, b) = (env.game("slow-a"), env.game("slow-b"));
    let (stop, handle) = spawn_consumer(&env);
    for g in [&a, &b] {
        env.xadd(
            &env.config.start_jobs.stream,
            &[("game_id", g.as_str()), ("image_ref", ENGINE)],
        )
        .await;
    }
    for g in [&a, &b] {
        env.eventually("both results", Duration::from_secs(60), || async {
            (results_for(&env, g.as_str())
                .await
                .first()?
                .get("outcome")?
                == "success")
                .then_some(())
        })
        .await;
    }
    let window = |g: &GameId| {
        let g = g.clone();
        let pool = env.db().pool().clone();
        async move {
            sqlx::query_as::<_, (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)>(
                "SELECT started_at, finished_at FROM operation_log WHERE game_id = $1",
            )
            .bind(g.as_str())
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let (wa, wb) = (window(&a).await, window(&b).await);
    assert!(
        wa.1 - wa.0 >= chrono::Duration::milliseconds(1500),
        "each start waited on Lobby"
    );
    assert!(
        wa.0 < wb.1 && wb.0 < wa.1,
        "the two starts overlapped: {wa:?} {wb:?}"
    );
    stop.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_finishes_the_job_in_flight_and_releases_its_lease() {
    let lobby = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lobby_url = format!("http://{}", lobby.local_addr().unwrap());
    // Lobby never answers: the start waits for the 2 s diagnostic timeout.
    tokio::spawn(async move {
        let mut open = Vec::new();
        loop {
            open.push(lobby.accept().await.unwrap().0);
        }
    });
    let env = TestEnv::with(&[("RTMANAGER_LOBBY_INTERNAL_BASE_URL", &lobby_url)]).await;
    let game = env.game("inflight");
    let (stop, handle) = spawn_consumer(&env);
    env.xadd(
        &env.config.start_jobs.stream,
        &[("game_id", game.as_str()), ("image_ref", ENGINE)],
    )
    .await;
    let leases =
        shared::adapters::redis::LeaseStore::new(env.infra.redis.clone(), Duration::from_secs(60));
    env.eventually("the job in flight", Duration::from_secs(20), || async {
        leases.is_held(&game).await.unwrap().then_some(())
    })
    .await;
    stop.cancel();
    handle.await.unwrap().expect("graceful stop");
    assert!(!leases.is_held(&game).await.unwrap(), "lease released");
    // The in-flight job was finished and answered before the consumer returned.
    env.flush_outbox().await;
    let r = results_for(&env, game.as_str()).await;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["outcome"], "success");
    assert_eq!(pending(&env).await, 0);
}
