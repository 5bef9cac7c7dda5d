//! The sections every process reads: itself, PostgreSQL, Redis (in
//! [`super::redis_settings`]), Docker and the stream names of the outbox.

use std::time::Duration;

use serde::Deserialize;

use super::{ranges, ConfigError, Env, RedisConfig, Secret, Section};

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
    /// `RTMANAGER_LIVENESS_STALL_FACTOR`: `/healthz` fails once the main loop
    /// has not gone round for this many of its expected periods
    /// (`shared::liveness`).
    pub liveness_stall_factor: u32,
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
    #[serde(default = "d::liveness_stall_factor")]
    liveness_stall_factor: u32,
}

impl Section for ProcessConfig {
    type Raw = ProcessEnv;
    fn from_raw(raw: ProcessEnv) -> Result<Self, ConfigError> {
        ranges::check(&[
            ("SHUTDOWN_TIMEOUT", raw.shutdown_timeout.into()),
            ("LIVENESS_STALL_FACTOR", raw.liveness_stall_factor.into()),
        ])?;
        Ok(Self {
            log_level: raw.log_level,
            shutdown_timeout: raw.shutdown_timeout,
            metrics_addr: (!raw.metrics_addr.is_empty()).then_some(raw.metrics_addr),
            instance: instance_name(&raw.consumer_name),
            liveness_stall_factor: raw.liveness_stall_factor,
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
    /// `RTMANAGER_POSTGRES_MIGRATIONS`: whether a job migrates at start-up.
    pub migrations: MigrationMode,
}

/// What a job does about the schema at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationMode {
    /// Run pending migrations (the role must own the schema): simple and
    /// demo setups, and the Go service's behaviour.
    #[default]
    Auto,
    /// Run none; refuse to start while one this binary knows is not applied
    /// (`rest-gateway migrate`, as the owner role, applies them). For a
    /// least-privilege role that cannot do DDL.
    Off,
}

#[derive(Deserialize)]
pub struct PostgresEnv {
    postgres_primary_dsn: Secret,
    #[serde(default = "d::pg_max_connections")]
    postgres_max_connections: u32,
    #[serde(default)]
    postgres_migrations: MigrationMode,
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
        ranges::check(&[(
            "POSTGRES_MAX_CONNECTIONS",
            raw.postgres_max_connections.into(),
        )])?;
        Ok(Self {
            dsn: raw.postgres_primary_dsn,
            max_connections: raw.postgres_max_connections,
            migrations: raw.postgres_migrations,
        })
    }
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
    /// rows are kept. Their dedupe keys are kept longer, for:
    pub outbox_retention: Duration,
    /// `RTMANAGER_DEDUPE_KEY_RETENTION` (default 30d, at least the outbox
    /// retention): how long a dedupe key (one result per job entry, one
    /// event per observation, one intent per key) is kept. It is also the
    /// consumers' horizon: an entry older than this is never run, since its
    /// earlier answer may be forgotten (see `stream_consumer`).
    pub dedupe_key_retention: Duration,
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
    #[serde(default = "d::dedupe_key_retention", with = "humantime_serde")]
    dedupe_key_retention: Duration,
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
        ranges::check(&[
            ("STREAM_MAXLEN", raw.stream_maxlen.into()),
            ("STREAM_MIN_AGE", raw.stream_min_age.into()),
            ("OUTBOX_RETENTION", raw.outbox_retention.into()),
            ("DEDUPE_KEY_RETENTION", raw.dedupe_key_retention.into()),
        ])?;
        if raw.dedupe_key_retention < raw.outbox_retention {
            return Err(ConfigError::var(
                "DEDUPE_KEY_RETENTION",
                "must be at least RTMANAGER_OUTBOX_RETENTION",
            ));
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
            dedupe_key_retention: raw.dedupe_key_retention,
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
    pub fn liveness_stall_factor() -> u32 {
        10
    }
    pub fn pg_max_connections() -> u32 {
        10
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
    pub fn dedupe_key_retention() -> Duration {
        Duration::from_secs(30 * 24 * 3600)
    }
}
