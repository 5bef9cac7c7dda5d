//! `stop-job`: consumes `runtime:stop_jobs` exactly as `start-job` consumes
//! start jobs (consumer group, reclaim, dead letter, one result per entry on
//! `runtime:job_results`, graceful shutdown), and stops the runtime.

use std::collections::HashMap;

use async_trait::async_trait;
use shared::bootstrap::Infra;
use shared::config::{ConsumerConfig, LifecycleConfig, StateConfig};
use shared::domain::{GameId, OpSource, StopJob};
use shared::operations::{OperationRequest, Operations};
use shared::stream_consumer::{ConsumerSettings, JobDisposition, JobHandler};
use tokio_util::sync::CancellationToken;

pub struct StopJobHandler {
    operations: Operations,
}

#[async_trait]
impl JobHandler for StopJobHandler {
    fn game_id(&self, fields: &HashMap<String, String>) -> Option<GameId> {
        fields.get("game_id").and_then(|g| GameId::parse(g).ok())
    }

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
        JobDisposition::Done(outcome.job_result(&job.game_id))
    }
}

shared::job_config! {
    /// What stop-job reads: the common sections, the lifecycle and state
    /// directories, and its consumer group.
    pub struct StopJobConfig {
        lifecycle: LifecycleConfig = lifecycle,
        state: StateConfig = state,
        consumer: ConsumerConfig = stop_jobs (ConsumerConfig::stop_jobs),
    }
}

pub fn consumer_settings(config: &StopJobConfig) -> ConsumerSettings {
    ConsumerSettings::new(
        &config.common.streams.stop_jobs,
        &config.consumer,
        &config.common.process,
    )
}

/// Consumes stop jobs until `shutdown`; the outbox relay runs alongside and
/// gets a last delivery attempt before returning.
pub async fn run(
    config: StopJobConfig,
    infra: Infra,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let operations =
        shared::bootstrap::operations(&infra, &config.common, &config.lifecycle, &config.state)?;
    let handler = StopJobHandler { operations };
    let leases = handler.operations.leases().clone();
    let settings = consumer_settings(&config);
    shared::stream_consumer::consume(&infra, leases, handler, settings, shutdown).await
}
