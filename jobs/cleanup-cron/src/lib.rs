//! `cleanup-cron`: removes the containers of runtimes stopped for longer than
//! `RTMANAGER_CONTAINER_RETENTION_DAYS` (op source `auto_ttl`). One pass per
//! run, or `--every [duration]` (default `RTMANAGER_CLEANUP_INTERVAL`).
//! `replay_no_op` and `conflict` (a game started again meanwhile) are
//! absorbed; one failing game does not stop the pass. Then the pass prunes
//! the history tables by the retention section (`RTMANAGER_*_RETENTION`):
//! old operation-log rows (each game's latest kept), `removed` records with
//! their snapshots and observations, stop tombstones; in batches of
//! [`PRUNE_BATCH`] rows per statement.

use std::time::Duration;

use shared::adapters::postgres::PruneCounts;
use shared::bootstrap::Infra;
use shared::config::{CleanupConfig, LifecycleConfig, RetentionConfig, StateConfig};
use shared::domain::{ErrorCode, OpSource, Outcome};
use shared::operations::{OperationRequest, Operations};
use tokio_util::sync::CancellationToken;

shared::job_config! {
    /// What cleanup-cron reads: the common sections, the lifecycle and state
    /// directories, its own schedule and container retention, and the
    /// tables' retention.
    pub struct CleanupCronConfig {
        lifecycle: LifecycleConfig = lifecycle,
        state: StateConfig = state,
        cleanup: CleanupConfig = cleanup,
        retention: RetentionConfig = retention,
    }
}

/// Rows one pruning statement deletes at most: each is a short transaction,
/// so a large backlog never holds locks for long; the pass loops until done.
pub const PRUNE_BATCH: u32 = 10_000;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub cleaned: Vec<String>,
    pub absorbed: Vec<String>,
    pub failed: Vec<(String, String)>,
    /// Rows pruned from the history tables.
    pub pruned: PruneCounts,
}

pub const USAGE: &str = "usage: cleanup-cron [--every [DURATION]]\n\n\
One cleanup pass, then exit 0 (for cron or a Kubernetes CronJob).\n\
--every [DURATION]  loop; DURATION defaults to RTMANAGER_CLEANUP_INTERVAL (1h)";

/// What the command line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    Once,
    /// `None`: the configured interval.
    Every(Option<Duration>),
    Help,
}

/// `--every [DURATION]` (or `--every=DURATION`), `--help`; a zero duration is refused.
pub fn parse_args(args: &[String]) -> anyhow::Result<Schedule> {
    let parse = |value: &str| -> anyhow::Result<Duration> {
        let every = humantime::parse_duration(value)
            .map_err(|e| anyhow::anyhow!("--every {value:?}: {e}"))?;
        anyhow::ensure!(!every.is_zero(), "--every must be positive");
        Ok(every)
    };
    match args {
        [] => Ok(Schedule::Once),
        [flag] if flag == "--help" || flag == "-h" => Ok(Schedule::Help),
        [flag] if flag == "--every" => Ok(Schedule::Every(None)),
        [flag] if flag.starts_with("--every=") => {
            Ok(Schedule::Every(Some(parse(&flag["--every=".len()..])?)))
        }
        [flag, value] if flag == "--every" => Ok(Schedule::Every(Some(parse(value)?))),
        other => anyhow::bail!("unexpected arguments {other:?}\n{USAGE}"),
    }
}

/// Removes the expired containers, then prunes the history tables.
pub async fn pass(
    operations: &Operations,
    infra: &Infra,
    config: &CleanupCronConfig,
) -> anyhow::Result<PassReport> {
    let pass_id = format!("cleanup-{}", chrono_ms());
    let mut report = PassReport::default();
    for game_id in infra.db.expired_stopped(config.cleanup.retention).await? {
        let request = OperationRequest {
            game_id: game_id.clone(),
            op_source: OpSource::AutoTtl,
            source_ref: pass_id.clone(),
        };
        let outcome = operations.cleanup(&request).await;
        match (outcome.outcome, outcome.error_code) {
            (Outcome::Success, None) => report.cleaned.push(game_id.to_string()),
            (_, Some(ErrorCode::ReplayNoOp | ErrorCode::Conflict)) => {
                report.absorbed.push(game_id.to_string())
            }
            (_, code) => report.failed.push((
                game_id.to_string(),
                format!(
                    "{}: {}",
                    code.map(ErrorCode::as_str).unwrap_or(""),
                    outcome.error_message
                ),
            )),
        }
    }
    let pruned = match infra.db.prune_history(&config.retention, PRUNE_BATCH).await {
        Ok(pruned) => pruned,
        Err(e) => {
            // The containers' outcome is still worth a line.
            tracing::warn!(
                cleaned = report.cleaned.len(),
                absorbed = report.absorbed.len(),
                failed = report.failed.len(),
                "cleanup pass: containers done, pruning failed"
            );
            return Err(anyhow::Error::new(e).context("prune the history tables"));
        }
    };
    report.pruned = pruned;
    tracing::info!(
        cleaned = report.cleaned.len(),
        absorbed = report.absorbed.len(),
        failed = report.failed.len(),
        pruned_operations = pruned.operation_log,
        pruned_removed_records = pruned.removed_records,
        pruned_snapshots = pruned.health_snapshots,
        pruned_observations = pruned.inspect_observations,
        pruned_health_history = pruned.health_event_history,
        pruned_tombstones = pruned.stop_tombstones,
        pruned_intents = pruned.container_intents,
        "cleanup pass done"
    );
    Ok(report)
}

fn chrono_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

/// One pass (`every = None`; a failed pass is an error) or a loop until
/// `shutdown` (a failed pass is logged and retried at the next tick); then
/// delivers the outbox.
pub async fn run(
    config: CleanupCronConfig,
    infra: Infra,
    every: Option<Duration>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let operations =
        shared::bootstrap::operations(&infra, &config.common, &config.lifecycle, &config.state)?;
    let work = async {
        loop {
            match (pass(&operations, &infra, &config).await, every) {
                (Ok(_), None) => return Ok(()),
                (Err(e), None) => return Err(e),
                (Ok(_), Some(_)) => {}
                (Err(e), Some(_)) => {
                    tracing::error!(error = %e, "cleanup pass failed; retrying at the next interval")
                }
            }
            let Some(every) = every else { return Ok(()) };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(every) => {}
            }
        }
    };
    infra.outbox.with_relay(&infra.redis, work).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn the_command_line_is_one_pass_or_a_positive_interval() {
        assert_eq!(parse_args(&args(&[])).unwrap(), Schedule::Once);
        assert_eq!(
            parse_args(&args(&["--every"])).unwrap(),
            Schedule::Every(None)
        );
        assert_eq!(
            parse_args(&args(&["--every", "30m"])).unwrap(),
            Schedule::Every(Some(Duration::from_secs(1800)))
        );
        assert_eq!(
            parse_args(&args(&["--every=2h"])).unwrap(),
            Schedule::Every(Some(Duration::from_secs(7200)))
        );
        assert_eq!(parse_args(&args(&["--help"])).unwrap(), Schedule::Help);
        for bad in [
            &["--every", "0s"][..],
            &["--every", "soon"],
            &["--evry"],
            &["--every", "1m", "x"],
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
