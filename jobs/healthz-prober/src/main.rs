//! `healthz-prober` binary: wires config, adapters and the prober.

use anyhow::Context;
use shared::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    shared::telemetry::init_logging(&config.log_level);
    let shutdown = shared::shutdown::on_signals().context("installing signal handlers")?;
    let infra = shared::bootstrap::connect(&config, false).await?;
    if let Some(listener) = shared::telemetry::bind_metrics(&config.metrics_addr).await? {
        tokio::spawn(shared::telemetry::serve_metrics(
            listener,
            infra.metrics.clone(),
            shutdown.clone(),
        ));
    }
    healthz_prober::run(config, infra, shutdown).await?;
    tracing::info!("healthz-prober stopped");
    Ok(())
}
