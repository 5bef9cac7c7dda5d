//! `cleanup_container`: stopped runtimes only (`conflict` when running);
//! removal intent, container removed, `stopped -> removed`. The state
//! directory is never deleted.

use chrono::Utc;

use super::common::{engine_failure, fail, store_failure, Done, Failure};
use super::{OperationOutcome, OperationRequest, Operations};
use crate::adapters::IntentKind;
use crate::domain::{ErrorCode, OpKind, RuntimeStatus};
use crate::game_lock::GameLock;

impl Operations {
    pub async fn cleanup(&self, req: &OperationRequest) -> OperationOutcome {
        self.locked(req, OpKind::CleanupContainer, "", async |lock, _| {
            self.cleanup_steps(req, lock).await
        })
        .await
    }

    async fn cleanup_steps(
        &self,
        req: &OperationRequest,
        lock: &GameLock,
    ) -> Result<Done, Failure> {
        let record = self.load_record(&req.game_id).await?.ok_or_else(|| {
            fail(
                ErrorCode::NotFound,
                format!("no runtime record for game {}", req.game_id),
            )
        })?;
        match record.status {
            RuntimeStatus::Removed => return Ok(Done::replay(Some(record))),
            RuntimeStatus::Running => {
                return Err(fail(
                    ErrorCode::Conflict,
                    "the runtime is running; stop it before cleanup",
                ))
            }
            RuntimeStatus::Stopped => {}
        }
        let container = record.current_container_id.clone().unwrap_or_default();
        let image = record.current_image_ref.clone().unwrap_or_default();
        self.record_intent(IntentKind::Removal, &req.game_id, &container, lock)
            .await?;
        if let Err(e) = self.engine.remove(&container).await {
            self.forget_intent(IntentKind::Removal, &req.game_id, &container, &e, lock)
                .await;
            return Err(engine_failure(ErrorCode::Internal, "remove container")(e));
        }
        crate::failpoints::crash_point("cleanup-after-remove");
        let removed = async {
            let mut tx = self.db.begin().await?;
            tx.fence(lock.fence());
            tx.mark_removed(&req.game_id, &container, Utc::now())
                .await?;
            tx.commit().await
        };
        removed.await.map_err(store_failure("mark removed"))?;
        let record = self.load_record(&req.game_id).await?;
        Ok(Done {
            image_ref: image,
            container_id: container,
            ..Done::applied(record, None)
        })
    }
}
