//! `stop`: records a stop *intent* (so the health sources do not report the
//! die as a failure), stops gracefully (`RTMANAGER_CONTAINER_STOP_TIMEOUT_SECONDS`,
//! then kill), `running -> stopped`; the container is kept. A stop for a game
//! with no record leaves a tombstone with its `requested_at_ms`; a start
//! requested earlier is then a `conflict` (the jobs run in separate processes
//! and can be processed out of order). Stopped or removed: `replay_no_op`.

use chrono::Utc;

use super::common::{engine_failure, store_failure, Done, Failure};
use super::{OperationOutcome, OperationRequest, Operations};
use crate::adapters::IntentKind;
use crate::domain::{ErrorCode, OpKind, RuntimeStatus, StopReason};

impl Operations {
    pub async fn stop(
        &self,
        req: &OperationRequest,
        reason: StopReason,
        requested_at_ms: Option<i64>,
    ) -> OperationOutcome {
        self.locked(req, OpKind::Stop, "", async |_, _| {
            self.stop_steps(req, reason, requested_at_ms).await
        })
        .await
    }

    /// The stop itself, under a lease the caller holds.
    pub(super) async fn stop_steps(
        &self,
        req: &OperationRequest,
        reason: StopReason,
        requested_at_ms: Option<i64>,
    ) -> Result<Done, Failure> {
        let Some(record) = self.load_record(&req.game_id).await? else {
            let at = requested_at_ms.unwrap_or_else(|| Utc::now().timestamp_millis());
            let tombstone = async {
                let mut tx = self.db.begin().await?;
                tx.put_stop_tombstone(&req.game_id, at, reason.as_str())
                    .await?;
                tx.commit().await
            };
            tombstone.await.map_err(store_failure("stop tombstone"))?;
            return Ok(Done::replay(None));
        };
        if record.status != RuntimeStatus::Running {
            return Ok(Done::replay(Some(record)));
        }
        let container = record.current_container_id.clone().unwrap_or_default();
        let image = record.current_image_ref.clone().unwrap_or_default();
        self.record_intent(IntentKind::Stop, &container).await?;
        self.engine
            .stop(&container, self.settings.stop_timeout)
            .await
            .map_err(engine_failure(ErrorCode::Internal, "stop container"))?;
        let marked = async {
            let mut tx = self.db.begin().await?;
            let marked = tx
                .mark_stopped(&req.game_id, &container, Utc::now())
                .await?;
            tx.commit().await?;
            Ok(marked)
        };
        if !marked.await.map_err(store_failure("mark stopped"))? {
            // The record moved on (an observed exit got there first): stopped anyway.
            tracing::info!(game_id = %req.game_id, "record already left running during the stop");
        }
        let record = self.load_record(&req.game_id).await?;
        Ok(Done {
            image_ref: image,
            container_id: container,
            ..Done::applied(record, None)
        })
    }
}
