//! `RTMANAGER_*` settings, read from the environment only, in typed sections.
//!
//! Names and defaults are the Go service's; the stream-name, consumer-group
//! and concurrency settings are rtmanager-rs additions. Each section is
//! parsed once into the types the code uses (durations, limits, modes,
//! socket addresses) and validated there; every error names its variable.
//! A job reads only the sections it uses (its `*Config` type says which), so
//! a bad probe setting never stops start-job. Secrets are wrapped so `Debug`
//! cannot print them. The README's settings table documents each variable
//! and its section.
//!
//! - [`common`]: what every process reads: process, PostgreSQL, Docker,
//!   stream names; and [`redis`]: where Redis is (one master, Sentinel or a
//!   Cluster) and the ACL user.
//! - [`lifecycle`]: how engine containers are made and stopped (state
//!   directories, limits, leases, Lobby).
//! - [`jobs`]: the job-specific sections: consumers, inspect, probe, cleanup,
//!   gateway.
//! - [`retention`]: how long the history tables keep their rows.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Deserialize;

pub mod common;
pub mod consumers;
pub mod gateway;
pub mod jobs;
pub mod lifecycle;
pub mod ranges;
pub mod redis_settings;
pub mod retention;

pub use common::{
    CommonConfig, DockerConfig, MigrationMode, PostgresConfig, ProcessConfig, StreamsConfig,
};
pub use consumers::ConsumerConfig;
pub use gateway::{AuthMode, GatewayConfig, TlsFiles};
pub use jobs::{AddressMode, CleanupConfig, InspectConfig, ProbeConfig};
pub use lifecycle::{LifecycleConfig, StateConfig};
pub use redis_settings::{split_host_port, RedisConfig, RedisTls, SentinelConfig};
pub use retention::RetentionConfig;

pub const PREFIX: &str = "RTMANAGER_";

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

/// A setting that is missing or invalid; the message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    /// `RTMANAGER_<var>: <why>`.
    pub fn var(var: &str, why: impl fmt::Display) -> Self {
        Self(format!("{PREFIX}{var}: {why}"))
    }
}

/// The variables a process was started with (tests pass their own).
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: Vec<(String, String)>,
}

impl Env {
    pub fn from_process() -> Self {
        Self::from_vars(std::env::vars())
    }

    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            vars: vars.into_iter().collect(),
        }
    }

    /// Reads one section: deserializes its variables (unknown ones are
    /// ignored) and validates them.
    pub fn section<S: Section>(&self) -> Result<S, ConfigError> {
        S::from_raw(deserialize::<S::Raw>(&self.vars)?)
    }
}

/// One group of settings: `Raw` is what the environment holds (flat, with
/// the defaults), `Self` the parsed and validated values.
pub trait Section: Sized {
    type Raw: DeserializeOwned;
    fn from_raw(raw: Self::Raw) -> Result<Self, ConfigError>;
}

/// A process's whole configuration: the sections it reads.
pub trait JobConfig: Sized {
    /// The job's name (its binary's): the `job` field of every log line
    /// and `rtmanager_build_info{job}`.
    const JOB: &'static str;
    fn from_env(env: &Env) -> Result<Self, ConfigError>;
    fn common(&self) -> &CommonConfig;
    /// Whether the process talks to Docker with these settings. Without it,
    /// start-up opens no socket and `/readyz` has no `docker` check (a
    /// `hostname`-mode prober). The macro's optional `job = "..", docker = fn;` sets it.
    fn uses_docker(&self) -> bool {
        true
    }
}

/// Flat on purpose: envy breaks numeric fields under `#[serde(flatten)]`.
fn deserialize<T: DeserializeOwned>(vars: &[(String, String)]) -> Result<T, ConfigError> {
    envy::prefixed(PREFIX)
        .from_iter::<_, T>(vars.iter().cloned())
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
                envy::Error::Custom(msg) => match culprit::<T>(vars, &msg) {
                    Some((name, value)) => format!("{name}={value:?}: {msg}"),
                    None => msg,
                },
            })
        })
}

/// The `RTMANAGER_*` variable the error `msg` is about. Variables are taken
/// out one at a time (a default then applies) as long as the same error
/// remains; the first whose removal makes it go away (the set deserializes,
/// or fails on another variable) is the culprit. Taking the others out as
/// we go finds it even when two variables fail with the same message.
fn culprit<T: DeserializeOwned>(vars: &[(String, String)], msg: &str) -> Option<(String, String)> {
    let mut kept: Vec<(String, String)> = vars.to_vec();
    for (name, value) in vars.iter().filter(|(name, _)| name.starts_with(PREFIX)) {
        let without: Vec<(String, String)> =
            kept.iter().filter(|(n, _)| n != name).cloned().collect();
        match envy::prefixed(PREFIX).from_iter::<_, T>(without.clone()) {
            Err(envy::Error::Custom(m)) if m == msg => kept = without,
            // A required variable: it stays, and tells nothing.
            Err(envy::Error::MissingValue(_)) => {}
            _ => return Some((name.clone(), value.clone())),
        }
    }
    None
}

/// Every section: what the system tests and tools read to build any job's
/// configuration from one set of variables (`From<&Config>` on each job's
/// config type).
#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub lifecycle: LifecycleConfig,
    pub state: StateConfig,
    pub start_jobs: ConsumerConfig,
    pub stop_jobs: ConsumerConfig,
    pub inspect: InspectConfig,
    pub probe: ProbeConfig,
    pub cleanup: CleanupConfig,
    pub retention: RetentionConfig,
    pub gateway: GatewayConfig,
}

impl Config {
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env = Env::from_vars(vars);
        Ok(Self {
            common: CommonConfig::from_env(&env)?,
            lifecycle: env.section()?,
            state: env.section()?,
            start_jobs: ConsumerConfig::start_jobs(&env)?,
            stop_jobs: ConsumerConfig::stop_jobs(&env)?,
            inspect: env.section()?,
            probe: env.section()?,
            cleanup: env.section()?,
            retention: env.section()?,
            gateway: env.section()?,
        })
    }
}

/// Declares a job's configuration type: the common sections plus the ones
/// listed, each read from the environment (`env.section()`, or the reader
/// given in parentheses) and projected from the field of [`Config`] named
/// after `=` (what the system tests do).
///
/// ```ignore
/// shared::job_config! {
///     /// What start-job reads.
///     pub struct StartJobConfig {
///         job = "start-job";
///         lifecycle: LifecycleConfig = lifecycle,
///         consumer: ConsumerConfig = start_jobs (ConsumerConfig::start_jobs),
///     }
/// }
/// ```
#[macro_export]
macro_rules! job_config {
    ($(#[$m:meta])* pub struct $name:ident {
        job = $job:literal $(, docker = $docker:path)?;
        $($(#[$fm:meta])* $field:ident: $ty:ty = $all:ident $(($read:path))?),* $(,)?
    }) => {
        $(#[$m])*
        #[derive(Debug, Clone)]
        pub struct $name {
            pub common: $crate::config::CommonConfig,
            $($(#[$fm])* pub $field: $ty,)*
        }

        impl $crate::config::JobConfig for $name {
            const JOB: &'static str = $job;

            fn from_env(
                env: &$crate::config::Env,
            ) -> Result<Self, $crate::config::ConfigError> {
                Ok(Self {
                    common: $crate::config::CommonConfig::from_env(env)?,
                    $($field: $crate::job_config!(@read env $($read)?),)*
                })
            }

            fn common(&self) -> &$crate::config::CommonConfig {
                &self.common
            }

            fn uses_docker(&self) -> bool {
                let config = self;
                $crate::job_config!(@docker config $($docker)?)
            }
        }

        impl From<&$crate::config::Config> for $name {
            fn from(all: &$crate::config::Config) -> Self {
                Self {
                    common: all.common.clone(),
                    $($field: all.$all.clone(),)*
                }
            }
        }
    };
    (@docker $config:ident) => { true };
    (@docker $config:ident $docker:path) => { $docker($config) };
    (@read $env:ident) => { $env.section()? };
    (@read $env:ident $read:path) => { $read($env)? };
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;
    use crate::ports::PullPolicy;

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
        assert_eq!(c.common.docker.network, "galaxy-net");
        assert_eq!(c.lifecycle.log_driver, "json-file");
        assert_eq!(c.lifecycle.pull_policy, PullPolicy::IfMissing);
        assert_eq!(c.state.dir_mode, 0o750);
        assert_eq!(c.state.mount_path, "/var/lib/galaxy-game");
        assert_eq!(c.state.env_name, "GAME_STATE_PATH");
        assert_eq!(c.common.redis.lease_ttl, Duration::from_secs(60));
        assert_eq!(c.common.process.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(c.lifecycle.default_limits.memory.bytes(), 512 * 1024 * 1024);
        assert_eq!(c.start_jobs.stream, "runtime:start_jobs");
        assert_eq!(c.stop_jobs.stream, "runtime:stop_jobs");
        assert_eq!(c.common.process.liveness_stall_factor, 10);
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
            ("RTMANAGER_PROBE_ADDRESS_MODE", "telepathy"),
            ("RTMANAGER_INTERNAL_HTTP_ADDR", "everywhere"),
            ("RTMANAGER_CONTAINER_RETENTION_DAYS", "99999999999999999"),
            ("RTMANAGER_LIVENESS_STALL_FACTOR", "1"),
            ("RTMANAGER_LIVENESS_STALL_FACTOR", "101"),
            ("RTMANAGER_LIVENESS_STALL_FACTOR", "often"),
        ] {
            let err = Config::from_vars(vars(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(var), "{var}: {err}");
        }
        let c = Config::from_vars(vars(&[])).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    /// Every ranged setting refuses a value just outside its range, naming
    /// itself, and takes its bounds (or refuses them only for a rule that
    /// ties it to another setting).
    #[test]
    fn every_ranged_setting_refuses_values_outside_its_range_naming_it() {
        for (var, range) in ranges::RANGES {
            let name = format!("{PREFIX}{var}");
            for value in range.outside() {
                let err = Config::from_vars(vars(&[(&name, &value)]))
                    .expect_err(&format!("{name}={value} is refused"))
                    .to_string();
                assert!(err.contains(&name), "{name}={value}: {err}");
            }
            let bounds = match range {
                ranges::Range::Duration(lo, hi) => [
                    format!("{}us", lo.as_micros()),
                    format!("{}us", hi.as_micros()),
                ],
                ranges::Range::Count(lo, hi) => [lo.to_string(), hi.to_string()],
            };
            for value in bounds {
                if let Err(e) = Config::from_vars(vars(&[(&name, &value)])) {
                    assert!(
                        !e.to_string().contains("out of range"),
                        "{name}={value}: {e}"
                    );
                }
            }
        }
    }

    /// The README's settings table states each setting's range, as the code
    /// checks it; a numeric or duration setting without a range fails here.
    #[test]
    fn the_readme_states_every_range_the_code_checks() {
        let readme = include_str!("../../../README.md");
        let rows: HashMap<&str, Vec<&str>> = readme
            .lines()
            .filter(|l| l.starts_with("| `RTMANAGER_"))
            .map(|l| {
                let cells: Vec<&str> = l.split(" | ").map(|c| c.trim_matches(['|', ' '])).collect();
                (cells[0].trim_matches('`'), cells)
            })
            .collect();
        assert!(rows.len() > 50, "the settings table is found");
        for (name, cells) in &rows {
            assert_eq!(
                cells.len(),
                6,
                "{name}: Variable, Default, Range, Origin, Read by, Meaning"
            );
        }
        for (var, range) in ranges::RANGES {
            let name = format!("{PREFIX}{var}");
            let row = rows
                .get(name.as_str())
                .unwrap_or_else(|| panic!("{name} has a row"));
            assert_eq!(row[2], range.describe(), "{name}'s Range cell");
        }
        let duration_or_number = |default: &str| {
            let d = default.trim_matches('`');
            !d.is_empty() && d.starts_with(|c: char| c.is_ascii_digit()) && !d.contains('.')
        };
        for (name, cells) in &rows {
            let var = name.trim_start_matches(PREFIX);
            // Parsed by their own rules (Docker units, octal, entry ids),
            // which the Range cell states in words.
            let own_parser = [
                "DEFAULT_MEMORY",
                "DEFAULT_PIDS_LIMIT",
                "GAME_STATE_DIR_MODE",
                "START_JOBS_GROUP_START_ID",
                "STOP_JOBS_GROUP_START_ID",
            ];
            if duration_or_number(cells[1]) && !own_parser.contains(&var) {
                assert!(
                    ranges::range_of(var).is_some(),
                    "{name} (default {}) has a range",
                    cells[1]
                );
            }
        }
    }

    #[test]
    fn a_section_reads_only_its_own_variables() {
        let env = Env::from_vars(vars(&[
            ("RTMANAGER_PROBE_INTERVAL", "soon"),
            ("RTMANAGER_API_AUTH", "maybe"),
        ]));
        assert!(CommonConfig::from_env(&env).is_ok());
        assert!(env.section::<LifecycleConfig>().is_ok());
        assert!(ConsumerConfig::start_jobs(&env).is_ok());
        let probe = env.section::<ProbeConfig>().unwrap_err().to_string();
        assert!(probe.contains("RTMANAGER_PROBE_INTERVAL"), "{probe}");
        let gateway = env.section::<GatewayConfig>().unwrap_err().to_string();
        assert!(gateway.contains("RTMANAGER_API_AUTH"), "{gateway}");
    }

    /// The API's TLS files go together: both (HTTPS) or neither (plain
    /// HTTP); one alone names both variables.
    #[test]
    fn the_tls_cert_and_key_files_are_set_together_or_not_at_all() {
        let cert = "RTMANAGER_INTERNAL_HTTP_TLS_CERT_FILE";
        let key = "RTMANAGER_INTERNAL_HTTP_TLS_KEY_FILE";
        let gateway =
            |extra: &[(&str, &str)]| Env::from_vars(vars(extra)).section::<GatewayConfig>();
        assert_eq!(gateway(&[]).unwrap().tls, None);
        assert_eq!(
            gateway(&[(cert, "/run/tls/tls.crt"), (key, "/run/tls/tls.key")])
                .unwrap()
                .tls,
            Some(TlsFiles {
                cert: "/run/tls/tls.crt".into(),
                key: "/run/tls/tls.key".into()
            })
        );
        for one in [cert, key] {
            let err = gateway(&[(one, "/run/tls/x")]).unwrap_err().to_string();
            assert!(err.contains(cert) && err.contains(key), "{err}");
            assert!(err.contains(&format!("{one} is set")), "{err}");
        }
    }
}
