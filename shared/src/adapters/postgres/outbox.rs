//! The `outbox` table: staging entries inside a unit of work (with their
//! dedupe keys in `outbox_keys` and their place in their game's commit order
//! from `outbox_game_seq`), and the relay's side (lock, pending batch,
//! delivered marks, parking, redrive, prune).

use std::time::Duration;

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Row, Transaction};

use super::health_history::APPEND_HISTORY;
use super::snapshots::UPSERT_SNAPSHOT;
use super::{Database, StoreError, UnitOfWork};
use crate::domain::{OutboxMessage, SnapshotStatus};

/// Stages a health event: its game's snapshot ([`UPSERT_SNAPSHOT`], `$1`-`$6`),
/// its history row ([`APPEND_HISTORY`], with `$7` source and `$8` dedupe
/// key) and its outbox row (`$9` stream, `$10` fields, `$8`, `$11` ordering
/// key), returning the row's id. The parts see the same snapshot and touch
/// different tables, so one statement does what three did in turn.
static STAGE_HEALTH: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH snapshot AS ({UPSERT_SNAPSHOT}), history AS ({APPEND_HISTORY}) \
         INSERT INTO outbox (stream, fields, dedupe_key, game_id) \
         VALUES ($9, $10, $8, $11) RETURNING id"
    )
});

/// Advisory-lock class that, with the schema's hash, serializes the relays of
/// one outbox (schemas sharing a database do not block each other).
const RELAY_LOCK_CLASS: i32 = 0x7274_6d6f;

impl UnitOfWork {
    /// The one staging verb: queues `message` (and, for a health event, moves
    /// its game's snapshot forward and adds it to the game's history) in this
    /// unit of work. `Ok(false)`, with nothing staged, when a
    /// message with the same dedupe key was staged before; the key is the
    /// primary key of `outbox_keys`, which outlives the row (the prune keeps
    /// it), so the check commits with the rest and holds forever.
    pub async fn stage(&mut self, message: &OutboxMessage) -> Result<bool, StoreError> {
        if let Some(key) = &message.dedupe_key {
            let done = sqlx::query(
                "INSERT INTO outbox_keys (dedupe_key) VALUES ($1) ON CONFLICT (dedupe_key) DO NOTHING",
            )
            .bind(key)
            .execute(self.conn())
            .await?;
            if done.rows_affected() != 1 {
                return Ok(false);
            }
        }
        let fields: Vec<[&str; 2]> = message
            .fields
            .iter()
            .map(|(k, v)| [k.as_str(), v.as_str()])
            .collect();
        let game_id = message.game_id.as_ref().map(|g| g.as_str());
        let id: i64 = match &message.health {
            None => {
                sqlx::query_scalar(
                    "INSERT INTO outbox (stream, fields, dedupe_key, game_id) \
                     VALUES ($1, $2, $3, $4) RETURNING id",
                )
                .bind(&message.stream)
                .bind(sqlx::types::Json(fields))
                .bind(&message.dedupe_key)
                .bind(game_id)
                .fetch_one(self.conn())
                .await?
            }
            // The row, the game's snapshot and its history row in one
            // statement: one round trip instead of three.
            Some(health) => {
                let event = &health.event;
                let occurred_at: DateTime<Utc> =
                    DateTime::from_timestamp_millis(event.occurred_at_ms).ok_or_else(|| {
                        StoreError::Corrupt(format!("occurred_at_ms {}", event.occurred_at_ms))
                    })?;
                let event_type = event.details.event_type();
                sqlx::query_scalar(STAGE_HEALTH.as_str())
                    .bind(event.game_id.as_str())
                    .bind(&event.container_id)
                    .bind(SnapshotStatus::of(event_type).as_str())
                    .bind(event_type.as_str())
                    .bind(sqlx::types::Json(event.details.to_json()))
                    .bind(occurred_at)
                    .bind(health.source.as_str())
                    .bind(&message.dedupe_key)
                    .bind(&message.stream)
                    .bind(sqlx::types::Json(fields))
                    .bind(game_id)
                    .fetch_one(self.conn())
                    .await?
            }
        };
        if let Some(game) = &message.game_id {
            self.ordered.push((game.clone(), id));
        }
        if let Some(health) = &message.health {
            self.staged.push(health.event.event_type());
        }
        Ok(true)
    }

    /// Gives the rows staged with an ordering key their `game_seq`, right
    /// before the commit: the game's `outbox_game_seq` row stays locked until
    /// the commit, so a unit of work for the same game committing later gets
    /// higher numbers, and `game_seq` order is commit order. (The outbox id is
    /// taken at staging and is not.) Games are taken in sorted order so two
    /// units of work staging for the same games never deadlock.
    pub(super) async fn order_staged(&mut self) -> Result<(), StoreError> {
        let mut staged = std::mem::take(&mut self.ordered);
        // Stable: each game's rows keep their staging order.
        staged.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        for rows in staged.chunk_by(|a, b| a.0 == b.0) {
            let ids: Vec<i64> = rows.iter().map(|(_, id)| *id).collect();
            // The game's counter moved on by the rows' count and the rows
            // numbered below it, in one statement (one round trip).
            sqlx::query(
                "WITH seq AS ( \
                   INSERT INTO outbox_game_seq (game_id, last_seq) VALUES ($1, $2) \
                   ON CONFLICT (game_id) DO UPDATE SET last_seq = outbox_game_seq.last_seq + $2 \
                   RETURNING last_seq) \
                 UPDATE outbox SET game_seq = seq.last_seq - $2 + u.ord \
                 FROM seq, unnest($3::bigint[]) WITH ORDINALITY AS u(id, ord) \
                 WHERE outbox.id = u.id",
            )
            .bind(rows[0].0.as_str())
            .bind(ids.len() as i64)
            .bind(&ids)
            .execute(self.conn())
            .await?;
        }
        Ok(())
    }
}

/// One undelivered outbox row.
#[derive(Debug, Clone)]
pub struct PendingRow {
    pub id: i64,
    pub stream: String,
    pub fields: Vec<(String, String)>,
    /// The ordering key: a refused row holds back this game's later rows.
    pub game_id: Option<String>,
}

/// The pending rows next in line, locked for one relay: the transaction holds
/// the outbox's delivery lock until [`RelayBatch::finish`].
pub struct RelayBatch {
    tx: Transaction<'static, Postgres>,
    pub rows: Vec<PendingRow>,
}

/// What the outbox holds undelivered, counted: what every relay reports,
/// whether or not it holds the delivery lock, so every process agrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutboxBacklog {
    /// Rows neither delivered nor parked (including those waiting behind
    /// their game's parked row).
    pub pending: i64,
    /// Age of the oldest of them, by PostgreSQL's clock; zero when none.
    pub oldest_pending_age: Duration,
    /// Rows parked, waiting for a redrive.
    pub parked: i64,
}

/// Which parked rows `rest-gateway redrive-outbox` releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redrive {
    All,
    Id(i64),
}

impl Database {
    /// Whether a message with any of these dedupe keys was ever staged.
    pub async fn outbox_has_any_key(&self, dedupe_keys: &[String]) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM outbox_keys WHERE dedupe_key = ANY($1) LIMIT 1")
            .bind(dedupe_keys)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// `outbox_identity.instance_id`: names this outbox in Redis.
    pub async fn outbox_instance(&self) -> Result<String, StoreError> {
        Ok(
            sqlx::query_scalar::<_, String>("SELECT instance_id FROM outbox_identity")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The undelivered rows, counted (one scan of the pending index).
    pub async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError> {
        let row = sqlx::query(
            "SELECT count(*) FILTER (WHERE parked_at IS NULL) AS pending, \
               count(*) FILTER (WHERE parked_at IS NOT NULL) AS parked, \
               coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE parked_at IS NULL)), 0)::float8 AS age \
             FROM outbox WHERE delivered_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        let age: f64 = row.try_get("age")?;
        Ok(OutboxBacklog {
            pending: row.try_get("pending")?,
            parked: row.try_get("parked")?,
            oldest_pending_age: Duration::from_secs_f64(age.max(0.0)),
        })
    }

    /// Up to `limit` pending rows, or `None` when another relay holds the
    /// delivery lock (it delivers them). Each game's rows come in `game_seq`
    /// (commit) order; rows without a game in id order. A game with a parked
    /// row has nothing pending until it is redriven; rows without a game are
    /// never held.
    pub async fn lock_pending(&self, limit: i64) -> Result<Option<RelayBatch>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let locked: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_xact_lock($1::int, hashtext(current_schema()))",
        )
        .bind(RELAY_LOCK_CLASS)
        .fetch_one(&mut *tx)
        .await?;
        if !locked {
            return Ok(None);
        }
        // Each game's rows fill the places of its pending ids, taken in id
        // order, in game_seq order: where commit order matches id order (the
        // usual case) this is id order, as before; where a later-committed
        // row took a lower id, the two swap places. A prefix of this order
        // is a prefix of every game's commit order.
        let rows = sqlx::query(
            "WITH pending AS ( \
               SELECT o.id, o.stream, o.fields, o.game_id, \
                 row_number() OVER (PARTITION BY o.game_id ORDER BY o.game_seq, o.id) AS by_seq, \
                 row_number() OVER (PARTITION BY o.game_id ORDER BY o.id) AS by_id \
               FROM outbox o WHERE o.delivered_at IS NULL AND o.parked_at IS NULL \
                 AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.game_id = o.game_id \
                   AND p.parked_at IS NOT NULL AND p.delivered_at IS NULL) \
             ) \
             SELECT r.id, r.stream, r.fields, r.game_id FROM pending r JOIN pending place \
               ON coalesce(place.game_id, '') = coalesce(r.game_id, '') AND place.by_id = r.by_seq \
             ORDER BY place.id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let rows = rows
            .iter()
            .map(|row| {
                let sqlx::types::Json(fields): sqlx::types::Json<Vec<[String; 2]>> =
                    row.try_get("fields")?;
                Ok(PendingRow {
                    id: row.try_get("id")?,
                    stream: row.try_get("stream")?,
                    fields: fields.into_iter().map(|[k, v]| (k, v)).collect(),
                    game_id: row.try_get("game_id")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(Some(RelayBatch { tx, rows }))
    }

    /// Deletes rows delivered longer than `age` ago. Their dedupe keys stay
    /// in `outbox_keys` (see [`Self::prune_dedupe_keys`]): a job entry
    /// redelivered after its result row is gone is still answered once.
    pub async fn prune_delivered(&self, age: Duration) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM outbox WHERE delivered_at < now() - make_interval(secs => $1)",
        )
        .bind(age.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Deletes dedupe keys staged longer than `retention` plus a day ago, in
    /// batches (a first prune after an upgrade may find many). The day is a
    /// margin for the clocks of the consumers, which never run an entry
    /// older than `retention` by their own clock: a key is staged after its
    /// entry was written, so while the entry can still be run, its key is
    /// still here.
    pub async fn prune_dedupe_keys(&self, retention: Duration) -> Result<u64, StoreError> {
        const BATCH: i64 = 10_000;
        let age = retention + Duration::from_secs(24 * 3600);
        let mut deleted = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM outbox_keys WHERE dedupe_key IN ( \
                   SELECT dedupe_key FROM outbox_keys \
                   WHERE staged_at < now() - make_interval(secs => $1) LIMIT $2)",
            )
            .bind(age.as_secs_f64())
            .bind(BATCH)
            .execute(&self.pool)
            .await?;
            deleted += done.rows_affected();
            if done.rows_affected() < BATCH as u64 {
                return Ok(deleted);
            }
        }
    }

    /// Releases parked rows for the relay (after the cause was fixed), with
    /// their refusal count reset; returns the ids released.
    pub async fn redrive_outbox(&self, which: Redrive) -> Result<Vec<i64>, StoreError> {
        let id = match which {
            Redrive::All => None,
            Redrive::Id(id) => Some(id),
        };
        Ok(sqlx::query_scalar(
            "UPDATE outbox SET parked_at = NULL, refusals = 0 \
             WHERE parked_at IS NOT NULL AND delivered_at IS NULL AND ($1::bigint IS NULL OR id = $1) \
             RETURNING id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }
}

impl RelayBatch {
    /// Counts a failed delivery attempt on the row (Redis away: no refusal).
    pub async fn record_failure(&mut self, id: i64, error: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1")
            .bind(id)
            .bind(error)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Counts a refusal of the row and parks it at the `park_after`th;
    /// returns whether it is now parked.
    pub async fn record_refusal(
        &mut self,
        id: i64,
        error: &str,
        park_after: i32,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(
            "UPDATE outbox SET attempts = attempts + 1, refusals = refusals + 1, last_error = $2, \
               parked_at = CASE WHEN refusals + 1 >= $3 THEN now() END \
             WHERE id = $1 RETURNING parked_at IS NOT NULL",
        )
        .bind(id)
        .bind(error)
        .bind(park_after)
        .fetch_one(&mut *self.tx)
        .await?)
    }

    /// Marks `delivered` and releases the delivery lock.
    pub async fn finish(mut self, delivered: &[i64]) -> Result<(), StoreError> {
        if !delivered.is_empty() {
            sqlx::query("UPDATE outbox SET delivered_at = now() WHERE id = ANY($1)")
                .bind(delivered)
                .execute(&mut *self.tx)
                .await?;
        }
        self.tx.commit().await?;
        Ok(())
    }
}
