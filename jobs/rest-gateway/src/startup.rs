//! The process around the gateway: what the binary was asked to do, and the
//! start-up that gets it there.
//!
//! [`run`] does the steps in this order, each failure ending the process
//! non-zero with its message: configuration, logging, (for `sync-file-sd`,
//! one sync and exit; for `redrive-outbox`, one redrive and exit), API tokens, signal handlers, the SIGHUP token reload,
//! the adapters with their checks (migrations, Redis, PostgreSQL, Docker and
//! its network), then the API and metrics listeners. Only then does it serve,
//! so nothing listens before every check has passed.

use std::path::PathBuf;

use anyhow::Context;
use shared::config::{Env, JobConfig};
use tokio::net::TcpListener;

use shared::adapters::postgres::{Database, Redrive};
use shared::config::{MigrationMode, PostgresConfig, ProcessConfig};

use crate::settings::{RestGatewayConfig, SyncFileSdConfig};

use crate::auth::Auth;
use crate::tls::ApiTls;
use crate::ApiListener;

/// `rest-gateway --help`.
pub const USAGE: &str = "\
Usage: rest-gateway                       serve the internal REST API on RTMANAGER_INTERNAL_HTTP_ADDR
       rest-gateway sync-file-sd --out FILE [--textfile PATH]
                                          write the monitoring targets for Prometheus file_sd, once
                                          (--textfile: also the sync's metrics, node_exporter textfile format)
       rest-gateway redrive-outbox --all|--id N  release parked outbox rows to the relay (after fixing Redis)
       rest-gateway migrate               apply the database migrations (as the schema's owner role) and exit
       rest-gateway healthcheck           GET the running gateway's own /healthz on RTMANAGER_METRICS_ADDR;
                                          exit 0 if it answers 2xx (the container health check)
       rest-gateway --help
";

/// What the binary was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Serve,
    /// `sync-file-sd --out FILE [--textfile PATH]` ([`crate::file_sd`]).
    SyncFileSd {
        out: PathBuf,
        textfile: Option<PathBuf>,
    },
    /// `redrive-outbox --all|--id N`: parked rows go back to the relays.
    RedriveOutbox(Redrive),
    /// `migrate`: the deploy step that applies the migrations with the
    /// owner's DSN, for jobs running with `RTMANAGER_POSTGRES_MIGRATIONS=off`.
    Migrate,
    /// `healthcheck`: [`shared::healthcheck`], the container health check.
    Healthcheck,
    Help,
}

/// Parses the arguments after the program name.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> anyhow::Result<Command> {
    let args: Vec<String> = args.into_iter().collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] => Ok(Command::Serve),
        ["-h" | "--help" | "help"] => Ok(Command::Help),
        ["migrate"] => Ok(Command::Migrate),
        [shared::healthcheck::ARG] => Ok(Command::Healthcheck),
        ["sync-file-sd", rest @ ..] => sync_file_sd_args(rest),
        ["redrive-outbox", "--all"] => Ok(Command::RedriveOutbox(Redrive::All)),
        ["redrive-outbox", "--id", id] => match id.parse() {
            Ok(id) => Ok(Command::RedriveOutbox(Redrive::Id(id))),
            Err(_) => anyhow::bail!("redrive-outbox --id takes an outbox row id, not {id:?}"),
        },
        _ => anyhow::bail!("unexpected arguments {args:?}\n{USAGE}"),
    }
}

/// `--out FILE` and an optional `--textfile PATH`, in either order.
fn sync_file_sd_args(args: &[&str]) -> anyhow::Result<Command> {
    let (mut out, mut textfile) = (None, None);
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let slot = match *flag {
            "--out" => &mut out,
            "--textfile" => &mut textfile,
            other => anyhow::bail!("sync-file-sd: unexpected argument {other:?}\n{USAGE}"),
        };
        match rest.next() {
            Some(path) if !path.is_empty() && slot.is_none() => *slot = Some(PathBuf::from(path)),
            _ => anyhow::bail!("sync-file-sd: {flag} takes one path, once\n{USAGE}"),
        }
    }
    let out = out.ok_or_else(|| anyhow::anyhow!("sync-file-sd needs --out FILE\n{USAGE}"))?;
    Ok(Command::SyncFileSd { out, textfile })
}

/// Runs `command` with the configuration of the environment: the whole
/// `rest-gateway` process after argument parsing.
pub async fn run(command: Command) -> anyhow::Result<()> {
    if command == Command::Help {
        print!("{USAGE}");
        return Ok(());
    }
    if command == Command::Healthcheck {
        return shared::healthcheck::run().await;
    }
    let env = Env::from_process();
    if let Command::SyncFileSd { out, textfile } = command {
        let config = SyncFileSdConfig::from_env(&env)?;
        shared::telemetry::init_logging(env!("CARGO_PKG_NAME"), &config.process.log_level);
        crate::file_sd::run(&config, &out, textfile.as_deref()).await?;
        return Ok(());
    }
    if let Command::RedriveOutbox(which) = command {
        return redrive_outbox(&env, which).await;
    }
    if command == Command::Migrate {
        return migrate(&env).await;
    }
    let config: RestGatewayConfig = shared::bootstrap::settings()?;
    let auth = Auth::from_config(&config.gateway).context("API authentication")?;
    let tls = ApiTls::from_config(&config.gateway).context("API TLS")?;
    let shutdown = shared::shutdown::on_signals().context("installing signal handlers")?;
    reload_on_sighup(auth.clone(), tls.clone()).context("installing the SIGHUP handler")?;
    let infra = shared::bootstrap::connect(&config.common, true).await?;
    infra.metrics.set_build_info(RestGatewayConfig::JOB);
    let addr = config.gateway.listen;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding RTMANAGER_INTERNAL_HTTP_ADDR {addr}"))?;
    let metrics_addr = config.common.process.metrics_addr.as_deref().unwrap_or("");
    let metrics_listener = shared::telemetry::bind_metrics(metrics_addr).await?;
    let listener = ApiListener::new(listener, tls);
    crate::serve(config, infra, listener, metrics_listener, auth, shutdown).await?;
    tracing::info!("rest-gateway stopped");
    Ok(())
}

/// `migrate`: applies the pending migrations with RTMANAGER_POSTGRES_PRIMARY_DSN
/// (whatever RTMANAGER_POSTGRES_MIGRATIONS says: this is the step that runs
/// them) and prints what the schema now holds.
async fn migrate(env: &Env) -> anyhow::Result<()> {
    let process: ProcessConfig = env.section()?;
    let postgres: PostgresConfig = env.section()?;
    shared::telemetry::init_logging(env!("CARGO_PKG_NAME"), &process.log_level);
    let db = Database::connect(postgres.dsn.expose(), 1)
        .await
        .context("connecting to RTMANAGER_POSTGRES_PRIMARY_DSN")?;
    let before = db
        .migration_state()
        .await
        .context("reading the applied migrations")?;
    shared::bootstrap::prepare_schema(&db, MigrationMode::Auto).await?;
    let applied: Vec<i64> = before.pending.iter().map(|(v, _)| *v).collect();
    tracing::info!(applied = ?applied, "database migrations applied");
    println!(
        "applied {} migration(s): {applied:?}; the schema is current",
        applied.len()
    );
    db.close().await;
    Ok(())
}

/// Re-reads the tokens file and the TLS files on every SIGHUP until the
/// process ends; each keeps what it had when its files do not load.
fn reload_on_sighup(auth: Auth, tls: Option<ApiTls>) -> std::io::Result<()> {
    use futures_util::StreamExt;
    let mut signals = signal_hook_tokio::Signals::new([signal_hook::consts::SIGHUP])?;
    tokio::spawn(async move {
        while signals.next().await.is_some() {
            let _ = auth.reload();
            if let Some(tls) = &tls {
                let _ = tls.reload();
            }
        }
    });
    Ok(())
}

/// `redrive-outbox`: clears `parked_at` (PostgreSQL only; the running relays
/// pick the rows up on their next pass) and prints the ids released.
async fn redrive_outbox(env: &Env, which: Redrive) -> anyhow::Result<()> {
    let process: ProcessConfig = env.section()?;
    let postgres: PostgresConfig = env.section()?;
    shared::telemetry::init_logging(env!("CARGO_PKG_NAME"), &process.log_level);
    let db = Database::connect(postgres.dsn.expose(), 1)
        .await
        .context("connecting to RTMANAGER_POSTGRES_PRIMARY_DSN")?;
    let ids = db.redrive_outbox(which).await?;
    if ids.is_empty() && which != Redrive::All {
        anyhow::bail!("no parked outbox row matches {which:?}");
    }
    tracing::info!(rows = ids.len(), ?ids, "outbox rows redriven");
    println!("redriven {} outbox row(s): {ids:?}", ids.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(raw: &[&str]) -> anyhow::Result<Command> {
        parse_args(raw.iter().map(|a| a.to_string()))
    }

    #[test]
    fn arguments_select_serve_sync_or_help() {
        assert_eq!(args(&[]).unwrap(), Command::Serve);
        assert_eq!(args(&["--help"]).unwrap(), Command::Help);
        assert_eq!(args(&["migrate"]).unwrap(), Command::Migrate);
        assert_eq!(args(&["healthcheck"]).unwrap(), Command::Healthcheck);
        assert_eq!(
            args(&["sync-file-sd", "--out", "/t/x.json"]).unwrap(),
            Command::SyncFileSd {
                out: "/t/x.json".into(),
                textfile: None
            }
        );
        assert_eq!(
            args(&[
                "sync-file-sd",
                "--textfile",
                "/t/sd.prom",
                "--out",
                "/t/x.json"
            ])
            .unwrap(),
            Command::SyncFileSd {
                out: "/t/x.json".into(),
                textfile: Some("/t/sd.prom".into())
            }
        );
        assert_eq!(
            args(&["redrive-outbox", "--all"]).unwrap(),
            Command::RedriveOutbox(Redrive::All)
        );
        assert_eq!(
            args(&["redrive-outbox", "--id", "42"]).unwrap(),
            Command::RedriveOutbox(Redrive::Id(42))
        );
        for bad in [
            &["sync-file-sd"][..],
            &["sync-file-sd", "--textfile", "t"],
            &["sync-file-sd", "--out", "x", "--out", "y"],
            &["sync-file-sd", "--out"],
            &["sync-file-sd", "--out", "x", "--more"],
            &["--out", "x"],
            &["serve", "x"],
            &["redrive-outbox"],
            &["redrive-outbox", "--id", "x"],
            &["migrate", "now"],
            &["healthcheck", "x"],
        ] {
            assert!(args(bad).is_err(), "{bad:?}");
        }
    }
}
