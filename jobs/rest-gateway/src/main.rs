//! `rest-gateway` binary: parses the command and hands it to
//! [`rest_gateway::startup::run`], which checks everything before it listens.
//! `sync-file-sd --out FILE` writes the monitoring inventory once and exits.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = rest_gateway::parse_args(std::env::args().skip(1))?;
    rest_gateway::startup::run(command).await
}
