//! `RTMANAGER_*` settings, read from the environment only.
//!
//! Names and defaults are the Go service's; the stream-name, consumer-group
//! and concurrency settings are rtmanager-rs additions. Every error names its
//! variable. Secrets are wrapped so `Debug` cannot print them. The README's
//! settings table documents each variable.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::domain::{CpuQuota, MemoryLimit, PidsLimit, ResourceLimits};
use crate::operations::{OperationSettings, StartSettings};
use crate::ports::PullPolicy;

/// A secret value (password, DSN with credentials) that never prints.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Flat on purpose: envy breaks numeric fields under `#[serde(flatten)]`.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub postgres_primary_dsn: Secret,
    #[serde(default = "d::pg_max_connections")]
    pub postgres_max_connections: u32,
    pub redis_master_addr: String,
    #[serde(default)]
    pub redis_password: Secret,

    #[serde(default = "d::docker_host")]
    pub docker_host: String,
    #[serde(default = "d::docker_network")]
    pub docker_network: String,
    #[serde(default = "d::docker_log_driver")]
    pub docker_log_driver: String,
    /// `k=v,k2=v2`
    #[serde(default)]
    pub docker_log_opts: String,
    #[serde(default = "d::pull_policy")]
    pub image_pull_policy: PullPolicy,

    #[serde(default = "d::game_state_root")]
    pub game_state_root: String,
    /// Octal, e.g. `0750`.
    #[serde(default = "d::game_state_dir_mode")]
    pub game_state_dir_mode: String,
    #[serde(default)]
    pub game_state_owner_uid: u32,
    #[serde(default)]
    pub game_state_owner_gid: u32,
    #[serde(default = "d::engine_state_mount_path")]
    pub engine_state_mount_path: String,
    #[serde(default = "d::engine_state_env_name")]
    pub engine_state_env_name: String,

    #[serde(default = "d::default_cpu_quota")]
    pub default_cpu_quota: String,
    #[serde(default = "d::default_memory")]
    pub default_memory: String,
    #[serde(default = "d::default_pids_limit")]
    pub default_pids_limit: String,

    #[serde(default = "d::game_lease_ttl_seconds")]
    pub game_lease_ttl_seconds: u64,

    /// Optional; empty disables the diagnostic fetch.
    #[serde(default)]
    pub lobby_internal_base_url: String,
    #[serde(default = "d::lobby_timeout", with = "humantime_serde")]
    pub lobby_internal_timeout: Duration,

    #[serde(default = "d::log_level")]
    pub log_level: String,
    #[serde(default = "d::shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// `host:port` of the `/metrics` + `/healthz` listener; empty disables it.
    #[serde(default = "d::metrics_addr")]
    pub metrics_addr: String,

    #[serde(default = "d::start_jobs_stream")]
    pub start_jobs_stream: String,
    #[serde(default = "d::stop_jobs_stream")]
    pub stop_jobs_stream: String,
    #[serde(default = "d::job_results_stream")]
    pub job_results_stream: String,
    #[serde(default = "d::health_events_stream")]
    pub health_events_stream: String,
    #[serde(default = "d::notification_intents_stream")]
    pub notification_intents_stream: String,

    #[serde(default = "d::start_jobs_group")]
    pub start_jobs_group: String,
    /// Where a new consumer group starts: `0` replays the whole stream; for a
    /// cut-over from the Go reader use its last offset (or `$`).
    #[serde(default = "d::group_start_id")]
    pub start_jobs_group_start_id: String,
    #[serde(default = "d::start_jobs_concurrency")]
    pub start_jobs_concurrency: usize,
    /// Consumer name inside the group; defaults to the host name.
    #[serde(default)]
    pub consumer_name: String,
    /// An entry pending this long with a consumer is reclaimed by another.
    #[serde(default = "d::job_reclaim_idle", with = "humantime_serde")]
    pub job_reclaim_idle: Duration,
    #[serde(default = "d::stream_block", with = "humantime_serde")]
    pub stream_block: Duration,

    // --- health sources (docker-events, inspect-cron, healthz-prober) ---
    #[serde(default = "d::inspect_interval", with = "humantime_serde")]
    pub inspect_interval: Duration,
    /// Bound on one container's inspect, so one stalled inspect never delays a pass.
    #[serde(default = "d::inspect_timeout", with = "humantime_serde")]
    pub inspect_timeout: Duration,
    #[serde(default = "d::inspect_concurrency")]
    pub inspect_concurrency: usize,
    #[serde(default = "d::reconcile_interval", with = "humantime_serde")]
    pub reconcile_interval: Duration,
    #[serde(default = "d::probe_interval", with = "humantime_serde")]
    pub probe_interval: Duration,
    #[serde(default = "d::probe_timeout", with = "humantime_serde")]
    pub probe_timeout: Duration,
    #[serde(default = "d::probe_failures_threshold")]
    pub probe_failures_threshold: u32,
    /// No probe of a game until this long after its start.
    #[serde(default = "d::probe_initial_grace", with = "humantime_serde")]
    pub probe_initial_grace: Duration,
    #[serde(default = "d::probe_concurrency")]
    pub probe_concurrency: usize,
    /// How often the prober re-reads its targets from PostgreSQL.
    #[serde(default = "d::probe_refresh_interval", with = "humantime_serde")]
    pub probe_refresh_interval: Duration,
    /// `hostname` (the engine endpoint as stored; run the prober inside the
    /// engines' network) or `container_ip` (the container's address on it).
    #[serde(default = "d::probe_address_mode")]
    pub probe_address_mode: String,
    #[serde(default = "d::shard_count")]
    pub shard_count: u32,
    /// Empty: the ordinal of a StatefulSet host name (`name-3` -> 3), else 0.
    #[serde(default)]
    pub shard_index: String,
    /// Stop and kill grace of rtmanager's own stops.
    #[serde(default = "d::container_stop_timeout_seconds")]
    pub container_stop_timeout_seconds: u64,

    // --- stop, cleanup, patch ---
    #[serde(default = "d::stop_jobs_group")]
    pub stop_jobs_group: String,
    #[serde(default = "d::group_start_id")]
    pub stop_jobs_group_start_id: String,
    #[serde(default = "d::start_jobs_concurrency")]
    pub stop_jobs_concurrency: usize,
    /// A patched container that exits within this grace is rolled back.
    #[serde(default = "d::patch_start_grace", with = "humantime_serde")]
    pub patch_start_grace: Duration,
    #[serde(default = "d::cleanup_interval", with = "humantime_serde")]
    pub cleanup_interval: Duration,
    #[serde(default = "d::container_retention_days")]
    pub container_retention_days: u64,

    // --- rest-gateway ---
    /// `:8096` (all interfaces) or `host:port`.
    #[serde(default = "d::internal_http_addr")]
    pub internal_http_addr: String,
    /// One bearer token per line; reloaded on SIGHUP; must not be world-readable.
    #[serde(default)]
    pub api_tokens_file: String,
    /// Comma-separated bearer tokens.
    #[serde(default)]
    pub api_tokens: Secret,
    /// `enabled` (default) or `disabled` (transitional: the Go service's callers send no token).
    #[serde(default = "d::api_auth")]
    pub api_auth: String,
    #[serde(default = "d::http_request_timeout", with = "humantime_serde")]
    pub http_request_timeout: Duration,
    #[serde(default = "d::http_body_limit")]
    pub http_body_limit: usize,
}

mod d {
    use super::*;
    pub fn pg_max_connections() -> u32 {
        10
    }
    pub fn docker_host() -> String {
        "unix:///var/run/docker.sock".into()
    }
    pub fn docker_network() -> String {
        "galaxy-net".into()
    }
    pub fn docker_log_driver() -> String {
        "json-file".into()
    }
    pub fn pull_policy() -> PullPolicy {
        PullPolicy::IfMissing
    }
    pub fn game_state_root() -> String {
        "/var/lib/galaxy/games".into()
    }
    pub fn game_state_dir_mode() -> String {
        "0750".into()
    }
    pub fn engine_state_mount_path() -> String {
        "/var/lib/galaxy-game".into()
    }
    pub fn engine_state_env_name() -> String {
        "GAME_STATE_PATH".into()
    }
    pub fn default_cpu_quota() -> String {
        "1.0".into()
    }
    pub fn default_memory() -> String {
        "512m".into()
    }
    pub fn default_pids_limit() -> String {
        "512".into()
    }
    pub fn game_lease_ttl_seconds() -> u64 {
        60
    }
    pub fn lobby_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn log_level() -> String {
        "info".into()
    }
    pub fn shutdown_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn metrics_addr() -> String {
        "0.0.0.0:9464".into()
    }
    pub fn start_jobs_stream() -> String {
        "runtime:start_jobs".into()
    }
    pub fn stop_jobs_stream() -> String {
        "runtime:stop_jobs".into()
    }
    pub fn job_results_stream() -> String {
        "runtime:job_results".into()
    }
    pub fn health_events_stream() -> String {
        "runtime:health_events".into()
    }
    pub fn notification_intents_stream() -> String {
        "notification:intents".into()
    }
    pub fn start_jobs_group() -> String {
        "rtmanager-start-jobs".into()
    }
    pub fn group_start_id() -> String {
        "0".into()
    }
    pub fn start_jobs_concurrency() -> usize {
        4
    }
    pub fn job_reclaim_idle() -> Duration {
        Duration::from_secs(60)
    }
    pub fn stream_block() -> Duration {
        Duration::from_secs(2)
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
    pub fn container_stop_timeout_seconds() -> u64 {
        30
    }
    pub fn stop_jobs_group() -> String {
        "rtmanager-stop-jobs".into()
    }
    pub fn patch_start_grace() -> Duration {
        Duration::from_secs(3)
    }
    pub fn cleanup_interval() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn container_retention_days() -> u64 {
        30
    }
    pub fn internal_http_addr() -> String {
        ":8096".into()
    }
    pub fn api_auth() -> String {
        "enabled".into()
    }
    pub fn http_request_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn http_body_limit() -> usize {
        64 * 1024
    }
}

/// A setting that is missing or invalid; the message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

pub const PREFIX: &str = "RTMANAGER_";

/// The one `RTMANAGER_*` variable whose removal makes the set deserialize
/// (a default then applies), i.e. the variable whose value is invalid.
fn culprit(vars: &[(String, String)]) -> Option<(String, String)> {
    vars.iter()
        .filter(|(name, _)| name.starts_with(PREFIX))
        .find(|(name, _)| {
            let without = vars.iter().filter(|(n, _)| n != name).cloned();
            !matches!(
                envy::prefixed(PREFIX).from_iter::<_, Config>(without),
                Err(envy::Error::Custom(_))
            )
        })
        .cloned()
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads from any set of variables (tests pass their own).
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let config: Config = envy::prefixed(PREFIX)
            .from_iter(vars.clone())
            .map_err(|e| {
                ConfigError(match e {
                    envy::Error::MissingValue(field) => {
                        format!("{PREFIX}{} is required", field.to_uppercase())
                    }
                    // envy names the variable (without its prefix) only for
                    // primitive parse errors; otherwise find the culprit.
                    envy::Error::Custom(msg) if msg.contains("provided by ") => {
                        msg.replace("provided by ", &format!("provided by {PREFIX}"))
                    }
                    envy::Error::Custom(msg) => match culprit(&vars) {
                        Some((name, value)) => format!("{name}={value:?}: {msg}"),
                        None => msg,
                    },
                })
            })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |var: &str, why: String| Err(ConfigError(format!("{PREFIX}{var}: {why}")));
        if self.postgres_primary_dsn.expose().is_empty() {
            return bad("POSTGRES_PRIMARY_DSN", "must not be empty".into());
        }
        if self.redis_master_addr.is_empty() {
            return bad("REDIS_MASTER_ADDR", "must not be empty".into());
        }
        if self.docker_network.is_empty() {
            return bad("DOCKER_NETWORK", "must not be empty".into());
        }
        if !self.game_state_root.starts_with('/') {
            return bad("GAME_STATE_ROOT", "must be an absolute path".into());
        }
        if !self.engine_state_mount_path.starts_with('/') {
            return bad("ENGINE_STATE_MOUNT_PATH", "must be an absolute path".into());
        }
        if self.engine_state_env_name.is_empty()
            || !self
                .engine_state_env_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return bad("ENGINE_STATE_ENV_NAME", "must be a variable name".into());
        }
        if let Err(e) = self.state_dir_mode() {
            return bad("GAME_STATE_DIR_MODE", e);
        }
        if let Err(e) = self.log_opts() {
            return bad("DOCKER_LOG_OPTS", e);
        }
        self.default_limits()?;
        if self.game_lease_ttl_seconds == 0 {
            return bad("GAME_LEASE_TTL_SECONDS", "must be positive".into());
        }
        if self.start_jobs_concurrency == 0 {
            return bad("START_JOBS_CONCURRENCY", "must be positive".into());
        }
        if self.stream_block.is_zero() || self.stream_block > Duration::from_secs(30) {
            return bad("STREAM_BLOCK", "must be between 1ms and 30s".into());
        }
        for (var, value) in [
            ("INSPECT_INTERVAL", self.inspect_interval),
            ("INSPECT_TIMEOUT", self.inspect_timeout),
            ("RECONCILE_INTERVAL", self.reconcile_interval),
            ("PROBE_INTERVAL", self.probe_interval),
            ("PROBE_TIMEOUT", self.probe_timeout),
            ("PROBE_REFRESH_INTERVAL", self.probe_refresh_interval),
        ] {
            if value.is_zero() {
                return bad(var, "must be positive".into());
            }
        }
        if self.inspect_concurrency == 0 {
            return bad("INSPECT_CONCURRENCY", "must be positive".into());
        }
        if self.probe_concurrency == 0 {
            return bad("PROBE_CONCURRENCY", "must be positive".into());
        }
        if self.probe_failures_threshold == 0 {
            return bad("PROBE_FAILURES_THRESHOLD", "must be positive".into());
        }
        if !matches!(
            self.probe_address_mode.as_str(),
            "hostname" | "container_ip"
        ) {
            return bad(
                "PROBE_ADDRESS_MODE",
                "must be hostname or container_ip".into(),
            );
        }
        if !matches!(self.api_auth.as_str(), "enabled" | "disabled") {
            return bad("API_AUTH", "must be enabled or disabled".into());
        }
        if self.stop_jobs_concurrency == 0 {
            return bad("STOP_JOBS_CONCURRENCY", "must be positive".into());
        }
        if self.shard_count == 0 {
            return bad("SHARD_COUNT", "must be positive".into());
        }
        match self.shard_index() {
            Ok(i) if i < self.shard_count => {}
            Ok(i) => {
                return bad(
                    "SHARD_INDEX",
                    format!(
                        "{i} is not below RTMANAGER_SHARD_COUNT {}",
                        self.shard_count
                    ),
                )
            }
            Err(e) => return bad("SHARD_INDEX", e),
        }
        Ok(())
    }

    pub fn state_dir_mode(&self) -> Result<u32, String> {
        u32::from_str_radix(self.game_state_dir_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| format!("{:?} is not an octal mode", self.game_state_dir_mode))
    }

    /// `RTMANAGER_DOCKER_LOG_OPTS` as pairs; a part without `=` is an error.
    pub fn log_opts(&self) -> Result<Vec<(String, String)>, String> {
        self.docker_log_opts
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
                _ => Err(format!("{p:?} is not key=value")),
            })
            .collect()
    }

    pub fn default_limits(&self) -> Result<ResourceLimits, ConfigError> {
        fn named(var: &'static str) -> impl Fn(crate::domain::limits::LimitError) -> ConfigError {
            move |e| ConfigError(format!("{PREFIX}{var}: {e}"))
        }
        Ok(ResourceLimits {
            cpu: CpuQuota::parse(&self.default_cpu_quota).map_err(named("DEFAULT_CPU_QUOTA"))?,
            memory: MemoryLimit::parse(&self.default_memory).map_err(named("DEFAULT_MEMORY"))?,
            pids: PidsLimit::parse(&self.default_pids_limit)
                .map_err(named("DEFAULT_PIDS_LIMIT"))?,
        })
    }

    /// `RTMANAGER_SHARD_INDEX`, else the ordinal of a StatefulSet host name
    /// (`healthz-prober-2` -> 2) when sharding, else 0.
    pub fn shard_index(&self) -> Result<u32, String> {
        if !self.shard_index.is_empty() {
            return self
                .shard_index
                .parse()
                .map_err(|_| format!("{:?} is not a number", self.shard_index));
        }
        if self.shard_count == 1 {
            return Ok(0);
        }
        let host = self.consumer_name();
        host.rsplit('-')
            .next()
            .and_then(|ordinal| ordinal.parse().ok())
            .ok_or_else(|| format!("not set, and host name {host:?} has no StatefulSet ordinal"))
    }

    /// `RTMANAGER_INTERNAL_HTTP_ADDR` as a socket address (`:8096` = all interfaces).
    pub fn internal_http_socket(&self) -> Result<std::net::SocketAddr, ConfigError> {
        let raw = &self.internal_http_addr;
        let full = if raw.starts_with(':') {
            format!("0.0.0.0{raw}")
        } else {
            raw.clone()
        };
        full.parse()
            .map_err(|e| ConfigError(format!("{PREFIX}INTERNAL_HTTP_ADDR {raw:?}: {e}")))
    }

    /// How engine containers are made.
    pub fn start_settings(&self) -> Result<StartSettings, ConfigError> {
        let err = |e: String| ConfigError(e);
        Ok(StartSettings {
            network: self.docker_network.clone(),
            log_driver: self.docker_log_driver.clone(),
            log_opts: self.log_opts().map_err(err)?.into_iter().collect(),
            pull_policy: self.image_pull_policy,
            state_root: std::path::PathBuf::from(&self.game_state_root),
            state_dir_mode: self.state_dir_mode().map_err(err)?,
            state_owner: (self.game_state_owner_uid, self.game_state_owner_gid),
            mount_path: self.engine_state_mount_path.clone(),
            state_env_name: self.engine_state_env_name.clone(),
            default_limits: self.default_limits()?,
        })
    }

    pub fn operation_settings(&self) -> Result<OperationSettings, ConfigError> {
        Ok(OperationSettings {
            start: self.start_settings()?,
            stop_timeout: self.container_stop_timeout(),
            patch_grace: self.patch_start_grace,
        })
    }

    pub fn container_stop_timeout(&self) -> Duration {
        Duration::from_secs(self.container_stop_timeout_seconds)
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.game_lease_ttl_seconds)
    }

    pub fn consumer_name(&self) -> String {
        if !self.consumer_name.is_empty() {
            return self.consumer_name.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| format!("rtmanager-{}", std::process::id()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        [
            (
                "RTMANAGER_POSTGRES_PRIMARY_DSN",
                "postgres://u:hunter2@h/db",
            ),
            ("RTMANAGER_REDIS_MASTER_ADDR", "127.0.0.1:6379"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn defaults_are_the_go_services() {
        let c = Config::from_vars(vars(&[])).unwrap();
        assert_eq!(c.docker_network, "galaxy-net");
        assert_eq!(c.docker_log_driver, "json-file");
        assert_eq!(c.image_pull_policy, PullPolicy::IfMissing);
        assert_eq!(c.state_dir_mode().unwrap(), 0o750);
        assert_eq!(c.engine_state_mount_path, "/var/lib/galaxy-game");
        assert_eq!(c.engine_state_env_name, "GAME_STATE_PATH");
        assert_eq!(c.game_lease_ttl_seconds, 60);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(
            c.default_limits().unwrap().memory.bytes(),
            512 * 1024 * 1024
        );
        assert_eq!(c.start_jobs_stream, "runtime:start_jobs");
    }

    #[test]
    fn errors_name_the_variable_and_hide_secrets() {
        let err = Config::from_vars(vars(&[])[1..].to_vec())
            .unwrap_err()
            .to_string();
        assert!(err.contains("RTMANAGER_POSTGRES_PRIMARY_DSN"), "{err}");
        for (var, value) in [
            ("RTMANAGER_GAME_LEASE_TTL_SECONDS", "soon"),
            ("RTMANAGER_IMAGE_PULL_POLICY", "sometimes"),
            ("RTMANAGER_DEFAULT_MEMORY", "12parsecs"),
            ("RTMANAGER_GAME_STATE_DIR_MODE", "rwx"),
            ("RTMANAGER_DOCKER_LOG_OPTS", "max-size"),
            ("RTMANAGER_SHUTDOWN_TIMEOUT", "forever"),
        ] {
            let err = Config::from_vars(vars(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(var), "{var}: {err}");
        }
        let c = Config::from_vars(vars(&[])).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
