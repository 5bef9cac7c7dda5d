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

/// Prober settings: the probe section and the shutdown bound.
#[derive(Debug, Clone)]
pub struct ProberSettings {
    pub probe: ProbeConfig,
    /// Bound on the in-flight probes' finish at shutdown.
    pub shutdown_timeout: Duration,
}

impl ProberSettings {
    pub fn from_config(config: &HealthzProberConfig) -> Self {
        Self {
            probe: config.probe.clone(),
            shutdown_timeout: config.common.process.shutdown_timeout,
        }
    }

    /// Whether this instance probes the game.
    pub fn owns(&self, game_id: &GameId) -> bool {
        shard_of(game_id, self.probe.shard_count) == self.probe.shard_index
    }
}
