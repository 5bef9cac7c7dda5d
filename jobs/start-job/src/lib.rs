//! `start-job`: consumes `runtime:start_jobs` and runs the start operation for
//! each entry, publishing one result per entry on `runtime:job_results`.

use std::collections::HashMap;

use async_trait::async_trait;
use shared::bootstrap::Infra;
use shared::config::{ConsumerConfig, LifecycleConfig, StateConfig};
use shared::domain::{OpSource, StartJob};
use shared::operations::{Operations, StartRequest};
use shared::stream_consumer::{consume_with_operations, JobDisposition, JobHandler};
use tokio_util::sync::CancellationToken;

/// Turns start-job entries into start requests.
pub struct StartJobHandler {
    operations: Operations,
}

#[async_trait]
impl JobHandler for StartJobHandler {
    async fn handle(&self, entry_id: &str, fields: &HashMap<String, String>) -> JobDisposition {
        let job = match StartJob::decode(fields) {
            Ok(job) => job,
            Err(malformed) => return malformed.into(),
        };
        let request = StartRequest {
            game_id: job.game_id.clone(),
            image_ref: job.image_ref,
            op_source: OpSource::LobbyStream,
            source_ref: entry_id.to_owned(),
        };
        let outcome = self
            .operations
            .start_requested(&request, job.requested_at_ms)
            .await;
        JobDisposition::of_outcome(&outcome, &job.game_id)
    }
}

shared::job_config! {
    /// What start-job reads: the common sections, the lifecycle and state
    /// directories, and its consumer group.
    pub struct StartJobConfig {
        job = "start-job";
        lifecycle: LifecycleConfig = lifecycle,
        state: StateConfig = state,
        consumer: ConsumerConfig = start_jobs (ConsumerConfig::start_jobs),
    }
}

/// Consumes start jobs until `shutdown`; the outbox relay runs alongside and
/// gets a last delivery attempt before returning.
pub async fn run(
    config: StartJobConfig,
    infra: Infra,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let StartJobConfig {
        common,
        lifecycle,
        state,
        consumer,
    } = &config;
    let handler = |operations| StartJobHandler { operations };
    consume_with_operations(
        &infra, common, lifecycle, state, consumer, handler, shutdown,
    )
    .await
}
