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
//!   for `reclaim_idle` after it saw its group lost (or made it), a consumer
//!   treats new entries as it treats reclaimed ones, since an entry another
//!   consumer (or itself) was still working on comes back as new: its game's
//!   lease is held, and a second run would answer `conflict` first and take
//!   the one result from the real run;
//! - an entry older than `answer_horizon` (the dedupe keys' retention) is
//!   never run, since the key that proves an earlier answer may be pruned:
//!   it goes to the dead-letter stream, unanswered, and is acked. Only a
//!   Redis restored from a snapshot that old, or a producer writing
//!   explicit old ids, can bring one;
//! - each reclaim round trims the entries every group is done with and
//!   removes consumers idle past `idle_remove_after` with nothing pending
//!   (one is left by every pod name), so neither grows without bound.

mod answer;
mod health;
mod upkeep;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::adapters::postgres::Database;
use crate::adapters::{ConsumerGroup, LeaseStore, RedisClient, StreamEntry};
use crate::domain::{GameId, JobResult};
use crate::liveness::{Heartbeat, Liveness};
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
    /// Not answered: left pending, reclaimed after `RTMANAGER_JOB_RECLAIM_IDLE`
    /// and run again.
    RunAgain { reason: String },
}

impl JobDisposition {
    /// An operation's outcome as the answer to the job that asked for it,
    /// unless PostgreSQL was away: then the outcome is not Lobby's to see,
    /// and the job runs again (a stop that stopped its container but could
    /// not mark the record finishes on the next run).
    pub fn of_outcome(outcome: &crate::operations::OperationOutcome, game_id: &GameId) -> Self {
        if outcome.database_away {
            return Self::RunAgain {
                reason: outcome.error_message.clone(),
            };
        }
        Self::Done(outcome.job_result(game_id))
    }
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
    /// Entries older than this are never run: their dedupe keys (the proof
    /// of an earlier answer) are kept this long and then pruned
    /// (`RTMANAGER_DEDUPE_KEY_RETENTION`).
    pub answer_horizon: Duration,
    pub shutdown_timeout: Duration,
}

impl ConsumerSettings {
    /// The settings of a consumer of `consumer.stream`; dead letters go to
    /// `<stream>:dead`.
    pub fn new(
        consumer: &crate::config::ConsumerConfig,
        common: &crate::config::CommonConfig,
    ) -> Self {
        let process = &common.process;
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
            answer_horizon: common.streams.dedupe_key_retention,
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
    /// When this consumer last saw its group lost, or made it: new entries
    /// may be old ones back (see the module doc).
    group_made_at: Arc<Mutex<Option<tokio::time::Instant>>>,
    /// The consumer loop's tick (`/healthz`).
    heartbeat: Heartbeat,
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
            group_made_at: Arc::default(),
            heartbeat: Heartbeat::detached(),
        }
    }

    /// Has `liveness` watch the consumer loop. Healthy, it goes round at
    /// least once per `XREADGROUP` block, or per retry wait while Redis is
    /// away.
    pub fn watched_by(mut self, liveness: &Liveness) -> Self {
        self.heartbeat = liveness.watch("consumer", self.settings.block + retry::CAP);
        self
    }

    pub(super) fn labels(&self) -> StreamLabels {
        StreamLabels {
            stream: self.settings.stream.clone(),
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

        let heartbeat = this.heartbeat.clone();
        while !shutdown.is_cancelled() {
            heartbeat.beat().await;
            while tasks.try_join_next().is_some() {}
            let free = permits.available_permits();
            if free == 0 {
                // Every permit busy: the operations have bounds of their own.
                let stop = heartbeat
                    .idle(async {
                        tokio::select! {
                            _ = shutdown.cancelled() => true,
                            _ = tasks.join_next() => false,
                        }
                    })
                    .await;
                if stop {
                    break;
                }
                continue;
            }
            let batch = if last_reclaim.elapsed() >= this.settings.reclaim_idle / 2 {
                last_reclaim = tokio::time::Instant::now();
                this.tidy().await;
                heartbeat.tick();
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
                            let stop = heartbeat
                                .idle(async {
                                    tokio::select! {
                                        _ = shutdown.cancelled() => true,
                                        _ = tokio::time::sleep(wait) => false,
                                    }
                                })
                                .await;
                            if stop {
                                break;
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
                if !reclaimed && this.is_in_flight(&id) {
                    // Delivered again by a recreated group while this
                    // consumer still works on it: that run acks it.
                    continue;
                }
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
        let drain = tokio::time::timeout(this.settings.shutdown_timeout, async {
            while tasks.join_next().await.is_some() {}
        });
        let drained = heartbeat.idle(drain).await;
        if drained.is_err() {
            tracing::warn!(left = tasks.len(), "shutdown timeout: abandoning in-flight jobs; they stay pending for another consumer");
            tasks.shutdown().await;
        }
        drop(keepalive);
        this.leases.release_all().await;
        Ok(())
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
    let var = format!("the dead-letter stream of {}", settings.stream);
    infra
        .redis
        .refuse_cluster_unsafe_streams([(var.as_str(), settings.dead_letter_stream.as_str())])
        .map_err(anyhow::Error::msg)?;
    let consumer = StreamConsumer::new(
        infra.redis.clone(),
        infra.db.clone(),
        infra.outbox.clone(),
        leases,
        handler,
        settings,
        infra.metrics.clone(),
    )
    .watched_by(&infra.liveness);
    consumer.register_readiness(&infra.readiness);
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
    let settings = ConsumerSettings::new(consumer, common);
    consume(infra, leases, handler(operations), settings, shutdown).await
}
