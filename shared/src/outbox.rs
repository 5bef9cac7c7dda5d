//! Durable publishing to Redis streams through a PostgreSQL outbox.
//!
//! The Go service appended to Redis "best effort": an event was lost whenever
//! Redis was away. Here every stream entry (health event, job result, admin
//! intent, dead letter) is first committed to `outbox` in the same transaction
//! as the state it reports (e.g. the health snapshot). A [`Relay`] then copies
//! pending rows to Redis in id order and marks them delivered; while Redis is
//! away it retries the oldest row with capped backoff, so nothing is lost or
//! reordered.
//!
//! Exactly once: each XADD runs in a Lua script together with
//! `SET rtmanager:outbox_delivered:{instance}:{id} NX`, so a relay that crashes after the
//! XADD but before marking the row never publishes it twice. Only one relay
//! delivers at a time (a PostgreSQL advisory lock), which keeps the order
//! across processes.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use sqlx::{PgConnection, Row};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::adapters::postgres::{upsert_snapshot, Database, StoreError};
use crate::adapters::redis::RedisClient;
use crate::config::Config;
use crate::domain::{AdminIntent, HealthEvent, JobResult};
use crate::telemetry::{EventLabels, Metrics, StreamLabels};

/// One stream entry waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub stream: String,
    pub fields: Vec<(String, String)>,
    /// At most one row per key (one result per job entry).
    pub dedupe_key: Option<String>,
}

/// Stream names, overridable by `RTMANAGER_*_STREAM`.
#[derive(Debug, Clone)]
pub struct StreamNames {
    pub health_events: String,
    pub job_results: String,
    pub notification_intents: String,
}

impl StreamNames {
    pub fn from_config(config: &Config) -> Self {
        Self {
            health_events: config.health_events_stream.clone(),
            job_results: config.job_results_stream.clone(),
            notification_intents: config.notification_intents_stream.clone(),
        }
    }
}

/// Inserts one message; `Ok(false)` when its dedupe key is already there.
pub async fn enqueue(conn: &mut PgConnection, message: &OutboxMessage) -> Result<bool, StoreError> {
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
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Builds outbox messages and commits them with their state; wakes the relay.
#[derive(Clone)]
pub struct Publisher {
    db: Database,
    streams: StreamNames,
    wake: Arc<Notify>,
    metrics: Metrics,
}

impl Publisher {
    pub fn new(db: Database, streams: StreamNames, metrics: Metrics) -> Self {
        Self {
            db,
            streams,
            wake: Arc::new(Notify::new()),
            metrics,
        }
    }

    pub fn streams(&self) -> &StreamNames {
        &self.streams
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub fn health_message(&self, event: &HealthEvent) -> OutboxMessage {
        OutboxMessage {
            stream: self.streams.health_events.clone(),
            fields: event.stream_fields(),
            dedupe_key: None,
        }
    }

    pub fn intent_message(&self, intent: &AdminIntent) -> OutboxMessage {
        OutboxMessage {
            stream: self.streams.notification_intents.clone(),
            fields: intent.stream_fields(),
            dedupe_key: Some(format!("intent:{}", intent.idempotency_key())),
        }
    }

    /// `job_key` identifies the job entry (stream + entry id): one result each.
    pub fn job_result_message(&self, result: &JobResult, job_key: &str) -> OutboxMessage {
        OutboxMessage {
            stream: self.streams.job_results.clone(),
            fields: result.stream_fields(),
            dedupe_key: Some(format!("result:{job_key}")),
        }
    }

    /// Upserts the snapshot and queues the event, inside the caller's transaction.
    pub async fn stage_health(
        &self,
        conn: &mut PgConnection,
        event: &HealthEvent,
    ) -> Result<(), StoreError> {
        upsert_snapshot(conn, event).await?;
        enqueue(conn, &self.health_message(event)).await?;
        self.metrics
            .health_events
            .get_or_create(&EventLabels {
                event_type: event.details.event_type().as_str().into(),
            })
            .inc();
        Ok(())
    }

    /// [`Self::stage_health`] at most once per `dedupe_key` (e.g. one
    /// `container_oom` per container): `Ok(false)`, with nothing staged, when
    /// an event with that key was queued before. The key is the outbox's
    /// unique `dedupe_key`, so the check commits with the caller's transaction.
    pub async fn stage_health_once(
        &self,
        conn: &mut PgConnection,
        event: &HealthEvent,
        dedupe_key: &str,
    ) -> Result<bool, StoreError> {
        let mut message = self.health_message(event);
        message.dedupe_key = Some(dedupe_key.to_owned());
        if !enqueue(conn, &message).await? {
            return Ok(false);
        }
        upsert_snapshot(conn, event).await?;
        self.metrics
            .health_events
            .get_or_create(&EventLabels {
                event_type: event.details.event_type().as_str().into(),
            })
            .inc();
        Ok(true)
    }

    /// The one health publisher: snapshot + event in one transaction, then relay.
    pub async fn emit_health(&self, event: &HealthEvent) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        self.stage_health(&mut tx, event).await?;
        tx.commit().await?;
        self.wake();
        Ok(())
    }

    /// Commits standalone messages (results, intents, dead letters) together.
    /// Returns, per message, whether it was new (not a dedupe-key repeat).
    pub async fn publish(&self, messages: &[OutboxMessage]) -> Result<Vec<bool>, StoreError> {
        let mut tx = self.db.begin().await?;
        let mut fresh = Vec::with_capacity(messages.len());
        for m in messages {
            fresh.push(enqueue(&mut tx, m).await?);
        }
        tx.commit().await?;
        self.wake();
        Ok(fresh)
    }

    /// Whether a message with any of these dedupe keys was ever queued.
    pub async fn has_any_key(&self, dedupe_keys: &[String]) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM outbox WHERE dedupe_key = ANY($1) LIMIT 1")
            .bind(dedupe_keys)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.is_some())
    }

    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs `work` with a relay alongside; when it is done, the relay gets a
    /// last delivery attempt (bounded) before this returns.
    pub async fn with_relay<T>(
        &self,
        redis: RedisClient,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let stop = CancellationToken::new();
        let mut relay =
            crate::shutdown::AbortOnDrop(tokio::spawn(self.relay(redis).run(stop.clone())));
        let output = work.await;
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut relay.0).await;
        output
    }

    pub fn relay(&self, redis: RedisClient) -> Relay {
        Relay {
            db: self.db.clone(),
            redis,
            wake: self.wake.clone(),
            metrics: self.metrics.clone(),
            instance: tokio::sync::OnceCell::new(),
        }
    }
}

const DELIVER_LUA: &str = r#"
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  local args = {}
  for i = 2, #ARGV do args[#args + 1] = ARGV[i] end
  return redis.call('XADD', KEYS[2], '*', unpack(args))
end
return false"#;

/// Advisory-lock class that, with the schema's hash, serializes the relays of
/// one outbox (schemas sharing a database do not block each other).
const RELAY_LOCK_CLASS: i32 = 0x7274_6d6f;
/// How long a delivered marker stays in Redis; far beyond any crash-restart gap.
const DELIVERED_MARKER_TTL_SECS: u64 = 7 * 24 * 3600;
const BATCH: i64 = 256;
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Idle poll: catches rows committed by another process (or before a crash).
const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("redis: {0}")]
    Redis(String),
}

/// Copies pending outbox rows to Redis, in order.
pub struct Relay {
    db: Database,
    redis: RedisClient,
    wake: Arc<Notify>,
    metrics: Metrics,
    /// `outbox_identity.instance_id`, read once.
    instance: tokio::sync::OnceCell<String>,
}

impl Relay {
    /// Runs until `shutdown`, then makes one last delivery attempt.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut passes: u64 = 0;
        loop {
            match self.deliver_pending().await {
                Ok(n) => {
                    backoff = Duration::from_millis(100);
                    if n as i64 == BATCH {
                        continue;
                    }
                }
                Err(e) => {
                    self.metrics.outbox_relay_failures.inc();
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "outbox relay failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
            passes += 1;
            if passes.is_multiple_of(3600) {
                self.prune().await;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = tokio::time::timeout(Duration::from_secs(3), self.deliver_pending()).await;
                    return;
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Delivers up to one batch; returns how many rows it delivered.
    pub async fn deliver_pending(&self) -> Result<usize, RelayError> {
        let instance = self
            .instance
            .get_or_try_init(|| async {
                sqlx::query_scalar::<_, String>("SELECT instance_id FROM outbox_identity")
                    .fetch_one(self.db.pool())
                    .await
                    .map_err(StoreError::from)
            })
            .await?;
        let mut tx = self.db.begin().await?;
        let locked: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_xact_lock($1::int, hashtext(current_schema()))",
        )
        .bind(RELAY_LOCK_CLASS)
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        if !locked {
            return Ok(0);
        }
        let rows = sqlx::query(
            "SELECT id, stream, fields FROM outbox WHERE delivered_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        self.metrics.outbox_pending.set(rows.len() as i64);
        let mut delivered: Vec<i64> = Vec::with_capacity(rows.len());
        let mut failure = None;
        let mut conn = self.redis.manager();
        for row in &rows {
            let id: i64 = row.try_get("id").map_err(StoreError::from)?;
            let stream: String = row.try_get("stream").map_err(StoreError::from)?;
            let sqlx::types::Json(fields): sqlx::types::Json<Vec<[String; 2]>> =
                row.try_get("fields").map_err(StoreError::from)?;
            let deliver = Script::new(DELIVER_LUA);
            let mut script = deliver.prepare_invoke();
            script
                .key(format!("rtmanager:outbox_delivered:{instance}:{id}"))
                .key(&stream)
                .arg(DELIVERED_MARKER_TTL_SECS);
            for [k, v] in &fields {
                script.arg(k).arg(v);
            }
            match script.invoke_async::<redis::Value>(&mut conn).await {
                Ok(_) => {
                    delivered.push(id);
                    self.metrics
                        .outbox_delivered
                        .get_or_create(&StreamLabels { stream })
                        .inc();
                }
                Err(e) => {
                    sqlx::query(
                        "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
                    )
                    .bind(id)
                    .bind(e.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from)?;
                    failure = Some(RelayError::Redis(e.to_string()));
                    break;
                }
            }
        }
        if !delivered.is_empty() {
            sqlx::query("UPDATE outbox SET delivered_at = now() WHERE id = ANY($1)")
                .bind(&delivered)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from)?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        match failure {
            Some(e) => Err(e),
            None => Ok(delivered.len()),
        }
    }

    async fn prune(&self) {
        let pruned =
            sqlx::query("DELETE FROM outbox WHERE delivered_at < now() - interval '7 days'")
                .execute(self.db.pool())
                .await;
        if let Err(e) = pruned {
            tracing::warn!(error = %e, "outbox prune failed");
        }
    }
}
