//! The Docker events listener: turns the daemon's container events into
//! health events, exactly once, across its own restarts and the daemon's.
//!
//! One [`Listener`] follows one Docker daemon, and only while it holds that
//! daemon's lease. Each concern has its module, and each module's docs say
//! why it works the way it does:
//!
//! - `lease`: one listener per Docker host — stand by, hold, hand over.
//! - `subscription`: one subscription — resume from the cursor, catch up,
//!   then handle the stream in daemon order; resubscribe with backoff.
//! - `mapping`: which daemon event becomes which health event, and what
//!   rtmanager did itself (and so is not reported).
//! - `catch_up`: what the events of a gap would have reported, found by
//!   inspection.
//! - `publication`: exactly once by construction (dedupe keys), and the
//!   record following an observed exit, in one transaction.
//! - [`metrics`]: what the daemon sent, the lease, subscriptions and
//!   catch-ups.
//!
//! Its main loop (wait for the lease, hold it, follow) ticks the
//! `/healthz` heartbeat at each step, at least every `lease_check` while it
//! follows the daemon.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::DockerEventsConfig;
use shared::adapters::postgres::{Database, StoreError};
use shared::adapters::{IntentStore, LeaseStore, RedisClient, RedisError};
use shared::liveness::{Heartbeat, Liveness};
use shared::outbox::Outbox;
use shared::ports::{ContainerEngine, EngineError};
use shared::telemetry::Metrics;

use metrics::ListenerMetrics;

mod catch_up;
mod lease;
mod mapping;
pub mod metrics;
mod publication;
mod subscription;

pub use mapping::OOM_EXIT_CODE;

/// Timings of the listener; [`ListenerSettings::from_config`] gives the
/// production values. Resubscriptions wait by the one retry policy,
/// [`shared::retry`].
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// TTL of the per-host lease (renewed every third of it).
    pub lease_ttl: Duration,
    /// How often a standby instance tries to take the lease.
    pub standby_retry: Duration,
    /// How often the holder checks its lease between events.
    pub lease_check: Duration,
    /// Parallel inspections of the catch-up.
    pub catch_up_concurrency: usize,
}

impl ListenerSettings {
    pub fn from_config(config: &DockerEventsConfig) -> Self {
        Self {
            lease_ttl: Duration::from_secs(15),
            standby_retry: Duration::from_secs(2),
            lease_check: Duration::from_millis(500),
            catch_up_concurrency: config.inspect.concurrency,
        }
    }
}

/// Why one attempt to follow the daemon ended.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("the daemon closed the event stream")]
    StreamEnded,
}

/// The Redis keys of one (deployment, daemon) pair: the per-host lease and
/// the resume cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerKeys {
    pub lease: String,
    pub cursor: String,
}

impl ListenerKeys {
    pub fn new(instance: &str, daemon_id: &str) -> Self {
        Self {
            lease: format!("rtmanager:docker_events_lease:{instance}:{daemon_id}"),
            cursor: format!("rtmanager:docker_events:cursor:{instance}:{daemon_id}"),
        }
    }
}

/// Follows one Docker daemon's events while it holds that daemon's lease.
#[derive(Clone)]
pub struct Listener {
    engine: Arc<dyn ContainerEngine>,
    db: Database,
    outbox: Outbox,
    redis: RedisClient,
    leases: LeaseStore,
    intents: IntentStore,
    settings: ListenerSettings,
    /// The schema's outbox identity, read once: it names the Redis keys.
    instance: Arc<OnceCell<String>>,
    metrics: ListenerMetrics,
    /// The main loop's tick (`/healthz`).
    heartbeat: Heartbeat,
}

impl Listener {
    pub fn new(
        engine: Arc<dyn ContainerEngine>,
        db: Database,
        outbox: Outbox,
        redis: RedisClient,
        settings: ListenerSettings,
    ) -> Self {
        Self {
            engine,
            intents: IntentStore::new(db.clone()),
            db,
            outbox,
            leases: LeaseStore::new(redis.clone(), settings.lease_ttl),
            redis,
            settings,
            instance: Arc::default(),
            metrics: Metrics::new().group(),
            heartbeat: Heartbeat::detached(),
        }
    }

    /// Records into `metrics`, and has `liveness` watch the main loop: it
    /// goes round at least every retry wait (5 s at most) when healthy.
    pub fn observed(mut self, metrics: &Metrics, liveness: &Liveness) -> Self {
        self.metrics = metrics.group();
        self.heartbeat = liveness.watch("docker-events listener", shared::retry::CAP);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_deployments_and_daemons() {
        let keys = ListenerKeys::new("inst", "ABCD:EF");
        assert_eq!(keys.lease, "rtmanager:docker_events_lease:inst:ABCD:EF");
        assert_eq!(keys.cursor, "rtmanager:docker_events:cursor:inst:ABCD:EF");
    }
}
