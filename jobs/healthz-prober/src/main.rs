//! `healthz-prober` binary: wires config, adapters and the prober.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if shared::healthcheck::requested() {
        return shared::healthcheck::run().await;
    }
    let (config, infra, shutdown) =
        shared::bootstrap::process::<healthz_prober::HealthzProberConfig>(false).await?;
    healthz_prober::run(config, infra, shutdown).await?;
    tracing::info!("healthz-prober stopped");
    Ok(())
}
