//! The sections of the health and cleanup jobs: inspect-cron,
//! healthz-prober and cleanup-cron.

use std::time::Duration;

use serde::Deserialize;

use super::{ranges, ConfigError, Section};

/// inspect-cron's passes (docker-events reads `concurrency` for its catch-up).
#[derive(Debug, Clone)]
pub struct InspectConfig {
    /// The period of `inspect-cron --every` without a value.
    pub interval: Duration,
    /// Bound on one container's inspect.
    pub timeout: Duration,
    /// Containers inspected at once.
    pub concurrency: usize,
    /// With `--every`, how often a pass also reconciles.
    pub reconcile_interval: Duration,
}

#[derive(Deserialize)]
pub struct InspectEnv {
    #[serde(default = "d::inspect_interval", with = "humantime_serde")]
    inspect_interval: Duration,
    #[serde(default = "d::inspect_timeout", with = "humantime_serde")]
    inspect_timeout: Duration,
    #[serde(default = "d::inspect_concurrency")]
    inspect_concurrency: usize,
    #[serde(default = "d::reconcile_interval", with = "humantime_serde")]
    reconcile_interval: Duration,
}

impl Section for InspectConfig {
    type Raw = InspectEnv;
    fn from_raw(raw: InspectEnv) -> Result<Self, ConfigError> {
        ranges::check(&[
            ("INSPECT_INTERVAL", raw.inspect_interval.into()),
            ("INSPECT_TIMEOUT", raw.inspect_timeout.into()),
            ("INSPECT_CONCURRENCY", raw.inspect_concurrency.into()),
            ("RECONCILE_INTERVAL", raw.reconcile_interval.into()),
        ])?;
        Ok(Self {
            interval: raw.inspect_interval,
            timeout: raw.inspect_timeout,
            concurrency: raw.inspect_concurrency,
            reconcile_interval: raw.reconcile_interval,
        })
    }
}

/// How the prober reaches an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressMode {
    /// The stored endpoint's host name: the prober runs inside the engines' network.
    Hostname,
    /// The container's address on the engines' network: the prober runs on the Docker host.
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

/// healthz-prober.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub interval: Duration,
    pub timeout: Duration,
    /// Failures in a row before one `probe_failed`.
    pub failures_threshold: u32,
    /// No probe of a game until this long after its start.
    pub initial_grace: Duration,
    pub concurrency: usize,
    /// How often the targets are re-read from PostgreSQL.
    pub refresh_interval: Duration,
    pub address_mode: AddressMode,
    pub shard_count: u32,
    /// This prober's shard, below `shard_count`.
    pub shard_index: u32,
}

#[derive(Deserialize)]
pub struct ProbeEnv {
    #[serde(default = "d::probe_interval", with = "humantime_serde")]
    probe_interval: Duration,
    #[serde(default = "d::probe_timeout", with = "humantime_serde")]
    probe_timeout: Duration,
    #[serde(default = "d::probe_failures_threshold")]
    probe_failures_threshold: u32,
    #[serde(default = "d::probe_initial_grace", with = "humantime_serde")]
    probe_initial_grace: Duration,
    #[serde(default = "d::probe_concurrency")]
    probe_concurrency: usize,
    #[serde(default = "d::probe_refresh_interval", with = "humantime_serde")]
    probe_refresh_interval: Duration,
    #[serde(default = "d::probe_address_mode")]
    probe_address_mode: String,
    #[serde(default = "d::shard_count")]
    shard_count: u32,
    /// Empty: the ordinal of a StatefulSet host name (`name-3` -> 3), else 0.
    #[serde(default)]
    shard_index: String,
    /// For the StatefulSet ordinal.
    #[serde(default)]
    consumer_name: String,
}

impl Section for ProbeConfig {
    type Raw = ProbeEnv;
    fn from_raw(raw: ProbeEnv) -> Result<Self, ConfigError> {
        ranges::check(&[
            ("PROBE_INTERVAL", raw.probe_interval.into()),
            ("PROBE_TIMEOUT", raw.probe_timeout.into()),
            (
                "PROBE_FAILURES_THRESHOLD",
                raw.probe_failures_threshold.into(),
            ),
            ("PROBE_INITIAL_GRACE", raw.probe_initial_grace.into()),
            ("PROBE_CONCURRENCY", raw.probe_concurrency.into()),
            ("PROBE_REFRESH_INTERVAL", raw.probe_refresh_interval.into()),
            ("SHARD_COUNT", raw.shard_count.into()),
        ])?;
        let address_mode = AddressMode::parse(&raw.probe_address_mode).ok_or_else(|| {
            ConfigError::var(
                "PROBE_ADDRESS_MODE",
                format!(
                    "{:?} is not hostname or container_ip",
                    raw.probe_address_mode
                ),
            )
        })?;
        let shard_index = shard_index(&raw).map_err(|e| ConfigError::var("SHARD_INDEX", e))?;
        if shard_index >= raw.shard_count {
            return Err(ConfigError::var(
                "SHARD_INDEX",
                format!(
                    "{shard_index} is not below RTMANAGER_SHARD_COUNT {}",
                    raw.shard_count
                ),
            ));
        }
        Ok(Self {
            interval: raw.probe_interval,
            timeout: raw.probe_timeout,
            failures_threshold: raw.probe_failures_threshold,
            initial_grace: raw.probe_initial_grace,
            concurrency: raw.probe_concurrency,
            refresh_interval: raw.probe_refresh_interval,
            address_mode,
            shard_count: raw.shard_count,
            shard_index,
        })
    }
}

/// `RTMANAGER_SHARD_INDEX`, else the ordinal of a StatefulSet host name
/// (`healthz-prober-2` -> 2) when sharding, else 0.
fn shard_index(raw: &ProbeEnv) -> Result<u32, String> {
    if !raw.shard_index.is_empty() {
        return raw
            .shard_index
            .parse()
            .map_err(|_| format!("{:?} is not a number", raw.shard_index));
    }
    if raw.shard_count == 1 {
        return Ok(0);
    }
    let host = super::common::instance_name(&raw.consumer_name);
    host.rsplit('-')
        .next()
        .and_then(|ordinal| ordinal.parse().ok())
        .ok_or_else(|| format!("not set, and host name {host:?} has no StatefulSet ordinal"))
}

/// cleanup-cron.
#[derive(Debug, Clone)]
pub struct CleanupConfig {
    /// The period of `cleanup-cron --every` without a value.
    pub interval: Duration,
    /// A runtime stopped longer than this has its container removed.
    pub retention: Duration,
    /// `RTMANAGER_IMAGE_RETENTION`: an image of a managed game unused this
    /// long (no container made from it, no record naming it as current) is
    /// removed.
    pub image_retention: Duration,
}

#[derive(Deserialize)]
pub struct CleanupEnv {
    #[serde(default = "d::cleanup_interval", with = "humantime_serde")]
    cleanup_interval: Duration,
    #[serde(default = "d::container_retention_days")]
    container_retention_days: u64,
    #[serde(default = "d::image_retention", with = "humantime_serde")]
    image_retention: Duration,
}

impl Section for CleanupConfig {
    type Raw = CleanupEnv;
    fn from_raw(raw: CleanupEnv) -> Result<Self, ConfigError> {
        ranges::check(&[
            ("CLEANUP_INTERVAL", raw.cleanup_interval.into()),
            (
                "CONTAINER_RETENTION_DAYS",
                raw.container_retention_days.into(),
            ),
            ("IMAGE_RETENTION", raw.image_retention.into()),
        ])?;
        // In range, so no overflow: at most 36 500 days.
        let retention = Duration::from_secs(raw.container_retention_days * 24 * 3600);
        Ok(Self {
            interval: raw.cleanup_interval,
            retention,
            image_retention: raw.image_retention,
        })
    }
}

mod d {
    use std::time::Duration;

    pub fn image_retention() -> Duration {
        Duration::from_secs(7 * 24 * 3600)
    }
    pub fn inspect_interval() -> Duration {
        Duration::from_secs(30)
    }
    pub fn inspect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn inspect_concurrency() -> usize {
        16
    }
    pub fn reconcile_interval() -> Duration {
        Duration::from_secs(300)
    }
    pub fn probe_interval() -> Duration {
        Duration::from_secs(15)
    }
    pub fn probe_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn probe_failures_threshold() -> u32 {
        3
    }
    pub fn probe_initial_grace() -> Duration {
        Duration::from_secs(10)
    }
    pub fn probe_concurrency() -> usize {
        256
    }
    pub fn probe_refresh_interval() -> Duration {
        Duration::from_secs(5)
    }
    pub fn probe_address_mode() -> String {
        "hostname".into()
    }
    pub fn shard_count() -> u32 {
        1
    }
    pub fn cleanup_interval() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn container_retention_days() -> u64 {
        30
    }
}
