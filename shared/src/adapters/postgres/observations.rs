//! `inspect_observations` (migrations/20261122000002_inspect_observations.sql):
//! what inspect-cron last published per container, so an unhealthy
//! observation is published once until it changes.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Database, StoreError, UnitOfWork};
use crate::domain::{ContainerState, GameId, Observation, ObservationMemory};

impl Database {
    /// Every container's memory, by container id.
    pub async fn observation_memory(
        &self,
    ) -> Result<HashMap<String, ObservationMemory>, StoreError> {
        let rows = sqlx::query(
            "SELECT container_id, restart_count, published_state, published_health, \
                 published_restart_count FROM inspect_observations",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let state: Option<String> = row.try_get("published_state")?;
                let published = match state {
                    Some(state) => Some(Observation {
                        state: ContainerState::parse(&state),
                        health: row.try_get("published_health")?,
                        restart_count: row.try_get("published_restart_count")?,
                    }),
                    None => None,
                };
                Ok((
                    row.try_get("container_id")?,
                    ObservationMemory {
                        restart_count: row.try_get("restart_count")?,
                        published,
                    },
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// A healthy observation: the next failure is news again.
    pub async fn forget_published(&self, container_id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE inspect_observations SET published_state = NULL, published_health = NULL, \
                 published_restart_count = NULL, observed_at = now() \
             WHERE container_id = $1 AND published_state IS NOT NULL",
        )
        .bind(container_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Drops the memory of containers not in `listed` (and not written since
    /// `pass_started`, so a concurrent pass's fresh rows survive).
    pub async fn prune_observations(
        &self,
        listed: &[&str],
        pass_started: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM inspect_observations \
             WHERE NOT (container_id = ANY($1)) AND observed_at < $2",
        )
        .bind(listed)
        .bind(pass_started)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl UnitOfWork {
    /// Compare-and-set of the published observation: `true` when it was
    /// written, i.e. when it differs from the stored one and the event must
    /// be staged.
    pub async fn store_published(
        &mut self,
        game_id: &GameId,
        container_id: &str,
        observation: &Observation,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO inspect_observations (container_id, game_id, restart_count, \
                 published_state, published_health, published_restart_count, observed_at) \
             VALUES ($1, $2, $3, $4, $5, $3, now()) \
             ON CONFLICT (container_id) DO UPDATE SET restart_count = EXCLUDED.restart_count, \
                 published_state = EXCLUDED.published_state, \
                 published_health = EXCLUDED.published_health, \
                 published_restart_count = EXCLUDED.published_restart_count, observed_at = now() \
             WHERE (inspect_observations.published_state, inspect_observations.published_health, \
                    inspect_observations.published_restart_count) \
                 IS DISTINCT FROM (EXCLUDED.published_state, EXCLUDED.published_health, \
                    EXCLUDED.published_restart_count)",
        )
        .bind(container_id)
        .bind(game_id.as_str())
        .bind(observation.restart_count)
        .bind(observation.state.as_str())
        .bind(&observation.health)
        .execute(self.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn forget_container(&mut self, container_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM inspect_observations WHERE container_id = $1")
            .bind(container_id)
            .execute(self.conn())
            .await?;
        Ok(())
    }
}
