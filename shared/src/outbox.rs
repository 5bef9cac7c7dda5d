//! Durable publishing to Redis streams through a PostgreSQL outbox: the
//! message builders, the relay's rules, and the one way a process runs it.
//!
//! The Go service appended to Redis "best effort": an event was lost whenever
//! Redis was away. Here every stream entry (health event, job result, admin
//! intent, dead letter) is first staged in `outbox` inside the unit of work
//! that changes the state it reports ([`UnitOfWork::stage`]). A [`Relay`]
//! then copies pending rows to Redis and marks them delivered.
//!
//! Order: each game's entries (the message's `game_id`) reach Redis in the
//! order their units of work committed (a per-game sequence the commit
//! assigns). Across games, and for entries without a game, there is no order.
//!
//! Redis away (no connection, loading, failing over, out of memory): the
//! relay retries with the documented backoff and delivers nothing out of
//! order meanwhile. Redis refusing one entry (e.g. `WRONGTYPE`: its stream
//! key holds a string): the row is retried [`PARK_AFTER_REFUSALS`] times in
//! all, then parked; it and its game's later rows wait for an operator's
//! redrive (`rest-gateway redrive-outbox`), other games flow.
//!
//! Exactly once: each `XADD` runs in one script with a delivered marker
//! ([`RedisClient::deliver`]), so a relay that crashes after the `XADD` but
//! before marking the row never publishes it twice. Only one relay delivers at
//! a time (a PostgreSQL advisory lock, [`Database::lock_pending`]).
//!
//! Every running relay, holding the lock or not, counts the backlog in the
//! table every [`BACKLOG_EVERY`] ([`Database::outbox_backlog`]):
//! `rtmanager_outbox_pending`, `rtmanager_outbox_oldest_pending_age_seconds`
//! and `rtmanager_outbox_parked` are the same in every process.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::adapters::postgres::{Database, StoreError, UnitOfWork};
use crate::adapters::{DeliveryError, StreamTrim};
use crate::adapters::{RedisClient, RedisError};
use crate::config::StreamsConfig;
use crate::domain::{
    AdminIntent, EventType, GameId, HealthEvent, HealthSource, JobResult, OutboxMessage,
    SourcedEvent,
};
use crate::liveness::Heartbeat;
use crate::retry;
use crate::telemetry::{steps, EventLabels, Metrics, StreamLabels};

const BATCH: i64 = 256;
/// Idle poll: catches rows committed by another process (or before a crash).
const POLL: Duration = Duration::from_secs(1);
/// How often a running relay deletes delivered rows older than
/// `RTMANAGER_OUTBOX_RETENTION` (also once when it starts, so short-lived
/// processes prune too).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Refusals of one row (Redis answered its `XADD` with an error) before the
/// row is parked: a few, in case its stream key was being replaced.
pub const PARK_AFTER_REFUSALS: i32 = 3;
/// The relay's last delivery attempt when its process stops.
const LAST_PASS: Duration = Duration::from_secs(3);
/// A draining process's pause between failed delivery attempts.
const DRAIN_RETRY: Duration = Duration::from_millis(200);
/// How often a running relay counts the backlog for the metrics: often
/// enough for a scrape, rarely enough that a large backlog counted by every
/// process is no load.
pub const BACKLOG_EVERY: Duration = Duration::from_secs(5);

/// Builds outbox messages, opens the units of work that stage them, and runs
/// the relay that delivers them.
#[derive(Clone)]
pub struct Outbox {
    db: Database,
    streams: StreamsConfig,
    wake: Arc<Notify>,
    metrics: Metrics,
}

impl Outbox {
    pub fn new(db: Database, streams: StreamsConfig, metrics: Metrics) -> Self {
        Self {
            db,
            streams,
            wake: Arc::new(Notify::new()),
            metrics,
        }
    }

    /// A health event on `runtime:health_events`, moving its game's snapshot
    /// and adding it to the game's history as observed by `source`.
    pub fn health(&self, source: HealthSource, event: &HealthEvent) -> OutboxMessage {
        OutboxMessage {
            stream: self.streams.health_events.clone(),
            fields: event.stream_fields(),
            dedupe_key: None,
            health: Some(SourcedEvent {
                source,
                event: event.clone(),
            }),
            game_id: Some(event.game_id.clone()),
        }
    }

    /// [`Self::health`] at most once per `dedupe_key` (e.g. one
    /// `container_oom` per container).
    pub fn health_once(
        &self,
        source: HealthSource,
        event: &HealthEvent,
        dedupe_key: &str,
    ) -> OutboxMessage {
        OutboxMessage {
            dedupe_key: Some(dedupe_key.to_owned()),
            ..self.health(source, event)
        }
    }

    pub fn intent(&self, intent: &AdminIntent) -> OutboxMessage {
        self.intent_message(intent, format!("intent:{}", intent.idempotency_key()))
    }

    /// The intent of the failed operation that `source_ref` (a job entry, a
    /// REST request) asked for: one per request. The wire's idempotency key
    /// holds the attempt time, as the Go service's did, so a request run
    /// again after a crash between its failure and its result would raise a
    /// second one; this dedupe key does not.
    pub fn request_intent(&self, intent: &AdminIntent, source_ref: &str) -> OutboxMessage {
        if source_ref.is_empty() {
            return self.intent(intent);
        }
        let key = format!(
            "intent:{}.{}:{source_ref}",
            intent.notification_type, intent.game_id
        );
        self.intent_message(intent, key)
    }

    fn intent_message(&self, intent: &AdminIntent, dedupe_key: String) -> OutboxMessage {
        OutboxMessage {
            stream: self.streams.notification_intents.clone(),
            fields: intent.stream_fields(),
            dedupe_key: Some(dedupe_key),
            health: None,
            game_id: Some(intent.game_id.clone()),
        }
    }

    /// `job_key` identifies the job entry (stream + entry id): one result each.
    pub fn job_result(&self, result: &JobResult, job_key: &str) -> OutboxMessage {
        OutboxMessage {
            stream: self.streams.job_results.clone(),
            fields: result.stream_fields(),
            dedupe_key: Some(format!("result:{job_key}")),
            health: None,
            // A malformed job's game id may not be one; its result is then
            // ordered by nothing but staging.
            game_id: GameId::parse(&result.game_id).ok(),
        }
    }

    /// A unit of work whose commit wakes the relay and counts the health
    /// events it staged.
    pub async fn begin(&self) -> Result<UnitOfWork, StoreError> {
        let wake = self.wake.clone();
        let metrics = self.metrics.clone();
        Ok(self
            .db
            .begin()
            .await?
            .on_commit(Arc::new(move |staged: &[EventType]| {
                for event_type in staged {
                    metrics
                        .health_events
                        .get_or_create(&EventLabels {
                            event_type: event_type.as_str().into(),
                        })
                        .inc();
                }
                wake.notify_one();
            })))
    }

    /// Stages standalone messages (results, intents, dead letters, events
    /// with no other state) in one unit of work. Returns, per message, whether
    /// it was new (not a dedupe-key repeat).
    pub async fn publish(&self, messages: &[OutboxMessage]) -> Result<Vec<bool>, StoreError> {
        let mut tx = self.begin().await?;
        let mut fresh = Vec::with_capacity(messages.len());
        for m in messages {
            fresh.push(tx.stage(m).await?);
        }
        tx.commit().await?;
        Ok(fresh)
    }

    /// Whether a message with any of these dedupe keys was ever staged.
    pub async fn has_any_key(&self, dedupe_keys: &[String]) -> Result<bool, StoreError> {
        self.db.outbox_has_any_key(dedupe_keys).await
    }

    /// The one way a process runs its relay: alongside `work`. When `work` is
    /// done the relay stops and gets a last delivery attempt (bounded), so a
    /// stopping process leaves nothing it staged undelivered while Redis is up.
    pub async fn with_relay<T>(&self, redis: &RedisClient, work: impl Future<Output = T>) -> T {
        self.with_watched_relay(redis, Heartbeat::detached(), work)
            .await
    }

    /// [`Self::with_relay`], with the relay ticking `heartbeat`: the
    /// gateway's main loop is its relay.
    pub async fn with_watched_relay<T>(
        &self,
        redis: &RedisClient,
        heartbeat: Heartbeat,
        work: impl Future<Output = T>,
    ) -> T {
        let stop = CancellationToken::new();
        let relay = self.relay(redis.clone());
        let mut relay =
            crate::shutdown::AbortOnDrop(tokio::spawn(relay.run_watched(stop.clone(), heartbeat)));
        let output = work.await;
        stop.cancel();
        let _ = tokio::time::timeout(LAST_PASS + Duration::from_secs(2), &mut relay.0).await;
        output
    }

    /// Delivers what is pending until none is left (or another relay holds
    /// the delivery lock, which then delivers it), within `within`: the last
    /// step of a one-shot process. Undelivered entries stay queued for the
    /// next relay, and the error says so.
    pub async fn drain(&self, redis: &RedisClient, within: Duration) -> anyhow::Result<usize> {
        let relay = self.relay(redis.clone());
        let deadline = tokio::time::Instant::now() + within;
        let mut delivered = 0;
        loop {
            match tokio::time::timeout_at(deadline, relay.deliver_pending()).await {
                Ok(Ok(0)) => return Ok(delivered),
                Ok(Ok(n)) => delivered += n,
                Ok(Err(e)) if tokio::time::Instant::now() + DRAIN_RETRY < deadline => {
                    tracing::warn!(error = %e, "outbox delivery failed; retrying");
                    tokio::time::sleep(DRAIN_RETRY).await;
                }
                Ok(Err(e)) => return Err(anyhow::Error::new(e).context(
                    "delivering the outbox to Redis; the entries stay queued for the next relay",
                )),
                Err(_) => anyhow::bail!(
                    "the outbox was not delivered to Redis within RTMANAGER_SHUTDOWN_TIMEOUT ({}); \
                     the entries stay queued for the next relay",
                    humantime::format_duration(within)
                ),
            }
        }
    }

    /// A relay over this outbox (processes run it through [`Self::with_relay`];
    /// tests and one-shot drains drive it directly).
    pub fn relay(&self, redis: RedisClient) -> Relay {
        Relay {
            db: self.db.clone(),
            redis,
            trim: StreamTrim {
                maxlen: self.streams.maxlen,
                min_age: self.streams.min_age,
            },
            retention: self.streams.outbox_retention,
            key_retention: self.streams.dedupe_key_retention,
            wake: self.wake.clone(),
            metrics: self.metrics.clone(),
            instance: tokio::sync::OnceCell::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Redis(#[from] RedisError),
}

/// Copies pending outbox rows to Redis, in order.
pub struct Relay {
    db: Database,
    redis: RedisClient,
    trim: StreamTrim,
    retention: Duration,
    key_retention: Duration,
    wake: Arc<Notify>,
    metrics: Metrics,
    /// `outbox_identity.instance_id`, read once.
    instance: tokio::sync::OnceCell<String>,
}

impl Relay {
    /// Runs until `shutdown`, then makes one last delivery attempt.
    pub async fn run(self, shutdown: CancellationToken) {
        self.run_watched(shutdown, Heartbeat::detached()).await
    }

    /// [`Self::run`], ticking `heartbeat` each round (and while it waits).
    pub async fn run_watched(self, shutdown: CancellationToken, heartbeat: Heartbeat) {
        let mut backoff = retry::backoff();
        let mut last_prune: Option<tokio::time::Instant> = None;
        let mut last_backlog: Option<tokio::time::Instant> = None;
        loop {
            heartbeat.beat().await;
            // Before delivering: Redis away fails the delivery, not the count.
            if last_backlog.is_none_or(|at| at.elapsed() >= BACKLOG_EVERY) {
                last_backlog = Some(tokio::time::Instant::now());
                self.report_backlog().await;
                heartbeat.tick();
            }
            match self.deliver_pending().await {
                Ok(n) => {
                    backoff = retry::backoff();
                    if n as i64 == BATCH {
                        continue;
                    }
                }
                Err(e) => {
                    let wait = retry::next(&mut backoff);
                    self.metrics.outbox_relay_failures.inc();
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "outbox relay failed; retrying");
                    let stopped = heartbeat
                        .idle(async {
                            tokio::select! {
                                _ = shutdown.cancelled() => true,
                                _ = tokio::time::sleep(wait) => false,
                            }
                        })
                        .await;
                    if stopped {
                        return;
                    }
                    continue;
                }
            }
            if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(tokio::time::Instant::now());
                if let Err(e) = self.db.prune_delivered(self.retention).await {
                    tracing::warn!(error = %e, "outbox prune failed");
                }
                if let Err(e) = self.db.prune_dedupe_keys(self.key_retention).await {
                    tracing::warn!(error = %e, "dedupe key prune failed");
                }
            }
            let stopped = heartbeat
                .idle(async {
                    tokio::select! {
                        _ = shutdown.cancelled() => true,
                        _ = self.wake.notified() => false,
                        _ = tokio::time::sleep(POLL) => false,
                    }
                })
                .await;
            if stopped {
                let _ = tokio::time::timeout(LAST_PASS, self.deliver_pending()).await;
                return;
            }
        }
    }

    /// Sets the backlog gauges from a count of the table; PostgreSQL away
    /// leaves them as they were (the relay's failures say so).
    async fn report_backlog(&self) {
        match self.db.outbox_backlog().await {
            Ok(backlog) => {
                self.metrics.outbox_pending.set(backlog.pending);
                self.metrics.outbox_parked.set(backlog.parked);
                self.metrics
                    .outbox_oldest_pending_age
                    .set(backlog.oldest_pending_age.as_secs_f64());
            }
            Err(e) => tracing::debug!(error = %e, "counting the outbox backlog failed"),
        }
    }

    /// Delivers up to one batch; returns how many rows it delivered. A row
    /// Redis refuses is counted (and parked at the [`PARK_AFTER_REFUSALS`]th),
    /// and only its game's later rows wait; Redis being away ends the pass
    /// with an error, everything waiting.
    pub async fn deliver_pending(&self) -> Result<usize, RelayError> {
        let instance = self
            .instance
            .get_or_try_init(|| self.db.outbox_instance())
            .await?;
        let Some(mut batch) = self.db.lock_pending(BATCH).await? else {
            return Ok(0);
        };
        let mut delivered: Vec<i64> = Vec::with_capacity(batch.rows.len());
        let mut held: HashSet<String> = HashSet::new();
        let mut failure = None;
        for row in std::mem::take(&mut batch.rows) {
            if row.game_id.as_ref().is_some_and(|g| held.contains(g)) {
                continue;
            }
            match self
                .redis
                .deliver(instance, row.id, &row.stream, &row.fields, self.trim)
                .await
            {
                Ok(()) => {
                    tracing::debug!(
                        target: steps::TARGET,
                        outbox_id = row.id,
                        stream = %row.stream,
                        game_id = row.game_id.as_deref().unwrap_or(""),
                        delivered_at_us = steps::now_us(),
                        "outbox row delivered"
                    );
                    delivered.push(row.id);
                    self.metrics
                        .outbox_delivered
                        .get_or_create(&StreamLabels { stream: row.stream })
                        .inc();
                }
                Err(DeliveryError::Refused(error)) => {
                    let parked = batch
                        .record_refusal(row.id, &error, PARK_AFTER_REFUSALS)
                        .await?;
                    self.metrics
                        .outbox_refused
                        .get_or_create(&StreamLabels {
                            stream: row.stream.clone(),
                        })
                        .inc();
                    let game = row.game_id.as_deref().unwrap_or("");
                    if parked {
                        let redrive = format!("rest-gateway redrive-outbox --id {}", row.id);
                        tracing::error!(
                            outbox_id = row.id, stream = %row.stream, game_id = game, %error, %redrive,
                            "outbox row parked"
                        );
                    } else {
                        tracing::warn!(outbox_id = row.id, stream = %row.stream, game_id = game, %error, "outbox row refused by Redis; retrying");
                    }
                    // Its game's later rows wait behind it: per-game order holds.
                    if let Some(game) = row.game_id {
                        held.insert(game);
                    }
                }
                Err(DeliveryError::Unavailable(e)) => {
                    // Every later row would fail alike: stop, so order holds.
                    batch.record_failure(row.id, &e.to_string()).await?;
                    failure = Some(e);
                    break;
                }
            }
        }
        // The parked gauge is the backlog count's (every BACKLOG_EVERY), not
        // a second count per batch.
        batch.finish(&delivered).await?;
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(delivered.len()),
        }
    }
}
