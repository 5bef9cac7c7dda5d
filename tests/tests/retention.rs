//! Retention on real PostgreSQL: cleanup-cron's pruning of the operation log,
//! the health history, removed records (with their snapshots, observations
//! and history) and stop tombstones, in batches; the retention settings; and discovery's query
//! plan, which must not grow with a game's log.
//!
//! Rows are written directly and aged by their timestamps (no waiting).

use std::time::Duration;

use cleanup_cron::{CleanupCronConfig, PRUNE_BATCH};
use shared::adapters::postgres::reads::MONITORING_ROWS;
use shared::adapters::postgres::PruneCounts;
use shared::config::{Config, Env, JobConfig, RetentionConfig};
use shared::domain::{GameId, RuntimeStatus};
use sqlx::Row;
use system_tests::TestEnv;

/// A record of `status` whose timestamps are `age_days` old (`removed_at`
/// only for `removed`; `last_op_at` is always recent, so cleanup-cron's
/// container pass leaves a stopped record alone).
async fn record(env: &TestEnv, game: &GameId, status: &str, age_days: i32, container: &str) {
    sqlx::query(
        "INSERT INTO runtime_records (game_id, status, current_container_id, engine_endpoint, \
             state_path, docker_network, started_at, stopped_at, removed_at, last_op_at) \
         VALUES ($1, $2, NULLIF($3, ''), 'http://engine:8080', '/state', 'net', \
             now() - make_interval(days => $4), \
             CASE WHEN $2 <> 'running' THEN now() - make_interval(days => $4) END, \
             CASE WHEN $2 = 'removed' THEN now() - make_interval(days => $4) END, now())",
    )
    .bind(game.as_str())
    .bind(status)
    .bind(container)
    .bind(age_days)
    .execute(env.db().pool())
    .await
    .expect("insert record");
}

/// `n` log rows for `game`, finished `age_days` ago (one second apart, in id
/// order), with `outcome`.
async fn log_rows(env: &TestEnv, game: &GameId, n: i32, age_days: i32, outcome: &str) {
    sqlx::query(
        "INSERT INTO operation_log (game_id, op_kind, op_source, outcome, error_code, \
             started_at, finished_at) \
         SELECT $1, 'start', 'gm_rest', $3, \
             CASE WHEN $3 = 'failure' THEN 'container_start_failed' ELSE '' END, \
             now() - make_interval(days => $4) + make_interval(secs => g), \
             now() - make_interval(days => $4) + make_interval(secs => g) \
         FROM generate_series(1, $2) g",
    )
    .bind(game.as_str())
    .bind(n)
    .bind(outcome)
    .bind(age_days)
    .execute(env.db().pool())
    .await
    .expect("insert log rows");
}

/// The game's log, as (id, age in whole days), oldest first.
async fn log_of(env: &TestEnv, game: &GameId) -> Vec<(i64, i32)> {
    sqlx::query(
        "SELECT id, extract(day FROM now() - finished_at)::int AS age FROM operation_log \
         WHERE game_id = $1 ORDER BY id",
    )
    .bind(game.as_str())
    .fetch_all(env.db().pool())
    .await
    .expect("read log")
    .iter()
    .map(|r| (r.get("id"), r.get("age")))
    .collect()
}

async fn count(env: &TestEnv, sql: &str, game: &GameId) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(game.as_str())
        .fetch_one(env.db().pool())
        .await
        .expect("count")
}

async fn snapshot(env: &TestEnv, game: &GameId, age_days: i32) {
    sqlx::query(
        "INSERT INTO health_snapshots (game_id, container_id, status, event_type, details, \
             occurred_at, updated_at) \
         VALUES ($1, 'c', 'healthy', 'container_started', '{}', \
             now() - make_interval(days => $2), now() - make_interval(days => $2))",
    )
    .bind(game.as_str())
    .bind(age_days)
    .execute(env.db().pool())
    .await
    .expect("insert snapshot");
}

async fn observation(env: &TestEnv, game: &GameId, container: &str, age_days: i32) {
    sqlx::query(
        "INSERT INTO inspect_observations (container_id, game_id, restart_count, observed_at) \
         VALUES ($1, $2, 0, now() - make_interval(days => $3))",
    )
    .bind(container)
    .bind(game.as_str())
    .bind(age_days)
    .execute(env.db().pool())
    .await
    .expect("insert observation");
}

#[tokio::test]
async fn old_log_rows_go_and_each_games_latest_row_stays() {
    let env = TestEnv::new().await;
    let (busy, quiet, gone) = (env.game("busy"), env.game("quiet"), env.game("gone"));
    record(&env, &busy, "running", 100, "").await;
    record(&env, &quiet, "stopped", 100, "").await;
    // busy: 5 old rows and 2 recent ones; quiet: only old rows; gone: old
    // rows of a game without a record.
    log_rows(&env, &busy, 5, 100, "success").await;
    log_rows(&env, &busy, 2, 1, "success").await;
    log_rows(&env, &quiet, 3, 100, "failure").await;
    log_rows(&env, &gone, 2, 100, "success").await;
    let busy_recent: Vec<_> = log_of(&env, &busy).await[5..].to_vec();
    let quiet_latest = *log_of(&env, &quiet).await.last().unwrap();

    // A batch of 2 rows: the walk crosses batches and the kept rows.
    let counts = env
        .db()
        .prune_history(&RetentionConfig::default(), 2)
        .await
        .unwrap();
    assert_eq!(counts.operation_log, 5 + 2 + 2, "{counts:?}");
    assert_eq!(log_of(&env, &busy).await, busy_recent);
    assert_eq!(log_of(&env, &quiet).await, [quiet_latest]);
    assert!(log_of(&env, &gone).await.is_empty());

    // Discovery still shows the quiet game's latest operation.
    let rows = env
        .db()
        .monitoring_rows(&[RuntimeStatus::Stopped], chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].last_op_kind.as_deref(), Some("start"));

    // A second pass has nothing left to do.
    let again = env
        .db()
        .prune_history(&RetentionConfig::default(), 2)
        .await
        .unwrap();
    assert_eq!(again, PruneCounts::default());
}

/// A game's place in the outbox's per-game order, as a commit leaves it.
async fn game_seq(env: &TestEnv, game: &GameId) {
    sqlx::query("INSERT INTO outbox_game_seq (game_id, last_seq) VALUES ($1, 3)")
        .bind(game.as_str())
        .execute(env.db().pool())
        .await
        .unwrap();
}

/// The game's rows in `game_fences` and `outbox_game_seq`.
async fn per_game_rows(env: &TestEnv, game: &GameId) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM game_fences WHERE game_id = $1), \
                (SELECT count(*) FROM outbox_game_seq WHERE game_id = $1)",
    )
    .bind(game.as_str())
    .fetch_one(env.db().pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn removed_records_past_retention_go_with_their_snapshot_and_observations() {
    let env = TestEnv::new().await;
    let old: Vec<GameId> = (0..5).map(|i| env.game(&format!("old{i}"))).collect();
    let (fresh, stopped, running) = (env.game("fresh"), env.game("stopped"), env.game("run"));
    let orphan = env.game("orphan");
    for game in &old {
        record(&env, game, "removed", 31, "").await;
        snapshot(&env, game, 31).await;
        observation(&env, game, &format!("c-{game}"), 31).await;
        env.db().take_fence(game).await.unwrap();
        game_seq(&env, game).await;
    }
    env.db().take_fence(&fresh).await.unwrap();
    game_seq(&env, &fresh).await;
    record(&env, &fresh, "removed", 29, "").await;
    snapshot(&env, &fresh, 29).await;
    record(&env, &stopped, "stopped", 60, "c-stopped").await;
    snapshot(&env, &stopped, 60).await;
    record(&env, &running, "running", 60, "c-current").await;
    // The running game's current container's memory stays however old; the
    // memory of its earlier container and an orphan snapshot are leftovers.
    observation(&env, &running, "c-current", 60).await;
    observation(&env, &running, "c-earlier", 60).await;
    snapshot(&env, &orphan, 60).await;

    let counts = env
        .db()
        .prune_history(&RetentionConfig::default(), 2)
        .await
        .unwrap();
    assert_eq!(
        counts,
        PruneCounts {
            removed_records: 5,
            health_snapshots: 5 + 1,
            inspect_observations: 5 + 1,
            ..PruneCounts::default()
        }
    );
    for game in &old {
        assert!(env.db().get_record(game).await.unwrap().is_none());
        assert!(env.snapshot(game).await.is_none());
        assert_eq!(
            per_game_rows(&env, game).await,
            (0, 0),
            "{game}: fence, sequence"
        );
    }
    assert_eq!(
        per_game_rows(&env, &fresh).await,
        (1, 1),
        "kept with the record"
    );
    assert!(env.snapshot(&orphan).await.is_none());
    for game in [&fresh, &stopped, &running] {
        assert!(env.db().get_record(game).await.unwrap().is_some(), "{game}");
    }
    assert!(env.snapshot(&fresh).await.is_some());
    assert!(env.snapshot(&stopped).await.is_some());
    let kept: Vec<String> =
        sqlx::query_scalar("SELECT container_id FROM inspect_observations ORDER BY container_id")
            .fetch_all(env.db().pool())
            .await
            .unwrap();
    assert_eq!(kept, ["c-current"]);
}

/// `n` health history rows of `game`, occurred `age_days` ago.
async fn history(env: &TestEnv, game: &GameId, n: i32, age_days: i32) {
    sqlx::query(
        "INSERT INTO health_event_history (game_id, container_id, event_type, source, \
             occurred_at, details) \
         SELECT $1, 'c', 'probe_failed', 'healthz_prober', \
             now() - make_interval(days => $3) + make_interval(secs => g), '{}' \
         FROM generate_series(1, $2) g",
    )
    .bind(game.as_str())
    .bind(n)
    .bind(age_days)
    .execute(env.db().pool())
    .await
    .expect("insert history");
}

/// The game's health history, as days of age (rounded), oldest first.
async fn history_of(env: &TestEnv, game: &GameId) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT round(extract(epoch FROM now() - occurred_at) / 86400)::int \
         FROM health_event_history \
         WHERE game_id = $1 ORDER BY occurred_at",
    )
    .bind(game.as_str())
    .fetch_all(env.db().pool())
    .await
    .expect("read history")
}

#[tokio::test]
async fn health_history_goes_after_the_operation_log_retention_and_with_a_pruned_record() {
    let env = TestEnv::new().await;
    let (live, removed, fresh) = (env.game("live"), env.game("removed"), env.game("fresh"));
    record(&env, &live, "running", 100, "").await;
    record(&env, &removed, "removed", 31, "").await;
    record(&env, &fresh, "removed", 29, "").await;
    // live: 5 events past the 90 days, 2 inside; removed: recent ones, gone
    // with its record; fresh: kept with its record.
    history(&env, &live, 5, 91).await;
    history(&env, &live, 2, 89).await;
    history(&env, &removed, 3, 32).await;
    history(&env, &fresh, 2, 30).await;

    // A batch of 2 rows: the prune crosses batches.
    let counts = env
        .db()
        .prune_history(&RetentionConfig::default(), 2)
        .await
        .unwrap();
    assert_eq!(counts.health_event_history, 5 + 3, "{counts:?}");
    assert_eq!(counts.removed_records, 1, "{counts:?}");
    assert_eq!(history_of(&env, &live).await, [89, 89]);
    assert!(history_of(&env, &removed).await.is_empty());
    assert_eq!(history_of(&env, &fresh).await, [30, 30]);

    // The retention is the operation log's setting.
    let shorter = RetentionConfig {
        operation_log: Duration::from_secs(24 * 3600),
        ..RetentionConfig::default()
    };
    let counts = env.db().prune_history(&shorter, 1000).await.unwrap();
    assert_eq!(counts.health_event_history, 2 + 2, "{counts:?}");
    assert!(history_of(&env, &live).await.is_empty());
}

#[tokio::test]
async fn stop_tombstones_past_retention_go() {
    let env = TestEnv::new().await;
    let (old, fresh) = (env.game("old"), env.game("fresh"));
    for (game, age) in [(&old, 31), (&fresh, 29)] {
        sqlx::query(
            "INSERT INTO stop_tombstones (game_id, requested_at_ms, reason, created_at) \
             VALUES ($1, 0, 'cancelled', now() - make_interval(days => $2))",
        )
        .bind(game.as_str())
        .bind(age)
        .execute(env.db().pool())
        .await
        .unwrap();
    }
    let counts = env
        .db()
        .prune_history(&RetentionConfig::default(), 1)
        .await
        .unwrap();
    assert_eq!(counts.stop_tombstones, 1, "{counts:?}");
    assert_eq!(env.db().stop_tombstone(&old).await.unwrap(), None);
    assert_eq!(env.db().stop_tombstone(&fresh).await.unwrap(), Some(0));
}

#[tokio::test]
async fn container_intents_past_the_tombstone_retention_go() {
    let env = TestEnv::new().await;
    let game = env.game("intents");
    for (container, age) in [("c-old", 31), ("c-fresh", 29)] {
        sqlx::query(
            "INSERT INTO container_intents (container_id, kind, game_id, recorded_at) \
             VALUES ($1, 'stop', $2, now() - make_interval(days => $3))",
        )
        .bind(container)
        .bind(game.as_str())
        .bind(age)
        .execute(env.db().pool())
        .await
        .unwrap();
    }
    let counts = env
        .db()
        .prune_history(&RetentionConfig::default(), 1)
        .await
        .unwrap();
    assert_eq!(counts.container_intents, 1, "{counts:?}");
    let kept: Vec<String> = sqlx::query_scalar("SELECT container_id FROM container_intents")
        .fetch_all(env.db().pool())
        .await
        .unwrap();
    assert_eq!(kept, ["c-fresh"]);
}

#[tokio::test]
async fn cleanup_cron_prunes_a_backlog_larger_than_one_batch() {
    let env = TestEnv::new().await;
    let game = env.game("backlog");
    record(&env, &game, "running", 100, "").await;
    let backlog = i32::try_from(PRUNE_BATCH).unwrap() * 2 + 500;
    log_rows(&env, &game, backlog, 100, "success").await;
    log_rows(&env, &game, 1, 1, "success").await;
    let removed: Vec<GameId> = (0..3).map(|i| env.game(&format!("rm{i}"))).collect();
    for g in &removed {
        record(&env, g, "removed", 40, "").await;
    }

    let svc = system_tests::operations(&env.config, &env.infra).unwrap();
    let config: CleanupCronConfig = (&env.config).into();
    let report = cleanup_cron::pass(&svc, &env.infra, &config).await.unwrap();
    assert_eq!(report.pruned.operation_log, u64::try_from(backlog).unwrap());
    assert_eq!(report.pruned.removed_records, 3);
    assert!(report.cleaned.is_empty() && report.failed.is_empty());
    assert_eq!(log_of(&env, &game).await.len(), 1);
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM operation_log WHERE game_id = $1 AND finished_at < now() - interval '2 days'",
            &game
        )
        .await,
        0
    );
}

#[tokio::test]
async fn discovery_reads_one_index_entry_per_game_however_long_its_log() {
    let env = TestEnv::new().await;
    let (long, short) = (env.game("long"), env.game("short"));
    record(&env, &long, "running", 1, "").await;
    record(&env, &short, "running", 1, "").await;
    // Thousands of rows for one game: old failures, then successes, then
    // one recent failure and a latest success.
    log_rows(&env, &long, 1500, 20, "failure").await;
    log_rows(&env, &long, 3000, 10, "success").await;
    log_rows(&env, &long, 1, 0, "failure").await;
    sqlx::query(
        "INSERT INTO operation_log (game_id, op_kind, op_source, outcome, started_at, finished_at) \
         VALUES ($1, 'stop', 'gm_rest', 'success', now(), now())",
    )
    .bind(long.as_str())
    .execute(env.db().pool())
    .await
    .unwrap();
    log_rows(&env, &short, 3, 1, "success").await;
    // The history of other games, so the statistics are a deployment's
    // (many games): with two games in the table PostgreSQL expects every
    // other row to match and may walk the primary key backwards instead.
    sqlx::query(
        "INSERT INTO operation_log (game_id, op_kind, op_source, outcome, started_at, finished_at) \
         SELECT 'other-' || (g % 200), 'start', 'gm_rest', 'success', now(), now() \
         FROM generate_series(1, 600) g",
    )
    .execute(env.db().pool())
    .await
    .unwrap();
    sqlx::query("ANALYZE operation_log")
        .execute(env.db().pool())
        .await
        .unwrap();

    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    let statuses = vec!["running"];
    let plan: Vec<String> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {MONITORING_ROWS}")))
            .bind(&statuses)
            .bind(since)
            .fetch_all(env.db().pool())
            .await
            .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("operation_log_game_idx"), "{plan}");
    assert!(plan.contains("operation_log_game_failure_idx"), "{plan}");
    assert!(!plan.contains("Seq Scan on operation_log"), "{plan}");
    assert!(
        !plan.contains("Bitmap Heap Scan on operation_log"),
        "{plan}"
    );
    // The only sort is of the records (ORDER BY r.game_id), none of a log.
    for line in plan.lines().filter(|l| l.contains("Sort Key")) {
        assert!(!line.contains("o."), "{plan}");
    }
    // Each LATERAL subquery is a Limit directly over its index scan.
    let lines: Vec<&str> = plan.lines().collect();
    for index in ["operation_log_game_idx", "operation_log_game_failure_idx"] {
        let at = lines.iter().position(|l| l.contains(index)).unwrap();
        assert!(lines[at - 1].contains("Limit"), "{index}: {plan}");
    }

    let rows = env
        .db()
        .monitoring_rows(&[RuntimeStatus::Running], since)
        .await
        .unwrap();
    let row = rows.iter().find(|r| r.record.game_id == long).unwrap();
    assert_eq!(row.last_op_kind.as_deref(), Some("stop"));
    assert_eq!(
        row.recent_error_code.as_deref(),
        Some("container_start_failed")
    );
    let row = rows.iter().find(|r| r.record.game_id == short).unwrap();
    assert_eq!(row.recent_error_code, None);
}

#[test]
fn retention_settings_have_safe_defaults_and_errors_name_the_variable() {
    let base = [
        ("RTMANAGER_POSTGRES_PRIMARY_DSN", "postgres://h/db"),
        ("RTMANAGER_REDIS_MASTER_ADDR", "127.0.0.1:6379"),
    ];
    let vars = |extra: &[(&'static str, &'static str)]| {
        base.iter()
            .chain(extra)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    };
    let config = Config::from_vars(vars(&[])).unwrap();
    let day = Duration::from_secs(24 * 3600);
    assert_eq!(config.retention.operation_log, 90 * day);
    assert_eq!(config.retention.removed_records, 30 * day);
    assert_eq!(config.retention.stop_tombstones, 30 * day);
    let set = Config::from_vars(vars(&[("RTMANAGER_OPERATION_LOG_RETENTION", "365d")])).unwrap();
    assert_eq!(set.retention.operation_log, 365 * day);

    for (var, value) in [
        ("RTMANAGER_OPERATION_LOG_RETENTION", "0s"),
        ("RTMANAGER_OPERATION_LOG_RETENTION", "forever"),
        ("RTMANAGER_REMOVED_RECORD_RETENTION", "500years"),
        (
            "RTMANAGER_REMOVED_RECORD_RETENTION",
            "99999999999999999999999d",
        ),
        ("RTMANAGER_STOP_TOMBSTONE_RETENTION", "10m"),
    ] {
        let all = Config::from_vars(vars(&[(var, value)]))
            .unwrap_err()
            .to_string();
        assert!(all.contains(var), "{var}={value}: {all}");
        // cleanup-cron reads the section, so it refuses to start.
        let job = CleanupCronConfig::from_env(&Env::from_vars(vars(&[(var, value)])))
            .unwrap_err()
            .to_string();
        assert!(job.contains(var), "{var}={value}: {job}");
    }
}
