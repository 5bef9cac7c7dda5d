//! `stop-job`: consumes `runtime:stop_jobs` exactly as `start-job` consumes
//! start jobs (consumer group, reclaim, dead letter, one result per entry on
//! `runtime:job_results`, graceful shutdown), and stops the runtime.

use std::collections::HashMap;

use async_trait::async_trait;
use shared::bootstrap::Infra;
use shared::config::{ConsumerConfig, LifecycleConfig, StateConfig};
use shared::domain::{OpSource, StopJob};
use shared::operations::{OperationRequest, Operations};
use shared::stream_consumer::{consume_with_operations, JobDisposition, JobHandler};
use tokio_util::sync::CancellationToken;

pub struct StopJobHandler {
    operations: Operations,
}

#[async_trait]
impl JobHandler for StopJobHandler {
    async fn handle(&self, entry_id: &str, fields: &HashMap<String, String>) -> JobDisposition {
        let job = match StopJob::decode(fields) {
            Ok(job) => job,
            Err(malformed) => return malformed.into(),
        };
        let request = OperationRequest {
            game_id: job.game_id.clone(),
            op_source: OpSource::LobbyStream,
            source_ref: entry_id.to_owned(),
        };
        let outcome = self
            .operations
            .stop(&request, job.reason, job.requested_at_ms)
            .await;
        JobDisposition::of_outcome(&outcome, &job.game_id)
    }
}

shared::job_config! {
    /// What stop-job reads: the common sections, the lifecycle and state
    /// directories, and its consumer group.
    pub struct StopJobConfig {
        job = "stop-job";
        lifecycle: LifecycleConfig = lifecycle,
        state: StateConfig = state,
        consumer: ConsumerConfig = stop_jobs (ConsumerConfig::stop_jobs),
    }
}

/// Consumes stop jobs until `shutdown`; the outbox relay runs alongside and
/// gets a last delivery attempt before returning.
pub async fn run(
    config: StopJobConfig,
    infra: Infra,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let StopJobConfig {
        common,
        lifecycle,
        state,
        consumer,
    } = &config;
    let handler = |operations| StopJobHandler { operations };
    consume_with_operations(
        &infra, common, lifecycle, state, consumer, handler, shutdown,
    )
    .await
}
