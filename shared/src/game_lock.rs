//! A game's lock: its lease in Redis plus a fencing token in PostgreSQL.
//!
//! The lease keeps two holders from *working* on a game at once, but Redis
//! can lose it (a restart without persistence, a failover, an expiry during
//! a long stall) while its holder works on. The token makes that safe where
//! it matters: the holder's commits on the game go through
//! [`UnitOfWork::fence`](crate::adapters::postgres::UnitOfWork::fence), and
//! a commit whose token a later holder superseded fails (`conflict`), in the
//! same transaction as the write. A token kept in Redis would reset in
//! exactly the case it must cover.
//!
//! Every holder of a game lease that writes the game's record takes its lock
//! here: the lifecycle operations and inspect-cron's reconciling actions.

use crate::adapters::postgres::{Database, Fence, StoreError};
use crate::adapters::{Lease, LeaseStore, RedisError};
use crate::domain::GameId;

#[derive(Clone)]
pub struct GameLocks {
    leases: LeaseStore,
    db: Database,
}

/// A held lease and the token taken under it.
pub struct GameLock {
    lease: Lease,
    fence: Fence,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("take game lease: {0}")]
    Lease(#[from] RedisError),
    #[error("take fencing token: {0}")]
    Fence(#[from] StoreError),
}

impl GameLocks {
    pub fn new(leases: LeaseStore, db: Database) -> Self {
        Self { leases, db }
    }

    pub fn leases(&self) -> &LeaseStore {
        &self.leases
    }

    /// `Ok(None)` when another holder has the game's lease.
    pub async fn try_lock(&self, game_id: &GameId) -> Result<Option<GameLock>, LockError> {
        let Some(lease) = self.leases.try_acquire(game_id).await? else {
            return Ok(None);
        };
        match self.db.take_fence(game_id).await {
            Ok(fence) => Ok(Some(GameLock { lease, fence })),
            Err(e) => {
                lease.release().await;
                Err(e.into())
            }
        }
    }
}

impl GameLock {
    /// What this holder's commits on the game carry.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The lease is known lost: stop early. (Not knowing it lost proves
    /// nothing; the fence decides at commit.)
    pub fn is_lost(&self) -> bool {
        self.lease.is_lost()
    }

    pub async fn release(self) {
        self.lease.release().await;
    }
}
