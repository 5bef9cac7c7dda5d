//! `cleanup-cron` binary: one cleanup pass, or `--every [DURATION]`.

use anyhow::Context;
use shared::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    shared::telemetry::init_logging(&config.log_level);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let every = cleanup_cron::parse_args(&args, config.cleanup_interval)?;
    let shutdown = shared::shutdown::on_signals().context("installing signal handlers")?;
    let infra = shared::bootstrap::connect(&config, false).await?;
    cleanup_cron::run(config, infra, every, shutdown).await
}
