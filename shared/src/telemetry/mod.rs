//! Structured JSON logs (tracing) and Prometheus metrics (prometheus-client),
//! served with `/healthz` and `/readyz` on `RTMANAGER_METRICS_ADDR`.
//!
//! - [`Metrics`]: the registry of a process. The metrics every process (or
//!   every user of a shared part: the relay, the consumers, the Docker
//!   calls) records are its fields; a part only some processes have
//!   registers its own [`MetricGroup`] once, when first asked
//!   ([`Metrics::group`]), so a process shows only the series it moves.
//! - [`engine`]: the Docker calls' latency and errors, timed around the
//!   container-engine port.
//! - [`http`]: the listener of `/metrics`, `/healthz` and `/readyz`.
//! - [`steps`]: per-step timing of one job (a debug line per answered job).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

pub mod engine;
pub mod http;
pub mod steps;

pub use engine::MeteredEngine;
pub use http::{serve_metrics, Endpoints};

/// A float gauge (seconds, timestamps).
pub type FloatGauge = Gauge<f64, AtomicU64>;
/// A labelled histogram family whose buckets are set once.
pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Histogram buckets, in seconds.
pub mod buckets {
    /// Quick calls: a Redis or Docker round trip, a lease (1 ms to 30 s).
    pub const CALL: &[f64] = &[
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    /// Operations and passes: a pull, a start, a stop, a pass (10 ms to 10 min).
    pub const WORK: &[f64] = &[
        0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    ];
}

/// A histogram with `bounds`.
pub fn histogram(bounds: &[f64]) -> Histogram {
    Histogram::new(bounds.iter().copied())
}

/// JSON logs on stdout; `RTMANAGER_LOG_LEVEL` (or a full `RUST_LOG` filter).
/// Every line carries `job` (the process's name) at its top level.
pub fn init_logging(job: &str, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let json = tracing_subscriber::fmt::format()
        .json()
        .with_current_span(false);
    let _ = tracing_subscriber::fmt()
        .json()
        .event_format(WithJob::new(job, json))
        .with_env_filter(filter)
        .try_init();
}

/// A JSON event format with a `"job"` field first on every line.
///
/// tracing-subscriber's JSON format has no root fields of its own, and a
/// root span would not reach the tasks a job spawns; so the line is
/// formatted whole and the field spliced in after its opening brace.
struct WithJob<F> {
    /// `"job":"<name>",` already JSON-encoded.
    prefix: String,
    inner: F,
}

impl<F> WithJob<F> {
    fn new(job: &str, inner: F) -> Self {
        let name = serde_json::Value::String(job.to_owned());
        Self {
            prefix: format!("\"job\":{name},"),
            inner,
        }
    }
}

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithJob<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.inner.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut line),
            event,
        )?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{{}{rest}", self.prefix),
            None => writer.write_str(&line),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub op_kind: String,
    pub outcome: String,
    pub error_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    pub stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RedisMasterLabels {
    pub topology: String,
    pub addr: String,
}

/// A readiness check (`postgres`, `redis`, `docker`, `consumer_group`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub check: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub job: String,
}

/// A container-engine call (`run`, `stop`, `inspect`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub call: String,
}

/// Metrics of one part of the code that only some processes run (a job's
/// own, the lifecycle operations'), registered once per [`Metrics`] by
/// [`Metrics::group`]. Names are registered without the `rtmanager_` prefix
/// (the registry adds it) and counters without `_total`.
pub trait MetricGroup: Clone + Send + Sync + 'static {
    fn register(registry: &mut Registry) -> Self;
}

/// Every metric a process records in its shared parts; the rest are
/// [`MetricGroup`]s. Cheap to clone: one registry per process.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    groups: Arc<Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>>,
    build_info: Family<BuildLabels, Gauge>,
    pub operations: Family<OperationLabels, Counter>,
    pub health_events: Family<EventLabels, Counter>,
    pub outbox_delivered: Family<StreamLabels, Counter>,
    /// Undelivered, unparked rows (a count, the same in every process).
    pub outbox_pending: Gauge,
    /// Age of the oldest of them (0 when none).
    pub outbox_oldest_pending_age: FloatGauge,
    pub outbox_relay_failures: Counter,
    pub outbox_refused: Family<StreamLabels, Counter>,
    pub outbox_parked: Gauge,
    pub jobs_consumed: Family<StreamLabels, Counter>,
    pub jobs_dead_lettered: Family<StreamLabels, Counter>,
    pub jobs_reclaimed: Family<StreamLabels, Counter>,
    pub jobs_in_flight: Gauge,
    pub consumer_group_recreations: Family<StreamLabels, Counter>,
    /// `XINFO GROUPS` lag: entries not yet delivered to the group (-1 when
    /// Redis cannot tell).
    pub consumer_group_lag: Family<StreamLabels, Gauge>,
    /// `XINFO GROUPS` pending: delivered, not yet acked.
    pub consumer_group_pending: Family<StreamLabels, Gauge>,
    pub consumer_oldest_pending_age: Family<StreamLabels, FloatGauge>,
    /// 1 for the Redis master in use; one series at a time.
    pub redis_master: Family<RedisMasterLabels, Gauge>,
    /// 1 or 0 per readiness check, as of the last evaluation.
    pub ready: Family<CheckLabels, Gauge>,
    pub main_loop_last_tick: FloatGauge,
    pub docker_api_duration: HistogramFamily<CallLabels>,
    pub docker_api_errors: Family<CallLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rtmanager");
        let m = Self {
            registry: Arc::new(Mutex::new(Registry::default())),
            groups: Arc::default(),
            build_info: Family::default(),
            operations: Family::default(),
            health_events: Family::default(),
            outbox_delivered: Family::default(),
            outbox_pending: Gauge::default(),
            outbox_oldest_pending_age: FloatGauge::default(),
            outbox_relay_failures: Counter::default(),
            outbox_refused: Family::default(),
            outbox_parked: Gauge::default(),
            jobs_consumed: Family::default(),
            jobs_dead_lettered: Family::default(),
            jobs_reclaimed: Family::default(),
            jobs_in_flight: Gauge::default(),
            consumer_group_recreations: Family::default(),
            consumer_group_lag: Family::default(),
            consumer_group_pending: Family::default(),
            consumer_oldest_pending_age: Family::default(),
            redis_master: Family::default(),
            ready: Family::default(),
            main_loop_last_tick: FloatGauge::default(),
            docker_api_duration: Family::new_with_constructor(|| histogram(buckets::CALL)),
            docker_api_errors: Family::default(),
        };
        registry.register(
            "build_info",
            "The running build (1), by version and job",
            m.build_info.clone(),
        );
        registry.register(
            "operations",
            "Lifecycle operations by kind, outcome and error code",
            m.operations.clone(),
        );
        registry.register(
            "health_events",
            "Health events emitted, by event type",
            m.health_events.clone(),
        );
        registry.register(
            "outbox_delivered",
            "Outbox entries delivered to Redis, by stream",
            m.outbox_delivered.clone(),
        );
        registry.register(
            "outbox_pending",
            "Outbox entries neither delivered nor parked (a count of the table)",
            m.outbox_pending.clone(),
        );
        registry.register(
            "outbox_oldest_pending_age_seconds",
            "Age of the oldest outbox entry neither delivered nor parked; 0 when none",
            m.outbox_oldest_pending_age.clone(),
        );
        registry.register(
            "outbox_relay_failures",
            "Relay passes that failed to reach Redis or PostgreSQL",
            m.outbox_relay_failures.clone(),
        );
        registry.register(
            "outbox_refused",
            "Outbox entries Redis refused (e.g. WRONGTYPE), by stream",
            m.outbox_refused.clone(),
        );
        registry.register(
            "outbox_parked",
            "Outbox entries parked after repeated refusals, awaiting a redrive (a count of the table)",
            m.outbox_parked.clone(),
        );
        registry.register(
            "jobs_consumed",
            "Job entries taken from a stream",
            m.jobs_consumed.clone(),
        );
        registry.register(
            "jobs_dead_lettered",
            "Malformed job entries copied to the dead-letter stream",
            m.jobs_dead_lettered.clone(),
        );
        registry.register(
            "jobs_reclaimed",
            "Job entries reclaimed from a stalled consumer",
            m.jobs_reclaimed.clone(),
        );
        registry.register(
            "jobs_in_flight",
            "Job entries being processed now",
            m.jobs_in_flight.clone(),
        );
        registry.register(
            "consumer_group_recreations",
            "Job consumer groups recreated after Redis lost them, by stream",
            m.consumer_group_recreations.clone(),
        );
        registry.register(
            "consumer_group_lag",
            "Entries of the job stream not yet delivered to the group (XINFO GROUPS lag; -1 when Redis cannot tell)",
            m.consumer_group_lag.clone(),
        );
        registry.register(
            "consumer_group_pending",
            "Entries delivered to the group and not yet acked (XINFO GROUPS pending)",
            m.consumer_group_pending.clone(),
        );
        registry.register(
            "consumer_oldest_pending_age_seconds",
            "Age of the oldest entry pending in the group, by its id; 0 when none",
            m.consumer_oldest_pending_age.clone(),
        );
        registry.register(
            "redis_master_info",
            "The Redis master this process uses (1), by topology and address",
            m.redis_master.clone(),
        );
        registry.register(
            "ready",
            "Readiness checks (1 passing, 0 failing) as of the last /readyz or scrape",
            m.ready.clone(),
        );
        registry.register(
            "main_loop_last_tick_timestamp_seconds",
            "Unix time of the main loop's last iteration; /healthz fails when it is too old",
            m.main_loop_last_tick.clone(),
        );
        registry.register(
            "docker_api_duration_seconds",
            "Docker API calls, by call",
            m.docker_api_duration.clone(),
        );
        registry.register(
            "docker_api_errors",
            "Docker API calls that failed, by call",
            m.docker_api_errors.clone(),
        );
        Self {
            registry: Arc::new(Mutex::new(registry)),
            ..m
        }
    }

    /// `rtmanager_build_info{version,job} 1`: this build, as `job`.
    pub fn set_build_info(&self, job: &str) {
        self.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                job: job.to_owned(),
            })
            .set(1);
    }

    /// The metric group `G`, registered on first use.
    pub fn group<G: MetricGroup>(&self) -> G {
        let mut groups = self.groups.lock().expect("metric groups poisoned");
        if let Some(group) = groups
            .get(&TypeId::of::<G>())
            .and_then(|g| g.downcast_ref::<G>())
        {
            return group.clone();
        }
        let group = G::register(&mut self.registry.lock().expect("metrics registry poisoned"));
        groups.insert(TypeId::of::<G>(), Box::new(group.clone()));
        group
    }

    /// Moves `rtmanager_redis_master_info` of `topology` from the `previous`
    /// address to `addr`.
    pub fn set_redis_master(&self, topology: &str, previous: Option<&str>, addr: &str) {
        let topology = topology.to_owned();
        if let Some(addr) = previous {
            self.redis_master.remove(&RedisMasterLabels {
                topology: topology.clone(),
                addr: addr.to_owned(),
            });
        }
        self.redis_master
            .get_or_create(&RedisMasterLabels {
                topology,
                addr: addr.to_owned(),
            })
            .set(1);
    }

    /// The OpenMetrics text of every registered metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics registry poisoned");
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// Binds `RTMANAGER_METRICS_ADDR` (empty: no listener).
pub async fn bind_metrics(addr: &str) -> anyhow::Result<Option<TcpListener>> {
    if addr.is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| anyhow::anyhow!("RTMANAGER_METRICS_ADDR {addr:?}: {e}"))?;
    Ok(Some(TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("RTMANAGER_METRICS_ADDR {addr}: {e}")
    })?))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What the subscriber wrote, shared with the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_json_with_the_job_at_its_top_level() {
        let captured = Captured::default();
        let writer = captured.clone();
        let json = tracing_subscriber::fmt::format()
            .json()
            .with_current_span(false);
        let subscriber = tracing_subscriber::fmt()
            .json()
            .event_format(WithJob::new("start-job", json))
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(game_id = "g-1", "first");
            let span = tracing::info_span!("http", request_id = "r-1");
            span.in_scope(|| tracing::warn!(error_code = "conflict", "second \"quoted\""));
        });
        let out = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{out}");
        for line in &lines {
            assert_eq!(line["job"], "start-job", "{line}");
            assert!(line["timestamp"].is_string(), "{line}");
        }
        assert_eq!(lines[0]["fields"]["game_id"], "g-1");
        assert_eq!(lines[1]["fields"]["message"], "second \"quoted\"");
        assert_eq!(lines[1]["spans"][0]["request_id"], "r-1");
    }
}
