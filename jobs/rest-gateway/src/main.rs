//! `rest-gateway` binary: wires arguments, config, tokens, signals, adapters
//! and the HTTP server. Every start-up check (tokens, migrations, Redis,
//! PostgreSQL, Docker and its network) runs before it listens; any failure
//! exits non-zero. `sync-file-sd --out FILE` writes the monitoring inventory
//! once and exits.

use anyhow::Context;
use rest_gateway::auth::{self, Auth};
use rest_gateway::Command;
use shared::config::Config;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = rest_gateway::parse_args(std::env::args().skip(1))?;
    if command == Command::Help {
        print!("{}", rest_gateway::USAGE);
        return Ok(());
    }
    let config = Config::from_env()?;
    shared::telemetry::init_logging(&config.log_level);
    if let Command::SyncFileSd(out) = command {
        rest_gateway::file_sd::run_once(&config, &out).await?;
        return Ok(());
    }
    let auth = Auth::from_config(&config).context("API authentication")?;
    let shutdown = shared::shutdown::on_signals().context("installing signal handlers")?;
    auth::reload_on_sighup(auth.clone()).context("installing the SIGHUP handler")?;
    let infra = shared::bootstrap::connect(&config, true).await?;
    let addr = config.internal_http_socket()?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding RTMANAGER_INTERNAL_HTTP_ADDR {addr}"))?;
    let metrics_listener = shared::telemetry::bind_metrics(&config.metrics_addr).await?;
    rest_gateway::serve(config, infra, listener, metrics_listener, auth, shutdown).await?;
    tracing::info!("rest-gateway stopped");
    Ok(())
}
