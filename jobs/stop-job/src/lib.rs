//! `stop-job`: consumes `runtime:stop_jobs` exactly as `start-job` consumes
//! start jobs (consumer group, reclaim, dead letter, one result per entry on
//! `runtime:job_results`, graceful shutdown), and stops the runtime.

use std::collections::HashMap;

use async_trait::async_trait;
use shared::bootstrap::Infra;
use shared::config::Config;
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

pub fn consumer_settings(config: &Config) -> ConsumerSettings {
    ConsumerSettings::for_stream(
        config,
        &config.stop_jobs_stream,
        &config.stop_jobs_group,
        &config.stop_jobs_group_start_id,
        config.stop_jobs_concurrency,
    )
}

/// Consumes stop jobs until `shutdown`, with the outbox relay alongside.
pub async fn run(config: Config, infra: Infra, shutdown: CancellationToken) -> anyhow::Result<()> {
    let operations = shared::bootstrap::operations(&config, &infra)?;
    let settings = consumer_settings(&config);
    shared::stream_consumer::consume(
        &infra,
        operations.leases().clone(),
        StopJobHandler { operations },
        settings,
        shutdown,
    )
    .await
}
