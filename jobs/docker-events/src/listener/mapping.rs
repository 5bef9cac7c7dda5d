//! Which daemon event becomes which health event, and what is not reported.
//!
//! # Mapping
//! Events come already filtered to `com.galaxy.owner=rtmanager` containers
//! (the adapter asks the daemon for that label); the game is the
//! `com.galaxy.game_id` label. `occurred_at_ms` is the daemon's event time
//! (`time_nano / 1e6`).
//! - `die` with a non-zero exit -> `container_exited {exit_code, oom}`; `oom`
//!   is the container's `State.OOMKilled` (inspected; `false` when it is
//!   already gone). A zero exit publishes nothing and leaves the record alone,
//!   as in the Go service (the reconciler settles the record).
//! - `oom` -> `container_oom {exit_code}`: the exit code is inspected when the
//!   container has already exited, else it is not known yet and is reported as
//!   [`OOM_EXIT_CODE`].
//! - `destroy` -> `container_disappeared {}`.
//! - `start` is not re-published: the start service owns `container_started`.
//!
//! # Suppression: what rtmanager did itself is not reported
//! An event is published only for the *current* container of a `running`
//! record (`current_container_id` is the event's container). That leaves out
//! rtmanager's own rollbacks (a container never made current) and the
//! containers replaced by a restart or patch, and everything after a stop
//! (the record is no longer running). On top of that:
//! - a `die` is not reported when a stop or removal intent was recorded for
//!   the container ([`IntentKind`]; the lifecycle records it *before* acting,
//!   so it is always there when the die arrives);
//! - a `destroy` is not reported when a removal intent was recorded.

use shared::adapters::postgres::StoreError;
use shared::adapters::IntentKind;
use shared::domain::labels::LABEL_GAME_ID;
use shared::domain::{EventAction, GameId, HealthEvent, RuntimeRecord, RuntimeStatus};
use shared::ports::EngineEvent;

use super::{Listener, ListenerError};

/// Reported as the exit code of an OOM kill whose exit is not known yet:
/// 137 is SIGKILL, what the OOM killer sends.
pub const OOM_EXIT_CODE: i64 = 137;

impl Listener {
    /// Handles one daemon event; an error leaves the cursor before it, so it
    /// is handled again after the resubscription.
    pub async fn handle(&self, event: &EngineEvent) -> Result<(), ListenerError> {
        let Some(game_id) = event
            .labels
            .get(LABEL_GAME_ID)
            .and_then(|g| GameId::parse(g).ok())
        else {
            return Ok(());
        };
        let at_ms = event.time_nano.div_euclid(1_000_000);
        let container = event.container_id.as_str();
        match event.action {
            EventAction::Die => {
                self.on_die(&game_id, container, event.exit_code, at_ms)
                    .await
            }
            EventAction::Oom => self.on_oom(&game_id, container, at_ms).await,
            EventAction::Destroy => self.on_destroy(&game_id, container, at_ms).await,
            _ => Ok(()),
        }
    }

    async fn on_die(
        &self,
        game_id: &GameId,
        container: &str,
        exit_code: Option<i64>,
        at_ms: i64,
    ) -> Result<(), ListenerError> {
        if exit_code == Some(0) || self.rtmanager_stops_or_removes(container).await? {
            return Ok(());
        }
        if self.running_record_of(game_id, container).await?.is_none() {
            return Ok(());
        }
        let info = self.engine.inspect_container(container).await?;
        let exit_code = match exit_code.or(info.as_ref().map(|i| i.exit_code)) {
            Some(0) | None => return Ok(()),
            Some(code) => code,
        };
        let oom = info.as_ref().is_some_and(|i| i.oom_killed);
        // `docker rm -f` kills, then removes: a die seen while the container
        // is `removing` (or already gone) is followed by a `destroy`, which
        // must still find the record running to be reported.
        let removing = info.as_ref().is_none_or(|i| i.state.is_being_removed());
        self.publish_exit(game_id, container, exit_code, oom, !removing, at_ms)
            .await?;
        Ok(())
    }

    async fn on_oom(
        &self,
        game_id: &GameId,
        container: &str,
        at_ms: i64,
    ) -> Result<(), ListenerError> {
        if self.running_record_of(game_id, container).await?.is_none() {
            return Ok(());
        }
        let exit_code = match self.engine.inspect_container(container).await? {
            Some(info) if !info.state.is_running() && info.exit_code != 0 => info.exit_code,
            _ => OOM_EXIT_CODE,
        };
        self.publish(&[HealthEvent::container_oom(
            game_id, container, at_ms, exit_code,
        )])
        .await?;
        Ok(())
    }

    async fn on_destroy(
        &self,
        game_id: &GameId,
        container: &str,
        at_ms: i64,
    ) -> Result<(), ListenerError> {
        if self
            .intents
            .is_recorded(IntentKind::Removal, container)
            .await?
        {
            return Ok(());
        }
        if self.running_record_of(game_id, container).await?.is_none() {
            return Ok(());
        }
        self.publish(&[HealthEvent::container_disappeared(
            game_id, container, at_ms,
        )])
        .await?;
        Ok(())
    }

    /// Whether rtmanager itself stops or removes this container (an intent
    /// was recorded before it acted).
    pub(super) async fn rtmanager_stops_or_removes(
        &self,
        container: &str,
    ) -> Result<bool, StoreError> {
        Ok(self
            .intents
            .is_recorded(IntentKind::Stop, container)
            .await?
            || self
                .intents
                .is_recorded(IntentKind::Removal, container)
                .await?)
    }

    /// The game's record, when it is running with this container.
    async fn running_record_of(
        &self,
        game_id: &GameId,
        container: &str,
    ) -> Result<Option<RuntimeRecord>, StoreError> {
        Ok(self.db.get_record(game_id).await?.filter(|r| {
            r.status == RuntimeStatus::Running
                && r.current_container_id.as_deref() == Some(container)
        }))
    }
}
