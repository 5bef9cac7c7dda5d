//! `operation_log`: one row per operation outcome, never updated.

use super::{Database, StoreError, UnitOfWork};
use crate::domain::{ErrorCode, OperationEntry};

impl Database {
    /// Appends one operation-log row in a transaction of its own.
    pub async fn append_operation(&self, entry: &OperationEntry) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        tx.append_operation(entry).await?;
        tx.commit().await
    }
}

impl UnitOfWork {
    pub async fn append_operation(&mut self, entry: &OperationEntry) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO operation_log (game_id, op_kind, op_source, source_ref, image_ref, \
             container_id, outcome, error_code, error_message, started_at, finished_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(entry.game_id.as_str())
        .bind(entry.op_kind.as_str())
        .bind(entry.op_source.as_str())
        .bind(&entry.source_ref)
        .bind(&entry.image_ref)
        .bind(&entry.container_id)
        .bind(entry.outcome.as_str())
        .bind(entry.error_code.map(ErrorCode::as_str).unwrap_or(""))
        .bind(&entry.error_message)
        .bind(entry.started_at)
        .bind(entry.finished_at)
        .execute(self.conn())
        .await?;
        Ok(())
    }
}
