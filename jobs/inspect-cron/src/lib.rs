//! `inspect-cron`: inspects rtmanager's engine containers and reconciles them
//! with `runtime_records` ([`mod@inspector`] does the work).
//!
//! Two ways to run it:
//!
//! - `inspect-cron`: one pass, inspect and reconcile, then exit 0. For cron
//!   or a Kubernetes CronJob (whose floor is one minute). Every run
//!   reconciles: its cost is one listing and the records already read.
//! - `inspect-cron --every [<duration>]` (humantime, e.g. `30s`; without a
//!   value `RTMANAGER_INSPECT_INTERVAL`): a pass per interval until SIGTERM,
//!   reconciling at the first pass and then once per
//!   `RTMANAGER_RECONCILE_INTERVAL`. A pass that fails (Docker or PostgreSQL
//!   away) is logged and the next one reconciles again.
//!
//! Every pass, one-shot or not, is recorded in `cron_passes` (start, end,
//! outcome, counts; [`metrics`]), which the gateway's `/metrics` reads back,
//! so an overdue or failing pass can alert. With `--every` the process also
//! serves its own metrics, and `/healthz` watches the pass loop (it ticks as
//! each container is checked, and while it waits for the next interval).
//!
//! Before exiting, the outbox is delivered to Redis (bounded by
//! `RTMANAGER_SHUTDOWN_TIMEOUT`), so a one-shot run's events reach the stream
//! even when no other relay runs. Undelivered entries stay queued in
//! PostgreSQL for the next relay; the run then exits non-zero to say so.

pub mod inspector;
pub mod metrics;

use std::time::Duration;

use crate::inspector::{InspectSettings, Inspector, PassError, PassReport};
use crate::metrics::InspectMetrics;
use anyhow::Context;
use shared::adapters::LeaseStore;
use shared::bootstrap::Infra;
use shared::config::{InspectConfig, LifecycleConfig, StateConfig};
use shared::domain::{CronJob, CronPass};
use shared::liveness::Heartbeat;
use tokio_util::sync::CancellationToken;

pub const USAGE: &str = "\
usage: inspect-cron [--every [<duration>]]

  (no option)          one pass (inspect and reconcile), then exit
  --every [<duration>] a pass per interval until SIGTERM (e.g. 30s, 2m);
                       without a value, RTMANAGER_INSPECT_INTERVAL; serves
                       /metrics, /healthz and /readyz on RTMANAGER_METRICS_ADDR
  healthcheck          GET the running --every process's own /healthz; exit 0
                       if it answers 2xx (the container health check)
  -h, --help           this text

Settings are RTMANAGER_* environment variables (see the README).
";

/// When passes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    Once,
    /// `None`: `RTMANAGER_INSPECT_INTERVAL`.
    Every(Option<Duration>),
}

/// What the command line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cli {
    Help,
    Run(Schedule),
}

/// Parses the arguments after the program name.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> anyhow::Result<Cli> {
    let args: Vec<String> = args.into_iter().collect();
    let every = |raw: &str| -> anyhow::Result<Cli> {
        let period = humantime::parse_duration(raw)
            .with_context(|| format!("--every {raw:?} is not a duration (e.g. 30s)\n\n{USAGE}"))?;
        anyhow::ensure!(!period.is_zero(), "--every must be positive\n\n{USAGE}");
        Ok(Cli::Run(Schedule::Every(Some(period))))
    };
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => Ok(Cli::Run(Schedule::Once)),
        ["-h" | "--help"] => Ok(Cli::Help),
        ["--every"] => Ok(Cli::Run(Schedule::Every(None))),
        ["--every", raw] => every(raw),
        [one] if one.starts_with("--every=") => every(&one["--every=".len()..]),
        _ => anyhow::bail!("unexpected arguments {args:?}\n\n{USAGE}"),
    }
}

shared::job_config! {
    /// What inspect-cron reads: the common sections, the state directories
    /// (adopted records get their path) and its own.
    pub struct InspectCronConfig {
        job = "inspect-cron";
        state: StateConfig = state,
        lifecycle: LifecycleConfig = lifecycle,
        inspect: InspectConfig = inspect,
    }
}

/// The inspector over the connected adapters.
pub fn inspector(config: &InspectCronConfig, infra: &Infra) -> Inspector {
    Inspector::new(
        infra.engine.clone(),
        infra.db.clone(),
        infra.outbox.clone(),
        LeaseStore::new(infra.redis.clone(), config.common.redis.lease_ttl),
        InspectSettings::from_config(config),
    )
}

/// Runs the schedule until done (one pass) or `shutdown`, then delivers the
/// outbox. A one-shot pass that fails is an error; in a loop it is logged.
pub async fn run(
    config: InspectCronConfig,
    infra: Infra,
    schedule: Schedule,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let inspector = inspector(&config, &infra);
    let grace = config.common.process.shutdown_timeout;
    let passes = Passes {
        infra: &infra,
        metrics: infra.metrics.group(),
        grace,
        shutdown: &shutdown,
    };
    let outcome = match schedule {
        Schedule::Once => match passes.run(&inspector, true).await {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(anyhow::Error::new(e).context("inspect pass failed")),
            None => Err(anyhow::anyhow!(
                "inspect pass interrupted: not finished within RTMANAGER_SHUTDOWN_TIMEOUT ({})",
                humantime::format_duration(grace)
            )),
        },
        Schedule::Every(period) => {
            let period = period.unwrap_or(config.inspect.interval);
            // Between two ticks: one container's check, bounded by the
            // inspect timeout and the few writes that follow it.
            let heartbeat = infra.liveness.watch(
                "inspect passes",
                config.inspect.timeout.max(shared::retry::CAP),
            );
            let inspector = inspector.clone().with_heartbeat(heartbeat.clone());
            let every = passes.every(
                &inspector,
                period,
                config.inspect.reconcile_interval,
                heartbeat,
            );
            infra.outbox.with_relay(&infra.redis, every).await;
            Ok(())
        }
    };
    // Also after a one-shot pass: its events reach the stream even when no
    // other relay runs.
    let delivered = infra.outbox.drain(&infra.redis, grace).await;
    inspector.leases().release_all().await;
    outcome?;
    let delivered = delivered?;
    tracing::info!(delivered, "inspect-cron done");
    Ok(())
}

/// What every pass shares: where it is recorded, and how it stops.
struct Passes<'a> {
    infra: &'a Infra,
    metrics: InspectMetrics,
    grace: Duration,
    shutdown: &'a CancellationToken,
}

impl Passes<'_> {
    /// One pass ([`finish_pass`]), recorded in the metrics and in
    /// `cron_passes` (a failure to record is logged: the pass is done).
    async fn run(
        &self,
        inspector: &Inspector,
        reconcile: bool,
    ) -> Option<Result<PassReport, PassError>> {
        let started = chrono::Utc::now();
        let began = tokio::time::Instant::now();
        let outcome = finish_pass(inspector, reconcile, self.shutdown, self.grace).await;
        self.metrics.pass(began.elapsed().as_secs_f64(), &outcome);
        let pass = CronPass::finished(CronJob::InspectCron, started, metrics::counts(&outcome));
        // Bounded by the pool's acquire timeout: with PostgreSQL away, a
        // failed pass's read and this write waited 5 s each, reaching the
        // stall limit outside any idle.
        if let Err(e) = inspector
            .heartbeat()
            .idle(self.infra.db.record_cron_pass(&pass))
            .await
        {
            tracing::warn!(error = %e, "recording the inspect pass in cron_passes failed");
        }
        outcome
    }

    /// A pass per `period` until `shutdown`; reconciling at the first pass
    /// and then whenever `reconcile_every` has passed since the last
    /// reconciling one. `heartbeat` ticks each pass and while it waits.
    async fn every(
        &self,
        inspector: &Inspector,
        period: Duration,
        reconcile_every: Duration,
        heartbeat: Heartbeat,
    ) {
        let shutdown = self.shutdown;
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_reconcile: Option<tokio::time::Instant> = None;
        loop {
            let tick = heartbeat
                .idle(async {
                    tokio::select! {
                        _ = shutdown.cancelled() => None,
                        tick = ticker.tick() => Some(tick),
                    }
                })
                .await;
            let Some(tick) = tick else { return };
            heartbeat.beat().await;
            let reconcile = last_reconcile.is_none_or(|at| tick - at >= reconcile_every);
            match self.run(inspector, reconcile).await {
                Some(Ok(_)) if reconcile => last_reconcile = Some(tick),
                Some(Ok(_)) => {}
                // Logged once here; the next pass reconciles if this one should have.
                Some(Err(e)) => {
                    tracing::error!(error = %e, "inspect pass failed; retried at the next interval")
                }
                None => {
                    tracing::warn!("inspect pass interrupted by shutdown");
                    return;
                }
            }
            if shutdown.is_cancelled() {
                return;
            }
        }
    }
}

/// Runs one pass; on shutdown it is given `grace` to finish (its leases and
/// transactions are then released cleanly), `None` when it did not.
async fn finish_pass(
    inspector: &Inspector,
    reconcile: bool,
    shutdown: &CancellationToken,
    grace: Duration,
) -> Option<Result<PassReport, PassError>> {
    let pass = inspector.pass(reconcile);
    tokio::pin!(pass);
    tokio::select! {
        result = &mut pass => Some(result),
        _ = shutdown.cancelled() => tokio::time::timeout(grace, pass).await.ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Cli> {
        parse_args(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn no_argument_is_one_pass_and_every_takes_an_optional_duration() {
        assert_eq!(parse(&[]).unwrap(), Cli::Run(Schedule::Once));
        assert_eq!(
            parse(&["--every"]).unwrap(),
            Cli::Run(Schedule::Every(None))
        );
        assert_eq!(
            parse(&["--every", "30s"]).unwrap(),
            Cli::Run(Schedule::Every(Some(Duration::from_secs(30))))
        );
        assert_eq!(
            parse(&["--every=2m"]).unwrap(),
            Cli::Run(Schedule::Every(Some(Duration::from_secs(120))))
        );
        assert_eq!(parse(&["--help"]).unwrap(), Cli::Help);
    }

    #[test]
    fn bad_arguments_are_refused_with_the_usage() {
        for args in [
            &["--every", "soon"][..],
            &["--every", "0s"],
            &["--once"],
            &["--every", "1s", "x"],
        ] {
            let err = format!("{:#}", parse(args).unwrap_err());
            assert!(err.contains("usage: inspect-cron"), "{args:?}: {err}");
        }
    }
}
