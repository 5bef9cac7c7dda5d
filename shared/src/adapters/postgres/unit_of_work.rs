//! [`UnitOfWork`]: one PostgreSQL transaction, in rtmanager's vocabulary.
//!
//! Services never hold a connection: they open a unit of work, call its verbs
//! (`upsert_running_record`, `mark_stopped`, `append_operation`, `stage`, ...,
//! defined beside their tables in the sibling modules) and [`UnitOfWork::commit`].
//! Dropping it uncommitted rolls everything back.
//!
//! `commit` is the one place every write passes: checks that must hold at
//! commit time (a fencing token, a per-game ordering key) belong there.

use std::sync::Arc;

use sqlx::{Postgres, Transaction};

use super::StoreError;
use crate::domain::{EventType, GameId};

/// Called after a successful commit with the health events it made durable
/// (the outbox wakes its relay and counts them).
pub type CommitHook = Arc<dyn Fn(&[EventType]) + Send + Sync>;

pub struct UnitOfWork {
    pub(super) tx: Transaction<'static, Postgres>,
    /// Health events staged so far (for the commit hook).
    pub(super) staged: Vec<EventType>,
    /// Outbox rows staged so far with an ordering key, in staging order: the
    /// commit gives them their place in their game's order.
    pub(super) ordered: Vec<(GameId, i64)>,
    /// Set by [`UnitOfWork::fence`]: the commit needs this token current.
    pub(super) fence: Option<super::Fence>,
    on_commit: Option<CommitHook>,
}

impl UnitOfWork {
    pub(super) fn new(tx: Transaction<'static, Postgres>) -> Self {
        Self {
            tx,
            staged: Vec::new(),
            ordered: Vec::new(),
            fence: None,
            on_commit: None,
        }
    }

    /// Runs `hook` once this unit of work has committed.
    pub fn on_commit(mut self, hook: CommitHook) -> Self {
        self.on_commit = Some(hook);
        self
    }

    pub async fn commit(mut self) -> Result<(), StoreError> {
        self.check_fence().await?;
        self.order_staged().await?;
        self.tx.commit().await?;
        if let Some(hook) = &self.on_commit {
            hook(&self.staged);
        }
        Ok(())
    }

    /// The transaction's connection, for the sibling query modules.
    pub(super) fn conn(&mut self) -> &mut sqlx::PgConnection {
        &mut self.tx
    }
}
