//! The dedupe keys' bound, on real PostgreSQL and Redis: keys are pruned
//! after `RTMANAGER_DEDUPE_KEY_RETENTION` (plus a day for clocks) by every
//! relay, and no consumer runs an entry older than that retention, so a key
//! is never gone while the entry it answers can still be run.

use std::time::Duration;

use shared::config::Config;
use system_tests::{TestEnv, ENGINE};
use tokio_util::sync::CancellationToken;

/// `n` keys named `{prefix}{i}`, staged `age_days` ago.
async fn keys(env: &TestEnv, prefix: &str, n: i32, age_days: i32) {
    sqlx::query(
        "INSERT INTO outbox_keys (dedupe_key, staged_at) \
         SELECT $1 || g, now() - make_interval(days => $3) FROM generate_series(1, $2) g",
    )
    .bind(prefix)
    .bind(n)
    .bind(age_days)
    .execute(env.db().pool())
    .await
    .expect("insert keys");
}

async fn keys_like(env: &TestEnv, prefix: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox_keys WHERE dedupe_key LIKE $1 || '%'")
        .bind(prefix)
        .fetch_one(env.db().pool())
        .await
        .expect("count keys")
}

#[tokio::test]
async fn a_running_relay_prunes_keys_past_their_retention_and_a_day_and_no_younger() {
    let env = TestEnv::with(&[("RTMANAGER_DEDUPE_KEY_RETENTION", "30d")]).await;
    // More than one prune batch (10 000) of old keys.
    keys(&env, "old:", 10_050, 32).await;
    keys(&env, "margin:", 5, 30).await; // past the retention, within the day
    keys(&env, "young:", 5, 1).await;

    let stop = CancellationToken::new();
    let relay = tokio::spawn(
        env.infra
            .outbox
            .relay(env.redis().clone())
            .run(stop.clone()),
    );
    env.eventually(
        "the relay's first prune",
        Duration::from_secs(30),
        || async { (keys_like(&env, "old:").await == 0).then_some(()) },
    )
    .await;
    stop.cancel();
    relay.await.unwrap();
    assert_eq!(keys_like(&env, "margin:").await, 5);
    assert_eq!(keys_like(&env, "young:").await, 5);
}

#[tokio::test]
async fn an_entry_older_than_the_key_retention_is_dead_lettered_never_run() {
    let env = TestEnv::with(&[("RTMANAGER_DEDUPE_KEY_RETENTION", "30d")]).await;
    let stream = env.config.start_jobs.stream.clone();
    let stop = CancellationToken::new();
    let starter = tokio::spawn(start_job::run(
        (&env.config).into(),
        env.infra.clone(),
        stop.clone(),
    ));
    // The consumer creates the stream and its group at `$` (0-0 on an empty
    // stream), so an entry with an explicit old id is still read: what a
    // Redis restored from an old snapshot, or a producer setting ids, brings.
    let game = env.game("expired");
    let dead_stream = format!("{stream}:dead");
    env.eventually("the group", Duration::from_secs(30), || async {
        let mut conn = env.redis().manager();
        let groups: redis::RedisResult<redis::Value> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&stream)
            .query_async(&mut conn)
            .await;
        matches!(groups, Ok(redis::Value::Array(ref g)) if !g.is_empty()).then_some(())
    })
    .await;
    let mut conn = env.redis().manager();
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("1000-0")
        .arg("game_id")
        .arg(game.as_str())
        .arg("image_ref")
        .arg(ENGINE)
        .query_async(&mut conn)
        .await
        .expect("XADD with an old id");

    let dead = env
        .eventually("the dead letter", Duration::from_secs(30), || async {
            let d = env.read_stream(&dead_stream).await;
            (!d.is_empty()).then_some(d)
        })
        .await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].1["source_id"], "1000-0");
    assert!(
        dead[0].1["reason"].contains("RTMANAGER_DEDUPE_KEY_RETENTION"),
        "{dead:?}"
    );

    // The loop goes on: a fresh entry for the same game is run and answered,
    // and it is the game's only result.
    env.xadd(
        &stream,
        &[("game_id", game.as_str()), ("image_ref", ENGINE)],
    )
    .await;
    let results = env
        .eventually(
            "the fresh entry's result",
            Duration::from_secs(60),
            || async {
                let r: Vec<_> = env
                    .read_stream(&env.config.common.streams.job_results)
                    .await
                    .into_iter()
                    .filter(|(_, f)| f["game_id"] == game.as_str())
                    .collect();
                (!r.is_empty()).then_some(r)
            },
        )
        .await;
    stop.cancel();
    starter.await.unwrap().expect("start-job stops gracefully");
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0].1["outcome"], "success", "{results:?}");
    let started: i64 = sqlx::query_scalar("SELECT count(*) FROM operation_log WHERE game_id = $1")
        .bind(game.as_str())
        .fetch_one(env.db().pool())
        .await
        .unwrap();
    assert_eq!(started, 1, "the expired entry ran no operation");
}

#[test]
fn the_key_retention_defaults_to_30_days_and_never_undercuts_the_outbox_retention() {
    let vars = |extra: &[(&str, &str)]| {
        [
            ("RTMANAGER_POSTGRES_PRIMARY_DSN", "postgres://h/db"),
            ("RTMANAGER_REDIS_MASTER_ADDR", "127.0.0.1:6379"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<Vec<_>>()
    };
    let config = Config::from_vars(vars(&[])).unwrap();
    assert_eq!(
        config.common.streams.dedupe_key_retention,
        Duration::from_secs(30 * 24 * 3600)
    );
    for extra in [
        &[("RTMANAGER_DEDUPE_KEY_RETENTION", "6d")][..],
        &[
            ("RTMANAGER_OUTBOX_RETENTION", "60d"),
            ("RTMANAGER_DEDUPE_KEY_RETENTION", "30d"),
        ],
        &[("RTMANAGER_DEDUPE_KEY_RETENTION", "500years")],
    ] {
        let err = Config::from_vars(vars(extra)).unwrap_err().to_string();
        assert!(
            err.contains("RTMANAGER_DEDUPE_KEY_RETENTION"),
            "{extra:?}: {err}"
        );
    }
}
