//! `healthz-prober`: active `GET /healthz` probes of the running engines of
//! one shard, reporting `probe_failed` / `probe_recovered` on
//! `runtime:health_events`. The probing itself is
//! [`prober`] (design notes there); this crate wires it with
//! the outbox relay.

pub mod prober;

use crate::prober::{Prober, ProberSettings};
use anyhow::Context;
use shared::bootstrap::Infra;
use shared::config::Config;
use tokio_util::sync::CancellationToken;

/// Builds the prober from connected adapters.
pub fn prober(config: &Config, infra: &Infra) -> anyhow::Result<Prober> {
    let settings = ProberSettings::from_config(config)?;
    Prober::new(
        settings,
        infra.db.clone(),
        infra.redis.clone(),
        infra.engine.clone(),
        infra.outbox.clone(),
    )
    .context("building the probe HTTP client")
}

/// Probes until `shutdown`; the outbox relay runs alongside and gets a last
/// delivery attempt before returning.
pub async fn run(config: Config, infra: Infra, shutdown: CancellationToken) -> anyhow::Result<()> {
    let prober = prober(&config, &infra)?;
    infra
        .outbox
        .with_relay(&infra.redis, prober.run(shutdown))
        .await;
    Ok(())
}
