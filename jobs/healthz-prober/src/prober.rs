//! The prober: one task per target of this shard, each probing its game at
//! its slots until the target is dropped or the prober stops.
//!
//! # What one slot does
//! Every `RTMANAGER_PROBE_INTERVAL` (15 s) each `running` game of this
//! instance's shard gets one `GET {engine}/healthz` with
//! `RTMANAGER_PROBE_TIMEOUT` (2 s) (`shared::adapters::http_probe`). After
//! `RTMANAGER_PROBE_FAILURES_THRESHOLD` (3) failures in a row it emits one
//! `probe_failed {consecutive_failures, last_status, last_error}`; the first
//! success after that emits one `probe_recovered {prior_failure_count}`.
//! Nothing below the threshold, nothing repeated during a streak
//! ([`crate::streak`]).
//!
//! Not probed (and not counted as a failure): a game younger than
//! `RTMANAGER_PROBE_INITIAL_GRACE` (by `started_at`); a game whose per-game
//! lease is held (a lifecycle operation is running; checked before each probe
//! and again, atomically, before a failure is counted); a failure whose record
//! meanwhile stopped or got another container (re-read from PostgreSQL, only
//! on failures, so a stop between two target refreshes is not reported).
//!
//! # Targets
//! The target set is re-read from PostgreSQL (`runtime_records` with status
//! `running`, owned by this shard: [`crate::schedule::shard_of`]) every
//! `RTMANAGER_PROBE_REFRESH_INTERVAL`; this instance is
//! `RTMANAGER_SHARD_INDEX` or its StatefulSet ordinal. A game that stops,
//! leaves the shard or is removed is dropped at the next refresh; a refresh
//! that fails keeps the previous set. A streak Redis does not have is seeded
//! from the game's health snapshot read then, one query per missing streak
//! (`committed_open_failure`; the refresh's copy is only its fallback,
//! [`crate::target::TargetState::seed`]).
//!
//! # Concurrency
//! Each target has its own task, waking at its slots
//! ([`crate::schedule::next_slot`]). Probes run concurrently, bounded by
//! `RTMANAGER_PROBE_CONCURRENCY` (a semaphore held only for the address and
//! HTTP exchange), each with its own timeout, so one hung engine costs one
//! permit for at most the timeout and never delays another game. A slot
//! missed because the previous probe of the same game was still running is
//! skipped, not queued.
//!
//! # Liveness and metrics
//! The refresh loop is the process's main loop: it ticks the `/healthz`
//! heartbeat each round (and while it waits for the next), and each round
//! sets `rtmanager_prober_targets`, `rtmanager_prober_round_duration_seconds`
//! and `rtmanager_prober_round_lag_seconds` (the latest start of a probe
//! behind its slot since the last round: a permit wait, a slow lease check).
//! Each probe moves `rtmanager_probes_total{result,reason}` and, for an HTTP
//! exchange, `rtmanager_probe_duration_seconds` ([`crate::metrics`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use shared::adapters::postgres::{Database, StoreError};
use shared::adapters::{LeaseStore, RedisClient};
use shared::domain::{GameId, RuntimeStatus};
use shared::liveness::{Heartbeat, Liveness};
use shared::outbox::Outbox;
use shared::ports::ContainerEngine;
use shared::telemetry::Metrics;

use crate::address::{self, Address};
use crate::metrics::ProberMetrics;
use crate::schedule::{interval_ms, next_slot, now_ms, slot_offset};
use crate::settings::ProberSettings;
use crate::streak::{self, Transition};
use crate::target::{Skip, Target, TargetState, Verdict};
use shared::adapters::http_probe::{
    failure_reason, http_client, http_probe, ProbeClient, ProbeClientError,
};
use shared::adapters::{ProbeResult, StreakObservation, StreakSeed, StreakVerdict};

#[derive(Debug, thiserror::Error)]
pub enum ProberError {
    #[error("probe HTTP client: {0}")]
    Client(#[from] ProbeClientError),
}

/// Probes the running games of one shard until shut down. Cheap to clone.
#[derive(Clone)]
pub struct Prober {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ProberSettings,
    db: Database,
    redis: RedisClient,
    engine: Arc<dyn ContainerEngine>,
    outbox: Outbox,
    leases: LeaseStore,
    http: ProbeClient,
    permits: Semaphore,
    /// How long a game's streak outlives its last observation.
    streak_ttl: Duration,
    metrics: ProberMetrics,
    /// The refresh loop's tick (`/healthz`).
    heartbeat: Heartbeat,
}

/// A running target task: its latest record and its stop switch.
struct TaskHandle {
    target: watch::Sender<Target>,
    stop: CancellationToken,
}

impl Prober {
    pub fn new(
        settings: ProberSettings,
        db: Database,
        redis: RedisClient,
        engine: Arc<dyn ContainerEngine>,
        outbox: Outbox,
    ) -> Result<Self, ProberError> {
        let http = http_client(settings.probe.interval)?;
        let streak_ttl = (settings.probe.interval * 100).max(Duration::from_secs(24 * 3600));
        Ok(Self {
            inner: Arc::new(Inner {
                permits: Semaphore::new(settings.probe.concurrency.max(1)),
                leases: LeaseStore::new(redis.clone(), Duration::from_secs(60)),
                settings,
                db,
                redis,
                engine,
                outbox,
                http,
                streak_ttl,
                metrics: Metrics::new().group(),
                heartbeat: Heartbeat::detached(),
            }),
        })
    }

    /// Records into `metrics`, and has `liveness` watch the refresh loop
    /// (a round per `RTMANAGER_PROBE_REFRESH_INTERVAL`). Call before the
    /// prober is cloned.
    pub fn observed(mut self, metrics: &Metrics, liveness: &Liveness) -> Self {
        let inner = Arc::get_mut(&mut self.inner).expect("observed before the prober is shared");
        inner.metrics = metrics.group();
        inner.heartbeat = liveness.watch(
            "probe refresh",
            inner
                .settings
                .probe
                .refresh_interval
                .max(shared::retry::CAP),
        );
        self
    }

    pub fn settings(&self) -> &ProberSettings {
        &self.inner.settings
    }

    /// This shard's probe targets, from the running records.
    pub async fn targets(&self) -> Result<Vec<Target>, StoreError> {
        let targets = self.inner.db.probe_targets().await?;
        Ok(targets
            .iter()
            .filter(|t| self.inner.settings.owns(&t.record.game_id))
            .filter_map(Target::from_probe_target)
            .collect())
    }

    /// Refreshes the targets every refresh interval and keeps one task per
    /// target until `shutdown`; then lets in-flight probes finish (bounded).
    pub async fn run(&self, shutdown: CancellationToken) {
        let settings = &self.inner.settings;
        tracing::info!(
            shard_index = settings.probe.shard_index,
            shard_count = settings.probe.shard_count,
            interval_ms = settings.probe.interval.as_millis() as u64,
            address_mode = ?settings.probe.address_mode,
            "healthz prober started"
        );
        let mut tasks: HashMap<GameId, TaskHandle> = HashMap::new();
        let mut joins = JoinSet::new();
        let (metrics, heartbeat) = (&self.inner.metrics, &self.inner.heartbeat);
        loop {
            heartbeat.beat().await;
            let round = tokio::time::Instant::now();
            match self.targets().await {
                Ok(targets) => self.reconcile(&mut tasks, &mut joins, targets),
                Err(e) => {
                    tracing::warn!(error = %e, targets = tasks.len(), "probe target refresh failed; keeping the current targets")
                }
            }
            while joins.try_join_next().is_some() {}
            metrics.targets.set(tasks.len() as i64);
            metrics
                .round_duration
                .observe(round.elapsed().as_secs_f64());
            metrics.end_lag_window();
            let stopped = heartbeat
                .idle(async {
                    tokio::select! {
                        _ = shutdown.cancelled() => true,
                        _ = tokio::time::sleep(settings.probe.refresh_interval) => false,
                    }
                })
                .await;
            if stopped {
                break;
            }
        }
        for task in tasks.values() {
            task.stop.cancel();
        }
        let drain = async { while joins.join_next().await.is_some() {} };
        if tokio::time::timeout(settings.shutdown_timeout, drain)
            .await
            .is_err()
        {
            tracing::warn!("probes still running at the shutdown timeout; abandoning them");
            joins.abort_all();
        }
        tracing::info!("healthz prober stopped");
    }

    fn reconcile(
        &self,
        tasks: &mut HashMap<GameId, TaskHandle>,
        joins: &mut JoinSet<()>,
        targets: Vec<Target>,
    ) {
        let mut wanted: HashMap<GameId, Target> = targets
            .into_iter()
            .map(|t| (t.game_id.clone(), t))
            .collect();
        tasks.retain(|game, task| match wanted.remove(game) {
            Some(target) => {
                task.target.send_if_modified(|current| {
                    let changed = *current != target;
                    *current = target;
                    changed
                });
                true
            }
            None => {
                tracing::debug!(game_id = %game, "no longer a probe target");
                task.stop.cancel();
                false
            }
        });
        for (game, target) in wanted {
            let (tx, rx) = watch::channel(target);
            let stop = CancellationToken::new();
            joins.spawn(self.clone().target_loop(rx, stop.clone()));
            tasks.insert(game, TaskHandle { target: tx, stop });
        }
    }

    /// One game's probes, at its slots, until `stop`.
    async fn target_loop(self, target: watch::Receiver<Target>, stop: CancellationToken) {
        let game_id = target.borrow().game_id.clone();
        let offset = slot_offset(&game_id, self.inner.settings.probe.interval);
        let mut state = TargetState::default();
        let mut last_slot = 0;
        loop {
            let mut slot = next_slot(now_ms(), self.inner.settings.probe.interval, offset);
            if slot <= last_slot {
                // Woke early (clock step): wait for the next slot instead.
                slot = last_slot + interval_ms(self.inner.settings.probe.interval);
            }
            let wait = Duration::from_millis(slot.saturating_sub(now_ms()));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            last_slot = slot;
            let current = target.borrow().clone();
            let verdict = self.probe(&current, slot, &mut state, &stop).await;
            tracing::trace!(game_id = %game_id, slot, ?verdict, "probe");
        }
    }

    /// Probes one target once, as slot `slot` (its time in ms since the epoch;
    /// any increasing numbers do), and applies the result:
    /// the whole machinery of one slot (grace, lease, permit, address, HTTP,
    /// streak, event). Public for the benchmark.
    pub async fn probe(
        &self,
        target: &Target,
        slot: u64,
        state: &mut TargetState,
        stop: &CancellationToken,
    ) -> Verdict {
        let inner = &self.inner;
        if let Some(started_at) = target.started_at {
            let age = Utc::now().signed_duration_since(started_at);
            if age.to_std().unwrap_or_default() < inner.settings.probe.initial_grace {
                return Verdict::NotProbed(Skip::Grace);
            }
        }
        match inner.leases.is_held(&target.game_id).await {
            Ok(false) => {}
            Ok(true) => return Verdict::NotProbed(Skip::Leased),
            Err(e) => {
                tracing::warn!(game_id = %target.game_id, error = %e, "lease check failed; probe skipped");
                return Verdict::NotProbed(Skip::RedisUnavailable);
            }
        }
        let result = tokio::select! {
            _ = stop.cancelled() => return Verdict::NotProbed(Skip::Cancelled),
            result = self.exchange(target, slot, state) => result,
        };
        let result = match result {
            Some(result) => result,
            None => return Verdict::NotProbed(Skip::EngineUnavailable),
        };
        if !result.is_healthy() {
            state.cached_url = None;
            if !self.still_current(target).await {
                return Verdict::Discarded;
            }
        }
        self.observe(target, slot, result, state, stop).await
    }

    /// Permit, address, HTTP. `None` when Docker is away (`container_ip`).
    /// Counted in the probe metrics once it had an outcome.
    async fn exchange(
        &self,
        target: &Target,
        slot: u64,
        state: &mut TargetState,
    ) -> Option<ProbeResult> {
        let inner = &self.inner;
        let _permit = inner
            .permits
            .acquire()
            .await
            .expect("probe semaphore closed");
        inner.metrics.started_late(now_ms().saturating_sub(slot));
        let settings = &inner.settings;
        let address = address::resolve(
            settings.probe.address_mode,
            inner.engine.as_ref(),
            settings.probe.timeout,
            target,
            state,
        )
        .await;
        let url = match address {
            Address::Url(url) => url,
            Address::Missing(unhealthy) => {
                inner.metrics.probed("missing");
                return Some(unhealthy);
            }
            Address::EngineUnavailable(e) => {
                tracing::warn!(game_id = %target.game_id, error = %e, "container inspect failed; probe skipped");
                return None;
            }
        };
        let began = std::time::Instant::now();
        let result = http_probe(&inner.http, &url, settings.probe.timeout).await;
        inner
            .metrics
            .probe_duration
            .observe(began.elapsed().as_secs_f64());
        inner.metrics.probed(failure_reason(&result));
        Some(result)
    }

    /// Whether the record is still running the probed container (a failure
    /// right after a stop is not the engine's). PostgreSQL away: assume yes.
    async fn still_current(&self, target: &Target) -> bool {
        match self.inner.db.get_record(&target.game_id).await {
            Ok(Some(record)) => {
                record.status == RuntimeStatus::Running
                    && record.current_container_id.as_deref() == Some(&target.container_id)
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(game_id = %target.game_id, error = %e, "record re-check failed; counting the failure");
                true
            }
        }
    }

    /// The open `probe_failed` PostgreSQL holds for the game now, for a
    /// streak Redis does not have. Should PostgreSQL be away, the newer of
    /// the last target refresh and this task's own commit stands in (up to
    /// one refresh old: [`TargetState::seed`]).
    async fn committed_open_failure(
        &self,
        target: &Target,
        state: &TargetState,
    ) -> Option<(String, i64)> {
        let fallback = || {
            state
                .seed(target)
                .map(|f| (f.container_id.clone(), f.consecutive_failures))
        };
        match self.inner.db.committed_streak(&target.game_id).await {
            Ok(streak) => streak
                .open_failure
                .map(|f| (f.container_id, f.consecutive_failures)),
            Err(e) => {
                tracing::warn!(game_id = %target.game_id, error = %e, "reading the committed probe streak failed; seeding from the last target refresh");
                fallback()
            }
        }
    }

    /// Applies the result to the streak and publishes a transition. A
    /// transition still pending from an earlier observation (a prober that
    /// died or stopped before its commit) is committed first, and the result
    /// then applied.
    async fn observe(
        &self,
        target: &Target,
        slot: u64,
        result: ProbeResult,
        state: &mut TargetState,
        stop: &CancellationToken,
    ) -> Verdict {
        let inner = &self.inner;
        let (last_status, last_error) = match &result {
            ProbeResult::Healthy { status } => (i64::from(*status), ""),
            ProbeResult::Unhealthy { status, error } => (i64::from(*status), error.as_str()),
        };
        let observation = StreakObservation {
            container_id: &target.container_id,
            healthy: result.is_healthy(),
            last_status,
            last_error,
            at_ms: Utc::now().timestamp_millis(),
        };
        // Read from PostgreSQL only when Redis has no streak for the game.
        let mut committed: Option<Option<(String, i64)>> = None;
        loop {
            let seed = match &committed {
                None => StreakSeed::Ask,
                Some(open) => StreakSeed::Committed(open.as_ref().map(|(c, n)| (c.as_str(), *n))),
            };
            let observed = inner
                .redis
                .observe_streak(
                    &target.game_id,
                    &observation,
                    inner.settings.probe.failures_threshold,
                    slot,
                    inner.streak_ttl,
                    seed,
                )
                .await;
            let (verdict, pending) = match observed {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(game_id = %target.game_id, error = %e, "probe streak update failed; observation lost");
                    return Verdict::NotProbed(Skip::RedisUnavailable);
                }
            };
            if verdict == StreakVerdict::Missing {
                committed = Some(self.committed_open_failure(target, state).await);
                continue;
            }
            let (pending, earlier) = match streak::transition(verdict, pending) {
                Transition::Settled(verdict) => return verdict,
                Transition::Decided(pending) => (pending, false),
                Transition::Earlier(pending) => {
                    tracing::info!(game_id = %target.game_id, slot = pending.slot, event_type = pending.event.event_type().as_str(), "committing a probe transition left pending");
                    (pending, true)
                }
            };
            if !earlier {
                shared::failpoints::crash_point("prober-after-streak");
            }
            let verdict = streak::commit(&inner.outbox, &inner.redis, &pending, stop).await;
            match verdict {
                Verdict::NotProbed(_) => return verdict,
                Verdict::Failed { .. } => inner.metrics.transition("failed"),
                Verdict::Recovered { .. } => inner.metrics.transition("recovered"),
                _ => {}
            }
            if let Some(committed) = streak::committed(&pending.event) {
                state.committed = Some(committed);
            }
            if !earlier {
                return verdict;
            }
        }
    }
}
