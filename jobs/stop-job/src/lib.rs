//! `stop-job`: consumes `runtime:stop_jobs` exactly as `start-job` consumes
//! start jobs (consumer group, reclaim, dead letter, one result per entry on
//! `runtime:job_results`, graceful shutdown), and stops the runtime.

use std::collections::HashMap;

use async_trait::async_trait;
use shared::bootstrap::Infra;
use shared::config::Config;
use shared::domain::{GameId, OpSource, StopJob};
use shared::lifecycle::{LifecycleService, OperationRequest};
use shared::stream_consumer::{ConsumerSettings, JobDisposition, JobHandler, StreamConsumer};
use tokio_util::sync::CancellationToken;

pub struct StopJobHandler {
    lifecycle: LifecycleService,
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
            .lifecycle
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
    let lifecycle = shared::bootstrap::lifecycle_service(&config, &infra)?;
    let leases = lifecycle.start_service().leases().clone();
    let consumer = StreamConsumer::new(
        infra.redis.clone(),
        infra.publisher.clone(),
        leases,
        StopJobHandler { lifecycle },
        consumer_settings(&config),
        infra.metrics.clone(),
    );
    let consumed = infra
        .publisher
        .with_relay(infra.redis.clone(), consumer.run(shutdown))
        .await;
    consumed
}
