//! The real Docker engine with one inspect held back: the daemon answers,
//! and the answer is handed over only when the test releases it. The caller
//! then acts on what the container looked like at the moment of the
//! inspect, while the test changes the container meanwhile: the window of a
//! slow pass or a long catch-up, opened at an exact step instead of by a
//! sleep. Every call, held or not, goes to Docker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shared::ports::{
    ContainerEngine, ContainerInfo, ContainerSpec, ContainerStats, ContainerSummary, EngineError,
    EngineEvents, HealthInfo, ImageInfo, LogChunks, LogOptions, PullPolicy,
};
use tokio::sync::oneshot;

/// Wraps an engine; [`Self::hold_next_inspect`] arms the hold.
pub struct HeldInspectEngine {
    docker: Arc<dyn ContainerEngine>,
    armed: Mutex<Option<Armed>>,
}

struct Armed {
    container_id: String,
    reached: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

/// One armed hold, seen from the test.
pub struct InspectHold {
    reached: oneshot::Receiver<()>,
    release: oneshot::Sender<()>,
}

impl InspectHold {
    /// Waits until the held inspect has its answer from the daemon.
    pub async fn reached(&mut self, deadline: Duration) {
        tokio::time::timeout(deadline, &mut self.reached)
            .await
            .expect("the held inspect to be reached")
            .expect("hold dropped");
    }

    /// Hands the (by now old) answer to the caller.
    pub fn release(self) {
        let _ = self.release.send(());
    }
}

impl HeldInspectEngine {
    pub fn new(docker: Arc<dyn ContainerEngine>) -> Self {
        Self {
            docker,
            armed: Mutex::default(),
        }
    }

    /// Holds the answer of the next inspect of `container_id`.
    pub fn hold_next_inspect(&self, container_id: &str) -> InspectHold {
        let (reached_tx, reached_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        *self.armed.lock().unwrap() = Some(Armed {
            container_id: container_id.to_owned(),
            reached: reached_tx,
            release: release_rx,
        });
        InspectHold {
            reached: reached_rx,
            release: release_tx,
        }
    }

    fn take_hold(&self, id: &str) -> Option<Armed> {
        let mut armed = self.armed.lock().unwrap();
        match armed.as_ref() {
            Some(a) if a.container_id == id => armed.take(),
            _ => None,
        }
    }
}

#[async_trait]
impl ContainerEngine for HeldInspectEngine {
    async fn ping(&self) -> Result<(), EngineError> {
        self.docker.ping().await
    }
    async fn network_exists(&self, name: &str) -> Result<bool, EngineError> {
        self.docker.network_exists(name).await
    }
    async fn ensure_image(&self, image: &str, policy: PullPolicy) -> Result<(), EngineError> {
        self.docker.ensure_image(image, policy).await
    }
    async fn inspect_image(&self, image: &str) -> Result<ImageInfo, EngineError> {
        self.docker.inspect_image(image).await
    }
    async fn containers_of_image(&self, image_id: &str) -> Result<Vec<String>, EngineError> {
        self.docker.containers_of_image(image_id).await
    }
    async fn remove_image(&self, image: &str) -> Result<(), EngineError> {
        self.docker.remove_image(image).await
    }
    async fn inspect_container(&self, id: &str) -> Result<Option<ContainerInfo>, EngineError> {
        let answer = self.docker.inspect_container(id).await;
        if let Some(hold) = self.take_hold(id) {
            let _ = hold.reached.send(());
            let _ = hold.release.await;
        }
        answer
    }
    async fn run(&self, spec: &ContainerSpec) -> Result<ContainerInfo, EngineError> {
        self.docker.run(spec).await
    }
    async fn start(&self, id: &str) -> Result<(), EngineError> {
        self.docker.start(id).await
    }
    async fn remove(&self, id: &str) -> Result<(), EngineError> {
        self.docker.remove(id).await
    }
    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), EngineError> {
        self.docker.stop(id, timeout).await
    }
    async fn list_managed(&self) -> Result<Vec<ContainerSummary>, EngineError> {
        self.docker.list_managed().await
    }
    async fn subscribe_events(&self, since_nano: Option<i64>) -> Result<EngineEvents, EngineError> {
        self.docker.subscribe_events(since_nano).await
    }
    async fn daemon_id(&self) -> Result<String, EngineError> {
        self.docker.daemon_id().await
    }
    async fn stats_snapshot(&self, id: &str) -> Result<ContainerStats, EngineError> {
        self.docker.stats_snapshot(id).await
    }
    fn logs(&self, id: &str, options: &LogOptions) -> LogChunks {
        self.docker.logs(id, options)
    }
    async fn health_info(&self, id: &str) -> Result<Option<HealthInfo>, EngineError> {
        self.docker.health_info(id).await
    }
}
