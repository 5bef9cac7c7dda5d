//! The containers no running record watches, settled by the reconciler:
//!
//! - an **orphan** (owner-labelled, no record: a start that died between
//!   creating its container and committing) is adopted: a record for it,
//!   `running` if it runs, else `stopped`;
//! - an **unwatched** container (running, for a game whose record is
//!   `stopped` or `removed`: a restart, a patch or a start of a stopped game
//!   that died after creating the new container under the game's name) is
//!   adopted into the record: `running` on that container;
//! - a **replaced** container (not running, for a game whose record is
//!   `stopped` or `removed` on a container that is gone: the same crash
//!   after the old container was removed and the new one created, before it
//!   was started): the record is pointed at it, `stopped` (compare-and-set
//!   on the old container id), so record and Docker agree and the next
//!   start or cleanup acts on the container that exists.
//!
//! Unless a stop is newer than the container: a stop tombstone requested
//! after the container was started (its `com.galaxy.started_at_ms` label),
//! or a stop intent recorded for it. Then the game must not run: the record
//! says `stopped`, the stop's intent is committed with it, and the container
//! is stopped after the commit (a `stop` row, op source `auto_reconcile`). A
//! crash before that stop leaves a running container with its intent, which
//! the next pass stops.
//!
//! No health event either way: the container did not change (the crashed
//! operation's job, once reclaimed, answers from the record).

use chrono::{DateTime, Utc};
use shared::adapters::postgres::{StoreError, UnitOfWork};
use shared::domain::labels::{LABEL_ENGINE_IMAGE_REF, LABEL_STARTED_AT_MS};
use shared::domain::{GameId, IntentKind, OpKind, RuntimeRecord, RuntimeStatus};
use shared::ports::ContainerInfo;

use super::actions::{entry, Written};
use super::pass::{Finding, PassContext};
use super::Inspector;

impl Inspector {
    /// An orphan: see the module doc.
    pub(super) async fn adopt(
        &self,
        game_id: &GameId,
        container_id: &str,
        ctx: &PassContext,
    ) -> Vec<Finding> {
        let confirm = async || self.inspect(container_id).await;
        self.settle(
            game_id,
            container_id,
            confirm,
            async |tx, info, started_at| {
                let superseded = self.newer_stop(tx, game_id, &info).await?;
                let mut record = self.adopted_record(game_id, &info, started_at);
                if superseded {
                    stopped(&mut record, started_at);
                }
                if !tx.insert_record_if_absent(&record).await? {
                    return Ok(Written::Superseded);
                }
                tx.append_operation(&entry(
                    ctx,
                    &record,
                    OpKind::ReconcileAdopt,
                    &info.id,
                    started_at,
                ))
                .await?;
                self.then_stop_if(tx, superseded, game_id, &info, ctx, &record, started_at)
                    .await
            },
        )
        .await
    }

    /// An unwatched container: see the module doc.
    pub(super) async fn adopt_unwatched(
        &self,
        record: &RuntimeRecord,
        container_id: &str,
        ctx: &PassContext,
    ) -> Vec<Finding> {
        let game_id = &record.game_id;
        let confirm = async || {
            let info = self.inspect(container_id).await?;
            Ok(info.filter(|info| info.state.is_running()))
        };
        self.settle(
            game_id,
            container_id,
            confirm,
            async |tx, info, started_at| {
                if self.newer_stop(tx, game_id, &info).await? {
                    // The record already says the game is not running.
                    return self
                        .then_stop_if(tx, true, game_id, &info, ctx, record, started_at)
                        .await;
                }
                let mut adopted = self.adopted_record(game_id, &info, started_at);
                adopted.created_at = record.created_at;
                // Compare-and-set: never over a record that became running.
                if !tx.upsert_running_record(&adopted).await? {
                    return Ok(Written::Superseded);
                }
                tx.append_operation(&entry(ctx, &adopted, OpKind::ReconcileAdopt, &info.id, started_at))
                    .await?;
                let log = move || {
                    tracing::info!(game_id = %game_id, container_id, pass_id = %ctx.pass_id, "unwatched container adopted into its stopped record");
                };
                Ok(Written::Commit {
                    findings: vec![Finding::Adopted(game_id.clone())],
                    log: Box::new(log) as Box<dyn FnOnce() + Send + '_>,
                })
            },
        )
        .await
    }

    /// A replaced container: see the module doc.
    pub(super) async fn repoint(
        &self,
        record: &RuntimeRecord,
        container_id: &str,
        ctx: &PassContext,
    ) -> Vec<Finding> {
        let game_id = &record.game_id;
        let old = record
            .current_container_id
            .as_deref()
            .filter(|c| !c.is_empty());
        // Confirm under the lease: the container exists and is not running
        // (else the next pass adopts it as unwatched), the old one is gone.
        let confirm = async || {
            let Some(info) = self.inspect(container_id).await? else {
                return Ok(None);
            };
            if info.state.is_running() {
                return Ok(None);
            }
            if let Some(old) = old {
                if self.inspect(old).await?.is_some() {
                    return Ok(None);
                }
            }
            Ok(Some(info))
        };
        self.settle(
            game_id,
            container_id,
            confirm,
            async |tx, info, started_at| {
                let image_ref = image_of(&info);
                if !tx
                    .repoint_stopped_record(game_id, old, &info.id, &image_ref, started_at)
                    .await?
                {
                    return Ok(Written::Superseded);
                }
                let mut repointed = record.clone();
                repointed.current_image_ref = Some(image_ref);
                tx.append_operation(&entry(
                    ctx,
                    &repointed,
                    OpKind::ReconcileAdopt,
                    &info.id,
                    started_at,
                ))
                .await?;
                let log = move || {
                    tracing::info!(game_id = %game_id, container_id, old_container_id = old.unwrap_or(""), pass_id = %ctx.pass_id, "record pointed at the container that replaced its gone one; stopped");
                };
                Ok(Written::Commit {
                    findings: vec![Finding::Adopted(game_id.clone())],
                    log,
                })
            },
        )
        .await
    }

    /// A stop requested after this container was started, or one recorded
    /// for it: the container must not run.
    async fn newer_stop(
        &self,
        tx: &mut UnitOfWork,
        game_id: &GameId,
        info: &ContainerInfo,
    ) -> Result<bool, StoreError> {
        if tx.intent_recorded(IntentKind::Stop, &info.id).await? {
            return Ok(true);
        }
        let started_ms = info
            .labels
            .get(LABEL_STARTED_AT_MS)
            .and_then(|ms| ms.parse::<i64>().ok());
        let tombstone = self.db.stop_tombstone(game_id).await?;
        Ok(matches!((tombstone, started_ms), (Some(stop), Some(start)) if stop > start))
    }

    /// The commit of an adoption; when `stop`, with the container's stop
    /// intent and a `stop` row, and the stop itself after the commit.
    #[allow(clippy::too_many_arguments)] // one adoption's facts, each once
    async fn then_stop_if<'a>(
        &self,
        tx: &mut UnitOfWork,
        stop: bool,
        game_id: &'a GameId,
        info: &ContainerInfo,
        ctx: &'a PassContext,
        record: &RuntimeRecord,
        started_at: DateTime<Utc>,
    ) -> Result<Written<Box<dyn FnOnce() + Send + 'a>>, StoreError> {
        let container_id = info.id.clone();
        let running = info.state.is_running();
        if !stop || !running {
            let status = record.status;
            let logged = container_id.clone();
            return Ok(Written::Commit {
                findings: vec![Finding::Adopted(game_id.clone())],
                log: Box::new(move || {
                    tracing::info!(game_id = %game_id, container_id = %logged, status = status.as_str(), pass_id = %ctx.pass_id, "unrecorded rtmanager container adopted");
                }),
            });
        }
        let old = record
            .current_container_id
            .as_deref()
            .filter(|c| !c.is_empty());
        if old != Some(container_id.as_str()) {
            // An unwatched container whose record names the gone one it
            // replaced: the record follows the container it stops, so record
            // and Docker agree (and a cleanup removes this one).
            if !tx
                .repoint_stopped_record(game_id, old, &container_id, &image_of(info), started_at)
                .await?
            {
                return Ok(Written::Superseded);
            }
        }
        tx.record_intent(IntentKind::Stop, game_id, &container_id)
            .await?;
        tx.append_operation(&entry(ctx, record, OpKind::Stop, &container_id, started_at))
            .await?;
        let logged = container_id.clone();
        Ok(Written::CommitThenStop {
            findings: vec![Finding::Adopted(game_id.clone())],
            log: Box::new(move || {
                tracing::info!(game_id = %game_id, container_id = %logged, pass_id = %ctx.pass_id, "container superseded by a newer stop; stopping it");
            }),
            container_id,
        })
    }

    fn adopted_record(
        &self,
        game_id: &GameId,
        info: &ContainerInfo,
        now: DateTime<Utc>,
    ) -> RuntimeRecord {
        let running = info.state.is_running();
        let image_ref = image_of(info);
        RuntimeRecord {
            game_id: game_id.clone(),
            status: if running {
                RuntimeStatus::Running
            } else {
                RuntimeStatus::Stopped
            },
            current_container_id: Some(info.id.clone()),
            current_image_ref: Some(image_ref),
            engine_endpoint: game_id.engine_endpoint(),
            state_path: self
                .settings
                .state_root
                .join(game_id.as_str())
                .display()
                .to_string(),
            docker_network: self.settings.network.clone(),
            started_at: info.started_at,
            stopped_at: (!running).then(|| info.finished_at.unwrap_or(now)),
            removed_at: None,
            last_op_at: now,
            created_at: now,
        }
    }
}

/// The record of a container a newer stop superseded: `stopped`.
fn stopped(record: &mut RuntimeRecord, at: DateTime<Utc>) {
    record.status = RuntimeStatus::Stopped;
    record.stopped_at = Some(at);
}

/// The image a container was started with: its label, else Docker's.
fn image_of(info: &ContainerInfo) -> String {
    info.labels
        .get(LABEL_ENGINE_IMAGE_REF)
        .filter(|i| !i.is_empty())
        .cloned()
        .unwrap_or_else(|| info.image.clone())
}
