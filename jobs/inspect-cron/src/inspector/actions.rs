//! The writes a pass makes about a game: publishing an unhealthy observation
//! (inspect), and the reconcile drifts: dispose and observe exit here, the
//! adoptions in [`super::adoption`].
//!
//! Each action is a [`Inspector::settle`]: under the game's lease, a fresh
//! look at the container when the action depends on it, then one unit of
//! work that opens by re-checking the record and is committed only while the
//! lease is still held. The actions themselves only say what they confirm
//! and what they write.
//!
//! - **Leases.** The lease is taken with `try_acquire`, only when there is
//!   something to write; a game whose lease is held (a lifecycle operation in
//!   flight, e.g. a start between its create and its commit, which looks
//!   exactly like an orphan) is skipped this pass and counted as busy. Under
//!   the lease the record is re-checked in the transaction (row lock or
//!   compare-and-set on status and container id), and a disappearance or
//!   exit is confirmed by a fresh inspect, so a listing older than a
//!   concurrent start never disposes a live game.
//! - **One disappearance.** `container_disappeared` is staged under the
//!   dedupe key docker-events uses ([`HealthEvent::observation_key`]), in
//!   the transaction that disposes the record: a removal is published once
//!   by the two jobs together, whichever sees it first.
//! - **Once per change.** An `inspect_unhealthy` is staged only when
//!   [`UnitOfWork::store_published`] wrote the observation, in the same
//!   transaction: two passes racing on one container publish it once, and a
//!   crash between the two cannot happen because there is no "between".
//! - **Reconcile rows.** Each drift appends an `operation_log` row (op source
//!   `auto_reconcile`, the pass id as `source_ref`) in the transaction of the
//!   record change and its health event.

use chrono::{DateTime, Utc};
use shared::adapters::postgres::{StoreError, UnitOfWork};
use shared::domain::IntentKind;
use shared::domain::{
    GameId, HealthEvent, HealthSource, Observation, OpKind, OpSource, OperationEntry, Outcome,
    RuntimeRecord,
};
use shared::game_lock::GameLock;

use super::assess::observation_of;
use super::pass::{Finding, PassContext};
use super::Inspector;

/// What an action's unit of work came to.
pub(super) enum Written<Log> {
    /// The opening re-check of the record failed: it changed since the
    /// listing. Rolled back.
    Superseded,
    /// Nothing to write after all. Rolled back.
    Nothing,
    /// Commit; then `log` says what was done and `findings` go to the report.
    Commit { findings: Vec<Finding>, log: Log },
    /// Commit, then stop `container_id` (its stop intent is in the commit,
    /// so a crash before the stop is settled again by the next pass).
    CommitThenStop {
        findings: Vec<Finding>,
        log: Log,
        container_id: String,
    },
}

impl Inspector {
    /// Settles one action on a game. Under the game's lease: `confirm` (a
    /// fresh look; `Ok(None)` when there is nothing to do after all), then
    /// one unit of work given to `write` with what was confirmed and when the
    /// action started, committed only while the lock is current (fenced). A store
    /// failure is logged and reported as failed; the next pass retries.
    pub(super) async fn settle<Confirmed, Log>(
        &self,
        game_id: &GameId,
        container_id: &str,
        confirm: impl AsyncFnOnce() -> Result<Option<Confirmed>, Finding>,
        write: impl AsyncFnOnce(
            &mut UnitOfWork,
            Confirmed,
            DateTime<Utc>,
        ) -> Result<Written<Log>, StoreError>,
    ) -> Vec<Finding>
    where
        Log: FnOnce(),
    {
        let lock = match self.lock(game_id, container_id).await {
            Ok(lock) => lock,
            Err(finding) => return vec![finding],
        };
        let result = async {
            let started_at = Utc::now();
            let confirmed = match confirm().await {
                Ok(Some(confirmed)) => confirmed,
                Ok(None) => return Ok(Vec::new()),
                Err(finding) => return Ok(vec![finding]),
            };
            let mut tx = self.outbox.begin().await?;
            let (findings, log, stop) = match write(&mut tx, confirmed, started_at).await? {
                Written::Superseded => return Ok(vec![Finding::Superseded(game_id.clone())]),
                Written::Nothing => return Ok(Vec::new()),
                Written::Commit { findings, log } => (findings, log, None),
                Written::CommitThenStop {
                    findings,
                    log,
                    container_id,
                } => (findings, log, Some(container_id)),
            };
            shared::failpoints::crash_point("inspect-before-commit");
            if lock.is_lost() {
                return Ok(vec![Finding::Busy(game_id.clone())]);
            }
            tx.fence(lock.fence());
            tx.commit().await?;
            log();
            if let Some(container) = stop {
                if let Err(e) = self.engine.stop(&container, self.settings.stop_timeout).await {
                    tracing::warn!(game_id = %game_id, container_id = %container, error = %e, "stopping a container a newer stop superseded failed; retried next pass");
                }
            }
            Ok::<_, StoreError>(findings)
        }
        .await;
        lock.release().await;
        match result {
            Ok(findings) => findings,
            Err(StoreError::Fenced { .. }) => {
                tracing::info!(game_id = %game_id, container_id, "game lease lost and taken over before the commit; nothing written");
                vec![Finding::Busy(game_id.clone())]
            }
            Err(e) => {
                tracing::warn!(game_id = %game_id, container_id, error = %e, "inspect action failed; retried next pass");
                vec![Finding::Failed(container_id.to_owned())]
            }
        }
    }

    /// Takes the game's lock (lease and fencing token), or says why not.
    async fn lock(&self, game_id: &GameId, container_id: &str) -> Result<GameLock, Finding> {
        match self.locks.try_lock(game_id).await {
            Ok(Some(lock)) => Ok(lock),
            Ok(None) => {
                tracing::info!(game_id = %game_id, container_id, "game lease held by an operation; skipped this pass");
                Err(Finding::Busy(game_id.clone()))
            }
            Err(e) => {
                tracing::warn!(game_id = %game_id, container_id, error = %e, "taking the game lease failed; skipped this pass");
                Err(Finding::Failed(container_id.to_owned()))
            }
        }
    }

    /// The current container of a `running` record is unhealthy:
    /// `inspect_unhealthy`, unless a concurrent pass published this very
    /// observation, or rtmanager recorded a stop or removal of it.
    pub(super) async fn publish_unhealthy(
        &self,
        game_id: &GameId,
        container_id: &str,
        observation: &Observation,
        observed_at: DateTime<Utc>,
    ) -> Vec<Finding> {
        // Nothing to confirm: the observation is this pass's own inspect.
        let confirm = async || Ok(Some(()));
        self.settle(game_id, container_id, confirm, async |tx, (), _| {
            if !tx.lock_current_record(game_id, container_id).await? {
                return Ok(Written::Superseded);
            }
            // A stop or removal rtmanager recorded before acting (its
            // process may have died before marking the record): the exit
            // is its own, not news. Read under the record's row lock.
            if requested_stop(tx, container_id).await? {
                return Ok(Written::Nothing);
            }
            if !tx
                .store_published(game_id, container_id, observation)
                .await?
            {
                // A concurrent pass published this very observation.
                return Ok(Written::Nothing);
            }
            let event = observation.event(game_id, container_id, observed_at.timestamp_millis());
            tx.stage(&self.outbox.health(HealthSource::InspectCron, &event))
                .await?;
            Ok(Written::Commit {
                findings: vec![Finding::Unhealthy(game_id.clone())],
                log: move || {
                    tracing::info!(
                        game_id = %game_id,
                        container_id,
                        state = %observation.state,
                        health = %observation.health,
                        restart_count = observation.restart_count,
                        "inspect_unhealthy published"
                    )
                },
            })
        })
        .await
    }

    /// `running` record, container gone: `removed` + `container_disappeared`.
    pub(super) async fn dispose(
        &self,
        record: &RuntimeRecord,
        container_id: &str,
        ctx: &PassContext,
    ) -> Vec<Finding> {
        let game_id = &record.game_id;
        // Confirm under the lease: the listing may predate a start.
        let confirm = async || Ok(self.inspect(container_id).await?.is_none().then_some(()));
        self.settle(
            game_id,
            container_id,
            confirm,
            async |tx, (), started_at| {
                if !tx.mark_removed(game_id, container_id, started_at).await? {
                    return Ok(Written::Superseded);
                }
                let kind = OpKind::ReconcileDispose;
                tx.append_operation(&entry(ctx, record, kind, container_id, started_at))
                    .await?;
                let at_ms = started_at.timestamp_millis();
                let event = HealthEvent::container_disappeared(game_id, container_id, at_ms);
                // docker-events' key: a removal it already reported (it
                // leaves the record running for this pass) is not reported
                // again, and one it reports after this pass is not either.
                let key = event.observation_key();
                let reported = tx
                    .stage(&self.outbox.health_once(HealthSource::InspectCron, &event, &key))
                    .await?;
                tx.forget_container(container_id).await?;
                Ok(Written::Commit {
                    findings: vec![Finding::Disposed(game_id.clone())],
                    log: move || {
                        tracing::info!(
                            game_id = %game_id,
                            container_id,
                            pass_id = %ctx.pass_id,
                            container_disappeared = if reported { "published" } else { "already published" },
                            "running record without a container disposed"
                        )
                    },
                })
            },
        )
        .await
    }

    /// `running` record, container exited: `stopped`, and the exit published
    /// as `inspect_unhealthy` unless that observation already was. A clean
    /// exit (code 0) gives no `container_exited` from the Docker events
    /// source, so this is the only signal of it.
    pub(super) async fn observe_exit(
        &self,
        record: &RuntimeRecord,
        container_id: &str,
        ctx: &PassContext,
    ) -> Vec<Finding> {
        let game_id = &record.game_id;
        // Confirm under the lease: a restart policy may have revived it.
        let confirm = async || {
            let info = self.inspect(container_id).await?;
            let exited = info.filter(|info| info.state.is_exited());
            Ok(exited.map(|info| (info, Utc::now())))
        };
        self.settle(
            game_id,
            container_id,
            confirm,
            async |tx, (info, observed_at), started_at| {
                let stopped_at = info.finished_at.unwrap_or(observed_at);
                if !tx.mark_stopped(game_id, container_id, stopped_at).await? {
                    return Ok(Written::Superseded);
                }
                let kind = OpKind::ReconcileObserveExit;
                tx.append_operation(&entry(ctx, record, kind, container_id, started_at))
                    .await?;
                let observation = observation_of(&info);
                let mut findings = vec![Finding::ObservedExit(game_id.clone())];
                // A stop rtmanager recorded before acting, whose process died
                // before marking the record: the exit is its own, not news.
                let requested = requested_stop(tx, container_id).await?;
                if !requested
                    && tx
                        .store_published(game_id, container_id, &observation)
                        .await?
                {
                    let event =
                        observation.event(game_id, container_id, observed_at.timestamp_millis());
                    tx.stage(&self.outbox.health(HealthSource::InspectCron, &event))
                        .await?;
                    findings.push(Finding::Unhealthy(game_id.clone()));
                }
                let exit_code = info.exit_code;
                Ok(Written::Commit {
                    findings,
                    log: move || {
                        tracing::info!(
                            game_id = %game_id,
                            container_id,
                            exit_code,
                            pass_id = %ctx.pass_id,
                            "exited container observed; record stopped"
                        )
                    },
                })
            },
        )
        .await
    }
}

/// Whether rtmanager recorded a stop or removal of this container.
pub(super) async fn requested_stop(
    tx: &mut UnitOfWork,
    container_id: &str,
) -> Result<bool, StoreError> {
    Ok(tx.intent_recorded(IntentKind::Stop, container_id).await?
        || tx
            .intent_recorded(IntentKind::Removal, container_id)
            .await?)
}

/// The `operation_log` row of a reconcile drift, finished now.
pub(super) fn entry(
    ctx: &PassContext,
    record: &RuntimeRecord,
    op_kind: OpKind,
    container_id: &str,
    started_at: DateTime<Utc>,
) -> OperationEntry {
    OperationEntry {
        game_id: record.game_id.clone(),
        op_kind,
        op_source: OpSource::AutoReconcile,
        source_ref: ctx.pass_id.clone(),
        image_ref: record.current_image_ref.clone().unwrap_or_default(),
        container_id: container_id.to_owned(),
        outcome: Outcome::Success,
        error_code: None,
        error_message: String::new(),
        started_at,
        finished_at: Utc::now(),
    }
}
