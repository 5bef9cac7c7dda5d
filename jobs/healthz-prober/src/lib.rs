//! `healthz-prober`: active `GET /healthz` probes of the running engines of
//! one shard, reporting `probe_failed` / `probe_recovered` on
//! `runtime:health_events`. The probing itself is
//! [`shared::health::prober`] (design notes there); this crate wires it with
//! the outbox relay.

use std::sync::Arc;

use anyhow::Context;
use shared::bootstrap::Infra;
use shared::config::Config;
use shared::health::prober::{Prober, ProberSettings};
use shared::ports::ContainerEngine;
use tokio_util::sync::CancellationToken;

/// Builds the prober from connected adapters.
pub fn prober(config: &Config, infra: &Infra) -> anyhow::Result<Prober> {
    let settings = ProberSettings::from_config(config)?;
    let engine: Arc<dyn ContainerEngine> = infra.engine.clone();
    Prober::new(
        settings,
        infra.db.clone(),
        infra.redis.clone(),
        engine,
        infra.publisher.clone(),
    )
    .context("building the probe HTTP client")
}

/// Probes until `shutdown`; the outbox relay runs alongside and gets a last
/// delivery attempt before returning.
pub async fn run(config: Config, infra: Infra, shutdown: CancellationToken) -> anyhow::Result<()> {
    let prober = prober(&config, &infra)?;
    infra
        .publisher
        .with_relay(infra.redis.clone(), prober.run(shutdown))
        .await;
    Ok(())
}
