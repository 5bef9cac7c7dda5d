//! The periodic inspect pass and the reconciler.
//!
//! One [`Inspector::pass`] lists every owner-labelled container
//! ([`ContainerEngine::list_managed`]) and the runtime records, then checks
//! each container that matters with at most `RTMANAGER_INSPECT_CONCURRENCY`
//! at a time:
//!
//! - **Inspect** (every pass), for the current container of each `running`
//!   record: `inspect_unhealthy {restart_count, state, health}` when Docker
//!   reports it not `running`, its HEALTHCHECK `unhealthy`, or its
//!   `RestartCount` grown; each observation once, until it changes.
//! - **Reconcile** (when the pass is asked to), three drifts, each an
//!   `operation_log` row with op source `auto_reconcile`:
//!   - an owner-labelled container on the configured network whose game has
//!     no record (a start that crashed between create and commit) gets one
//!     (`reconcile_adopt`);
//!   - a `running` record whose container is gone becomes `removed`
//!     (`reconcile_dispose`) and `container_disappeared` is published,
//!     unless docker-events already published it (the same dedupe key:
//!     one per removal, whichever job sees it first);
//!   - a `running` record whose container has exited (or is `dead`) becomes
//!     `stopped` (`reconcile_observe_exit`), with an `inspect_unhealthy
//!     {state: "exited"}` unless that observation was already published (an
//!     inspect-only pass reports the exit without touching the record). The
//!     Docker events source stays independent, so a non-zero exit may be
//!     reported by both, each once.
//!
//! The pass only reads Docker: it only sees owner-labelled containers, and it
//! changes records, never containers (nothing is stopped or removed).
//!
//! Modules: `assess` decides whether an observation is unhealthy and new
//! (pure); `pass` lists, picks the targets, checks them and reports;
//! `actions` makes every write about a game, under its lease, in one unit
//! of work.

mod actions;
mod adoption;
mod assess;
mod pass;

use std::sync::Arc;

use shared::adapters::postgres::Database;
use shared::adapters::LeaseStore;
use shared::game_lock::GameLocks;
use shared::liveness::Heartbeat;
use shared::outbox::Outbox;
use shared::ports::{ContainerEngine, ContainerInfo};

pub use assess::{assess, Verdict};
use pass::Finding;
pub use pass::{InspectSettings, PassError, PassReport};

/// Runs inspect passes; cheap to clone.
#[derive(Clone)]
pub struct Inspector {
    engine: Arc<dyn ContainerEngine>,
    db: Database,
    outbox: Outbox,
    /// Reconciling actions write records: under the game's lock, fenced.
    locks: GameLocks,
    settings: InspectSettings,
    /// Ticked as each container is checked: a long pass is progress.
    heartbeat: Heartbeat,
}

impl Inspector {
    pub fn new(
        engine: Arc<dyn ContainerEngine>,
        db: Database,
        outbox: Outbox,
        leases: LeaseStore,
        settings: InspectSettings,
    ) -> Self {
        Self {
            engine,
            locks: GameLocks::new(leases, db.clone()),
            db,
            outbox,
            settings,
            heartbeat: Heartbeat::detached(),
        }
    }

    /// The heartbeat a pass ticks (a detached one unless
    /// [`Self::with_heartbeat`] gave one).
    pub fn heartbeat(&self) -> &Heartbeat {
        &self.heartbeat
    }

    /// Ticks `heartbeat` as each container of a pass is checked.
    pub fn with_heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    pub fn leases(&self) -> &LeaseStore {
        self.locks.leases()
    }

    /// Inspects under `RTMANAGER_INSPECT_TIMEOUT`; `Ok(None)` when the
    /// container is gone, `Err` with the finding of a timeout or failure
    /// (logged here). One that exceeds the bound is skipped this pass
    /// ([`PassReport::timed_out`]) and never holds up the others beyond it.
    async fn inspect(&self, container_id: &str) -> Result<Option<ContainerInfo>, Finding> {
        match tokio::time::timeout(
            self.settings.timeout,
            self.engine.inspect_container(container_id),
        )
        .await
        {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(e)) => {
                tracing::warn!(container_id, error = %e, "inspect failed; container skipped this pass");
                Err(Finding::Failed(container_id.to_owned()))
            }
            Err(_) => {
                tracing::warn!(
                    container_id,
                    timeout_ms = self.settings.timeout.as_millis() as u64,
                    "inspect timed out; container skipped this pass"
                );
                Err(Finding::TimedOut(container_id.to_owned()))
            }
        }
    }
}
