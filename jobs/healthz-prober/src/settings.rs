//! The prober's settings, resolved once from the shared [`Config`]
//! (`RTMANAGER_PROBE_*`, `RTMANAGER_SHARD_*`), so a bad value stops the
//! process at start-up instead of at the first probe.

use std::time::Duration;

use shared::config::{Config, ConfigError};
use shared::domain::GameId;

use crate::schedule::shard_of;

/// How the engine's address is found (`RTMANAGER_PROBE_ADDRESS_MODE`); what
/// each mode is for is in [`crate::address`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressMode {
    /// `hostname` (default): the stored endpoint, as Game Master calls it.
    Hostname,
    /// `container_ip`: the container's address on its network, inspected.
    ContainerIp,
}

impl AddressMode {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "hostname" => Some(Self::Hostname),
            "container_ip" => Some(Self::ContainerIp),
            _ => None,
        }
    }
}

/// Prober settings, resolved from [`Config`] once.
#[derive(Debug, Clone)]
pub struct ProberSettings {
    pub interval: Duration,
    pub timeout: Duration,
    pub threshold: u32,
    pub initial_grace: Duration,
    pub concurrency: usize,
    pub refresh_interval: Duration,
    pub address_mode: AddressMode,
    pub shard_count: u32,
    pub shard_index: u32,
    /// Bound on the in-flight probes' finish at shutdown.
    pub shutdown_timeout: Duration,
}

impl ProberSettings {
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let address_mode = AddressMode::parse(&config.probe_address_mode).ok_or_else(|| {
            ConfigError(format!(
                "RTMANAGER_PROBE_ADDRESS_MODE: {:?} is not hostname or container_ip",
                config.probe_address_mode
            ))
        })?;
        let shard_index = config
            .shard_index()
            .map_err(|e| ConfigError(format!("RTMANAGER_SHARD_INDEX: {e}")))?;
        Ok(Self {
            interval: config.probe_interval,
            timeout: config.probe_timeout,
            threshold: config.probe_failures_threshold,
            initial_grace: config.probe_initial_grace,
            concurrency: config.probe_concurrency,
            refresh_interval: config.probe_refresh_interval,
            address_mode,
            shard_count: config.shard_count,
            shard_index,
            shutdown_timeout: config.shutdown_timeout,
        })
    }

    /// Whether this instance probes the game.
    pub fn owns(&self, game_id: &GameId) -> bool {
        shard_of(game_id, self.shard_count) == self.shard_index
    }
}
