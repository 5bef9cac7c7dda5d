//! The end-to-end accounting of a run: what was committed in PostgreSQL,
//! what reached Redis, and what Docker runs.

use std::collections::BTreeMap;

use shared::domain::labels::LABEL_GAME_ID;
use shared::domain::{GameId, RuntimeStatus};
use system_tests::TestEnv;

use super::RECOVERY;

/// A stream entry's fields, ordered, so equal entries compare equal.
pub type Fields = BTreeMap<String, String>;

/// An outbox row's `fields`: a JSON array of `[name, value]` pairs.
type RowFields = sqlx::types::Json<Vec<(String, String)>>;

async fn xrange(env: &TestEnv, stream: &str) -> Option<Vec<Fields>> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut env.redis().manager())
        .await
        .ok()?;
    Some(
        reply
            .ids
            .iter()
            .map(|e| {
                shared::adapters::redis::entry_fields(&e.map)
                    .into_iter()
                    .collect()
            })
            .collect(),
    )
}

/// What reached Redis on the results, health and notification-intent
/// streams (over one or more Redis lifetimes).
#[derive(Debug, Default)]
pub struct Delivered {
    pub results: Vec<Fields>,
    pub health: Vec<Fields>,
    pub intents: Vec<Fields>,
}

impl Delivered {
    /// The three streams as they are now.
    pub async fn read(env: &TestEnv) -> Self {
        env.eventually("the results and health streams", RECOVERY, || {
            Self::try_read(env)
        })
        .await
    }

    /// [`Self::read`], or `None` when Redis does not answer (the test's own
    /// connection fails once after a restart, while it reconnects).
    pub async fn try_read(env: &TestEnv) -> Option<Self> {
        let streams = &env.config.common.streams;
        Some(Self {
            results: xrange(env, &streams.job_results).await?,
            health: xrange(env, &streams.health_events).await?,
            intents: xrange(env, &streams.notification_intents).await?,
        })
    }

    pub fn extend(&mut self, other: Self) {
        self.results.extend(other.results);
        self.health.extend(other.health);
        self.intents.extend(other.intents);
    }

    /// Health events per (game, event type).
    pub fn health_counts(&self) -> BTreeMap<(String, String), usize> {
        let mut counts = BTreeMap::new();
        for f in &self.health {
            *counts
                .entry((f["game_id"].clone(), f["event_type"].clone()))
                .or_default() += 1;
        }
        counts
    }
}

/// Nothing committed is lost or doubled: the outbox has no pending or parked
/// row, and its rows of the results, health and intent streams are exactly
/// what `delivered` holds, each once.
pub async fn assert_outbox_delivered_once(env: &TestEnv, delivered: &Delivered) {
    let (pending, parked): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE delivered_at IS NULL), count(*) FILTER (WHERE parked_at IS NOT NULL) FROM outbox",
    )
    .fetch_one(env.db().pool())
    .await
    .expect("outbox counts");
    assert_eq!((pending, parked), (0, 0), "outbox rows pending, parked");
    let streams = &env.config.common.streams;
    for (stream, entries) in [
        (&streams.job_results, &delivered.results),
        (&streams.health_events, &delivered.health),
        (&streams.notification_intents, &delivered.intents),
    ] {
        let rows: Vec<RowFields> =
            sqlx::query_scalar("SELECT fields FROM outbox WHERE stream = $1")
                .bind(stream)
                .fetch_all(env.db().pool())
                .await
                .expect("outbox rows");
        let mut committed: Vec<Fields> = rows
            .into_iter()
            .map(|f| f.0.into_iter().collect())
            .collect();
        let mut seen = entries.clone();
        committed.sort();
        seen.sort();
        assert_eq!(seen, committed, "{stream}: on Redis vs committed");
    }
}

/// The health events of the run are exactly `container_started` once per
/// successful start (per the operation log), plus `extra` once each, plus
/// `maybe` at most once each; nothing else.
pub async fn assert_health_events(
    env: &TestEnv,
    delivered: &Delivered,
    extra: &[(&GameId, &str)],
    maybe: &[(&GameId, &str)],
) {
    let starts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT game_id, count(*) FROM operation_log WHERE op_kind = 'start' AND outcome = 'success' AND error_code = '' GROUP BY 1",
    )
    .fetch_all(env.db().pool())
    .await
    .expect("operation_log");
    let mut expected: BTreeMap<(String, String), usize> = starts
        .into_iter()
        .map(|(g, n)| ((g, "container_started".to_owned()), n as usize))
        .collect();
    for (game, event_type) in extra {
        *expected
            .entry((game.to_string(), (*event_type).to_owned()))
            .or_default() += 1;
    }
    let mut counts = delivered.health_counts();
    for (game, event_type) in maybe {
        let key = (game.to_string(), (*event_type).to_owned());
        let seen = counts.remove(&key).unwrap_or(0);
        assert!(seen <= 1, "{key:?} at most once: {seen}");
    }
    assert_eq!(counts, expected, "health events per game");
    assert!(
        expected.values().all(|&n| n == 1),
        "each game started once: {expected:?}"
    );
}

/// Docker agrees with the records: a game without a record has no
/// container; a running (stopped) record has exactly one container, its
/// current one, running (not running: exited, or never started).
pub async fn assert_docker_agrees(env: &TestEnv, games: &[GameId]) {
    for game in games {
        let listed = env.docker(&[
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            &format!("label={LABEL_GAME_ID}={game}"),
            "--format",
            "{{.ID}} {{.State}}",
        ]);
        let containers: Vec<(&str, &str)> =
            listed.lines().filter_map(|l| l.split_once(' ')).collect();
        let record = env.db().get_record(game).await.expect("record read");
        match record {
            None => assert_eq!(containers, [], "{game} has no record"),
            Some(r) => {
                let current = r.current_container_id.as_deref().unwrap_or("-");
                let ids: Vec<&str> = containers.iter().map(|(id, _)| *id).collect();
                assert_eq!(ids, [current], "{game}: one container, the current one");
                let running = containers[0].1 == "running";
                match r.status {
                    RuntimeStatus::Running => assert!(running, "{game}: {containers:?}"),
                    RuntimeStatus::Stopped => assert!(!running, "{game}: {containers:?}"),
                    RuntimeStatus::Removed => panic!("{game} removed: nothing here removes"),
                }
            }
        }
    }
}
