//! `healthz-prober`: active `GET /healthz` probes of the running engines of
//! one shard, reporting `probe_failed` / `probe_recovered` on
//! `runtime:health_events`. This crate wires the [`prober::Prober`] with the
//! outbox relay.
//!
//! - [`schedule`]: the shard of a game and the wall-clock slots it is probed at.
//! - [`settings`]: `RTMANAGER_PROBE_*` resolved once.
//! - [`target`]: what is probed ([`target::Target`]) and what a slot came to
//!   ([`target::Verdict`]).
//! - [`address`]: where a probe goes (`hostname` or `container_ip`).
//! - the HTTP exchange and its classification are the adapter
//!   `shared::adapters::http_probe`.
//! - [`streak`]: from the Redis streak's verdict to the health event, kept
//!   pending with the streak until it is committed.
//! - [`prober`](mod@prober): the target tasks and what one slot does.
//! - [`metrics`]: probes, targets, rounds, lag and transitions.

pub mod address;
pub mod metrics;
pub mod prober;
pub mod schedule;
pub mod settings;
pub mod streak;
pub mod target;

use crate::prober::Prober;
use crate::settings::ProberSettings;
use anyhow::Context;
use shared::bootstrap::Infra;
use shared::config::ProbeConfig;
use tokio_util::sync::CancellationToken;

shared::job_config! {
    /// What healthz-prober reads: the common sections and the probe section.
    pub struct HealthzProberConfig {
        job = "healthz-prober", docker = uses_docker;
        probe: ProbeConfig = probe,
    }
}

/// Only `container_ip` mode talks to Docker (it inspects each engine for its
/// address); a `hostname`-mode prober starts without a socket.
pub fn uses_docker(config: &HealthzProberConfig) -> bool {
    config.probe.address_mode == shared::config::AddressMode::ContainerIp
}

/// Builds the prober from connected adapters.
pub fn prober(config: &HealthzProberConfig, infra: &Infra) -> anyhow::Result<Prober> {
    let settings = ProberSettings::from_config(config);
    Prober::new(
        settings,
        infra.db.clone(),
        infra.redis.clone(),
        infra.engine.clone(),
        infra.outbox.clone(),
    )
    .context("building the probe HTTP client")
    .map(|prober| prober.observed(&infra.metrics, &infra.liveness))
}

/// Probes until `shutdown`; the outbox relay runs alongside and gets a last
/// delivery attempt before returning.
pub async fn run(
    config: HealthzProberConfig,
    infra: Infra,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let prober = prober(&config, &infra)?;
    infra
        .outbox
        .with_relay(&infra.redis, prober.run(shutdown))
        .await;
    Ok(())
}
