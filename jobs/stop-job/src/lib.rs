//! `stop-job`: consumes `runtime:stop_jobs` exactly as `start-job` consumes
//! start jobs (consumer group, reclaim, dead letter, one result per entry on
//! `runtime:job_results`, graceful shutdown), and stops the runtime.

use std::collections::HashMap;

use async_trait::async_trait;
use shared::bootstrap::Infra;
use shared::config::Config;
use shared::domain::{GameId, JobResult, OpSource, StopJob};
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
            Err(malformed) => {
                return JobDisposition::Malformed {
                    result: malformed
                        .game_id
                        .as_deref()
                        .map(|g| JobResult::malformed(g, &malformed.reason)),
                    reason: malformed.reason,
                }
            }
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
    ConsumerSettings {
        stream: config.stop_jobs_stream.clone(),
        dead_letter_stream: format!("{}:dead", config.stop_jobs_stream),
        group: config.stop_jobs_group.clone(),
        group_start_id: config.stop_jobs_group_start_id.clone(),
        consumer: config.consumer_name(),
        concurrency: config.stop_jobs_concurrency,
        block: config.stream_block,
        reclaim_idle: config.job_reclaim_idle,
        shutdown_timeout: config.shutdown_timeout,
    }
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
