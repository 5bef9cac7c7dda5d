//! `stop`: commits a stop *intent* (so no health source reports the die as
//! a failure), stops gracefully (`RTMANAGER_CONTAINER_STOP_TIMEOUT_SECONDS`,
//! then kill), `running -> stopped`; the container is kept. Start and stop
//! jobs run in separate processes and can be processed out of order, so
//! both directions are checked by `requested_at_ms`:
//! - a stop leaves a tombstone with its time when the game has no record or
//!   is not running (`replay_no_op`); a start requested earlier is then a
//!   `conflict`;
//! - a stop requested before the running start was requested is a
//!   `conflict`: it must not stop the newer start.

use chrono::Utc;

use super::common::{engine_failure, fail, store_failure, Done, Failure};
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
            self.put_tombstone(req, at, reason, lock).await?;
            return Ok(Done::replay(None));
        };
        if record.status != RuntimeStatus::Running {
            // Also a tombstone: a start requested before this stop but
            // processed after it must not start the game again.
            if let Some(at) = requested_at_ms {
                self.put_tombstone(req, at, reason, lock).await?;
            }
            return Ok(Done::replay(Some(record)));
        }
        if let Some(stop_at) = requested_at_ms {
            let start_at = self
                .db
                .start_request(&req.game_id)
                .await
                .map_err(store_failure("read start request"))?;
            if let Some(start_at) = start_at.filter(|start_at| *start_at > stop_at) {
                return Err(fail(
                    ErrorCode::Conflict,
                    format!("a start requested at {start_at} supersedes this stop requested at {stop_at}"),
                ));
            }
        }
        let container = record.current_container_id.clone().unwrap_or_default();
        let image = record.current_image_ref.clone().unwrap_or_default();
        self.record_intent(IntentKind::Stop, &req.game_id, &container, lock)
            .await?;
        crate::failpoints::crash_point("stop-after-intent");
        if let Err(e) = self
            .engine
            .stop(&container, self.settings.stop_timeout)
            .await
        {
            self.forget_intent(IntentKind::Stop, &req.game_id, &container, &e, lock)
                .await;
            return Err(engine_failure(ErrorCode::Internal, "stop container")(e));
        }
        crate::failpoints::crash_point("stop-after-container-stop");
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
        crate::failpoints::crash_point("stop-after-mark");
        let record = self.load_record(&req.game_id).await?;
        Ok(Done {
            image_ref: image,
            container_id: container,
            ..Done::applied(record, None)
        })
    }

    /// Leaves the game's stop tombstone (moved forward only), fenced.
    async fn put_tombstone(
        &self,
        req: &OperationRequest,
        requested_at_ms: i64,
        reason: StopReason,
        lock: &GameLock,
    ) -> Result<(), Failure> {
        let tombstone = async {
            let mut tx = self.db.begin().await?;
            tx.fence(lock.fence());
            tx.put_stop_tombstone(&req.game_id, requested_at_ms, reason.as_str())
                .await?;
            tx.commit().await
        };
        tombstone.await.map_err(store_failure("stop tombstone"))
    }
}
