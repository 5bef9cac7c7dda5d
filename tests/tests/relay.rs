//! The outbox relay against a Redis that refuses writes: a refused entry is
//! never counted as delivered, a permanently refused one is parked without
//! holding back other games, each game's entries keep their commit order,
//! a pruned row's dedupe key still dedupes, and trimming is opt-in.

use std::process::Command;
use std::time::Duration;

use shared::domain::{AdminIntent, ErrorCode, NotificationType};
use shared::domain::{GameId, HealthDetails, HealthEvent, HealthSource, JobResult, Outcome};
use system_tests::TestEnv;

async fn redis_cmd(env: &TestEnv, args: &[&str]) {
    let mut conn = env.redis().manager();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let _: redis::Value = cmd.query_async(&mut conn).await.expect("redis command");
}

fn result(game: &GameId, marker: &str) -> JobResult {
    JobResult {
        game_id: game.as_str().to_owned(),
        outcome: Outcome::Success,
        container_id: String::new(),
        engine_endpoint: String::new(),
        error_code: None,
        error_message: marker.to_owned(),
    }
}

fn probe_failed(game: &GameId, n: i64) -> HealthEvent {
    HealthEvent {
        game_id: game.clone(),
        container_id: "c".into(),
        occurred_at_ms: 1_000 + n,
        details: HealthDetails::ProbeFailed {
            consecutive_failures: n,
            last_status: 500,
            last_error: format!("failure {n}"),
        },
    }
}

/// (game_id, consecutive_failures) of each health entry, in stream order.
async fn health_entries(env: &TestEnv) -> Vec<(String, i64)> {
    env.read_stream(&env.config.common.streams.health_events)
        .await
        .into_iter()
        .map(|(_, f)| {
            let details: serde_json::Value = serde_json::from_str(&f["details"]).unwrap();
            (
                f["game_id"].clone(),
                details["consecutive_failures"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn relay_passes(env: &TestEnv, passes: usize) {
    let relay = env.infra.outbox.relay(env.redis().clone());
    for _ in 0..passes {
        // A refusal may surface as an error; the state in Redis and the
        // outbox is what the tests check.
        let _ = relay.deliver_pending().await;
    }
}

/// The reproduction: the intent of a failed start meets a
/// `notification:intents` key of the wrong type, which is then removed.
#[tokio::test]
async fn an_entry_redis_refused_is_delivered_once_redis_accepts_it() {
    let env = TestEnv::new().await;
    let stream = env.config.common.streams.notification_intents.clone();
    redis_cmd(&env, &["SET", &stream, "x"]).await;
    let game = env.game("refused");
    let outbox = &env.infra.outbox;
    let intent = AdminIntent {
        notification_type: NotificationType::ImagePullFailed,
        game_id: game.clone(),
        image_ref: "no such image".into(),
        error_code: ErrorCode::ImagePullFailed,
        error_message: "invalid reference format".into(),
        attempted_at_ms: 1_775_121_700_000,
    };
    outbox.publish(&[outbox.intent(&intent)]).await.unwrap();
    relay_passes(&env, 1).await;
    redis_cmd(&env, &["DEL", &stream]).await;
    env.flush_outbox().await;
    let entries = env.read_stream(&stream).await;
    assert_eq!(entries.len(), 1, "the refused intent reaches the stream");
    assert_eq!(entries[0].1["idempotency_key"], intent.idempotency_key());
}

#[tokio::test]
async fn a_row_redis_keeps_refusing_is_parked_and_holds_only_its_game_until_redriven() {
    let env = TestEnv::new().await;
    let results = env.config.common.streams.job_results.clone();
    redis_cmd(&env, &["SET", &results, "not a stream"]).await;
    let (a, b) = (env.game("parked"), env.game("flowing"));
    let outbox = &env.infra.outbox;
    // Each in its own unit of work, so ids and per-game order are these.
    outbox
        .publish(&[outbox.job_result(&result(&a, "a's result"), "job-a")])
        .await
        .unwrap();
    for (game, n) in [(&b, 1), (&a, 2), (&b, 3), (&a, 4)] {
        outbox
            .publish(&[outbox.health(HealthSource::HealthzProber, &probe_failed(game, n))])
            .await
            .unwrap();
    }
    relay_passes(&env, 10).await;
    let b_only = vec![(b.as_str().to_owned(), 1), (b.as_str().to_owned(), 3)];
    assert_eq!(
        health_entries(&env).await,
        b_only,
        "game B flows; game A waits behind its refused row"
    );
    let parked: Vec<String> =
        sqlx::query_scalar("SELECT stream FROM outbox WHERE parked_at IS NOT NULL")
            .fetch_all(env.db().pool())
            .await
            .unwrap();
    assert_eq!(parked, [results.as_str()], "the refused row is parked");

    // Fixing Redis alone does not release a parked row: an operator redrives.
    redis_cmd(&env, &["DEL", &results]).await;
    relay_passes(&env, 3).await;
    assert_eq!(health_entries(&env).await, b_only, "still held");
    let out = Command::new(system_tests::job_binary("rest-gateway"))
        .args(["redrive-outbox", "--all"])
        .env_clear()
        .envs(env.vars.clone())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "redrive-outbox: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.flush_outbox().await;
    let delivered = env.read_stream(&results).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].1["error_message"], "a's result");
    let mut expected = b_only.clone();
    expected.extend([(a.as_str().to_owned(), 2), (a.as_str().to_owned(), 4)]);
    assert_eq!(health_entries(&env).await, expected, "A's rows, in order");
}

/// Two units of work for one game: the one that staged first (the lower
/// outbox id) commits last. The stream follows the commits.
#[tokio::test]
async fn a_games_entries_reach_the_stream_in_commit_order() {
    let env = TestEnv::new().await;
    let game = env.game("order");
    let outbox = &env.infra.outbox;
    let mut first = outbox.begin().await.unwrap();
    assert!(first
        .stage(&outbox.job_result(&result(&game, "committed second"), "job-1"))
        .await
        .unwrap());
    let mut second = outbox.begin().await.unwrap();
    assert!(second
        .stage(&outbox.job_result(&result(&game, "committed first"), "job-2"))
        .await
        .unwrap());
    second.commit().await.unwrap();
    first.commit().await.unwrap();
    env.flush_outbox().await;
    let order: Vec<String> = env
        .read_stream(&env.config.common.streams.job_results)
        .await
        .into_iter()
        .map(|(_, f)| f["error_message"].clone())
        .collect();
    assert_eq!(order, ["committed first", "committed second"]);
}

/// A job entry redelivered after its result's row was pruned is still
/// answered once.
#[tokio::test]
async fn a_pruned_rows_dedupe_key_still_dedupes() {
    let env = TestEnv::new().await;
    let game = env.game("pruned");
    let outbox = &env.infra.outbox;
    let message = outbox.job_result(&result(&game, "once"), "runtime:start_jobs:1-0");
    assert_eq!(
        outbox
            .publish(std::slice::from_ref(&message))
            .await
            .unwrap(),
        [true]
    );
    env.flush_outbox().await;
    sqlx::query("UPDATE outbox SET delivered_at = now() - interval '400 days'")
        .execute(env.db().pool())
        .await
        .unwrap();
    let pruned = env
        .db()
        .prune_delivered(Duration::from_secs(7 * 24 * 3600))
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    assert_eq!(
        outbox.publish(&[message]).await.unwrap(),
        [false],
        "the key outlives its row"
    );
    env.flush_outbox().await;
    let entries = env
        .read_stream(&env.config.common.streams.job_results)
        .await;
    assert_eq!(entries.len(), 1);
}

async fn publish_probe_events(env: &TestEnv, count: i64) -> i64 {
    let game = env.game("trim");
    let outbox = &env.infra.outbox;
    let messages: Vec<_> = (1..=count)
        .map(|n| outbox.health(HealthSource::HealthzProber, &probe_failed(&game, n)))
        .collect();
    outbox.publish(&messages).await.unwrap();
    env.flush_outbox().await;
    let mut conn = env.redis().manager();
    redis::cmd("XLEN")
        .arg(&env.config.common.streams.health_events)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn published_streams_are_trimmed_only_when_asked_and_never_below_the_minimum_age() {
    let untrimmed = TestEnv::new().await;
    assert_eq!(publish_probe_events(&untrimmed, 300).await, 300);
    let trimmed = TestEnv::with(&[("RTMANAGER_STREAM_MAXLEN", "10")]).await;
    let len = publish_probe_events(&trimmed, 300).await;
    assert!((10..300).contains(&len), "approximately trimmed: {len}");
    let young = TestEnv::with(&[
        ("RTMANAGER_STREAM_MAXLEN", "10"),
        ("RTMANAGER_STREAM_MIN_AGE", "1h"),
    ])
    .await;
    assert_eq!(
        publish_probe_events(&young, 300).await,
        300,
        "nothing younger than the minimum age is trimmed"
    );
    // A minimum age every entry is past: the cap alone decides, and the
    // age never trims below it.
    let old = TestEnv::with(&[
        ("RTMANAGER_STREAM_MAXLEN", "150"),
        ("RTMANAGER_STREAM_MIN_AGE", "1ms"),
    ])
    .await;
    let len = publish_probe_events(&old, 300).await;
    assert!(
        (150..300).contains(&len),
        "trimmed to the cap, not below: {len}"
    );
}
