//! The `outbox` table: staging entries inside a unit of work, and the relay's
//! side (lock, pending batch, delivered marks, prune).

use std::time::Duration;

use sqlx::{Postgres, Row, Transaction};

use super::{Database, StoreError, UnitOfWork};
use crate::domain::OutboxMessage;

/// Advisory-lock class that, with the schema's hash, serializes the relays of
/// one outbox (schemas sharing a database do not block each other).
const RELAY_LOCK_CLASS: i32 = 0x7274_6d6f;

impl UnitOfWork {
    /// The one staging verb: queues `message` (and moves its health snapshot
    /// forward) in this unit of work. `Ok(false)`, with nothing staged, when a
    /// message with the same dedupe key was staged before; the key is the
    /// outbox's unique `dedupe_key`, so the check commits with the rest.
    pub async fn stage(&mut self, message: &OutboxMessage) -> Result<bool, StoreError> {
        let fields: Vec<[&str; 2]> = message
            .fields
            .iter()
            .map(|(k, v)| [k.as_str(), v.as_str()])
            .collect();
        let done = sqlx::query(
            "INSERT INTO outbox (stream, fields, dedupe_key) VALUES ($1, $2, $3) \
             ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind(&message.stream)
        .bind(sqlx::types::Json(fields))
        .bind(&message.dedupe_key)
        .execute(self.conn())
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        if let Some(event) = &message.snapshot {
            self.upsert_snapshot(event).await?;
            self.staged.push(event.event_type());
        }
        Ok(true)
    }
}

/// One undelivered outbox row.
#[derive(Debug, Clone)]
pub struct PendingRow {
    pub id: i64,
    pub stream: String,
    pub fields: Vec<(String, String)>,
}

/// The oldest pending rows, locked for one relay: the transaction holds the
/// outbox's delivery lock until [`RelayBatch::finish`].
pub struct RelayBatch {
    tx: Transaction<'static, Postgres>,
    pub rows: Vec<PendingRow>,
}

impl Database {
    /// Whether a message with any of these dedupe keys was ever staged.
    pub async fn outbox_has_any_key(&self, dedupe_keys: &[String]) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM outbox WHERE dedupe_key = ANY($1) LIMIT 1")
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

    /// Up to `limit` pending rows in id order, or `None` when another relay
    /// holds the delivery lock (it delivers them, in order).
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
        let rows = sqlx::query(
            "SELECT id, stream, fields FROM outbox WHERE delivered_at IS NULL ORDER BY id LIMIT $1",
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
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(Some(RelayBatch { tx, rows }))
    }

    /// Deletes rows delivered longer than `age` ago.
    pub async fn prune_delivered(&self, age: Duration) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM outbox WHERE delivered_at < now() - make_interval(secs => $1)",
        )
        .bind(age.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

impl RelayBatch {
    /// Counts a failed delivery attempt on the row.
    pub async fn record_failure(&mut self, id: i64, error: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1")
            .bind(id)
            .bind(error)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
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
