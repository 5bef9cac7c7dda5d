//! The prober's settings, from the probe section of the configuration
//! (`RTMANAGER_PROBE_*`, `RTMANAGER_SHARD_*`), parsed and validated once at
//! start-up, so a bad value stops the process there instead of at the first
//! probe.

use std::time::Duration;

pub use shared::config::AddressMode;
use shared::config::ProbeConfig;
use shared::domain::GameId;

use crate::schedule::shard_of;
use crate::HealthzProberConfig;

/// Prober settings (the probe section and the shutdown bound).
#[derive(Debug, Clone)]
pub struct ProberSettings {
    pub interval: Duration,
    pub timeout: Duration,
    pub threshold: u32,
    pub initial_grace: Duration,
    pub concurrency: usize,
    pub refresh_interval: Duration,
    /// How the engine's address is found; what each mode is for is in
    /// [`crate::address`].
    pub address_mode: AddressMode,
    pub shard_count: u32,
    pub shard_index: u32,
    /// Bound on the in-flight probes' finish at shutdown.
    pub shutdown_timeout: Duration,
}

impl ProberSettings {
    pub fn from_config(config: &HealthzProberConfig) -> Self {
        let ProbeConfig {
            interval,
            timeout,
            failures_threshold,
            initial_grace,
            concurrency,
            refresh_interval,
            address_mode,
            shard_count,
            shard_index,
        } = config.probe.clone();
        Self {
            interval,
            timeout,
            threshold: failures_threshold,
            initial_grace,
            concurrency,
            refresh_interval,
            address_mode,
            shard_count,
            shard_index,
            shutdown_timeout: config.common.process.shutdown_timeout,
        }
    }

    /// Whether this instance probes the game.
    pub fn owns(&self, game_id: &GameId) -> bool {
        shard_of(game_id, self.shard_count) == self.shard_index
    }
}
