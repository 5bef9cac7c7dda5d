//! Fencing tokens: `game_fences` (see the migration for why they live here).

use super::{Database, StoreError, UnitOfWork};
use crate::domain::GameId;

/// The token a lease holder took for a game: its commits on the game count
/// only while no later holder has taken a newer one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub game_id: GameId,
    pub token: i64,
}

impl Database {
    /// The game's next token. Called just after the game's lease is taken,
    /// so tokens follow lease order; it waits for a commit that holds the
    /// row (a previous holder finishing), never the other way round.
    pub async fn take_fence(&self, game_id: &GameId) -> Result<Fence, StoreError> {
        let token = sqlx::query_scalar(
            "INSERT INTO game_fences (game_id, token) VALUES ($1, 1) \
             ON CONFLICT (game_id) DO UPDATE SET token = game_fences.token + 1 \
             RETURNING token",
        )
        .bind(game_id.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(Fence {
            game_id: game_id.clone(),
            token,
        })
    }
}

impl UnitOfWork {
    /// Makes the commit conditional on `fence` still being the game's latest
    /// token (checked at commit, under the row's lock).
    pub fn fence(&mut self, fence: &Fence) {
        self.fence = Some(fence.clone());
    }

    /// `StoreError::Fenced` when a later lease holder took a newer token.
    /// The row stays locked until this unit of work ends, so no newer token
    /// can be taken between the check and the commit.
    pub(super) async fn check_fence(&mut self) -> Result<(), StoreError> {
        let Some(fence) = self.fence.clone() else {
            return Ok(());
        };
        let latest: Option<i64> =
            sqlx::query_scalar("SELECT token FROM game_fences WHERE game_id = $1 FOR UPDATE")
                .bind(fence.game_id.as_str())
                .fetch_optional(self.conn())
                .await?;
        match latest {
            Some(latest) if latest == fence.token => Ok(()),
            latest => Err(StoreError::Fenced {
                game_id: fence.game_id.to_string(),
                token: fence.token,
                latest: latest.unwrap_or(0),
            }),
        }
    }
}
