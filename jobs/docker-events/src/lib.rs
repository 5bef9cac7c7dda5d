//! `docker-events`: follows the Docker daemon's container events and publishes
//! `container_exited`, `container_oom` and `container_disappeared` on
//! `runtime:health_events`, exactly once, one instance per Docker host.
//! The listener itself is [`listener`](mod@listener); its module map says
//! where the lease, the subscription and cursor, the event mapping and
//! suppression, the catch-up and the exactly-once publication live.

pub mod listener;

use crate::listener::{Listener, ListenerSettings};
use shared::bootstrap::Infra;
use shared::config::InspectConfig;
use tokio_util::sync::CancellationToken;

shared::job_config! {
    /// What docker-events reads: the common sections and the inspect section
    /// (its catch-up inspects `RTMANAGER_INSPECT_CONCURRENCY` containers at once).
    pub struct DockerEventsConfig {
        job = "docker-events";
        inspect: InspectConfig = inspect,
    }
}

/// The listener, wired from connected adapters.
pub fn listener(config: &DockerEventsConfig, infra: &Infra) -> Listener {
    Listener::new(
        infra.engine.clone(),
        infra.db.clone(),
        infra.outbox.clone(),
        infra.redis.clone(),
        ListenerSettings::from_config(config),
    )
    .observed(&infra.metrics, &infra.liveness)
}

/// Follows the daemon until `shutdown` (releasing the per-host lease); the
/// outbox relay runs alongside and gets a last delivery attempt before this
/// returns.
pub async fn run(
    config: DockerEventsConfig,
    infra: Infra,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = listener(&config, &infra);
    infra
        .outbox
        .with_relay(&infra.redis, listener.run(shutdown))
        .await;
    Ok(())
}
