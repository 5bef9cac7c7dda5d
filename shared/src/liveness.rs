//! Liveness: is the process's main loop still going round?
//!
//! A process can answer HTTP while the loop that does its work is stuck (a
//! future that never completes, a lock never released, a call without a
//! bound). Kubernetes restarts such a process only if `/healthz` says so, so
//! each main loop ticks a [`Heartbeat`] every iteration, and `/healthz`
//! fails once a watched loop has not ticked for its stall limit:
//! `RTMANAGER_LIVENESS_STALL_FACTOR` times the loop's expected period, never
//! less than [`MIN_STALL`].
//!
//! A loop that waits is not stuck: its sleeps between passes, its retry
//! backoffs while a dependency is away and its waits for in-flight work go
//! through [`Heartbeat::idle`] (or [`retry_sleep`]), which tick while they
//! wait. So `/healthz` stays 200 while PostgreSQL, Redis or Docker is away
//! (`/readyz` says that), and fails only when an iteration itself does not
//! finish. Each dependency call is bounded by its client's timeouts (the
//! PostgreSQL pool's 5 s acquire, Redis' 3 s command timeout, the Docker
//! client's 120 s request timeout), so [`MIN_STALL`] is above the few of
//! them one iteration makes in a row while its dependency is away.

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The smallest stall limit, whatever the factor and period: above a few
/// dependency timeouts in a row (see the module doc).
pub const MIN_STALL: Duration = Duration::from_secs(10);

/// How often [`Heartbeat::idle`] ticks while it waits.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// The main loops of one process and their stall limits.
#[derive(Clone)]
pub struct Liveness {
    inner: Arc<LivenessInner>,
}

struct LivenessInner {
    factor: u32,
    /// Weak: a loop that ended (its heartbeat dropped) is no longer watched.
    loops: Mutex<Vec<Weak<HeartbeatInner>>>,
}

/// What `/healthz` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LivenessStatus {
    /// Every watched loop ticked within its limit (or none is watched yet).
    Live,
    /// These loops have not ticked within their limits.
    Stalled(Vec<Stall>),
}

/// A loop past its stall limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    pub name: &'static str,
    /// Since its last tick.
    pub silent_for: Duration,
    pub limit: Duration,
}

impl Liveness {
    /// `factor` is `RTMANAGER_LIVENESS_STALL_FACTOR`.
    pub fn new(factor: u32) -> Self {
        Self {
            inner: Arc::new(LivenessInner {
                factor,
                loops: Mutex::default(),
            }),
        }
    }

    /// Watches a main loop that goes round about every `period` when healthy
    /// (its longest normal wait between two ticks). Its stall limit is the
    /// factor times `period`, at least [`MIN_STALL`]. The registration counts
    /// as its first tick.
    pub fn watch(&self, name: &'static str, period: Duration) -> Heartbeat {
        let limit = period.saturating_mul(self.inner.factor).max(MIN_STALL);
        let heartbeat = Heartbeat::new(name, limit);
        let mut loops = self.inner.loops.lock().expect("liveness registry poisoned");
        loops.retain(|l| l.strong_count() > 0);
        loops.push(Arc::downgrade(&heartbeat.inner));
        drop(loops);
        tracing::debug!(
            main_loop = name,
            stall_after_ms = limit.as_millis() as u64,
            "watching main loop"
        );
        heartbeat
    }

    /// The loops still running.
    fn running(&self) -> Vec<Heartbeat> {
        let loops = self.inner.loops.lock().expect("liveness registry poisoned");
        loops
            .iter()
            .filter_map(Weak::upgrade)
            .map(|inner| Heartbeat { inner })
            .collect()
    }

    /// Live, or which loops stalled.
    pub fn status(&self) -> LivenessStatus {
        let stalls: Vec<Stall> = self.running().iter().filter_map(Heartbeat::stall).collect();
        if stalls.is_empty() {
            LivenessStatus::Live
        } else {
            LivenessStatus::Stalled(stalls)
        }
    }

    /// Unix seconds of the oldest last tick among the watched loops (the
    /// one closest to its limit, with one loop a process has), `None` while
    /// none is watched: `rtmanager_main_loop_last_tick_timestamp_seconds`.
    pub fn last_tick_unix(&self) -> Option<f64> {
        self.running()
            .iter()
            .map(|h| h.inner.last_unix_ms.load(Ordering::Relaxed))
            .min()
            .map(|ms| ms as f64 / 1000.0)
    }
}

/// The tick of one main loop. Cheap to clone; the loop is watched while a
/// clone lives (a loop that ended is not stuck). [`Heartbeat::detached`] is
/// one nobody watches (loops built outside a process, e.g. in tests).
#[derive(Clone)]
pub struct Heartbeat {
    inner: Arc<HeartbeatInner>,
}

struct HeartbeatInner {
    name: &'static str,
    limit: Duration,
    /// Monotonic: a wall-clock step never makes a loop look stalled.
    origin: Instant,
    last_mono_ms: AtomicU64,
    last_unix_ms: AtomicI64,
}

tokio::task_local! {
    /// The heartbeat of the main loop this task runs, for [`retry_sleep`].
    static CURRENT: Heartbeat;
}

impl Heartbeat {
    fn new(name: &'static str, limit: Duration) -> Self {
        Self {
            inner: Arc::new(HeartbeatInner {
                name,
                limit,
                origin: Instant::now(),
                last_mono_ms: AtomicU64::new(0),
                last_unix_ms: AtomicI64::new(unix_ms()),
            }),
        }
    }

    /// A heartbeat no `/healthz` looks at.
    pub fn detached() -> Self {
        Self::new("detached", Duration::MAX)
    }

    /// The loop made progress.
    pub fn tick(&self) {
        let mono = self.inner.origin.elapsed().as_millis() as u64;
        self.inner.last_mono_ms.store(mono, Ordering::Relaxed);
        self.inner.last_unix_ms.store(unix_ms(), Ordering::Relaxed);
    }

    /// A new iteration of the loop: a tick, and (for a watched loop) the
    /// crash tests' stall point `main-loop-stall`
    /// (`shared::failpoints::stall_point`), where a test wedges it on purpose.
    pub async fn beat(&self) {
        self.tick();
        if self.inner.limit != Duration::MAX {
            crate::failpoints::stall_point("main-loop-stall").await;
        }
    }

    /// Awaits `wait` (a sleep, a shutdown, in-flight work that has bounds of
    /// its own), ticking meanwhile: a loop that waits is not stuck.
    pub async fn idle<F: Future>(&self, wait: F) -> F::Output {
        let mut wait = std::pin::pin!(wait);
        let mut ticks = tokio::time::interval(IDLE_TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                out = &mut wait => {
                    self.tick();
                    return out;
                }
                _ = ticks.tick() => self.tick(),
            }
        }
    }

    /// Runs `work` with this heartbeat as its task's current one, so the
    /// retry waits inside it ([`retry_sleep`]) tick it.
    pub async fn scope<F: Future>(&self, work: F) -> F::Output {
        CURRENT.scope(self.clone(), work).await
    }

    fn stall(&self) -> Option<Stall> {
        let now = self.inner.origin.elapsed();
        let last = Duration::from_millis(self.inner.last_mono_ms.load(Ordering::Relaxed));
        let silent_for = now.saturating_sub(last);
        (silent_for > self.inner.limit).then_some(Stall {
            name: self.inner.name,
            silent_for,
            limit: self.inner.limit,
        })
    }
}

/// A retry backoff's sleep: ticks the current task's main loop (set by
/// [`Heartbeat::scope`]) while it waits for a dependency to come back; a
/// plain sleep elsewhere (a spawned task has no current loop).
pub async fn retry_sleep(wait: Duration) {
    match CURRENT.try_with(Heartbeat::clone) {
        Ok(heartbeat) => heartbeat.idle(tokio::time::sleep(wait)).await,
        Err(_) => tokio::time::sleep(wait).await,
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A heartbeat whose last tick was `silent` ago, with `limit`.
    fn silent(liveness: &Liveness, silent: Duration, limit: Duration) -> Heartbeat {
        let heartbeat = Heartbeat {
            inner: Arc::new(HeartbeatInner {
                name: "main",
                limit,
                origin: Instant::now() - silent,
                last_mono_ms: AtomicU64::new(0),
                last_unix_ms: AtomicI64::new(0),
            }),
        };
        liveness
            .inner
            .loops
            .lock()
            .unwrap()
            .push(Arc::downgrade(&heartbeat.inner));
        heartbeat
    }

    #[test]
    fn the_limit_is_the_factor_times_the_period_with_a_floor() {
        let liveness = Liveness::new(10);
        assert_eq!(
            liveness.watch("slow", Duration::from_secs(30)).inner.limit,
            Duration::from_secs(300)
        );
        assert_eq!(
            liveness
                .watch("fast", Duration::from_millis(200))
                .inner
                .limit,
            MIN_STALL
        );
        assert_eq!(liveness.status(), LivenessStatus::Live);
    }

    #[test]
    fn a_loop_silent_past_its_limit_is_stalled_until_it_ticks() {
        let liveness = Liveness::new(2);
        let _fresh = liveness.watch("fresh", Duration::from_secs(1));
        let stuck = silent(&liveness, Duration::from_secs(5), Duration::from_secs(1));
        match liveness.status() {
            LivenessStatus::Stalled(stalls) => {
                assert_eq!(stalls.len(), 1, "{stalls:?}");
                assert_eq!(stalls[0].name, "main");
                assert!(stalls[0].silent_for >= Duration::from_secs(5));
            }
            live => panic!("{live:?}"),
        }
        assert_eq!(liveness.last_tick_unix(), Some(0.0));
        stuck.tick();
        assert_eq!(liveness.status(), LivenessStatus::Live);
        assert!(liveness.last_tick_unix().unwrap() > 1.0e9);

        // A loop that ended is not watched any more.
        let ended = silent(&liveness, Duration::from_secs(5), Duration::from_secs(1));
        assert_ne!(liveness.status(), LivenessStatus::Live);
        drop(ended);
        assert_eq!(liveness.status(), LivenessStatus::Live);
    }

    #[tokio::test]
    async fn waiting_idle_or_in_a_scoped_retry_ticks_and_a_bare_sleep_does_not() {
        let liveness = Liveness::new(2);
        let idle = silent(&liveness, Duration::from_secs(5), Duration::from_secs(1));
        idle.idle(tokio::time::sleep(Duration::from_millis(10)))
            .await;
        assert_eq!(liveness.status(), LivenessStatus::Live);

        let liveness = Liveness::new(2);
        let scoped = silent(&liveness, Duration::from_secs(5), Duration::from_secs(1));
        retry_sleep(Duration::from_millis(10)).await;
        assert_ne!(liveness.status(), LivenessStatus::Live);
        scoped.scope(retry_sleep(Duration::from_millis(10))).await;
        assert_eq!(liveness.status(), LivenessStatus::Live);
    }
}
