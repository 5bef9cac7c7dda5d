//! The `start` lifecycle operation (seed 001), shared by the stream consumer
//! and the REST gateway.
//!
//! Steps, each failure with its stable code: per-game lease (`conflict` when
//! busy, `service_unavailable` when Redis is away) -> record check
//! (`replay_no_op` for the same image, `conflict` for another) -> image-ref
//! validation and network check (`start_config_invalid`) -> pull
//! (`image_pull_failed`) -> limits from image labels -> state directory ->
//! a container of the same name (removed when the record is stopped/removed,
//! adopted when it is ours and unrecorded, else `conflict`) -> create and start
//! (`container_start_failed`) -> one transaction: record (compare-and-set),
//! operation log, health snapshot and `container_started` event. A failed
//! commit removes the container again. Docker unreachable is
//! `docker_unavailable` at any step.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::adapters::postgres::{append_operation, upsert_running_record, Database, StoreError};
use crate::adapters::redis::{Lease, LeaseStore};
use crate::config::Config;
use crate::domain::{
    AdminIntent, ErrorCode, GameId, HealthDetails, HealthEvent, ImageRef, JobResult,
    NotificationType, OpKind, OpSource, OperationEntry, Outcome, ResourceLimits, RuntimeRecord,
    RuntimeStatus,
};
use crate::outbox::Publisher;
use crate::ports::{
    BindMount, ContainerEngine, ContainerInfo, ContainerSpec, EngineError, PullPolicy,
};
use crate::telemetry::{Metrics, OperationLabels};

/// Labels put on every engine container (frozen by the Go service).
pub const LABEL_OWNER: &str = "com.galaxy.owner";
pub const LABEL_OWNER_VALUE: &str = "rtmanager";
pub const LABEL_KIND: &str = "com.galaxy.kind";
pub const LABEL_KIND_VALUE: &str = "game-engine";
pub const LABEL_GAME_ID: &str = "com.galaxy.game_id";
pub const LABEL_ENGINE_IMAGE_REF: &str = "com.galaxy.engine_image_ref";
pub const LABEL_STARTED_AT_MS: &str = "com.galaxy.started_at_ms";
/// v1 engines also read the state path from this variable.
pub const BACK_COMPAT_STATE_ENV: &str = "STORAGE_PATH";

/// Start settings, resolved and validated from [`Config`] once.
#[derive(Debug, Clone)]
pub struct StartSettings {
    pub network: String,
    pub log_driver: String,
    pub log_opts: HashMap<String, String>,
    pub pull_policy: PullPolicy,
    pub state_root: PathBuf,
    pub state_dir_mode: u32,
    pub state_owner: (u32, u32),
    pub mount_path: String,
    pub state_env_name: String,
    pub default_limits: ResourceLimits,
}

impl StartSettings {
    pub fn from_config(config: &Config) -> Result<Self, crate::config::ConfigError> {
        let err = |e: String| crate::config::ConfigError(e);
        Ok(Self {
            network: config.docker_network.clone(),
            log_driver: config.docker_log_driver.clone(),
            log_opts: config.log_opts().map_err(err)?.into_iter().collect(),
            pull_policy: config.image_pull_policy,
            state_root: PathBuf::from(&config.game_state_root),
            state_dir_mode: config.state_dir_mode().map_err(err)?,
            state_owner: (config.game_state_owner_uid, config.game_state_owner_gid),
            mount_path: config.engine_state_mount_path.clone(),
            state_env_name: config.engine_state_env_name.clone(),
            default_limits: config.default_limits()?,
        })
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

/// The deterministic result of one start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartOutcome {
    pub outcome: Outcome,
    /// `replay_no_op` on an idempotent success; the failure code otherwise.
    pub error_code: Option<ErrorCode>,
    pub error_message: String,
    /// The record installed or found (successes only).
    pub record: Option<RuntimeRecord>,
}

impl StartOutcome {
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

/// Best-effort diagnostic GET of the game at Lobby; never fails a start.
#[derive(Clone)]
pub struct LobbyClient {
    http: reqwest::Client,
    base_url: String,
}

impl LobbyClient {
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(timeout)
                .build()?,
            base_url: base_url.trim_end_matches('/').to_owned(),
        })
    }

    async fn log_game(&self, game_id: &GameId) {
        let url = format!("{}/api/v1/internal/games/{}", self.base_url, game_id);
        match self.http.get(&url).send().await {
            Ok(resp) => {
                tracing::debug!(game_id = %game_id, status = resp.status().as_u16(), "lobby diagnostic fetched")
            }
            Err(e) => {
                tracing::debug!(game_id = %game_id, error = %e, "lobby diagnostic fetch failed")
            }
        }
    }
}

#[derive(Clone)]
pub struct StartService {
    engine: Arc<dyn ContainerEngine>,
    db: Database,
    publisher: Publisher,
    leases: LeaseStore,
    lobby: Option<LobbyClient>,
    settings: StartSettings,
    metrics: Metrics,
}

/// A step failure on its way to becoming a [`StartOutcome`].
struct Failure {
    code: ErrorCode,
    message: String,
    container_id: String,
}

fn failure(code: ErrorCode, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
        container_id: String::new(),
    }
}

/// Docker unreachable is `docker_unavailable` whatever the step; any other
/// engine error takes the step's own code.
fn engine_failure(step_code: ErrorCode, context: &str) -> impl Fn(EngineError) -> Failure + '_ {
    move |e| match e {
        EngineError::Unavailable(m) => {
            failure(ErrorCode::DockerUnavailable, format!("{context}: {m}"))
        }
        other => failure(step_code, format!("{context}: {other}")),
    }
}

impl StartService {
    pub fn new(
        engine: Arc<dyn ContainerEngine>,
        db: Database,
        publisher: Publisher,
        leases: LeaseStore,
        lobby: Option<LobbyClient>,
        settings: StartSettings,
        metrics: Metrics,
    ) -> Self {
        Self {
            engine,
            db,
            publisher,
            leases,
            lobby,
            settings,
            metrics,
        }
    }

    pub fn leases(&self) -> &LeaseStore {
        &self.leases
    }

    /// Takes the game's lease and runs the start. Every business outcome is in
    /// the returned value; this never panics on bad input.
    pub async fn handle(&self, req: &StartRequest) -> StartOutcome {
        self.handle_requested(req, None).await
    }

    /// [`Self::handle`] for a job that says when it was requested: a start
    /// requested before a stop tombstone of the same game is a `conflict`
    /// (the stop was processed first, out of order).
    pub async fn handle_requested(
        &self,
        req: &StartRequest,
        requested_at_ms: Option<i64>,
    ) -> StartOutcome {
        let started_at = Utc::now();
        let lease = match self.leases.try_acquire(&req.game_id).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                return self
                    .record_failure(
                        req,
                        started_at,
                        failure(
                            ErrorCode::Conflict,
                            "another lifecycle operation is in progress for this game",
                        ),
                    )
                    .await
            }
            Err(e) => {
                return self
                    .record_failure(
                        req,
                        started_at,
                        failure(
                            ErrorCode::ServiceUnavailable,
                            format!("acquire game lease: {e}"),
                        ),
                    )
                    .await
            }
        };
        if let Some(requested_at_ms) = requested_at_ms {
            match crate::adapters::postgres::stop_tombstone(self.db.pool(), &req.game_id).await {
                Ok(Some(stopped_at_ms)) if stopped_at_ms > requested_at_ms => {
                    lease.release().await;
                    let message = format!(
                        "a stop requested at {stopped_at_ms} supersedes this start requested at {requested_at_ms}"
                    );
                    return self
                        .record_failure(req, started_at, failure(ErrorCode::Conflict, message))
                        .await;
                }
                Ok(_) => {}
                Err(e) => {
                    lease.release().await;
                    let message = format!("read stop tombstone: {e}");
                    return self
                        .record_failure(req, started_at, failure(e.code(), message))
                        .await;
                }
            }
        }
        let outcome = self.run(req, started_at, Some(&lease)).await;
        lease.release().await;
        outcome
    }

    /// The start steps for a caller that already holds the lease (restart and
    /// patch hold one outer lease). `lease`, when given, is checked before commit.
    pub async fn run(
        &self,
        req: &StartRequest,
        started_at: DateTime<Utc>,
        lease: Option<&Lease>,
    ) -> StartOutcome {
        match self.steps(req, started_at, lease).await {
            Ok(outcome) => outcome,
            Err(f) => self.record_failure(req, started_at, f).await,
        }
    }

    async fn steps(
        &self,
        req: &StartRequest,
        started_at: DateTime<Utc>,
        lease: Option<&Lease>,
    ) -> Result<StartOutcome, Failure> {
        let existing = self
            .db
            .get_record(&req.game_id)
            .await
            .map_err(|e| failure(e.code(), format!("load runtime record: {e}")))?;
        if let Some(record) = existing
            .as_ref()
            .filter(|r| r.status == RuntimeStatus::Running)
        {
            let current = record.current_image_ref.as_deref().unwrap_or("");
            if current == req.image_ref {
                return Ok(self.record_replay(req, started_at, record.clone()).await);
            }
            return Err(failure(
                ErrorCode::Conflict,
                format!("runtime already running with image_ref {current:?}"),
            ));
        }
        if let Some(lobby) = &self.lobby {
            lobby.log_game(&req.game_id).await;
        }
        let image = ImageRef::parse(&req.image_ref).map_err(|e| {
            failure(
                ErrorCode::StartConfigInvalid,
                format!("invalid image_ref: {e}"),
            )
        })?;
        let network_ok = self
            .engine
            .network_exists(&self.settings.network)
            .await
            .map_err(engine_failure(
                ErrorCode::ServiceUnavailable,
                "check docker network",
            ))?;
        if !network_ok {
            return Err(failure(
                ErrorCode::StartConfigInvalid,
                format!("docker network {:?} is missing", self.settings.network),
            ));
        }
        self.engine
            .ensure_image(image.as_str(), self.settings.pull_policy)
            .await
            .map_err(engine_failure(ErrorCode::ImagePullFailed, "pull image"))?;
        let image_info = self
            .engine
            .inspect_image(image.as_str())
            .await
            .map_err(engine_failure(ErrorCode::ImagePullFailed, "inspect image"))?;
        let (limits, rejected) =
            ResourceLimits::from_image_labels(&image_info.labels, self.settings.default_limits);
        for bad in rejected {
            tracing::warn!(game_id = %req.game_id, image_ref = %image, error = %bad, "bad image limit label; using the default");
        }
        let state_path = self.prepare_state_dir(&req.game_id).map_err(|e| {
            failure(
                ErrorCode::StartConfigInvalid,
                format!("prepare state directory: {e}"),
            )
        })?;

        let container = match self
            .settle_existing_container(req, existing.as_ref())
            .await?
        {
            Some(adopted) => adopted,
            None => {
                let spec = self.container_spec(req, &state_path, limits, started_at);
                self.engine.run(&spec).await.map_err(engine_failure(
                    ErrorCode::ContainerStartFailed,
                    "create and start container",
                ))?
            }
        };

        if lease.is_some_and(Lease::is_lost) {
            self.rollback(&req.game_id, &container.id).await;
            return Err(Failure {
                code: ErrorCode::Conflict,
                message: "game lease lost before the record was written".into(),
                container_id: container.id,
            });
        }
        let record = RuntimeRecord {
            game_id: req.game_id.clone(),
            status: RuntimeStatus::Running,
            current_container_id: Some(container.id.clone()),
            current_image_ref: Some(req.image_ref.clone()),
            engine_endpoint: req.game_id.engine_endpoint(),
            state_path: state_path.display().to_string(),
            docker_network: self.settings.network.clone(),
            started_at: Some(container.started_at.unwrap_or(started_at)),
            stopped_at: None,
            removed_at: None,
            last_op_at: Utc::now(),
            created_at: existing
                .as_ref()
                .map(|r| r.created_at)
                .unwrap_or(started_at),
        };
        match self.commit_start(req, started_at, &record).await {
            Ok(true) => {}
            Ok(false) => {
                self.rollback(&req.game_id, &container.id).await;
                return Err(Failure {
                    code: ErrorCode::Conflict,
                    message: "runtime record became running concurrently".into(),
                    container_id: container.id,
                });
            }
            Err(e) => {
                self.rollback(&req.game_id, &container.id).await;
                let code = match e.code() {
                    ErrorCode::ServiceUnavailable => ErrorCode::ServiceUnavailable,
                    _ => ErrorCode::ContainerStartFailed,
                };
                return Err(Failure {
                    code,
                    message: format!("upsert runtime record: {e}"),
                    container_id: container.id,
                });
            }
        }
        self.publisher.wake();
        self.count(Outcome::Success, None);
        tracing::info!(game_id = %req.game_id, container_id = %container.id, image_ref = %req.image_ref, op_source = %req.op_source, "runtime started");
        Ok(StartOutcome {
            outcome: Outcome::Success,
            error_code: None,
            error_message: String::new(),
            record: Some(record),
        })
    }

    /// Handles a container already named `galaxy-game-{id}`. Returns it when it
    /// is adopted, `None` when the name is free (again).
    async fn settle_existing_container(
        &self,
        req: &StartRequest,
        record: Option<&RuntimeRecord>,
    ) -> Result<Option<ContainerInfo>, Failure> {
        let name = req.game_id.container_name();
        let found = self
            .engine
            .inspect_container(&name)
            .await
            .map_err(engine_failure(
                ErrorCode::ContainerStartFailed,
                "inspect existing container",
            ))?;
        let Some(found) = found else { return Ok(None) };
        if found.labels.get(LABEL_OWNER).map(String::as_str) != Some(LABEL_OWNER_VALUE) {
            return Err(failure(
                ErrorCode::Conflict,
                format!(
                    "container {name} exists and is not managed by rtmanager; it is left untouched"
                ),
            ));
        }
        match record {
            // The kept container of a stopped or removed runtime: replace it.
            Some(_) => {
                self.engine.remove(&found.id).await.map_err(engine_failure(
                    ErrorCode::ContainerStartFailed,
                    "remove previous container",
                ))?;
                Ok(None)
            }
            // An orphan of a crash between create and record: adopt it when it
            // runs the requested image.
            None => {
                let image = found.labels.get(LABEL_ENGINE_IMAGE_REF).map(String::as_str);
                if image != Some(req.image_ref.as_str()) {
                    return Err(failure(
                        ErrorCode::Conflict,
                        format!(
                            "unrecorded rtmanager container {name} runs image {:?}",
                            image.unwrap_or("")
                        ),
                    ));
                }
                if found.state != "running" {
                    self.engine.start(&found.id).await.map_err(engine_failure(
                        ErrorCode::ContainerStartFailed,
                        "start adopted container",
                    ))?;
                }
                let adopted = self
                    .engine
                    .inspect_container(&found.id)
                    .await
                    .map_err(engine_failure(
                        ErrorCode::ContainerStartFailed,
                        "inspect adopted container",
                    ))?
                    .ok_or_else(|| {
                        failure(
                            ErrorCode::ContainerStartFailed,
                            "adopted container vanished",
                        )
                    })?;
                tracing::info!(game_id = %req.game_id, container_id = %adopted.id, "adopted an unrecorded rtmanager container");
                Ok(Some(adopted))
            }
        }
    }

    fn container_spec(
        &self,
        req: &StartRequest,
        state_path: &std::path::Path,
        limits: ResourceLimits,
        started_at: DateTime<Utc>,
    ) -> ContainerSpec {
        let name = req.game_id.container_name();
        let mount = self.settings.mount_path.clone();
        ContainerSpec {
            hostname: name.clone(),
            name,
            image: req.image_ref.clone(),
            network: self.settings.network.clone(),
            env: vec![
                (self.settings.state_env_name.clone(), mount.clone()),
                (BACK_COMPAT_STATE_ENV.to_owned(), mount.clone()),
            ],
            labels: HashMap::from([
                (LABEL_OWNER.to_owned(), LABEL_OWNER_VALUE.to_owned()),
                (LABEL_KIND.to_owned(), LABEL_KIND_VALUE.to_owned()),
                (LABEL_GAME_ID.to_owned(), req.game_id.to_string()),
                (LABEL_ENGINE_IMAGE_REF.to_owned(), req.image_ref.clone()),
                (
                    LABEL_STARTED_AT_MS.to_owned(),
                    started_at.timestamp_millis().to_string(),
                ),
            ]),
            mounts: vec![BindMount {
                host_path: state_path.display().to_string(),
                container_path: mount,
            }],
            log_driver: self.settings.log_driver.clone(),
            log_opts: self.settings.log_opts.clone(),
            limits,
        }
    }

    /// `<state_root>/<game_id>` with the configured mode and owner. The game id
    /// is validated, so the join cannot leave the root.
    fn prepare_state_dir(&self, game_id: &GameId) -> std::io::Result<PathBuf> {
        let path = self.settings.state_root.join(game_id.as_str());
        std::fs::create_dir_all(&path)?;
        std::fs::set_permissions(
            &path,
            std::fs::Permissions::from_mode(self.settings.state_dir_mode),
        )?;
        let (uid, gid) = self.settings.state_owner;
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
        Ok(path)
    }

    /// Record, operation log and `container_started` in one transaction.
    async fn commit_start(
        &self,
        req: &StartRequest,
        started_at: DateTime<Utc>,
        record: &RuntimeRecord,
    ) -> Result<bool, StoreError> {
        let container_id = record.current_container_id.clone().unwrap_or_default();
        let mut tx = self.db.begin().await?;
        if !upsert_running_record(&mut tx, record).await? {
            return Ok(false);
        }
        append_operation(
            &mut tx,
            &self.entry(req, started_at, Outcome::Success, None, "", &container_id),
        )
        .await?;
        let event = HealthEvent {
            game_id: req.game_id.clone(),
            container_id,
            occurred_at_ms: record.started_at.unwrap_or(started_at).timestamp_millis(),
            details: HealthDetails::ContainerStarted {
                image_ref: req.image_ref.clone(),
            },
        };
        self.publisher.stage_health(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn rollback(&self, game_id: &GameId, container_id: &str) {
        if let Err(e) = self.engine.remove(container_id).await {
            // The reconciler adopts or disposes what is left.
            tracing::error!(game_id = %game_id, container_id, error = %e, "rollback of the new container failed");
        }
    }

    fn entry(
        &self,
        req: &StartRequest,
        started_at: DateTime<Utc>,
        outcome: Outcome,
        error_code: Option<ErrorCode>,
        error_message: &str,
        container_id: &str,
    ) -> OperationEntry {
        OperationEntry {
            game_id: req.game_id.clone(),
            op_kind: OpKind::Start,
            op_source: req.op_source,
            source_ref: req.source_ref.clone(),
            image_ref: req.image_ref.clone(),
            container_id: container_id.to_owned(),
            outcome,
            error_code,
            error_message: error_message.to_owned(),
            started_at,
            finished_at: Utc::now(),
        }
    }

    async fn record_replay(
        &self,
        req: &StartRequest,
        started_at: DateTime<Utc>,
        record: RuntimeRecord,
    ) -> StartOutcome {
        let container_id = record.current_container_id.clone().unwrap_or_default();
        let entry = self.entry(
            req,
            started_at,
            Outcome::Success,
            Some(ErrorCode::ReplayNoOp),
            "",
            &container_id,
        );
        if let Err(e) = self.db.append_operation(&entry).await {
            tracing::error!(game_id = %req.game_id, error = %e, "operation log append failed");
        }
        self.count(Outcome::Success, Some(ErrorCode::ReplayNoOp));
        tracing::info!(game_id = %req.game_id, container_id, "runtime start replay no-op");
        StartOutcome {
            outcome: Outcome::Success,
            error_code: Some(ErrorCode::ReplayNoOp),
            error_message: String::new(),
            record: Some(record),
        }
    }

    /// The failure's operation-log row and admin intent, in one transaction.
    async fn record_failure(
        &self,
        req: &StartRequest,
        started_at: DateTime<Utc>,
        f: Failure,
    ) -> StartOutcome {
        let entry = self.entry(
            req,
            started_at,
            Outcome::Failure,
            Some(f.code),
            &f.message,
            &f.container_id,
        );
        let intent =
            NotificationType::for_start_failure(f.code).map(|notification_type| AdminIntent {
                notification_type,
                game_id: req.game_id.clone(),
                image_ref: req.image_ref.clone(),
                error_code: f.code,
                error_message: f.message.clone(),
                attempted_at_ms: entry.finished_at.timestamp_millis(),
            });
        let recorded: Result<(), StoreError> = async {
            let mut tx = self.db.begin().await?;
            append_operation(&mut tx, &entry).await?;
            if let Some(intent) = &intent {
                crate::outbox::enqueue(&mut tx, &self.publisher.intent_message(intent)).await?;
            }
            tx.commit().await?;
            Ok(())
        }
        .await;
        match recorded {
            Ok(()) => self.publisher.wake(),
            Err(e) => {
                tracing::error!(game_id = %req.game_id, error = %e, "recording the failed start failed")
            }
        }
        self.count(Outcome::Failure, Some(f.code));
        tracing::warn!(game_id = %req.game_id, image_ref = %req.image_ref, op_source = %req.op_source, error_code = %f.code, error_message = %f.message, "runtime start failed");
        StartOutcome {
            outcome: Outcome::Failure,
            error_code: Some(f.code),
            error_message: f.message,
            record: None,
        }
    }

    fn count(&self, outcome: Outcome, code: Option<ErrorCode>) {
        self.metrics
            .operations
            .get_or_create(&OperationLabels {
                op_kind: OpKind::Start.as_str().into(),
                outcome: outcome.as_str().into(),
                error_code: code.map(ErrorCode::as_str).unwrap_or("").into(),
            })
            .inc();
    }
}
