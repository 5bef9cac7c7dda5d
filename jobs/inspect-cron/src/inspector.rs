//! The periodic inspect pass and the reconciler (`inspect-cron`).
//!
//! One [`Inspector::pass`] lists every owner-labelled container
//! ([`ContainerEngine::list_managed`]) and the runtime records, then checks
//! each container that matters with at most `RTMANAGER_INSPECT_CONCURRENCY`
//! at a time:
//!
//! - **Inspect** (every pass), for the current container of each `running`
//!   record: `inspect_unhealthy {restart_count, state, health}` when Docker
//!   reports it not `running`, its HEALTHCHECK `unhealthy`, or its
//!   `RestartCount` grown.
//! - **Reconcile** (when the pass is asked to), three drifts, each an
//!   `operation_log` row with op source `auto_reconcile` and the pass id as
//!   `source_ref`, committed in the same transaction as the record change and
//!   its health event:
//!   - an owner-labelled container on the configured network whose game has
//!     no record (a start that crashed between create and commit) gets one:
//!     `reconcile_adopt`, status `running` if it runs, else `stopped`. No
//!     health event: the container did not change (the crashed start's job,
//!     once reclaimed, then answers `replay_no_op` from the adopted record);
//!   - a `running` record whose container is gone becomes `removed`
//!     (`reconcile_dispose`) and `container_disappeared` is published;
//!   - a `running` record whose container has exited (or is `dead`) becomes
//!     `stopped` (`reconcile_observe_exit`, already in the SQL CHECK set and
//!     in [`OpKind`]), with an `inspect_unhealthy {state: "exited"}` unless
//!     that observation was already published (an inspect-only pass reports
//!     the exit without touching the record). A clean exit (code 0) gives no
//!     `container_exited` from the Docker events source, so this is the only
//!     signal of it; the sources stay independent, so a non-zero exit may be
//!     reported by both, each once.
//!
//! Design choices:
//!
//! - **Once per change.** The last published observation `(state, health,
//!   restart_count)` of each container lives in PostgreSQL
//!   (`inspect_observations`), not in Redis, so it can be compare-and-set in
//!   the very transaction that stages the event
//!   ([`shared::adapters::postgres::UnitOfWork::stage`]): the row is only written when it differs
//!   from the new observation, and the event is staged only when the row was
//!   written. Two passes racing on one container publish it once; a crash
//!   between the two cannot happen because there is no "between". A healthy
//!   observation clears the stored one, so the next failure is new again.
//!   `restart_count` in that row is the RestartCount last accounted for
//!   (0 for a container never seen: a container starts at 0, so a restart
//!   before the first pass is still reported).
//! - **Leases.** Every write about a game (an event, a record change) happens
//!   under the game's lease, taken with `try_acquire` only when there is
//!   something to write; a game whose lease is held (a lifecycle operation in
//!   flight, e.g. a start between its create and its commit, which looks
//!   exactly like an orphan) is skipped this pass and counted as busy. Under
//!   the lease the record is re-checked in the transaction (row lock or
//!   compare-and-set on status and container id), and a disappearance or exit
//!   is confirmed by a fresh inspect, so a listing older than a concurrent
//!   start never disposes a live game. (Clearing the stored observation after
//!   a healthy inspect is bookkeeping only and takes no lease.)
//! - **Bounded inspects.** Each inspect runs under `RTMANAGER_INSPECT_TIMEOUT`;
//!   one that exceeds it is skipped this pass, logged and reported
//!   ([`PassReport::timed_out`]), and never holds up the others beyond that
//!   bound.
//! - **Adoption is scoped to the configured network.** The adopted record
//!   names `RTMANAGER_DOCKER_NETWORK`, so a container on another network (left
//!   by another deployment or an earlier configuration) is not ours to adopt;
//!   it is ignored. Containers whose game already has a record (stopped or
//!   removed) are left to the next start, which replaces them.
//! - **Nothing is stopped or removed.** The pass only reads Docker; it only
//!   sees owner-labelled containers, and it changes records, never containers.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use rand::RngCore;
use shared::adapters::postgres::{Database, StoreError};
use shared::adapters::redis::{Lease, LeaseStore};
use shared::config::Config;
use shared::domain::labels::{LABEL_ENGINE_IMAGE_REF, LABEL_GAME_ID};
use shared::domain::{
    GameId, HealthEvent, Observation, ObservationMemory as Memory, OpKind, OpSource,
    OperationEntry, Outcome, RuntimeRecord, RuntimeStatus,
};
use shared::outbox::Outbox;
use shared::ports::{ContainerEngine, ContainerInfo, EngineError};

/// Settings of a pass, resolved from [`Config`].
#[derive(Debug, Clone)]
pub struct InspectSettings {
    /// `RTMANAGER_INSPECT_TIMEOUT`: bound on one container's inspect.
    pub timeout: Duration,
    /// `RTMANAGER_INSPECT_CONCURRENCY`: containers checked at once.
    pub concurrency: usize,
    /// `RTMANAGER_DOCKER_NETWORK`: the network of adopted containers.
    pub network: String,
    /// `RTMANAGER_GAME_STATE_ROOT`: adopted records get `<root>/<game_id>`.
    pub state_root: PathBuf,
}

impl InspectSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            timeout: config.inspect_timeout,
            concurrency: config.inspect_concurrency.max(1),
            network: config.docker_network.clone(),
            state_root: PathBuf::from(&config.game_state_root),
        }
    }
}

fn observation_of(info: &ContainerInfo) -> Observation {
    Observation {
        state: info.state.clone(),
        health: info.health.clone(),
        restart_count: info.restart_count,
    }
}

/// What to do about one observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Unhealthy and not yet published: publish it.
    Publish,
    /// Unhealthy, and exactly this observation was already published.
    AlreadyPublished,
    /// Healthy after a published failure: forget it, so the next one counts.
    Recovered,
    Healthy,
}

/// Unhealthy means: not `running`, HEALTHCHECK `unhealthy`, or RestartCount
/// above the one last accounted for.
pub fn assess(observation: &Observation, memory: Option<&Memory>) -> Verdict {
    let baseline = memory.map_or(0, |m| m.restart_count);
    let unhealthy = !observation.state.is_running()
        || observation.health == "unhealthy"
        || observation.restart_count > baseline;
    match (unhealthy, memory.and_then(|m| m.published.as_ref())) {
        (true, Some(published)) if published == observation => Verdict::AlreadyPublished,
        (true, _) => Verdict::Publish,
        (false, Some(_)) => Verdict::Recovered,
        (false, None) => Verdict::Healthy,
    }
}

/// The outcome of one pass. Container ids and game ids are sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// The `source_ref` of this pass's operation-log rows.
    pub pass_id: String,
    pub reconciled: bool,
    /// Owner-labelled containers listed.
    pub listed: usize,
    /// Containers inspected within the timeout.
    pub inspected: Vec<String>,
    /// Containers whose inspect exceeded the timeout: skipped this pass.
    pub timed_out: Vec<String>,
    /// Containers whose inspect or action failed (each logged).
    pub failed: Vec<String>,
    /// Games skipped because their lease was held.
    pub busy: Vec<GameId>,
    /// Games whose record changed between the listing and the action.
    pub superseded: Vec<GameId>,
    /// Games for which `inspect_unhealthy` was published.
    pub unhealthy: Vec<GameId>,
    pub adopted: Vec<GameId>,
    pub disposed: Vec<GameId>,
    pub observed_exits: Vec<GameId>,
    /// Owner-labelled, unrecorded containers not adopted (bad game id label,
    /// or not on the configured network).
    pub ignored: Vec<String>,
}

/// A failure that ends the pass before any container was checked.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("listing managed containers: {0}")]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One container (or missing container) a pass looks at.
enum Target {
    /// The current container of a `running` record, listed.
    Current {
        record: RuntimeRecord,
        container_id: String,
    },
    /// The current container of a `running` record, not listed.
    Missing {
        record: RuntimeRecord,
        container_id: String,
    },
    /// An owner-labelled container on our network whose game has no record.
    Orphan {
        game_id: GameId,
        container_id: String,
    },
}

/// One thing a target produced, folded into the [`PassReport`].
enum Finding {
    Inspected(String),
    TimedOut(String),
    Failed(String),
    Busy(GameId),
    Superseded(GameId),
    Unhealthy(GameId),
    Adopted(GameId),
    Disposed(GameId),
    ObservedExit(GameId),
}

struct PassContext {
    pass_id: String,
    reconcile: bool,
    memory: HashMap<String, Memory>,
}

/// Runs inspect passes; cheap to clone.
#[derive(Clone)]
pub struct Inspector {
    engine: Arc<dyn ContainerEngine>,
    db: Database,
    outbox: Outbox,
    leases: LeaseStore,
    settings: InspectSettings,
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
            db,
            outbox,
            leases,
            settings,
        }
    }

    pub fn leases(&self) -> &LeaseStore {
        &self.leases
    }

    /// One pass: inspect, and reconcile too when `reconcile` is set.
    /// Per-container failures and timeouts are in the report; only a failure
    /// to list containers or read records fails the pass.
    pub async fn pass(&self, reconcile: bool) -> Result<PassReport, PassError> {
        let started = Utc::now();
        let pass_id = new_pass_id(started);
        let containers = self.engine.list_managed().await?;
        let records = self
            .db
            .list_records((!reconcile).then_some(RuntimeStatus::Running))
            .await?;
        let memory = self.db.observation_memory().await?;

        let listed: HashSet<&str> = containers.iter().map(|c| c.id.as_str()).collect();
        let recorded: HashSet<&str> = records.iter().map(|r| r.game_id.as_str()).collect();
        let mut report = PassReport {
            pass_id: pass_id.clone(),
            reconciled: reconcile,
            listed: containers.len(),
            ..PassReport::default()
        };
        let mut targets = Vec::new();
        for record in records
            .iter()
            .filter(|r| r.status == RuntimeStatus::Running)
        {
            let Some(container_id) = record
                .current_container_id
                .clone()
                .filter(|c| !c.is_empty())
            else {
                continue;
            };
            if listed.contains(container_id.as_str()) {
                targets.push(Target::Current {
                    record: record.clone(),
                    container_id,
                });
            } else if reconcile {
                targets.push(Target::Missing {
                    record: record.clone(),
                    container_id,
                });
            }
        }
        if reconcile {
            for container in &containers {
                let label = container.labels.get(LABEL_GAME_ID).map(String::as_str);
                if label.is_some_and(|g| recorded.contains(g)) {
                    continue;
                }
                let game_id = match label.map(GameId::parse) {
                    Some(Ok(game_id)) => game_id,
                    Some(Err(e)) => {
                        tracing::warn!(container_id = %container.id, label = label.unwrap_or(""), error = %e, "owner-labelled container with an invalid game id label; not adopted");
                        report.ignored.push(container.id.clone());
                        continue;
                    }
                    None => {
                        tracing::warn!(container_id = %container.id, "owner-labelled container without a game id label; not adopted");
                        report.ignored.push(container.id.clone());
                        continue;
                    }
                };
                if !container.networks.contains(&self.settings.network) {
                    tracing::debug!(container_id = %container.id, game_id = %game_id, networks = ?container.networks, "unrecorded container on another network; not adopted");
                    report.ignored.push(container.id.clone());
                    continue;
                }
                targets.push(Target::Orphan {
                    game_id,
                    container_id: container.id.clone(),
                });
            }
        }

        let ctx = PassContext {
            pass_id,
            reconcile,
            memory,
        };
        let findings: Vec<Vec<Finding>> = futures_util::stream::iter(targets)
            .map(|target| self.check(target, &ctx))
            .buffer_unordered(self.settings.concurrency)
            .collect()
            .await;
        for finding in findings.into_iter().flatten() {
            match finding {
                Finding::Inspected(c) => report.inspected.push(c),
                Finding::TimedOut(c) => report.timed_out.push(c),
                Finding::Failed(c) => report.failed.push(c),
                Finding::Busy(g) => report.busy.push(g),
                Finding::Superseded(g) => report.superseded.push(g),
                Finding::Unhealthy(g) => report.unhealthy.push(g),
                Finding::Adopted(g) => report.adopted.push(g),
                Finding::Disposed(g) => report.disposed.push(g),
                Finding::ObservedExit(g) => report.observed_exits.push(g),
            }
        }
        let listed_ids: Vec<&str> = listed.iter().copied().collect();
        if let Err(e) = self.db.prune_observations(&listed_ids, started).await {
            tracing::warn!(error = %e, "pruning inspect observations failed; retried next pass");
        }
        for list in [
            &mut report.inspected,
            &mut report.timed_out,
            &mut report.failed,
            &mut report.ignored,
        ] {
            list.sort();
        }
        for list in [
            &mut report.busy,
            &mut report.superseded,
            &mut report.unhealthy,
            &mut report.adopted,
            &mut report.disposed,
            &mut report.observed_exits,
        ] {
            list.sort();
        }
        tracing::info!(
            pass_id = %report.pass_id,
            reconciled = report.reconciled,
            listed = report.listed,
            inspected = report.inspected.len(),
            timed_out = report.timed_out.len(),
            failed = report.failed.len(),
            busy = report.busy.len(),
            unhealthy = report.unhealthy.len(),
            adopted = report.adopted.len(),
            disposed = report.disposed.len(),
            observed_exits = report.observed_exits.len(),
            "inspect pass done"
        );
        Ok(report)
    }

    async fn check(&self, target: Target, ctx: &PassContext) -> Vec<Finding> {
        match target {
            Target::Current {
                record,
                container_id,
            } => self.check_current(record, container_id, ctx).await,
            Target::Missing {
                record,
                container_id,
            } => self.dispose(&record, &container_id, ctx).await,
            Target::Orphan {
                game_id,
                container_id,
            } => self.adopt(&game_id, &container_id, ctx).await,
        }
    }

    /// Inspects under `RTMANAGER_INSPECT_TIMEOUT`; `Ok(None)` when the
    /// container is gone, `Err` with the finding of a timeout or failure
    /// (logged here).
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

    async fn check_current(
        &self,
        record: RuntimeRecord,
        container_id: String,
        ctx: &PassContext,
    ) -> Vec<Finding> {
        let info = match self.inspect(&container_id).await {
            Ok(Some(info)) => info,
            // Gone since the listing: the reconciler's business.
            Ok(None) if ctx.reconcile => return self.dispose(&record, &container_id, ctx).await,
            Ok(None) => return Vec::new(),
            Err(finding) => return vec![finding],
        };
        let observed_at = Utc::now();
        let mut findings = vec![Finding::Inspected(container_id.clone())];
        let observation = observation_of(&info);
        if ctx.reconcile && observation.state.is_exited() {
            findings.extend(self.observe_exit(&record, &container_id, ctx).await);
            return findings;
        }
        match assess(&observation, ctx.memory.get(&container_id)) {
            Verdict::Publish => findings.extend(
                self.publish_unhealthy(&record.game_id, &container_id, &observation, observed_at)
                    .await,
            ),
            Verdict::Recovered => {
                if let Err(e) = self.db.forget_published(&container_id).await {
                    tracing::warn!(game_id = %record.game_id, container_id, error = %e, "clearing the published observation failed");
                    findings.push(Finding::Failed(container_id));
                }
            }
            Verdict::AlreadyPublished | Verdict::Healthy => {}
        }
        findings
    }

    /// Takes the game's lease, or says why not.
    async fn lease(&self, game_id: &GameId, container_id: &str) -> Result<Lease, Finding> {
        match self.leases.try_acquire(game_id).await {
            Ok(Some(lease)) => Ok(lease),
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

    /// Runs `action` under the game's lease and maps its failure to a finding.
    async fn under_lease<F>(&self, game_id: &GameId, container_id: &str, action: F) -> Vec<Finding>
    where
        F: AsyncFnOnce(&Lease) -> Result<Vec<Finding>, StoreError>,
    {
        let lease = match self.lease(game_id, container_id).await {
            Ok(lease) => lease,
            Err(finding) => return vec![finding],
        };
        let result = action(&lease).await;
        lease.release().await;
        match result {
            Ok(findings) => findings,
            Err(e) => {
                tracing::warn!(game_id = %game_id, container_id, error = %e, "inspect action failed; retried next pass");
                vec![Finding::Failed(container_id.to_owned())]
            }
        }
    }

    async fn publish_unhealthy(
        &self,
        game_id: &GameId,
        container_id: &str,
        observation: &Observation,
        observed_at: DateTime<Utc>,
    ) -> Vec<Finding> {
        self.under_lease(game_id, container_id, async |lease| {
            let mut tx = self.outbox.begin().await?;
            if !tx.lock_current_record(game_id, container_id).await? {
                return Ok(vec![Finding::Superseded(game_id.clone())]);
            }
            if !tx.store_published(game_id, container_id, observation).await? {
                // A concurrent pass published this very observation.
                return Ok(Vec::new());
            }
            let event = observation.event(game_id, container_id, observed_at.timestamp_millis());
            tx.stage(&self.outbox.health(&event)).await?;
            if lease.is_lost() {
                return Ok(vec![Finding::Busy(game_id.clone())]);
            }
            tx.commit().await?;
            tracing::info!(game_id = %game_id, container_id, state = %observation.state, health = %observation.health, restart_count = observation.restart_count, "inspect_unhealthy published");
            Ok(vec![Finding::Unhealthy(game_id.clone())])
        })
        .await
    }

    /// `running` record, container gone: `removed` + `container_disappeared`.
    async fn dispose(
        &self,
        record: &RuntimeRecord,
        container_id: &str,
        ctx: &PassContext,
    ) -> Vec<Finding> {
        let game_id = &record.game_id;
        self.under_lease(game_id, container_id, async |lease| {
            let started_at = Utc::now();
            // Confirm under the lease: the listing may predate a start.
            match self.inspect(container_id).await {
                Ok(None) => {}
                Ok(Some(_)) => return Ok(Vec::new()),
                Err(finding) => return Ok(vec![finding]),
            }
            let mut tx = self.outbox.begin().await?;
            if !tx.mark_removed(game_id, container_id, started_at).await? {
                return Ok(vec![Finding::Superseded(game_id.clone())]);
            }
            tx.append_operation(
                &self.entry(
                    ctx,
                    record,
                    OpKind::ReconcileDispose,
                    container_id,
                    started_at,
                ),
            )
            .await?;
            let event = HealthEvent::container_disappeared(game_id, container_id, started_at.timestamp_millis());
            tx.stage(&self.outbox.health(&event)).await?;
            tx.forget_container(container_id).await?;
            if lease.is_lost() {
                return Ok(vec![Finding::Busy(game_id.clone())]);
            }
            tx.commit().await?;
            tracing::info!(game_id = %game_id, container_id, pass_id = %ctx.pass_id, "running record without a container disposed");
            Ok(vec![Finding::Disposed(game_id.clone())])
        })
        .await
    }

    /// `running` record, container exited: `stopped`, and the exit published
    /// as `inspect_unhealthy` unless that observation already was.
    async fn observe_exit(
        &self,
        record: &RuntimeRecord,
        container_id: &str,
        ctx: &PassContext,
    ) -> Vec<Finding> {
        let game_id = &record.game_id;
        self.under_lease(game_id, container_id, async |lease| {
            let started_at = Utc::now();
            // Confirm under the lease: a restart policy may have revived it.
            let info = match self.inspect(container_id).await {
                Ok(Some(info)) if info.state.is_exited() => info,
                Ok(_) => return Ok(Vec::new()),
                Err(finding) => return Ok(vec![finding]),
            };
            let observed_at = Utc::now();
            let stopped_at = info.finished_at.unwrap_or(observed_at);
            let mut tx = self.outbox.begin().await?;
            if !tx.mark_stopped(game_id, container_id, stopped_at).await? {
                return Ok(vec![Finding::Superseded(game_id.clone())]);
            }
            tx.append_operation(
                &self.entry(
                    ctx,
                    record,
                    OpKind::ReconcileObserveExit,
                    container_id,
                    started_at,
                ),
            )
            .await?;
            let observation = observation_of(&info);
            let mut findings = vec![Finding::ObservedExit(game_id.clone())];
            if tx.store_published(game_id, container_id, &observation).await? {
                let event = observation.event(game_id, container_id, observed_at.timestamp_millis());
                tx.stage(&self.outbox.health(&event)).await?;
                findings.push(Finding::Unhealthy(game_id.clone()));
            }
            if lease.is_lost() {
                return Ok(vec![Finding::Busy(game_id.clone())]);
            }
            tx.commit().await?;
            tracing::info!(game_id = %game_id, container_id, exit_code = info.exit_code, pass_id = %ctx.pass_id, "exited container observed; record stopped");
            Ok(findings)
        })
        .await
    }

    /// Unrecorded owner-labelled container: a record for it.
    async fn adopt(&self, game_id: &GameId, container_id: &str, ctx: &PassContext) -> Vec<Finding> {
        self.under_lease(game_id, container_id, async |lease| {
            let started_at = Utc::now();
            let info = match self.inspect(container_id).await {
                Ok(Some(info)) => info,
                Ok(None) => return Ok(Vec::new()),
                Err(finding) => return Ok(vec![finding]),
            };
            let record = self.adopted_record(game_id, &info, started_at);
            let mut tx = self.outbox.begin().await?;
            if !tx.insert_record_if_absent(&record).await? {
                return Ok(vec![Finding::Superseded(game_id.clone())]);
            }
            tx.append_operation(
                &self.entry(ctx, &record, OpKind::ReconcileAdopt, &info.id, started_at),
            )
            .await?;
            if lease.is_lost() {
                return Ok(vec![Finding::Busy(game_id.clone())]);
            }
            tx.commit().await?;
            tracing::info!(game_id = %game_id, container_id, status = record.status.as_str(), pass_id = %ctx.pass_id, "unrecorded rtmanager container adopted");
            Ok(vec![Finding::Adopted(game_id.clone())])
        })
        .await
    }

    fn adopted_record(
        &self,
        game_id: &GameId,
        info: &ContainerInfo,
        now: DateTime<Utc>,
    ) -> RuntimeRecord {
        let running = info.state.is_running();
        let image_ref = info
            .labels
            .get(LABEL_ENGINE_IMAGE_REF)
            .filter(|i| !i.is_empty())
            .cloned()
            .unwrap_or_else(|| info.image.clone());
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

    fn entry(
        &self,
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
}

/// `inspect-<unix ms>-<8 hex>`: names the pass in logs and operation rows.
fn new_pass_id(at: DateTime<Utc>) -> String {
    let mut bytes = [0u8; 4];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("inspect-{}-{hex}", at.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(state: &str, health: &str, restart_count: i64) -> Observation {
        Observation {
            state: shared::domain::ContainerState::parse(state),
            health: health.into(),
            restart_count,
        }
    }

    #[test]
    fn an_unhealthy_observation_is_published_once_until_it_changes() {
        let unhealthy = obs("running", "unhealthy", 0);
        assert_eq!(assess(&unhealthy, None), Verdict::Publish);
        let memory = Memory {
            restart_count: 0,
            published: Some(unhealthy.clone()),
        };
        assert_eq!(assess(&unhealthy, Some(&memory)), Verdict::AlreadyPublished);
        assert_eq!(
            assess(&obs("exited", "unhealthy", 0), Some(&memory)),
            Verdict::Publish
        );
        assert_eq!(
            assess(&obs("running", "healthy", 0), Some(&memory)),
            Verdict::Recovered
        );
        assert_eq!(
            assess(&obs("running", "healthy", 0), None),
            Verdict::Healthy
        );
        assert_eq!(assess(&obs("running", "", 0), None), Verdict::Healthy);
        assert_eq!(
            assess(&obs("running", "starting", 0), None),
            Verdict::Healthy
        );
    }

    #[test]
    fn restart_count_growth_counts_from_the_last_accounted_value() {
        // Never seen: a container starts at 0, so 1 is a restart.
        assert_eq!(assess(&obs("running", "", 1), None), Verdict::Publish);
        let memory = Memory {
            restart_count: 1,
            published: Some(obs("running", "", 1)),
        };
        // Still 1 on the next pass: recovered, not re-reported.
        assert_eq!(
            assess(&obs("running", "", 1), Some(&memory)),
            Verdict::Recovered
        );
        let forgotten = Memory {
            restart_count: 1,
            published: None,
        };
        assert_eq!(
            assess(&obs("running", "", 1), Some(&forgotten)),
            Verdict::Healthy
        );
        assert_eq!(
            assess(&obs("running", "", 2), Some(&forgotten)),
            Verdict::Publish
        );
    }

    #[test]
    fn pass_ids_are_distinct() {
        let now = Utc::now();
        assert_ne!(new_pass_id(now), new_pass_id(now));
        assert!(new_pass_id(now).starts_with("inspect-"));
    }
}
