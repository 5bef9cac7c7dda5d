//! `start-job` binary: wires config, adapters and the consumer loop.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if shared::healthcheck::requested() {
        return shared::healthcheck::run().await;
    }
    let (config, infra, shutdown) =
        shared::bootstrap::process::<start_job::StartJobConfig>(true).await?;
    start_job::run(config, infra, shutdown).await?;
    tracing::info!("start-job stopped");
    Ok(())
}
