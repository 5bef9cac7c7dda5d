//! `docker-events` binary: wires config, adapters and the events listener.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if shared::healthcheck::requested() {
        return shared::healthcheck::run().await;
    }
    let (config, infra, shutdown) =
        shared::bootstrap::process::<docker_events::DockerEventsConfig>(false).await?;
    docker_events::run(config, infra, shutdown).await?;
    tracing::info!("docker-events stopped");
    Ok(())
}
