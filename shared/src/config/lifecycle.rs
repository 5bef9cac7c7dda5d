//! How engine containers are made and stopped: the state directories on the
//! Docker host and the lifecycle operations' settings.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ranges, ConfigError, DockerConfig, Section};
use crate::domain::{CpuQuota, MemoryLimit, PidsLimit, ResourceLimits};
use crate::operations::{OperationSettings, StartSettings};
use crate::ports::PullPolicy;

/// The game state directories (start makes them; inspect-cron writes their
/// path into adopted records).
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// Absolute; each game gets `<root>/<game_id>`.
    pub root: PathBuf,
    pub dir_mode: u32,
    pub owner: (u32, u32),
    /// Where the directory is mounted inside the engine.
    pub mount_path: String,
    /// The engine variable that holds the mount path.
    pub env_name: String,
}

#[derive(Deserialize)]
pub struct StateEnv {
    #[serde(default = "d::game_state_root")]
    game_state_root: String,
    /// Octal, e.g. `0750`.
    #[serde(default = "d::game_state_dir_mode")]
    game_state_dir_mode: String,
    #[serde(default)]
    game_state_owner_uid: u32,
    #[serde(default)]
    game_state_owner_gid: u32,
    #[serde(default = "d::engine_state_mount_path")]
    engine_state_mount_path: String,
    #[serde(default = "d::engine_state_env_name")]
    engine_state_env_name: String,
}

impl Section for StateConfig {
    type Raw = StateEnv;
    fn from_raw(raw: StateEnv) -> Result<Self, ConfigError> {
        ranges::check(&[
            ("GAME_STATE_OWNER_UID", raw.game_state_owner_uid.into()),
            ("GAME_STATE_OWNER_GID", raw.game_state_owner_gid.into()),
        ])?;
        if !raw.game_state_root.starts_with('/') {
            return Err(ConfigError::var(
                "GAME_STATE_ROOT",
                "must be an absolute path",
            ));
        }
        if !raw.engine_state_mount_path.starts_with('/') {
            return Err(ConfigError::var(
                "ENGINE_STATE_MOUNT_PATH",
                "must be an absolute path",
            ));
        }
        let name = &raw.engine_state_env_name;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(ConfigError::var(
                "ENGINE_STATE_ENV_NAME",
                "must be a variable name",
            ));
        }
        Ok(Self {
            root: PathBuf::from(&raw.game_state_root),
            dir_mode: octal_mode(&raw.game_state_dir_mode)
                .map_err(|e| ConfigError::var("GAME_STATE_DIR_MODE", e))?,
            owner: (raw.game_state_owner_uid, raw.game_state_owner_gid),
            mount_path: raw.engine_state_mount_path,
            env_name: raw.engine_state_env_name,
        })
    }
}

fn octal_mode(raw: &str) -> Result<u32, String> {
    u32::from_str_radix(raw.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{raw:?} is not an octal mode"))
}

/// The lifecycle operations: containers' logging, images, default limits,
/// stop and patch timings, and the Lobby diagnostic fetch.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    pub log_driver: String,
    pub log_opts: HashMap<String, String>,
    pub pull_policy: PullPolicy,
    pub default_limits: ResourceLimits,
    /// Grace between SIGTERM and SIGKILL of rtmanager's own stops.
    pub stop_timeout: Duration,
    /// A patched container that exits within this grace is rolled back.
    pub patch_grace: Duration,
    /// `None` disables the diagnostic fetch.
    pub lobby_base_url: Option<String>,
    pub lobby_timeout: Duration,
}

#[derive(Deserialize)]
pub struct LifecycleEnv {
    #[serde(default = "d::docker_log_driver")]
    docker_log_driver: String,
    /// `k=v,k2=v2`
    #[serde(default)]
    docker_log_opts: String,
    #[serde(default = "d::pull_policy")]
    image_pull_policy: PullPolicy,
    #[serde(default = "d::default_cpu_quota")]
    default_cpu_quota: String,
    #[serde(default = "d::default_memory")]
    default_memory: String,
    #[serde(default = "d::default_pids_limit")]
    default_pids_limit: String,
    #[serde(default = "d::container_stop_timeout_seconds")]
    container_stop_timeout_seconds: u64,
    #[serde(default = "d::patch_start_grace", with = "humantime_serde")]
    patch_start_grace: Duration,
    #[serde(default)]
    lobby_internal_base_url: String,
    #[serde(default = "d::lobby_timeout", with = "humantime_serde")]
    lobby_internal_timeout: Duration,
}

impl Section for LifecycleConfig {
    type Raw = LifecycleEnv;
    fn from_raw(raw: LifecycleEnv) -> Result<Self, ConfigError> {
        fn named(var: &'static str) -> impl Fn(crate::domain::limits::LimitError) -> ConfigError {
            move |e| ConfigError::var(var, e)
        }
        ranges::check(&[
            (
                "CONTAINER_STOP_TIMEOUT_SECONDS",
                raw.container_stop_timeout_seconds.into(),
            ),
            ("PATCH_START_GRACE", raw.patch_start_grace.into()),
            ("LOBBY_INTERNAL_TIMEOUT", raw.lobby_internal_timeout.into()),
        ])?;
        Ok(Self {
            log_opts: log_opts(&raw.docker_log_opts)
                .map_err(|e| ConfigError::var("DOCKER_LOG_OPTS", e))?,
            log_driver: raw.docker_log_driver,
            pull_policy: raw.image_pull_policy,
            default_limits: ResourceLimits {
                cpu: CpuQuota::parse(&raw.default_cpu_quota).map_err(named("DEFAULT_CPU_QUOTA"))?,
                memory: MemoryLimit::parse(&raw.default_memory).map_err(named("DEFAULT_MEMORY"))?,
                pids: PidsLimit::parse(&raw.default_pids_limit)
                    .map_err(named("DEFAULT_PIDS_LIMIT"))?,
            },
            stop_timeout: Duration::from_secs(raw.container_stop_timeout_seconds),
            patch_grace: raw.patch_start_grace,
            lobby_base_url: (!raw.lobby_internal_base_url.is_empty())
                .then_some(raw.lobby_internal_base_url),
            lobby_timeout: raw.lobby_internal_timeout,
        })
    }
}

/// `k=v,k2=v2` as pairs; a part without `=` is an error.
fn log_opts(raw: &str) -> Result<HashMap<String, String>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(format!("{p:?} is not key=value")),
        })
        .collect()
}

impl LifecycleConfig {
    /// The operations' settings, with the engines' network and state directories.
    pub fn operation_settings(
        &self,
        docker: &DockerConfig,
        state: &StateConfig,
    ) -> OperationSettings {
        OperationSettings {
            start: StartSettings {
                network: docker.network.clone(),
                log_driver: self.log_driver.clone(),
                log_opts: self.log_opts.clone(),
                pull_policy: self.pull_policy,
                state_root: state.root.clone(),
                state_dir_mode: state.dir_mode,
                state_owner: state.owner,
                mount_path: state.mount_path.clone(),
                state_env_name: state.env_name.clone(),
                default_limits: self.default_limits,
            },
            stop_timeout: self.stop_timeout,
            patch_grace: self.patch_grace,
        }
    }
}

mod d {
    use std::time::Duration;

    use crate::ports::PullPolicy;

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
    pub fn docker_log_driver() -> String {
        "json-file".into()
    }
    pub fn pull_policy() -> PullPolicy {
        PullPolicy::IfMissing
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
    pub fn container_stop_timeout_seconds() -> u64 {
        30
    }
    pub fn patch_start_grace() -> Duration {
        Duration::from_secs(3)
    }
    pub fn lobby_timeout() -> Duration {
        Duration::from_secs(2)
    }
}
