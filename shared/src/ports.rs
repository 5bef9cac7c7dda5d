//! Ports: the seams between the operations and the outside world.
//!
//! Only the container engine is a trait: seed 004 wants the runtime to be
//! replaceable (Docker today, Kubernetes later, which cannot run here), and
//! the system tests wrap the Docker engine to stall one call. It is wired as
//! `Arc<dyn ContainerEngine>` everywhere.
//! Redis and PostgreSQL adapters are concrete types configured by URL.
//! Port types are ours; `bollard` types never cross this line.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{ContainerState, EventAction, ResourceLimits};

/// `if_missing` (default), `always` or `never`, as `RTMANAGER_IMAGE_PULL_POLICY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    IfMissing,
    Always,
    Never,
}

/// What went wrong talking to the container engine, mapped at the adapter edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The daemon could not be reached (socket missing, connection refused, I/O).
    #[error("container engine unreachable: {0}")]
    Unavailable(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// A name is already in use, or the object is in a conflicting state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The daemon answered with an error (bad spec, pull failure, start failure).
    #[error("{0}")]
    Rejected(String),
}

/// One bind mount of a host directory into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub host_path: String,
    pub container_path: String,
}

/// Everything needed to create and start one engine container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    pub name: String,
    pub hostname: String,
    pub image: String,
    pub network: String,
    pub env: Vec<(String, String)>,
    pub labels: HashMap<String, String>,
    pub mounts: Vec<BindMount>,
    pub log_driver: String,
    pub log_opts: HashMap<String, String>,
    pub limits: ResourceLimits,
}

/// The parts of `docker inspect` rtmanager reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: HashMap<String, String>,
    /// Docker `State.Status`.
    pub state: ContainerState,
    /// Docker `State.Health.Status`; empty without a HEALTHCHECK.
    pub health: String,
    pub restart_count: i64,
    pub exit_code: i64,
    pub oom_killed: bool,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// IP address per attached network name.
    pub addresses: HashMap<String, String>,
}

/// One container of `docker ps -a`, filtered to rtmanager's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSummary {
    pub id: String,
    pub name: String,
    pub labels: HashMap<String, String>,
    /// Docker `State`.
    pub state: ContainerState,
    /// Names of the networks it is attached to (also when it is not running).
    pub networks: Vec<String>,
}

/// One container event from the engine's event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineEvent {
    pub action: EventAction,
    pub container_id: String,
    /// The container's labels, carried in the event attributes.
    pub labels: HashMap<String, String>,
    /// `exitCode` of a `die` event.
    pub exit_code: Option<i64>,
    /// Daemon time, nanoseconds since the epoch (orders and de-duplicates).
    pub time_nano: i64,
}

/// The event stream: ends when the daemon goes away.
pub type EngineEvents =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<EngineEvent, EngineError>> + Send>>;

/// The parts of `docker image inspect` rtmanager reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub id: String,
    pub labels: HashMap<String, String>,
}

/// A container engine: Docker today.
#[async_trait]
pub trait ContainerEngine: Send + Sync + 'static {
    /// Fails fast when the daemon is unreachable.
    async fn ping(&self) -> Result<(), EngineError>;
    /// `Ok(false)` when the network does not exist; rtmanager never creates it.
    async fn network_exists(&self, name: &str) -> Result<bool, EngineError>;
    /// Makes the image present according to the policy.
    async fn ensure_image(&self, image: &str, policy: PullPolicy) -> Result<(), EngineError>;
    async fn inspect_image(&self, image: &str) -> Result<ImageInfo, EngineError>;
    /// Ids of every container (running or stopped, rtmanager's or not) made
    /// from the image with id `image_id`.
    async fn containers_of_image(&self, image_id: &str) -> Result<Vec<String>, EngineError>;
    /// Removes the image (or only this tag, when the image has others);
    /// never forced, so the engine refuses (`Conflict`) while a container
    /// uses it. `NotFound` when there is no such image.
    async fn remove_image(&self, image: &str) -> Result<(), EngineError>;
    /// Inspect by id or name; `Ok(None)` when there is no such container.
    async fn inspect_container(
        &self,
        id_or_name: &str,
    ) -> Result<Option<ContainerInfo>, EngineError>;
    /// Creates and starts; on a failed start the created container is removed,
    /// so no half-made container is left behind.
    async fn run(&self, spec: &ContainerSpec) -> Result<ContainerInfo, EngineError>;
    /// Starts an existing (stopped) container.
    async fn start(&self, id: &str) -> Result<(), EngineError>;
    /// Force-removes; an absent container is not an error.
    async fn remove(&self, id: &str) -> Result<(), EngineError>;
    /// Graceful stop (SIGTERM, then SIGKILL after `timeout`); an absent or
    /// already stopped container is not an error.
    async fn stop(&self, id: &str, timeout: std::time::Duration) -> Result<(), EngineError>;
    /// Every container carrying `com.galaxy.owner=rtmanager`, running or not.
    async fn list_managed(&self) -> Result<Vec<ContainerSummary>, EngineError>;
    /// Subscribes to the container events of managed containers, from
    /// `since_nano` (inclusive, as the daemon's `since`) when given, else
    /// from now. Returns once the daemon has answered: every event from then
    /// on is delivered, however late the stream is first read (so a caller
    /// can subscribe, do other work, then read what came meanwhile).
    async fn subscribe_events(&self, since_nano: Option<i64>) -> Result<EngineEvents, EngineError>;
    /// A stable identity of the daemon (its host), for per-host leases.
    async fn daemon_id(&self) -> Result<String, EngineError>;
    /// One resource-usage snapshot: a single answer, never a stats stream
    /// (a stream per container costs a sample a second each).
    async fn stats_snapshot(&self, id: &str) -> Result<ContainerStats, EngineError>;
    /// The container's stdout and stderr, interleaved as written. With
    /// `follow` the stream goes on until the container stops (or the stream
    /// is dropped). A missing container is an `Err(NotFound)` item.
    fn logs(&self, id: &str, options: &LogOptions) -> LogChunks;
    /// The engine's own health check of the container; `Ok(None)` when there
    /// is no such container.
    async fn health_info(&self, id: &str) -> Result<Option<HealthInfo>, EngineError>;
}

/// One resource-usage snapshot of a container. Counters are cumulative since
/// the container started; `-1` (or `None`) where the engine cannot tell.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerStats {
    /// Percent of one CPU (Docker CLI style: 200.0 is two full cores), over
    /// the daemon's last sampling interval.
    pub cpu_percent: f64,
    /// Usage minus the reclaimable page cache (`inactive_file`).
    pub memory_used_bytes: i64,
    pub memory_limit_bytes: i64,
    /// Summed over all interfaces.
    pub network_rx_bytes: i64,
    pub network_tx_bytes: i64,
    pub block_read_bytes: i64,
    pub block_write_bytes: i64,
    /// When the daemon took the sample.
    pub read_at: Option<DateTime<Utc>>,
}

/// What to fetch of a container's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// Lines from the end of the log (`0`: none, only what follows).
    pub tail: u32,
    /// Prefix each line with the engine's RFC 3339 timestamp.
    pub timestamps: bool,
    /// Keep streaming new output until the container stops.
    pub follow: bool,
}

/// Log output, in chunks of bytes (usually one line each).
pub type LogChunks =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Vec<u8>, EngineError>> + Send>>;

/// The engine's health check state of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthInfo {
    /// The image or container defines a health check.
    pub has_healthcheck: bool,
    /// `healthy`, `unhealthy`, `starting`, or `none` without a health check.
    pub status: String,
    pub failing_streak: i64,
    /// Output of the most recent check run; empty when none ran yet.
    pub last_output: String,
}

/// The engine of a process that was started without Docker (a `hostname`-mode
/// prober): no socket was opened, and every call answers
/// [`EngineError::Unavailable`] saying so. Nothing such a process runs calls
/// it; it stands in the wiring so the process needs no daemon to start.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEngine;

impl NoEngine {
    fn unused<T>() -> Result<T, EngineError> {
        Err(EngineError::Unavailable(
            "this process was started without Docker (it does not use it)".into(),
        ))
    }
}

#[async_trait]
impl ContainerEngine for NoEngine {
    async fn ping(&self) -> Result<(), EngineError> {
        Self::unused()
    }
    async fn network_exists(&self, _: &str) -> Result<bool, EngineError> {
        Self::unused()
    }
    async fn ensure_image(&self, _: &str, _: PullPolicy) -> Result<(), EngineError> {
        Self::unused()
    }
    async fn inspect_image(&self, _: &str) -> Result<ImageInfo, EngineError> {
        Self::unused()
    }
    async fn containers_of_image(&self, _: &str) -> Result<Vec<String>, EngineError> {
        Self::unused()
    }
    async fn remove_image(&self, _: &str) -> Result<(), EngineError> {
        Self::unused()
    }
    async fn inspect_container(&self, _: &str) -> Result<Option<ContainerInfo>, EngineError> {
        Self::unused()
    }
    async fn run(&self, _: &ContainerSpec) -> Result<ContainerInfo, EngineError> {
        Self::unused()
    }
    async fn start(&self, _: &str) -> Result<(), EngineError> {
        Self::unused()
    }
    async fn remove(&self, _: &str) -> Result<(), EngineError> {
        Self::unused()
    }
    async fn stop(&self, _: &str, _: std::time::Duration) -> Result<(), EngineError> {
        Self::unused()
    }
    async fn list_managed(&self) -> Result<Vec<ContainerSummary>, EngineError> {
        Self::unused()
    }
    async fn subscribe_events(&self, _: Option<i64>) -> Result<EngineEvents, EngineError> {
        Self::unused()
    }
    async fn daemon_id(&self) -> Result<String, EngineError> {
        Self::unused()
    }
    async fn stats_snapshot(&self, _: &str) -> Result<ContainerStats, EngineError> {
        Self::unused()
    }
    fn logs(&self, _: &str, _: &LogOptions) -> LogChunks {
        Box::pin(futures_util::stream::once(async { Self::unused() }))
    }
    async fn health_info(&self, _: &str) -> Result<Option<HealthInfo>, EngineError> {
        Self::unused()
    }
}
