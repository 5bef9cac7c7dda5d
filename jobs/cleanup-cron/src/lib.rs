//! `cleanup-cron`: removes the containers of runtimes stopped for longer than
//! `RTMANAGER_CONTAINER_RETENTION_DAYS` (op source `auto_ttl`). One pass per
//! run, or `--every [duration]` (default `RTMANAGER_CLEANUP_INTERVAL`).
//! `replay_no_op` and `conflict` (a game started again meanwhile) are
//! absorbed; one failing game does not stop the pass.

use std::time::Duration;

use shared::bootstrap::Infra;
use shared::config::Config;
use shared::domain::{ErrorCode, OpSource, Outcome};
use shared::lifecycle::{LifecycleService, OperationRequest};
use tokio_util::sync::CancellationToken;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub cleaned: Vec<String>,
    pub absorbed: Vec<String>,
    pub failed: Vec<(String, String)>,
}

/// `--every [duration]`: `Some(interval)`; no flag: `None` (one pass).
pub fn parse_args(args: &[String], default_every: Duration) -> anyhow::Result<Option<Duration>> {
    match args {
        [] => Ok(None),
        [flag] if flag == "--every" => Ok(Some(default_every)),
        [flag, value] if flag == "--every" => Ok(Some(
            humantime::parse_duration(value)
                .map_err(|e| anyhow::anyhow!("--every {value:?}: {e}"))?,
        )),
        other => anyhow::bail!("usage: cleanup-cron [--every [DURATION]] (got {other:?})"),
    }
}

pub async fn pass(
    lifecycle: &LifecycleService,
    infra: &Infra,
    retention: Duration,
) -> anyhow::Result<PassReport> {
    let pass_id = format!("cleanup-{}", chrono_ms());
    let mut report = PassReport::default();
    for game_id in infra.db.expired_stopped(retention).await? {
        let request = OperationRequest {
            game_id: game_id.clone(),
            op_source: OpSource::AutoTtl,
            source_ref: pass_id.clone(),
        };
        let outcome = lifecycle.cleanup(&request).await;
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
    tracing::info!(
        cleaned = report.cleaned.len(),
        absorbed = report.absorbed.len(),
        failed = report.failed.len(),
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

/// One pass (`every = None`) or a loop until `shutdown`; then delivers the outbox.
pub async fn run(
    config: Config,
    infra: Infra,
    every: Option<Duration>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let lifecycle = shared::bootstrap::lifecycle_service(&config, &infra)?;
    let retention = Duration::from_secs(config.container_retention_days * 24 * 3600);
    loop {
        pass(&lifecycle, &infra, retention).await?;
        let Some(every) = every else { break };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
    let relay = infra.publisher.relay(infra.redis.clone());
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while matches!(relay.deliver_pending().await, Ok(n) if n > 0) {}
    })
    .await;
    Ok(())
}
