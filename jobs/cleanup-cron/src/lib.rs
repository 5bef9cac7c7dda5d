//! `cleanup-cron`: removes the containers of runtimes stopped for longer than
//! `RTMANAGER_CONTAINER_RETENTION_DAYS` (op source `auto_ttl`). One pass per
//! run, or `--every [duration]` (default `RTMANAGER_CLEANUP_INTERVAL`).
//! `replay_no_op` and `conflict` (a game started again meanwhile) are
//! absorbed; one failing game does not stop the pass. Then the pass prunes
//! the history tables by the retention section (`RTMANAGER_*_RETENTION`):
//! old operation-log rows (each game's latest kept), `removed` records with
//! their snapshots and observations, stop tombstones; in batches of
//! [`PRUNE_BATCH`] rows per statement.
//!
//! Then engine images left behind by patches ([`remove_unused_images`]): an
//! image a managed game used that no container (of any owner, running or
//! not) is made from and no record names as current is noted as unused in
//! `unused_engine_images`; once it has stayed so for
//! `RTMANAGER_IMAGE_RETENTION` it is removed (never forced), with a log line
//! and `rtmanager_cleanup_images_removed_total`.
//!
//! Every pass, one-shot or not, is recorded in `cron_passes` (start, end,
//! outcome, counts), which the gateway's `/metrics` reads back, so an
//! overdue or failing pass can alert. With `--every` the process also
//! serves `rtmanager_cleanup_*` ([`CleanupMetrics`]), and `/healthz` watches
//! the pass loop: it ticks after each game, and while it waits.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use shared::adapters::postgres::PruneCounts;
use shared::bootstrap::Infra;
use shared::config::{CleanupConfig, LifecycleConfig, RetentionConfig, StateConfig};
use shared::domain::{CronJob, CronPass, ErrorCode, OpSource, Outcome};
use shared::liveness::Heartbeat;
use shared::operations::{OperationRequest, Operations};
use shared::ports::EngineError;
use shared::telemetry::MetricGroup;
use tokio_util::sync::CancellationToken;

shared::job_config! {
    /// What cleanup-cron reads: the common sections, the lifecycle and state
    /// directories, its own schedule and container retention, and the
    /// tables' retention.
    pub struct CleanupCronConfig {
        job = "cleanup-cron";
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
    /// Engine images removed, by reference.
    pub images_removed: Vec<String>,
    /// Images whose removal failed, with why (retried next pass).
    pub images_failed: Vec<(String, String)>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PassLabels {
    /// `success` or `failure`.
    pub outcome: String,
}

/// cleanup-cron's own metrics.
#[derive(Clone)]
pub struct CleanupMetrics {
    pub passes: Family<PassLabels, Counter>,
    /// Containers removed (their records `removed`).
    pub removed: Counter,
    /// Games whose cleanup failed (each logged; retried next pass).
    pub failed: Counter,
    /// Unused engine images removed.
    pub images_removed: Counter,
}

impl MetricGroup for CleanupMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            passes: Family::default(),
            removed: Counter::default(),
            failed: Counter::default(),
            images_removed: Counter::default(),
        };
        registry.register(
            "cleanup_passes",
            "Cleanup passes, by outcome",
            m.passes.clone(),
        );
        registry.register(
            "cleanup_containers_removed",
            "Containers of expired runtimes removed",
            m.removed.clone(),
        );
        registry.register(
            "cleanup_containers_failed",
            "Expired runtimes whose cleanup failed",
            m.failed.clone(),
        );
        registry.register(
            "cleanup_images_removed",
            "Engine images of managed games removed after RTMANAGER_IMAGE_RETENTION unused",
            m.images_removed.clone(),
        );
        m
    }
}

impl CleanupMetrics {
    fn pass(&self, outcome: &anyhow::Result<PassReport>) {
        let label = if outcome.is_ok() {
            "success"
        } else {
            "failure"
        };
        self.passes
            .get_or_create(&PassLabels {
                outcome: label.to_owned(),
            })
            .inc();
        if let Ok(report) = outcome {
            self.removed.inc_by(report.cleaned.len() as u64);
            self.failed.inc_by(report.failed.len() as u64);
            self.images_removed
                .inc_by(report.images_removed.len() as u64);
        }
    }
}

impl PassReport {
    /// The counts `cron_passes` keeps.
    pub fn counts(&self) -> BTreeMap<String, i64> {
        [
            ("removed", self.cleaned.len() as u64),
            ("absorbed", self.absorbed.len() as u64),
            ("failed", self.failed.len() as u64),
            ("images_removed", self.images_removed.len() as u64),
            ("images_failed", self.images_failed.len() as u64),
            ("pruned_operations", self.pruned.operation_log),
            ("pruned_removed_records", self.pruned.removed_records),
            ("pruned_snapshots", self.pruned.health_snapshots),
            ("pruned_observations", self.pruned.inspect_observations),
            ("pruned_tombstones", self.pruned.stop_tombstones),
            ("pruned_intents", self.pruned.container_intents),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v as i64))
        .collect()
    }
}

pub const USAGE: &str = "usage: cleanup-cron [--every [DURATION]]\n\n\
One cleanup pass, then exit 0 (for cron or a Kubernetes CronJob).\n\
--every [DURATION]  loop; DURATION defaults to RTMANAGER_CLEANUP_INTERVAL (1h), and\n\
                    serve /metrics, /healthz and /readyz on RTMANAGER_METRICS_ADDR\n\
healthcheck         GET this process's own /healthz (a running --every loop); exit 0 if it answers 2xx";

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
    watched_pass(operations, infra, config, &Heartbeat::detached()).await
}

/// [`pass`], ticking `heartbeat` after each game and while the pruning and
/// the operations' retries (PostgreSQL away) wait.
async fn watched_pass(
    operations: &Operations,
    infra: &Infra,
    config: &CleanupCronConfig,
    heartbeat: &Heartbeat,
) -> anyhow::Result<PassReport> {
    heartbeat
        .scope(pass_ticking(operations, infra, config, heartbeat))
        .await
}

async fn pass_ticking(
    operations: &Operations,
    infra: &Infra,
    config: &CleanupCronConfig,
    heartbeat: &Heartbeat,
) -> anyhow::Result<PassReport> {
    let pass_id = format!("cleanup-{}", chrono_ms());
    let mut report = PassReport::default();
    // A read that waits for the pool (PostgreSQL away) is bounded by its
    // acquire timeout: waiting, not stuck.
    let expired = heartbeat
        .idle(infra.db.expired_stopped(config.cleanup.retention))
        .await?;
    for game_id in expired {
        let request = OperationRequest {
            game_id: game_id.clone(),
            op_source: OpSource::AutoTtl,
            source_ref: pass_id.clone(),
        };
        let outcome = operations.cleanup(&request).await;
        heartbeat.tick();
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
    heartbeat
        .idle(remove_unused_images(infra, config, &mut report))
        .await
        .context("remove unused engine images")?;
    // Each statement is bounded by its batch; a large backlog takes many of
    // them, which is work going on, not a stall.
    let pruned = match heartbeat
        .idle(infra.db.prune_history(&config.retention, PRUNE_BATCH))
        .await
    {
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
        images_removed = report.images_removed.len(),
        images_failed = report.images_failed.len(),
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

/// Notes the images of managed games that nothing uses now, and removes
/// those unused for longer than `RTMANAGER_IMAGE_RETENTION`. "Unused since"
/// is when a pass first saw the image unused, so an image goes between one
/// retention and one retention plus one pass interval after its last
/// container. An image used again is forgotten, and its clock starts over.
/// A failing removal is reported and tried again next pass; PostgreSQL or
/// Docker away fails the pass.
pub async fn remove_unused_images(
    infra: &Infra,
    config: &CleanupCronConfig,
    report: &mut PassReport,
) -> anyhow::Result<()> {
    let retention = chrono::Duration::from_std(config.cleanup.image_retention)
        .context("RTMANAGER_IMAGE_RETENTION")?;
    let now = chrono::Utc::now();
    for image in infra.db.engine_images().await? {
        if image.current {
            // A record still names it: a restart or a re-patch needs it.
            if image.unused_since.is_some() {
                infra.db.forget_unused_image(&image.image_ref).await?;
            }
            continue;
        }
        let id = match infra.engine.inspect_image(&image.image_ref).await {
            Ok(info) => info.id,
            Err(EngineError::NotFound(_)) => {
                // Gone already (removed by hand, or by an earlier pass).
                if image.unused_since.is_some() {
                    infra.db.forget_unused_image(&image.image_ref).await?;
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let users = infra.engine.containers_of_image(&id).await?;
        match (users.is_empty(), image.unused_since) {
            (false, None) => {}
            (false, Some(_)) => infra.db.forget_unused_image(&image.image_ref).await?,
            (true, None) => infra.db.mark_image_unused(&image.image_ref).await?,
            (true, Some(since)) if now - since < retention => {}
            (true, Some(since)) => match infra.engine.remove_image(&image.image_ref).await {
                Ok(()) | Err(EngineError::NotFound(_)) => {
                    infra.db.forget_unused_image(&image.image_ref).await?;
                    tracing::info!(
                        image = %image.image_ref,
                        image_id = %id,
                        unused_since = %since.to_rfc3339(),
                        "engine image removed: unused longer than RTMANAGER_IMAGE_RETENTION"
                    );
                    report.images_removed.push(image.image_ref);
                }
                Err(e) => {
                    tracing::warn!(image = %image.image_ref, error = %e, "removing an unused engine image failed; retrying next pass");
                    report.images_failed.push((image.image_ref, e.to_string()));
                }
            },
        }
    }
    Ok(())
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
    let metrics: CleanupMetrics = infra.metrics.group();
    // Between two ticks: one game's cleanup (a lease, an intent, a removal,
    // a commit).
    let heartbeat = match every {
        Some(_) => infra.liveness.watch("cleanup passes", shared::retry::CAP),
        None => Heartbeat::detached(),
    };
    let work = async {
        loop {
            heartbeat.beat().await;
            let started = chrono::Utc::now();
            let outcome = watched_pass(&operations, &infra, &config, &heartbeat).await;
            metrics.pass(&outcome);
            let counts = match &outcome {
                Ok(report) => Ok(report.counts()),
                Err(e) => Err(format!("{e:#}")),
            };
            let record = CronPass::finished(CronJob::CleanupCron, started, counts);
            // Bounded by the pool's acquire timeout like the pass's reads:
            // with PostgreSQL away, the failed pass's wait and this one's
            // together reached the stall limit (10 s) outside any idle.
            if let Err(e) = heartbeat.idle(infra.db.record_cron_pass(&record)).await {
                tracing::warn!(error = %e, "recording the cleanup pass in cron_passes failed");
            }
            match (outcome, every) {
                (Ok(_), None) => return Ok(()),
                (Err(e), None) => return Err(e),
                (Ok(_), Some(_)) => {}
                (Err(e), Some(_)) => {
                    tracing::error!(error = %e, "cleanup pass failed; retrying at the next interval")
                }
            }
            let Some(every) = every else { return Ok(()) };
            let stopped = heartbeat
                .idle(async {
                    tokio::select! {
                        _ = shutdown.cancelled() => true,
                        _ = tokio::time::sleep(every) => false,
                    }
                })
                .await;
            if stopped {
                return Ok(());
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
