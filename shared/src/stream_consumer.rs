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
//!   acked: it never blocks the loop.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use redis::streams::{StreamAutoClaimReply, StreamReadReply};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::adapters::redis::{entry_fields, LeaseStore, RedisClient};
use crate::domain::{GameId, JobResult};
use crate::outbox::{OutboxMessage, Publisher};
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

/// The business side of a consumer: start jobs today, stop jobs next.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// The game an entry is about, for the reclaim lease check.
    fn game_id(&self, fields: &HashMap<String, String>) -> Option<GameId>;
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
    pub shutdown_timeout: Duration,
}

impl ConsumerSettings {
    /// A job stream's settings: the shared ones from `config`, the
    /// stream-specific ones given; dead letters go to `<stream>:dead`.
    pub fn for_stream(
        config: &crate::config::Config,
        stream: &str,
        group: &str,
        group_start_id: &str,
        concurrency: usize,
    ) -> Self {
        Self {
            stream: stream.to_owned(),
            dead_letter_stream: format!("{stream}:dead"),
            group: group.to_owned(),
            group_start_id: group_start_id.to_owned(),
            consumer: config.consumer_name(),
            concurrency,
            block: config.stream_block,
            reclaim_idle: config.job_reclaim_idle,
            shutdown_timeout: config.shutdown_timeout,
        }
    }
}

pub struct StreamConsumer<H> {
    redis: RedisClient,
    publisher: Publisher,
    leases: LeaseStore,
    handler: Arc<H>,
    settings: ConsumerSettings,
    metrics: Metrics,
    in_flight: Arc<Mutex<HashSet<String>>>,
}

impl<H: JobHandler> StreamConsumer<H> {
    pub fn new(
        redis: RedisClient,
        publisher: Publisher,
        leases: LeaseStore,
        handler: H,
        settings: ConsumerSettings,
        metrics: Metrics,
    ) -> Self {
        Self {
            redis,
            publisher,
            leases,
            handler: Arc::new(handler),
            settings,
            metrics,
            in_flight: Arc::default(),
        }
    }

    /// Creates the group if needed (at `group_start_id`, creating the stream).
    pub async fn ensure_group(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.redis.manager();
        let created: Result<String, redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.settings.stream)
            .arg(&self.settings.group)
            .arg(&self.settings.group_start_id)
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Consumes until `shutdown`; then finishes in-flight entries within the
    /// shutdown timeout and releases this process's leases.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.ensure_group().await?;
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(this.settings.concurrency));
        let mut tasks: JoinSet<()> = JoinSet::new();
        // Dies with this future: a cancelled consumer must not keep its
        // abandoned entries fresh, or no one could ever reclaim them.
        let keepalive = AbortOnDrop(tokio::spawn(this.clone().keep_fresh(shutdown.clone())));
        let mut reader = None;
        let mut backoff = Duration::from_millis(100);
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
                this.reclaim(free).await.map(|e| (e, true))
            } else {
                Ok((Vec::new(), false))
            };
            let (entries, reclaimed) = match batch {
                Ok((entries, true)) if !entries.is_empty() => (entries, true),
                Ok(_) => {
                    if reader.is_none() {
                        reader = this.redis.blocking(this.settings.block).await.ok();
                    }
                    let read = match reader.as_mut() {
                        Some(conn) => tokio::select! {
                            _ = shutdown.cancelled() => break,
                            read = this.read_new(conn, free) => read,
                        },
                        None => Err(redis::RedisError::from((
                            redis::ErrorKind::Io,
                            "no connection",
                        ))),
                    };
                    match read {
                        Ok(entries) => (entries, false),
                        Err(e) => {
                            reader = None;
                            tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "reading the job stream failed");
                            tokio::select! {
                                _ = shutdown.cancelled() => break,
                                _ = tokio::time::sleep(backoff) => {}
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                            continue;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reclaiming stalled entries failed");
                    (Vec::new(), false)
                }
            };
            backoff = Duration::from_millis(100);
            for (id, fields) in entries {
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

    async fn read_new(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        count: usize,
    ) -> Result<Vec<(String, HashMap<String, String>)>, redis::RedisError> {
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.settings.group)
            .arg(&self.settings.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(self.settings.block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.settings.stream)
            .arg(">")
            .query_async(conn)
            .await?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .map(|e| (e.id, entry_fields(&e.map)))
            .collect())
    }

    async fn reclaim(
        &self,
        count: usize,
    ) -> Result<Vec<(String, HashMap<String, String>)>, redis::RedisError> {
        let mut conn = self.redis.manager();
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&self.settings.stream)
            .arg(&self.settings.group)
            .arg(&self.settings.consumer)
            .arg(self.settings.reclaim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        let in_flight = self
            .in_flight
            .lock()
            .expect("in-flight set poisoned")
            .clone();
        let claimed: Vec<_> = reply
            .claimed
            .into_iter()
            .filter(|e| !in_flight.contains(&e.id))
            .map(|e| (e.id, entry_fields(&e.map)))
            .collect();
        if !claimed.is_empty() {
            self.metrics
                .jobs_reclaimed
                .get_or_create(&StreamLabels {
                    stream: self.settings.stream.clone(),
                })
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
            let mut conn = self.redis.manager();
            let claimed: Result<redis::Value, _> = redis::cmd("XCLAIM")
                .arg(&self.settings.stream)
                .arg(&self.settings.group)
                .arg(&self.settings.consumer)
                .arg(0)
                .arg(&ids)
                .arg("JUSTID")
                .query_async(&mut conn)
                .await;
            if let Err(e) = claimed {
                tracing::warn!(error = %e, "keeping in-flight entries fresh failed");
            }
        }
    }

    async fn process(&self, id: &str, fields: &HashMap<String, String>, reclaimed: bool) {
        let job_key = format!("{}:{}", self.settings.stream, id);
        self.metrics
            .jobs_consumed
            .get_or_create(&StreamLabels {
                stream: self.settings.stream.clone(),
            })
            .inc();
        let dead_key = format!("dead:{job_key}");
        let answered = [format!("result:{job_key}"), dead_key.clone()];
        match self.publisher.has_any_key(&answered).await {
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
                vec![self.publisher.job_result_message(&result, &job_key)]
            }
            JobDisposition::Malformed { reason, result } => {
                tracing::warn!(entry_id = id, reason = %reason, "malformed job entry sent to the dead-letter stream");
                self.metrics
                    .jobs_dead_lettered
                    .get_or_create(&StreamLabels {
                        stream: self.settings.stream.clone(),
                    })
                    .inc();
                let mut messages = vec![self.dead_letter(id, fields, &reason, dead_key)];
                messages.extend(result.map(|r| self.publisher.job_result_message(&r, &job_key)));
                messages
            }
        };
        match self.publisher.publish(&messages).await {
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
        }
    }

    async fn ack(&self, id: &str) {
        let mut conn = self.redis.manager();
        let acked: Result<i64, _> = redis::cmd("XACK")
            .arg(&self.settings.stream)
            .arg(&self.settings.group)
            .arg(id)
            .query_async(&mut conn)
            .await;
        if let Err(e) = acked {
            // The result is recorded; a later reclaim finds it and acks.
            tracing::warn!(entry_id = id, error = %e, "ack failed");
        }
    }
}
