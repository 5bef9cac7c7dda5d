//! The sections every process reads: itself, PostgreSQL, Redis, Docker and
//! the stream names of the outbox.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Env, Secret, Section};

/// The process itself: logs, shutdown, metrics listener, instance name.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    pub log_level: String,
    /// How long in-flight work may run after SIGTERM.
    pub shutdown_timeout: Duration,
    /// `host:port` of `/metrics` and `/healthz`; `None` disables the listener.
    pub metrics_addr: Option<String>,
    /// This process's name in consumer groups (`RTMANAGER_CONSUMER_NAME`, else
    /// the host name).
    pub instance: String,
}

#[derive(Deserialize)]
pub struct ProcessEnv {
    #[serde(default = "d::log_level")]
    log_level: String,
    #[serde(default = "d::shutdown_timeout", with = "humantime_serde")]
    shutdown_timeout: Duration,
    #[serde(default = "d::metrics_addr")]
    metrics_addr: String,
    #[serde(default)]
    consumer_name: String,
}

impl Section for ProcessConfig {
    type Raw = ProcessEnv;
    fn from_raw(raw: ProcessEnv) -> Result<Self, ConfigError> {
        Ok(Self {
            log_level: raw.log_level,
            shutdown_timeout: raw.shutdown_timeout,
            metrics_addr: (!raw.metrics_addr.is_empty()).then_some(raw.metrics_addr),
            instance: instance_name(&raw.consumer_name),
        })
    }
}

/// `RTMANAGER_CONSUMER_NAME`, else the host name, else a pid-based name.
pub(super) fn instance_name(configured: &str) -> String {
    if !configured.is_empty() {
        return configured.to_owned();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("rtmanager-{}", std::process::id()))
}

#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// The primary's URL (a Go-style `?search_path=` is accepted).
    pub dsn: Secret,
    pub max_connections: u32,
}

#[derive(Deserialize)]
pub struct PostgresEnv {
    postgres_primary_dsn: Secret,
    #[serde(default = "d::pg_max_connections")]
    postgres_max_connections: u32,
}

impl Section for PostgresConfig {
    type Raw = PostgresEnv;
    fn from_raw(raw: PostgresEnv) -> Result<Self, ConfigError> {
        if raw.postgres_primary_dsn.expose().is_empty() {
            return Err(ConfigError::var(
                "POSTGRES_PRIMARY_DSN",
                "must not be empty",
            ));
        }
        if raw.postgres_max_connections == 0 {
            return Err(ConfigError::var(
                "POSTGRES_MAX_CONNECTIONS",
                "must be positive",
            ));
        }
        Ok(Self {
            dsn: raw.postgres_primary_dsn,
            max_connections: raw.postgres_max_connections,
        })
    }
}

/// Where Redis is and who we are to it. Exactly one way to the master: its
/// address (`RTMANAGER_REDIS_MASTER_ADDR`, also any node of a Cluster, which
/// the adapter recognises) or the sentinels that monitor it.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `host:port` of the master, or of one node of a Cluster; empty when
    /// [`RedisConfig::sentinel`] finds the master.
    pub addr: String,
    pub sentinel: Option<SentinelConfig>,
    /// The ACL user (`RTMANAGER_REDIS_USERNAME`); empty: the default user.
    pub username: Secret,
    pub password: Secret,
    /// TTL of the per-game lease (`RTMANAGER_GAME_LEASE_TTL_SECONDS`).
    pub lease_ttl: Duration,
}

/// The sentinels that name the master (`RTMANAGER_REDIS_SENTINEL_*`).
#[derive(Debug, Clone)]
pub struct SentinelConfig {
    /// `host:port` of each sentinel, in the order they are asked.
    pub addrs: Vec<String>,
    /// The monitored master's name (`sentinel monitor <name> ...`).
    pub master: String,
    /// The sentinels' own password (their `requirepass`); empty: none.
    pub password: Secret,
}

#[derive(Deserialize)]
pub struct RedisEnv {
    #[serde(default)]
    redis_master_addr: String,
    #[serde(default)]
    redis_sentinel_addrs: String,
    #[serde(default)]
    redis_sentinel_master: String,
    #[serde(default)]
    redis_sentinel_password: Secret,
    #[serde(default)]
    redis_username: Secret,
    #[serde(default)]
    redis_password: Secret,
    #[serde(default = "d::game_lease_ttl_seconds")]
    game_lease_ttl_seconds: u64,
}

impl Section for RedisConfig {
    type Raw = RedisEnv;
    fn from_raw(raw: RedisEnv) -> Result<Self, ConfigError> {
        let sentinel = sentinel_config(&raw)?;
        match (&sentinel, raw.redis_master_addr.is_empty()) {
            (None, true) => {
                return Err(ConfigError::var(
                    "REDIS_MASTER_ADDR",
                    "is required (or find the master through Sentinel: \
                     RTMANAGER_REDIS_SENTINEL_ADDRS with RTMANAGER_REDIS_SENTINEL_MASTER)",
                ))
            }
            (Some(_), false) => {
                return Err(ConfigError::var(
                    "REDIS_MASTER_ADDR",
                    "must be empty with RTMANAGER_REDIS_SENTINEL_ADDRS: the sentinels name \
                     the master; set one or the other",
                ))
            }
            (None, false) if split_host_port(&raw.redis_master_addr).is_none() => {
                return Err(ConfigError::var(
                    "REDIS_MASTER_ADDR",
                    format!("{:?}: expected host:port", raw.redis_master_addr),
                ))
            }
            _ => {}
        }
        if !raw.redis_username.expose().is_empty() && raw.redis_password.expose().is_empty() {
            // Without a password no AUTH is sent, and the process would run
            // as the default user instead of the one named.
            return Err(ConfigError::var(
                "REDIS_USERNAME",
                "needs RTMANAGER_REDIS_PASSWORD (the ACL user's password)",
            ));
        }
        if raw.game_lease_ttl_seconds == 0 {
            return Err(ConfigError::var(
                "GAME_LEASE_TTL_SECONDS",
                "must be positive",
            ));
        }
        Ok(Self {
            addr: raw.redis_master_addr,
            sentinel,
            username: raw.redis_username,
            password: raw.redis_password,
            lease_ttl: Duration::from_secs(raw.game_lease_ttl_seconds),
        })
    }
}

/// The sentinel settings: both names or neither, each address `host:port`.
fn sentinel_config(raw: &RedisEnv) -> Result<Option<SentinelConfig>, ConfigError> {
    let addrs: Vec<String> = raw
        .redis_sentinel_addrs
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    let master = raw.redis_sentinel_master.trim();
    match (addrs.is_empty(), master.is_empty()) {
        (true, true) => {
            if !raw.redis_sentinel_password.expose().is_empty() {
                return Err(ConfigError::var(
                    "REDIS_SENTINEL_PASSWORD",
                    "only applies with RTMANAGER_REDIS_SENTINEL_ADDRS",
                ));
            }
            return Ok(None);
        }
        (false, true) => {
            return Err(ConfigError::var(
                "REDIS_SENTINEL_MASTER",
                "is required with RTMANAGER_REDIS_SENTINEL_ADDRS (the monitored master's name)",
            ))
        }
        (true, false) => {
            return Err(ConfigError::var(
                "REDIS_SENTINEL_ADDRS",
                "is required with RTMANAGER_REDIS_SENTINEL_MASTER (comma-separated host:port)",
            ))
        }
        (false, false) => {}
    }
    if let Some(bad) = addrs.iter().find(|a| split_host_port(a).is_none()) {
        return Err(ConfigError::var(
            "REDIS_SENTINEL_ADDRS",
            format!("{bad:?}: expected comma-separated host:port"),
        ));
    }
    Ok(Some(SentinelConfig {
        addrs,
        master: master.to_owned(),
        password: raw.redis_sentinel_password.clone(),
    }))
}

/// `host:port` or `[v6]:port`.
pub fn split_host_port(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host.to_owned(), port.parse().ok()?))
}

#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// `unix://` socket, or `tcp://` / `http://`.
    pub host: String,
    /// The engines' network; it must exist and is never created.
    pub network: String,
}

#[derive(Deserialize)]
pub struct DockerEnv {
    #[serde(default = "d::docker_host")]
    docker_host: String,
    #[serde(default = "d::docker_network")]
    docker_network: String,
}

impl Section for DockerConfig {
    type Raw = DockerEnv;
    fn from_raw(raw: DockerEnv) -> Result<Self, ConfigError> {
        if raw.docker_network.is_empty() {
            return Err(ConfigError::var("DOCKER_NETWORK", "must not be empty"));
        }
        Ok(Self {
            host: raw.docker_host,
            network: raw.docker_network,
        })
    }
}

/// The streams the outbox publishes to, overridable by `RTMANAGER_*_STREAM`
/// (the job streams a consumer reads are in its own section), and how the
/// outbox keeps them and itself.
#[derive(Debug, Clone)]
pub struct StreamsConfig {
    pub job_results: String,
    pub health_events: String,
    pub notification_intents: String,
    /// `RTMANAGER_STREAM_MAXLEN`: other services read these streams, so they
    /// are not trimmed unless asked (0, the default); otherwise an
    /// approximate cap (`MAXLEN ~`) applied as the relay appends.
    pub maxlen: u64,
    /// `RTMANAGER_STREAM_MIN_AGE`: with a cap, entries younger than this are
    /// never trimmed (`MINID ~`); zero (the default) trims by count alone.
    pub min_age: Duration,
    /// `RTMANAGER_OUTBOX_RETENTION` (default 7d): how long delivered outbox
    /// rows are kept. Their dedupe keys are kept regardless.
    pub outbox_retention: Duration,
}

#[derive(Deserialize)]
pub struct StreamsEnv {
    #[serde(default = "d::job_results_stream")]
    job_results_stream: String,
    #[serde(default = "d::health_events_stream")]
    health_events_stream: String,
    #[serde(default = "d::notification_intents_stream")]
    notification_intents_stream: String,
    #[serde(default)]
    stream_maxlen: u64,
    #[serde(default, with = "humantime_serde")]
    stream_min_age: Duration,
    #[serde(default = "d::outbox_retention", with = "humantime_serde")]
    outbox_retention: Duration,
}

impl Section for StreamsConfig {
    type Raw = StreamsEnv;
    fn from_raw(raw: StreamsEnv) -> Result<Self, ConfigError> {
        for (var, value) in [
            ("JOB_RESULTS_STREAM", &raw.job_results_stream),
            ("HEALTH_EVENTS_STREAM", &raw.health_events_stream),
            (
                "NOTIFICATION_INTENTS_STREAM",
                &raw.notification_intents_stream,
            ),
        ] {
            if value.is_empty() {
                return Err(ConfigError::var(var, "must not be empty"));
            }
        }
        if raw.outbox_retention.is_zero() {
            return Err(ConfigError::var("OUTBOX_RETENTION", "must be positive"));
        }
        if !raw.stream_min_age.is_zero() && raw.stream_maxlen == 0 {
            return Err(ConfigError::var(
                "STREAM_MIN_AGE",
                "only applies with RTMANAGER_STREAM_MAXLEN set",
            ));
        }
        Ok(Self {
            job_results: raw.job_results_stream,
            health_events: raw.health_events_stream,
            notification_intents: raw.notification_intents_stream,
            maxlen: raw.stream_maxlen,
            min_age: raw.stream_min_age,
            outbox_retention: raw.outbox_retention,
        })
    }
}

/// What every process reads.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    pub process: ProcessConfig,
    pub postgres: PostgresConfig,
    pub redis: RedisConfig,
    pub docker: DockerConfig,
    pub streams: StreamsConfig,
}

impl CommonConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            process: env.section()?,
            postgres: env.section()?,
            redis: env.section()?,
            docker: env.section()?,
            streams: env.section()?,
        })
    }
}

mod d {
    use std::time::Duration;

    pub fn log_level() -> String {
        "info".into()
    }
    pub fn shutdown_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn metrics_addr() -> String {
        "0.0.0.0:9464".into()
    }
    pub fn pg_max_connections() -> u32 {
        10
    }
    pub fn game_lease_ttl_seconds() -> u64 {
        60
    }
    pub fn docker_host() -> String {
        "unix:///var/run/docker.sock".into()
    }
    pub fn docker_network() -> String {
        "galaxy-net".into()
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
    pub fn outbox_retention() -> Duration {
        Duration::from_secs(7 * 24 * 3600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis(vars: &[(&str, &str)]) -> Result<RedisConfig, String> {
        Env::from_vars(
            vars.iter()
                .map(|(k, v)| (format!("RTMANAGER_{k}"), v.to_string())),
        )
        .section::<RedisConfig>()
        .map_err(|e| e.to_string())
    }

    #[test]
    fn the_master_address_alone_is_the_go_setting() {
        let c = redis(&[("REDIS_MASTER_ADDR", "redis:6379")]).unwrap();
        assert_eq!(c.addr, "redis:6379");
        assert!(c.sentinel.is_none());
    }

    #[test]
    fn sentinels_replace_the_master_address() {
        let c = redis(&[
            ("REDIS_SENTINEL_ADDRS", "s1:26379, s2:26379,[::1]:26380"),
            ("REDIS_SENTINEL_MASTER", "galaxy"),
        ])
        .unwrap();
        let sentinel = c.sentinel.unwrap();
        assert_eq!(sentinel.addrs, ["s1:26379", "s2:26379", "[::1]:26380"]);
        assert_eq!(sentinel.master, "galaxy");
        assert_eq!(c.addr, "");
    }

    #[test]
    fn bad_combinations_name_the_variables() {
        for (vars, named) in [
            (&[][..], &["REDIS_MASTER_ADDR", "REDIS_SENTINEL_ADDRS"][..]),
            (
                &[("REDIS_SENTINEL_ADDRS", "s1:26379")][..],
                &["REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_ADDRS"][..],
            ),
            (
                &[("REDIS_SENTINEL_MASTER", "galaxy")][..],
                &["REDIS_SENTINEL_ADDRS", "REDIS_SENTINEL_MASTER"][..],
            ),
            (
                &[
                    ("REDIS_MASTER_ADDR", "redis:6379"),
                    ("REDIS_SENTINEL_ADDRS", "s1:26379"),
                    ("REDIS_SENTINEL_MASTER", "galaxy"),
                ][..],
                &["REDIS_MASTER_ADDR", "REDIS_SENTINEL_ADDRS"][..],
            ),
            (
                &[
                    ("REDIS_SENTINEL_ADDRS", "s1"),
                    ("REDIS_SENTINEL_MASTER", "galaxy"),
                ][..],
                &["REDIS_SENTINEL_ADDRS"][..],
            ),
            (
                &[("REDIS_MASTER_ADDR", "redis")][..],
                &["REDIS_MASTER_ADDR"][..],
            ),
            (
                &[
                    ("REDIS_MASTER_ADDR", "redis:6379"),
                    ("REDIS_USERNAME", "rtm"),
                ][..],
                &["REDIS_USERNAME", "REDIS_PASSWORD"][..],
            ),
            (
                &[
                    ("REDIS_MASTER_ADDR", "redis:6379"),
                    ("REDIS_SENTINEL_PASSWORD", "pw"),
                ][..],
                &["REDIS_SENTINEL_PASSWORD", "REDIS_SENTINEL_ADDRS"][..],
            ),
        ] {
            let err = redis(vars).unwrap_err();
            for name in named {
                assert!(
                    err.contains(&format!("RTMANAGER_{name}")),
                    "{vars:?}: {err}"
                );
            }
        }
    }

    #[test]
    fn the_username_and_passwords_never_print() {
        let c = redis(&[
            ("REDIS_SENTINEL_ADDRS", "s1:26379"),
            ("REDIS_SENTINEL_MASTER", "galaxy"),
            ("REDIS_SENTINEL_PASSWORD", "sentinel-pw"),
            ("REDIS_USERNAME", "rtm-user-name"),
            ("REDIS_PASSWORD", "redis-pw"),
        ])
        .unwrap();
        let printed = format!("{c:?}");
        for secret in ["sentinel-pw", "rtm-user-name", "redis-pw"] {
            assert!(!printed.contains(secret), "{printed}");
        }
    }

    #[test]
    fn addresses_are_host_and_port() {
        assert_eq!(split_host_port("redis:6379"), Some(("redis".into(), 6379)));
        assert_eq!(split_host_port("[::1]:6380"), Some(("::1".into(), 6380)));
        assert_eq!(split_host_port("redis"), None);
        assert_eq!(split_host_port(":6379"), None);
        assert_eq!(split_host_port("h:port"), None);
    }
}
