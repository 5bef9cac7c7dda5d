//! Structured JSON logs (tracing) and Prometheus metrics (prometheus-client),
//! served with `/healthz` on `RTMANAGER_METRICS_ADDR`.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// JSON logs on stdout; `RTMANAGER_LOG_LEVEL` (or a full `RUST_LOG` filter).
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_current_span(false)
        .with_env_filter(filter)
        .try_init();
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

/// Every metric a job may record; unused ones simply stay at zero.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub operations: Family<OperationLabels, Counter>,
    pub health_events: Family<EventLabels, Counter>,
    pub outbox_delivered: Family<StreamLabels, Counter>,
    pub outbox_pending: Gauge,
    pub outbox_relay_failures: Counter,
    pub outbox_refused: Family<StreamLabels, Counter>,
    pub outbox_parked: Gauge,
    pub jobs_consumed: Family<StreamLabels, Counter>,
    pub jobs_dead_lettered: Family<StreamLabels, Counter>,
    pub jobs_reclaimed: Family<StreamLabels, Counter>,
    pub jobs_in_flight: Gauge,
    pub consumer_group_recreations: Family<StreamLabels, Counter>,
    /// 1 for the Redis master in use; one series at a time.
    pub redis_master: Family<RedisMasterLabels, Gauge>,
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
            registry: Arc::new(Registry::default()),
            operations: Family::default(),
            health_events: Family::default(),
            outbox_delivered: Family::default(),
            outbox_pending: Gauge::default(),
            outbox_relay_failures: Counter::default(),
            outbox_refused: Family::default(),
            outbox_parked: Gauge::default(),
            jobs_consumed: Family::default(),
            jobs_dead_lettered: Family::default(),
            jobs_reclaimed: Family::default(),
            jobs_in_flight: Gauge::default(),
            consumer_group_recreations: Family::default(),
            redis_master: Family::default(),
        };
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
            "Outbox entries not yet delivered (last relay pass)",
            m.outbox_pending.clone(),
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
            "Outbox entries parked after repeated refusals, awaiting a redrive (last relay pass)",
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
            "redis_master_info",
            "The Redis master this process uses (1), by topology and address",
            m.redis_master.clone(),
        );
        Self {
            registry: Arc::new(registry),
            ..m
        }
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

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` and `GET /healthz` until `shutdown` resolves.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Metrics,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener accept failed");
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let response = match req.uri().path() {
                        "/metrics" => Response::builder()
                            .header(
                                "content-type",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )
                            .body(Full::new(Bytes::from(metrics.encode()))),
                        "/healthz" => Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from_static(b"{\"status\":\"ok\"}"))),
                        _ => Response::builder()
                            .status(404)
                            .body(Full::new(Bytes::from_static(b"not found"))),
                    };
                    Ok::<_, hyper::http::Error>(response.expect("static response"))
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
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
