//! The container engine, timed: `rtmanager_docker_api_duration_seconds{call}`
//! and `rtmanager_docker_api_errors_total{call}` around every call of the
//! port, whatever adapter is behind it. It speaks only the port, so the
//! Docker adapter stays the only code that speaks bollard.
//!
//! The `call` label names the port's verb as Docker would: `ping`,
//! `inspect_network`, `pull` (`ensure_image`: an image inspect, and a pull
//! when the policy asks), `inspect_image`, `inspect`, `run` (create and
//! start), `start`, `stop`, `remove`, `list`, `events_connect` (until the
//! daemon answered the subscription), `info` (the daemon id), `stats`,
//! `inspect_health`. A log stream is not timed (it lasts as long as its
//! reader). An answer that says "not there" (`inspect` of a gone container)
//! is not an error. A call its caller abandons (inspect-cron's
//! `RTMANAGER_INSPECT_TIMEOUT`) is not observed: its caller counts it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{CallLabels, Metrics};
use crate::ports::{
    ContainerEngine, ContainerInfo, ContainerSpec, ContainerStats, ContainerSummary, EngineError,
    EngineEvents, HealthInfo, ImageInfo, LogChunks, LogOptions, PullPolicy,
};

/// An engine whose calls are counted and timed.
pub struct MeteredEngine {
    inner: Arc<dyn ContainerEngine>,
    metrics: Metrics,
}

impl MeteredEngine {
    pub fn new(inner: Arc<dyn ContainerEngine>, metrics: Metrics) -> Self {
        Self { inner, metrics }
    }

    async fn timed<T>(
        &self,
        call: &'static str,
        work: impl Future<Output = Result<T, EngineError>>,
    ) -> Result<T, EngineError> {
        let began = Instant::now();
        let result = work.await;
        self.observe(call, began.elapsed(), result.is_err());
        result
    }

    fn observe(&self, call: &'static str, took: Duration, failed: bool) {
        let labels = CallLabels {
            call: call.to_owned(),
        };
        self.metrics
            .docker_api_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if failed {
            self.metrics.docker_api_errors.get_or_create(&labels).inc();
        }
    }
}

#[async_trait]
impl ContainerEngine for MeteredEngine {
    async fn ping(&self) -> Result<(), EngineError> {
        self.timed("ping", self.inner.ping()).await
    }

    async fn network_exists(&self, name: &str) -> Result<bool, EngineError> {
        self.timed("inspect_network", self.inner.network_exists(name))
            .await
    }

    async fn ensure_image(&self, image: &str, policy: PullPolicy) -> Result<(), EngineError> {
        self.timed("pull", self.inner.ensure_image(image, policy))
            .await
    }

    async fn inspect_image(&self, image: &str) -> Result<ImageInfo, EngineError> {
        self.timed("inspect_image", self.inner.inspect_image(image))
            .await
    }

    async fn containers_of_image(&self, image_id: &str) -> Result<Vec<String>, EngineError> {
        self.timed(
            "containers_of_image",
            self.inner.containers_of_image(image_id),
        )
        .await
    }

    async fn remove_image(&self, image: &str) -> Result<(), EngineError> {
        self.timed("remove_image", self.inner.remove_image(image))
            .await
    }

    async fn inspect_container(
        &self,
        id_or_name: &str,
    ) -> Result<Option<ContainerInfo>, EngineError> {
        self.timed("inspect", self.inner.inspect_container(id_or_name))
            .await
    }

    async fn run(&self, spec: &ContainerSpec) -> Result<ContainerInfo, EngineError> {
        self.timed("run", self.inner.run(spec)).await
    }

    async fn start(&self, id: &str) -> Result<(), EngineError> {
        self.timed("start", self.inner.start(id)).await
    }

    async fn remove(&self, id: &str) -> Result<(), EngineError> {
        self.timed("remove", self.inner.remove(id)).await
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), EngineError> {
        self.timed("stop", self.inner.stop(id, timeout)).await
    }

    async fn list_managed(&self) -> Result<Vec<ContainerSummary>, EngineError> {
        self.timed("list", self.inner.list_managed()).await
    }

    async fn subscribe_events(&self, since_nano: Option<i64>) -> Result<EngineEvents, EngineError> {
        self.timed("events_connect", self.inner.subscribe_events(since_nano))
            .await
    }

    async fn daemon_id(&self) -> Result<String, EngineError> {
        self.timed("info", self.inner.daemon_id()).await
    }

    async fn stats_snapshot(&self, id: &str) -> Result<ContainerStats, EngineError> {
        self.timed("stats", self.inner.stats_snapshot(id)).await
    }

    fn logs(&self, id: &str, options: &LogOptions) -> LogChunks {
        self.inner.logs(id, options)
    }

    async fn health_info(&self, id: &str) -> Result<Option<HealthInfo>, EngineError> {
        self.timed("inspect_health", self.inner.health_info(id))
            .await
    }
}
