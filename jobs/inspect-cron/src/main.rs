//! `inspect-cron` binary: wires arguments, config, adapters and the passes.

use anyhow::Context;
use inspect_cron::{Cli, Schedule};
use shared::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let schedule = match inspect_cron::parse_args(std::env::args().skip(1))? {
        Cli::Help => {
            print!("{}", inspect_cron::USAGE);
            return Ok(());
        }
        Cli::Run(schedule) => schedule,
    };
    let config = Config::from_env()?;
    shared::telemetry::init_logging(&config.log_level);
    let shutdown = shared::shutdown::on_signals().context("installing signal handlers")?;
    let infra = shared::bootstrap::connect(&config, false).await?;
    if matches!(schedule, Schedule::Every(_)) {
        if let Some(listener) = shared::telemetry::bind_metrics(&config.metrics_addr).await? {
            tokio::spawn(shared::telemetry::serve_metrics(
                listener,
                infra.metrics.clone(),
                shutdown.clone(),
            ));
        }
    }
    inspect_cron::run(config, infra, schedule, shutdown).await
}
