//! `container_intents`: the stops and removals rtmanager makes itself,
//! recorded before it acts (see the migration for why in PostgreSQL).

use super::{Database, StoreError, UnitOfWork};
use crate::domain::{GameId, IntentKind};

const IS_RECORDED: &str =
    "SELECT EXISTS (SELECT 1 FROM container_intents WHERE container_id = $1 AND kind = $2)";

/// Reads and records intents; the health sources ask it before reporting.
#[derive(Clone)]
pub struct IntentStore {
    db: Database,
}

impl IntentStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Whether rtmanager recorded that it stops (or removes) this container.
    pub async fn is_recorded(
        &self,
        kind: IntentKind,
        container_id: &str,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(IS_RECORDED)
            .bind(container_id)
            .bind(kind.as_str())
            .fetch_one(self.db.pool())
            .await?)
    }
}

impl UnitOfWork {
    /// [`IntentStore::is_recorded`], inside this unit of work.
    pub async fn intent_recorded(
        &mut self,
        kind: IntentKind,
        container_id: &str,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(IS_RECORDED)
            .bind(container_id)
            .bind(kind.as_str())
            .fetch_one(self.conn())
            .await?)
    }

    /// Forgets the intent: the stop or removal it announced failed, and the
    /// container lives on, to be reported as any other.
    pub async fn forget_intent(
        &mut self,
        kind: IntentKind,
        container_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM container_intents WHERE container_id = $1 AND kind = $2")
            .bind(container_id)
            .bind(kind.as_str())
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// Records the intent (again: a retried stop keeps the first time).
    pub async fn record_intent(
        &mut self,
        kind: IntentKind,
        game_id: &GameId,
        container_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO container_intents (container_id, kind, game_id) VALUES ($1, $2, $3) \
             ON CONFLICT (container_id, kind) DO NOTHING",
        )
        .bind(container_id)
        .bind(kind.as_str())
        .bind(game_id.as_str())
        .execute(self.conn())
        .await?;
        Ok(())
    }
}
