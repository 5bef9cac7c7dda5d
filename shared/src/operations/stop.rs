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
use crate::game_lock::GameLock;

impl Operations {
    pub async fn stop(
        &self,
        req: &OperationRequest,
        reason: StopReason,
        requested_at_ms: Option<i64>,
    ) -> OperationOutcome {
        self.locked(req, OpKind::Stop, "", async |lock, _| {
            self.stop_steps(req, reason, requested_at_ms, lock).await
        })
        .await
    }

    /// The stop itself, under a lock the caller holds; its commits are fenced.
    pub(super) async fn stop_steps(
        &self,
        req: &OperationRequest,
        reason: StopReason,
        requested_at_ms: Option<i64>,
        lock: &GameLock,
    ) -> Result<Done, Failure> {
        let Some(record) = self.load_record(&req.game_id).await? else {
            let at = requested_at_ms.unwrap_or_else(|| Utc::now().timestamp_millis());
            let tombstone = async {
                let mut tx = self.db.begin().await?;
                tx.fence(lock.fence());
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
        self.record_intent(IntentKind::Stop, &req.game_id, &container, lock)
            .await?;
        if let Err(e) = self
            .engine
            .stop(&container, self.settings.stop_timeout)
            .await
        {
            self.forget_intent(IntentKind::Stop, &req.game_id, &container)
                .await;
            return Err(engine_failure(ErrorCode::Internal, "stop container")(e));
        }
        fail::fail_point!("stop-after-container-stop");
        let marked = async {
            let mut tx = self.db.begin().await?;
            tx.fence(lock.fence());
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
