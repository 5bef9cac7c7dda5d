//! A job-stream consumer built on a Redis consumer group.
//!
//! The Go service read its job streams with one plain `XREAD` and could not
//! scale out. Here every instance joins one consumer group:
//! - up to `concurrency` entries are in flight at once;
//! - an entry is acked only after its one result is committed to the outbox
//!   (keyed by stream and entry id, so a retry never publishes a second one);
//! - in-flight entries are kept fresh (`XCLAIM … JUSTID`) so no one steals
//!   them, and entries of a crashed consumer are reclaimed (`XAUTOCLAIM`) after
//!   `reclaim_idle`; a reclaimer that finds the game's lease held leaves the
//!   entry pending, because its first owner may still be working on it;
//! - a malformed entry is copied to the dead-letter stream with its reason,
//!   answered with an `invalid_request` result when a game id can be read, and
//!   acked: it never blocks the loop;
//! - the last acked entry id is kept in PostgreSQL, and a group Redis lost
//!   (`NOGROUP`: a `FLUSHALL`, a failover to an empty replica) is recreated
//!   just after it: entry ids are times, so entries written after the loss
//!   are newer, and one answered before it is skipped by its result's key;
//! - each reclaim round trims the entries every group is done with and
//!   removes consumers idle past `idle_remove_after` with nothing pending
//!   (one is left by every pod name), so neither grows without bound.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::adapters::postgres::Database;
use crate::adapters::{ConsumerGroup, LeaseStore, RedisClient, RedisError, StreamEntry};
use crate::domain::{GameId, JobResult, OutboxMessage};
use crate::outbox::Outbox;
use crate::retry;
use crate::shutdown::AbortOnDrop;
use crate::telemetry::{Metrics, StreamLabels};

/// What became of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobDisposition {
    /// Processed: publish this result, then ack.
    Done(JobResult),
    /// Cannot be processed: dead-letter it (and answer when a game id is known).
    Malformed {
        reason: String,
        result: Option<JobResult>,
    },
}

impl From<crate::domain::MalformedJob> for JobDisposition {
    /// Dead-letter it, and answer `invalid_request` when a game id is readable.
    fn from(malformed: crate::domain::MalformedJob) -> Self {
        Self::Malformed {
            result: malformed
                .game_id
                .as_deref()
                .map(|g| JobResult::malformed(g, &malformed.reason)),
            reason: malformed.reason,
        }
    }
}

/// The business side of a consumer (start-job and stop-job each have one).
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// The game an entry is about, for the reclaim lease check: its
    /// `game_id` field (every job stream's contract has one).
    fn game_id(&self, fields: &HashMap<String, String>) -> Option<GameId> {
        fields.get("game_id").and_then(|g| GameId::parse(g).ok())
    }
    async fn handle(&self, entry_id: &str, fields: &HashMap<String, String>) -> JobDisposition;
}

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub stream: String,
    pub dead_letter_stream: String,
    pub group: String,
    pub group_start_id: String,
    pub consumer: String,
    pub concurrency: usize,
    pub block: Duration,
    pub reclaim_idle: Duration,
    /// Other consumers idle this long with nothing pending are removed.
    pub idle_remove_after: Duration,
    pub shutdown_timeout: Duration,
}

impl ConsumerSettings {
    /// The settings of a consumer of `consumer.stream`; dead letters go to
    /// `<stream>:dead`.
    pub fn new(
        consumer: &crate::config::ConsumerConfig,
        process: &crate::config::ProcessConfig,
    ) -> Self {
        Self {
            stream: consumer.stream.clone(),
            dead_letter_stream: format!("{}:dead", consumer.stream),
            group: consumer.group.clone(),
            group_start_id: consumer.group_start_id.clone(),
            consumer: process.instance.clone(),
            concurrency: consumer.concurrency,
            block: consumer.block,
            reclaim_idle: consumer.reclaim_idle,
            idle_remove_after: consumer.idle_remove_after,
            shutdown_timeout: process.shutdown_timeout,
        }
    }
}

pub struct StreamConsumer<H> {
    group: ConsumerGroup,
    /// Where the last acked entry id is kept.
    db: Database,
    outbox: Outbox,
    leases: LeaseStore,
    handler: Arc<H>,
    settings: ConsumerSettings,
    metrics: Metrics,
    in_flight: Arc<Mutex<HashSet<String>>>,
}

impl<H: JobHandler> StreamConsumer<H> {
    #[allow(clippy::too_many_arguments)] // the consumer's collaborators, each once
    pub fn new(
        redis: RedisClient,
        db: Database,
        outbox: Outbox,
        leases: LeaseStore,
        handler: H,
        settings: ConsumerSettings,
        metrics: Metrics,
    ) -> Self {
        Self {
            group: ConsumerGroup::new(redis, &settings.stream, &settings.group, &settings.consumer),
            db,
            outbox,
            leases,
            handler: Arc::new(handler),
            settings,
            metrics,
            in_flight: Arc::default(),
        }
    }

    /// Creates the group if needed, creating the stream: just after the last
    /// entry it acked when it ever acked one (Redis lost it), else at
    /// `group_start_id` (its first creation). `lost`: Redis just answered
    /// `NOGROUP`, so a creation now is a recreation even without an offset.
    pub async fn ensure_group(&self, lost: bool) -> anyhow::Result<()> {
        let (stream, group) = (&self.settings.stream, &self.settings.group);
        let acked = self.db.stream_offset(stream, group).await?;
        let from = acked
            .clone()
            .unwrap_or_else(|| self.settings.group_start_id.clone());
        // Concurrent callers race here; only the one that creates it counts.
        if self.group.ensure(&from).await? && (lost || acked.is_some()) {
            tracing::warn!(stream = %stream, group = %group, from_id = %from, "consumer group recreated");
            self.metrics
                .consumer_group_recreations
                .get_or_create(&self.labels())
                .inc();
        }
        Ok(())
    }

    fn labels(&self) -> StreamLabels {
        StreamLabels {
            stream: self.settings.stream.clone(),
        }
    }

    /// After any failed group command: a `NOGROUP` is not cured by waiting,
    /// so the group is recreated now; other errors are left to the caller.
    async fn recover(&self, error: &RedisError) {
        if !error.is_no_group() {
            return;
        }
        if let Err(e) = self.ensure_group(true).await {
            tracing::warn!(error = %e, "recreating the lost consumer group failed; retrying");
        }
    }

    /// Keeps the stream and the group bounded (see the module doc). Run each
    /// reclaim round: that is when a consumer already looks at what is
    /// stalled, and its period (half of `reclaim_idle`) keeps the stream to a
    /// minute or so of answered entries for two cheap commands per round.
    async fn tidy(&self) {
        if let Err(e) = self.group.trim_done().await {
            self.recover(&e).await;
            tracing::warn!(error = %e, "trimming the job stream failed");
        }
        match self
            .group
            .remove_idle_consumers(self.settings.idle_remove_after)
            .await
        {
            Ok(removed) if removed.is_empty() => {}
            Ok(removed) => tracing::info!(consumers = ?removed, "removed idle consumers"),
            Err(e) => {
                self.recover(&e).await;
                tracing::warn!(error = %e, "removing idle consumers failed");
            }
        }
    }

    /// Consumes until `shutdown`; then finishes in-flight entries within the
    /// shutdown timeout and releases this process's leases.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.ensure_group(false).await?;
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(this.settings.concurrency));
        let mut tasks: JoinSet<()> = JoinSet::new();
        // Dies with this future: a cancelled consumer must not keep its
        // abandoned entries fresh, or no one could ever reclaim them.
        let keepalive = AbortOnDrop(tokio::spawn(this.clone().keep_fresh(shutdown.clone())));
        let mut reader = this.group.reader(this.settings.block);
        let mut backoff = retry::backoff();
        let mut last_reclaim = tokio::time::Instant::now() - this.settings.reclaim_idle;
        tracing::info!(stream = %this.settings.stream, group = %this.settings.group, consumer = %this.settings.consumer, "consuming");

        while !shutdown.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            let free = permits.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tasks.join_next() => continue,
                }
            }
            let batch = if last_reclaim.elapsed() >= this.settings.reclaim_idle / 2 {
                last_reclaim = tokio::time::Instant::now();
                this.tidy().await;
                this.reclaim(free).await.map(|e| (e, true))
            } else {
                Ok((Vec::new(), false))
            };
            let (entries, reclaimed) = match batch {
                Ok((entries, true)) if !entries.is_empty() => (entries, true),
                Ok(_) => {
                    let read = tokio::select! {
                        _ = shutdown.cancelled() => break,
                        read = reader.read_new(free) => read,
                    };
                    match read {
                        Ok(entries) => (entries, false),
                        Err(e) => {
                            // A lost group is recreated now; the first wait
                            // is short, and a group that keeps vanishing
                            // cannot make this loop spin.
                            this.recover(&e).await;
                            let wait = retry::next(&mut backoff);
                            tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "reading the job stream failed");
                            tokio::select! {
                                _ = shutdown.cancelled() => break,
                                _ = tokio::time::sleep(wait) => {}
                            }
                            continue;
                        }
                    }
                }
                Err(e) => {
                    this.recover(&e).await;
                    tracing::warn!(error = %e, "reclaiming stalled entries failed");
                    (Vec::new(), false)
                }
            };
            backoff = retry::backoff();
            for StreamEntry { id, fields } in entries {
                let permit = permits.clone().acquire_owned().await?;
                this.in_flight
                    .lock()
                    .expect("in-flight set poisoned")
                    .insert(id.clone());
                this.metrics.jobs_in_flight.inc();
                let worker = this.clone();
                tasks.spawn(async move {
                    worker.process(&id, &fields, reclaimed).await;
                    worker
                        .in_flight
                        .lock()
                        .expect("in-flight set poisoned")
                        .remove(&id);
                    worker.metrics.jobs_in_flight.dec();
                    drop(permit);
                });
            }
        }

        while tasks.try_join_next().is_some() {}
        tracing::info!(in_flight = tasks.len(), "draining in-flight jobs");
        let drained = tokio::time::timeout(this.settings.shutdown_timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(left = tasks.len(), "shutdown timeout: abandoning in-flight jobs; they stay pending for another consumer");
            tasks.shutdown().await;
        }
        drop(keepalive);
        this.leases.release_all().await;
        Ok(())
    }

    /// Entries stalled with a crashed consumer, minus those this one works on.
    async fn reclaim(&self, count: usize) -> Result<Vec<StreamEntry>, RedisError> {
        let claimed = self
            .group
            .reclaim(self.settings.reclaim_idle, count)
            .await?;
        let in_flight = self
            .in_flight
            .lock()
            .expect("in-flight set poisoned")
            .clone();
        let claimed: Vec<_> = claimed
            .into_iter()
            .filter(|e| !in_flight.contains(&e.id))
            .collect();
        if !claimed.is_empty() {
            self.metrics
                .jobs_reclaimed
                .get_or_create(&self.labels())
                .inc_by(claimed.len() as u64);
            tracing::info!(count = claimed.len(), "reclaimed stalled job entries");
        }
        Ok(claimed)
    }

    /// Resets the idle time of in-flight entries so they are not reclaimed.
    async fn keep_fresh(self: Arc<Self>, shutdown: CancellationToken) {
        let period = (self.settings.reclaim_idle / 3).max(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(period) => {}
            }
            let ids: Vec<String> = self
                .in_flight
                .lock()
                .expect("in-flight set poisoned")
                .iter()
                .cloned()
                .collect();
            if ids.is_empty() {
                if shutdown.is_cancelled() {
                    return;
                }
                continue;
            }
            if let Err(e) = self.group.keep_fresh(&ids).await {
                // Entries in flight in a lost group are not pending in the
                // new one: no one can reclaim them, they just finish.
                self.recover(&e).await;
                tracing::warn!(error = %e, "keeping in-flight entries fresh failed");
            }
        }
    }

    async fn process(&self, id: &str, fields: &HashMap<String, String>, reclaimed: bool) {
        let job_key = format!("{}:{}", self.settings.stream, id);
        self.metrics
            .jobs_consumed
            .get_or_create(&self.labels())
            .inc();
        let dead_key = format!("dead:{job_key}");
        let answered = [format!("result:{job_key}"), dead_key.clone()];
        match self.outbox.has_any_key(&answered).await {
            Ok(false) => {}
            Ok(true) => {
                // Already answered before a crash or a lost ack: just ack.
                self.ack(id).await;
                return;
            }
            Err(e) => {
                tracing::warn!(entry_id = id, error = %e, "cannot check for an earlier result; leaving the entry pending");
                return;
            }
        }
        if reclaimed {
            if let Some(game_id) = self.handler.game_id(fields) {
                match self.leases.is_held(&game_id).await {
                    Ok(false) => {}
                    Ok(true) => {
                        tracing::info!(entry_id = id, game_id = %game_id, "reclaimed entry's game is busy; leaving it pending");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(entry_id = id, error = %e, "lease check failed; leaving the entry pending");
                        return;
                    }
                }
            }
        }
        let messages = match self.handler.handle(id, fields).await {
            JobDisposition::Done(result) => {
                vec![self.outbox.job_result(&result, &job_key)]
            }
            JobDisposition::Malformed { reason, result } => {
                tracing::warn!(entry_id = id, reason = %reason, "malformed job entry sent to the dead-letter stream");
                self.metrics
                    .jobs_dead_lettered
                    .get_or_create(&self.labels())
                    .inc();
                let mut messages = vec![self.dead_letter(id, fields, &reason, dead_key)];
                messages.extend(result.map(|r| self.outbox.job_result(&r, &job_key)));
                messages
            }
        };
        match self.outbox.publish(&messages).await {
            Ok(_) => self.ack(id).await,
            Err(e) => {
                tracing::error!(entry_id = id, error = %e, "recording the job result failed; the entry stays pending and will be retried")
            }
        }
    }

    fn dead_letter(
        &self,
        id: &str,
        fields: &HashMap<String, String>,
        reason: &str,
        dedupe_key: String,
    ) -> OutboxMessage {
        let original: serde_json::Map<String, serde_json::Value> = fields
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        OutboxMessage {
            stream: self.settings.dead_letter_stream.clone(),
            fields: vec![
                ("source_stream".into(), self.settings.stream.clone()),
                ("source_id".into(), id.to_owned()),
                ("reason".into(), reason.to_owned()),
                (
                    "fields".into(),
                    serde_json::Value::Object(original).to_string(),
                ),
                (
                    "dead_at_ms".into(),
                    chrono::Utc::now().timestamp_millis().to_string(),
                ),
            ],
            dedupe_key: Some(dedupe_key),
            snapshot: None,
            game_id: None,
        }
    }

    /// Acks an entry whose result is recorded, and keeps its id as the
    /// group's offset. In a lost group (`NOGROUP`) the entry is answered all
    /// the same: the offset is kept first, so the group is recreated after it.
    async fn ack(&self, id: &str) {
        let acked = self.group.ack(id).await;
        if let Err(e) = &acked {
            if !e.is_no_group() {
                // The result is recorded; a later reclaim finds it and acks.
                tracing::warn!(entry_id = id, error = %e, "ack failed");
                return;
            }
        }
        let (stream, group) = (&self.settings.stream, &self.settings.group);
        if let Err(e) = self.db.save_stream_offset(stream, group, id).await {
            // Only a recreation after a Redis loss reads it, and starting
            // that from an older entry just finds more answered ones.
            tracing::warn!(entry_id = id, error = %e, "keeping the acked offset failed");
        }
        if let Err(e) = acked {
            self.recover(&e).await;
        }
    }
}

/// The whole of a job consumer process: consumes `settings.stream` with
/// `handler` until `shutdown`, with the outbox relay alongside (it gets a
/// last delivery attempt before this returns).
pub async fn consume<H: JobHandler>(
    infra: &crate::bootstrap::Infra,
    leases: LeaseStore,
    handler: H,
    settings: ConsumerSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let consumer = StreamConsumer::new(
        infra.redis.clone(),
        infra.db.clone(),
        infra.outbox.clone(),
        leases,
        handler,
        settings,
        infra.metrics.clone(),
    );
    infra
        .outbox
        .with_relay(&infra.redis, consumer.run(shutdown))
        .await
}

/// start-job and stop-job: consumes the stream of `consumer` with the
/// handler `handler` makes from the lifecycle operations, as [`consume`] does.
pub async fn consume_with_operations<H: JobHandler>(
    infra: &crate::bootstrap::Infra,
    common: &crate::config::CommonConfig,
    lifecycle: &crate::config::LifecycleConfig,
    state: &crate::config::StateConfig,
    consumer: &crate::config::ConsumerConfig,
    handler: impl FnOnce(crate::operations::Operations) -> H,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let operations = crate::bootstrap::operations(infra, common, lifecycle, state)?;
    let leases = operations.leases().clone();
    let settings = ConsumerSettings::new(consumer, &common.process);
    consume(infra, leases, handler(operations), settings, shutdown).await
}
