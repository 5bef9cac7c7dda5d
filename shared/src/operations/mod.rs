//! The lifecycle operations (seed 001), shared by the job consumers, the
//! gateway and cleanup-cron: [`Operations::start`], [`Operations::stop`],
//! [`Operations::cleanup`], [`Operations::restart`] and [`Operations::patch`].
//!
//! Every operation runs under the game's lease, ends in exactly one
//! operation-log row per outcome with a stable code, replays idempotently
//! (`replay_no_op`) and never leaves a half-made container.
//!
//! - `common`: the lease prologue, the failure mapping and the one place an
//!   outcome is recorded (operation log, admin intent, metric, log line).
//! - `start`: pull, limits, state directory, create and start, commit.
//! - `stop`: stop intent, graceful stop, `running -> stopped`; tombstones.
//! - `cleanup`: removal of a stopped runtime's container.
//! - `recreate`: restart and patch (inner stop and inner start under one
//!   outer lease; patch rolls back to the old image).

use std::sync::Arc;
use std::time::Duration;

use crate::adapters::lobby::LobbyClient;
use crate::adapters::postgres::Database;
use crate::adapters::LeaseStore;
use crate::domain::{ErrorCode, GameId, JobResult, OpSource, Outcome, RuntimeRecord};
use crate::game_lock::GameLocks;
use crate::outbox::Outbox;
use crate::ports::ContainerEngine;
use crate::telemetry::Metrics;

mod cleanup;
mod common;
pub mod metrics;
mod recreate;
mod start;
mod stop;

pub use recreate::check_patch;
pub use start::StartSettings;

/// The deterministic result of one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationOutcome {
    pub outcome: Outcome,
    /// `replay_no_op` on an idempotent success; the failure code otherwise.
    pub error_code: Option<ErrorCode>,
    pub error_message: String,
    /// The record installed or found (successes only).
    pub record: Option<RuntimeRecord>,
    /// A failure because PostgreSQL could not be reached for a step: the
    /// outcome could not be recorded either, so a stream job is not
    /// answered but run again (every operation is safe to repeat), and its
    /// operation-log row is written by the run that is answered.
    pub database_away: bool,
}

impl OperationOutcome {
    /// The job-result entry answering the job that asked for this.
    pub fn job_result(&self, game_id: &GameId) -> JobResult {
        let record = self.record.as_ref();
        JobResult {
            game_id: game_id.to_string(),
            outcome: self.outcome,
            container_id: record
                .and_then(|r| r.current_container_id.clone())
                .unwrap_or_default(),
            engine_endpoint: record
                .map(|r| r.engine_endpoint.clone())
                .unwrap_or_default(),
            error_code: self.error_code,
            error_message: self.error_message.clone(),
        }
    }
}

/// One start request; the game id is already validated by the caller's edge.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub game_id: GameId,
    pub image_ref: String,
    pub op_source: OpSource,
    /// Stream entry id, REST request id, or a correlation id.
    pub source_ref: String,
}

/// Who asks for an operation on which game.
#[derive(Debug, Clone)]
pub struct OperationRequest {
    pub game_id: GameId,
    pub op_source: OpSource,
    /// Stream entry id or REST request id; restart and patch use it as the
    /// correlation id of their three rows.
    pub source_ref: String,
}

/// Settings of the operations, resolved from the configuration once.
#[derive(Debug, Clone)]
pub struct OperationSettings {
    pub start: StartSettings,
    /// Graceful stop before the kill (`RTMANAGER_CONTAINER_STOP_TIMEOUT_SECONDS`).
    pub stop_timeout: Duration,
    /// A patched container that exits within this grace is rolled back.
    pub patch_grace: Duration,
}

/// The adapters the operations work through.
#[derive(Clone)]
pub struct OperationDeps {
    pub engine: Arc<dyn ContainerEngine>,
    pub db: Database,
    pub outbox: Outbox,
    pub leases: LeaseStore,
    /// Best-effort diagnostic fetch of the game at Lobby, when configured.
    pub lobby: Option<LobbyClient>,
    pub metrics: Metrics,
}

/// The lifecycle operations over their adapters.
#[derive(Clone)]
pub struct Operations {
    engine: Arc<dyn ContainerEngine>,
    db: Database,
    outbox: Outbox,
    locks: GameLocks,
    lobby: Option<LobbyClient>,
    settings: OperationSettings,
    metrics: Metrics,
    timings: metrics::OperationMetrics,
}

impl Operations {
    pub fn new(deps: OperationDeps, settings: OperationSettings) -> Self {
        Self {
            engine: deps.engine,
            locks: GameLocks::new(deps.leases, deps.db.clone()),
            db: deps.db,
            outbox: deps.outbox,
            lobby: deps.lobby,
            settings,
            timings: deps.metrics.group(),
            metrics: deps.metrics,
        }
    }

    /// The leases the operations take (consumers check them when reclaiming).
    pub fn leases(&self) -> &LeaseStore {
        self.locks.leases()
    }
}
