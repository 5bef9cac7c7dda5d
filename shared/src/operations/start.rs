//! `start`: lease (`conflict` when busy, `service_unavailable` when Redis is
//! away) -> record check (`replay_no_op` for the same image, `conflict` for
//! another) -> image-ref validation and network check (`start_config_invalid`)
//! -> pull (`image_pull_failed`) -> limits from image labels -> state
//! directory -> a container of the same name (removed when the record is
//! stopped/removed, adopted when it is ours and unrecorded, else `conflict`)
//! -> create and start (`container_start_failed`) -> one unit of work:
//! record (compare-and-set), operation log, health snapshot and
//! `container_started`. A failed commit is re-read before compensating: the
//! container is removed only when the record does not name it (and kept for
//! the reconciler when the lease was lost or the commit fenced). A replayed
//! start moves the game's start request time forward. Docker unreachable is
//! `docker_unavailable` at any step.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::common::{engine_failure, fail, store_fail, store_failure, Done, Failure};
use super::{OperationOutcome, OperationRequest, Operations, StartRequest};
use crate::adapters::postgres::StoreError;
use crate::domain::labels::*;
use crate::domain::{
    ErrorCode, GameId, HealthEvent, HealthSource, ImageRef, OpKind, OperationEntry, Outcome,
    ResourceLimits, RuntimeRecord, RuntimeStatus,
};
use crate::game_lock::GameLock;
use crate::ports::{BindMount, ContainerInfo, ContainerSpec, PullPolicy};
use crate::telemetry::steps;

/// How engine containers are made.
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

impl StartRequest {
    pub fn operation(&self) -> OperationRequest {
        OperationRequest {
            game_id: self.game_id.clone(),
            op_source: self.op_source,
            source_ref: self.source_ref.clone(),
        }
    }
}

impl Operations {
    /// Takes the game's lease and runs the start. Every business outcome is in
    /// the returned value; this never panics on bad input.
    pub async fn start(&self, req: &StartRequest) -> OperationOutcome {
        self.start_requested(req, None).await
    }

    /// [`Self::start`] for a job that says when it was requested: a start
    /// requested before a stop tombstone of the same game is a `conflict`
    /// (the stop was processed first, out of order).
    pub async fn start_requested(
        &self,
        req: &StartRequest,
        requested_at_ms: Option<i64>,
    ) -> OperationOutcome {
        let op = req.operation();
        self.locked(
            &op,
            OpKind::Start,
            &req.image_ref,
            async |lock, started_at| {
                if let Some(requested_at_ms) = requested_at_ms {
                    self.check_tombstone(&req.game_id, requested_at_ms).await?;
                }
                self.start_steps(req, requested_at_ms, started_at, lock)
                    .await
            },
        )
        .await
    }

    /// The start of a restart or patch, under the caller's outer lock.
    pub(super) async fn start_under(
        &self,
        req: &StartRequest,
        lock: &GameLock,
    ) -> OperationOutcome {
        let started_at = Utc::now();
        let result = self.start_steps(req, None, started_at, lock).await;
        self.finish(
            &req.operation(),
            OpKind::Start,
            &req.image_ref,
            started_at,
            result,
        )
        .await
    }

    async fn check_tombstone(&self, game_id: &GameId, requested_at_ms: i64) -> Result<(), Failure> {
        let tombstone = self
            .db
            .stop_tombstone(game_id)
            .await
            .map_err(store_failure("read stop tombstone"))?;
        match tombstone {
            Some(stopped_at_ms) if stopped_at_ms > requested_at_ms => Err(fail(
                ErrorCode::Conflict,
                format!(
                    "a stop requested at {stopped_at_ms} supersedes this start requested at {requested_at_ms}"
                ),
            )),
            _ => Ok(()),
        }
    }

    async fn start_steps(
        &self,
        req: &StartRequest,
        requested_at_ms: Option<i64>,
        started_at: DateTime<Utc>,
        lock: &GameLock,
    ) -> Result<Done, Failure> {
        let settings = &self.settings.start;
        let existing = self.load_record(&req.game_id).await?;
        steps::mark("record");
        if let Some(record) = existing
            .as_ref()
            .filter(|r| r.status == RuntimeStatus::Running)
        {
            let current = record.current_image_ref.as_deref().unwrap_or("");
            if current == req.image_ref {
                // This request is answered by the running game: it is the
                // newest start, so an older stop processed after it must not
                // stop the game (stop compares against `start_requests`).
                if let Some(at) = requested_at_ms {
                    self.put_start_request(&req.game_id, at, lock).await?;
                }
                return Ok(Done::replay(Some(record.clone())));
            }
            return Err(fail(
                ErrorCode::Conflict,
                format!("runtime already running with image_ref {current:?}"),
            ));
        }
        if let Some(lobby) = &self.lobby {
            lobby.log_game(&req.game_id).await;
        }
        let image = ImageRef::parse(&req.image_ref).map_err(|e| {
            fail(
                ErrorCode::StartConfigInvalid,
                format!("invalid image_ref: {e}"),
            )
        })?;
        let network_ok = self
            .engine
            .network_exists(&settings.network)
            .await
            .map_err(engine_failure(
                ErrorCode::ServiceUnavailable,
                "check docker network",
            ))?;
        if !network_ok {
            return Err(fail(
                ErrorCode::StartConfigInvalid,
                format!("docker network {:?} is missing", settings.network),
            ));
        }
        crate::failpoints::crash_point("start-before-pull");
        self.engine
            .ensure_image(&image.for_docker(), settings.pull_policy)
            .await
            .map_err(engine_failure(ErrorCode::ImagePullFailed, "pull image"))?;
        let image_info = self
            .engine
            .inspect_image(&image.for_docker())
            .await
            .map_err(engine_failure(ErrorCode::ImagePullFailed, "inspect image"))?;
        steps::mark("inspects");
        let (limits, rejected) =
            ResourceLimits::from_image_labels(&image_info.labels, settings.default_limits);
        for bad in rejected {
            tracing::warn!(game_id = %req.game_id, image_ref = %image, error = %bad, "bad image limit label; using the default");
        }
        let state_path = prepare_state_dir(settings, &req.game_id).map_err(|e| {
            fail(
                ErrorCode::StartConfigInvalid,
                "prepare state directory: it could not be created or owned (see the log)",
            )
            .with_detail(e)
        })?;
        steps::mark("state_dir");

        let settled = self
            .settle_existing_container(req, existing.as_ref())
            .await?;
        steps::mark("existing");
        let container = match settled {
            Some(adopted) => adopted,
            None => {
                // The adapter marks `create`, `start` and `inspect_started`.
                let spec = container_spec(settings, req, &image, &state_path, limits, started_at);
                self.engine.run(&spec).await.map_err(engine_failure(
                    ErrorCode::ContainerStartFailed,
                    "create and start container",
                ))?
            }
        };

        crate::failpoints::crash_point("start-after-create");
        if lock.is_lost() {
            // Another holder may own the game now and be settling this very
            // container: leave it to that holder or the reconciler.
            return Err(fail(
                ErrorCode::Conflict,
                "game lease lost before the record was written; the container is left to the reconciler",
            )
            .with_container(&container.id));
        }
        let record = RuntimeRecord {
            game_id: req.game_id.clone(),
            status: RuntimeStatus::Running,
            current_container_id: Some(container.id.clone()),
            current_image_ref: Some(req.image_ref.clone()),
            engine_endpoint: req.game_id.engine_endpoint(),
            state_path: state_path.display().to_string(),
            docker_network: settings.network.clone(),
            started_at: Some(container.started_at.unwrap_or(started_at)),
            stopped_at: None,
            removed_at: None,
            last_op_at: Utc::now(),
            created_at: existing
                .as_ref()
                .map(|r| r.created_at)
                .unwrap_or(started_at),
        };
        let committed = self
            .commit_start(req, requested_at_ms, started_at, &record, lock)
            .await;
        steps::mark("commit");
        crate::failpoints::crash_point("start-after-commit");
        // Only a failed COMMIT can have written our rows; a lost
        // compare-and-set wrote nothing of ours.
        let ours_if_recorded = committed.is_err();
        let failure = match committed {
            Ok(true) => None,
            Ok(false) => Some(fail(
                ErrorCode::Conflict,
                "runtime record became running concurrently",
            )),
            Err(e @ StoreError::Fenced { .. }) => {
                // A later holder owns the game: what it found is its to settle.
                return Err(fail(
                    ErrorCode::Conflict,
                    format!("game lease lost and taken over before the commit ({e}); the container is left to the new holder"),
                )
                .with_container(&container.id));
            }
            Err(e) => {
                let code = match e.code() {
                    ErrorCode::ServiceUnavailable => ErrorCode::ServiceUnavailable,
                    _ => ErrorCode::ContainerStartFailed,
                };
                Some(store_fail(&e, Some(code), "upsert runtime record"))
            }
        };
        let Some(failure) = failure else {
            return Ok(Done {
                logged: true,
                ..Done::applied(Some(record), None)
            });
        };
        // A failed COMMIT may have gone through (the reply lost as
        // PostgreSQL restarted), and a concurrent writer may have recorded
        // this very container: re-read before compensating.
        match self.db.get_record(&req.game_id).await {
            Ok(Some(now)) if names(&now, &container.id) => {
                tracing::info!(game_id = %req.game_id, container_id = %container.id, "the start's commit failed but the record names its container: the game runs it");
                Ok(Done {
                    logged: ours_if_recorded,
                    ..Done::applied(Some(now), None)
                })
            }
            Ok(_) => {
                self.rollback(&req.game_id, &container.id).await;
                Err(failure.with_container(&container.id))
            }
            Err(e) => {
                tracing::warn!(game_id = %req.game_id, container_id = %container.id, error = %e, "cannot tell whether the start committed; the container is left to the reconciler");
                Err(failure.with_container(&container.id))
            }
        }
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
            return Err(fail(
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
                    return Err(fail(
                        ErrorCode::Conflict,
                        format!(
                            "unrecorded rtmanager container {name} runs image {:?}",
                            image.unwrap_or("")
                        ),
                    ));
                }
                if !found.state.is_running() {
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
                        fail(
                            ErrorCode::ContainerStartFailed,
                            "adopted container vanished",
                        )
                    })?;
                tracing::info!(game_id = %req.game_id, container_id = %adopted.id, "adopted an unrecorded rtmanager container");
                Ok(Some(adopted))
            }
        }
    }

    /// Record, operation log and `container_started` in one unit of work.
    async fn commit_start(
        &self,
        req: &StartRequest,
        requested_at_ms: Option<i64>,
        started_at: DateTime<Utc>,
        record: &RuntimeRecord,
        lock: &GameLock,
    ) -> Result<bool, StoreError> {
        let container_id = record.current_container_id.clone().unwrap_or_default();
        let mut tx = self.outbox.begin().await?;
        tx.fence(lock.fence());
        if !tx.upsert_running_record(record).await? {
            return Ok(false);
        }
        if let Some(at) = requested_at_ms {
            tx.put_start_request(&req.game_id, at).await?;
        }
        tx.append_operation(&OperationEntry {
            game_id: req.game_id.clone(),
            op_kind: OpKind::Start,
            op_source: req.op_source,
            source_ref: req.source_ref.clone(),
            image_ref: req.image_ref.clone(),
            container_id: container_id.clone(),
            outcome: Outcome::Success,
            error_code: None,
            error_message: String::new(),
            started_at,
            finished_at: Utc::now(),
        })
        .await?;
        let at_ms = record.started_at.unwrap_or(started_at).timestamp_millis();
        let event =
            HealthEvent::container_started(&req.game_id, &container_id, at_ms, &req.image_ref);
        tx.stage(&self.outbox.health(HealthSource::Start, &event))
            .await?;
        tx.commit().await?;
        fail::fail_point!("start-commit-reply-lost", |_| Err(StoreError::Unavailable(
            "failpoint: the COMMIT went through, its reply was lost".into()
        )));
        Ok(true)
    }

    /// Moves the game's start request time forward (only forward), fenced.
    async fn put_start_request(
        &self,
        game_id: &GameId,
        requested_at_ms: i64,
        lock: &GameLock,
    ) -> Result<(), Failure> {
        let put = async {
            let mut tx = self.db.begin().await?;
            tx.fence(lock.fence());
            tx.put_start_request(game_id, requested_at_ms).await?;
            tx.commit().await
        };
        put.await.map_err(store_failure("record start request"))
    }

    async fn rollback(&self, game_id: &GameId, container_id: &str) {
        if let Err(e) = self.engine.remove(container_id).await {
            // The reconciler adopts or disposes what is left.
            tracing::error!(game_id = %game_id, container_id, error = %e, "rollback of the new container failed");
        }
    }
}

/// The record is `running` on `container_id`.
fn names(record: &RuntimeRecord, container_id: &str) -> bool {
    record.status == RuntimeStatus::Running
        && record.current_container_id.as_deref() == Some(container_id)
}

fn container_spec(
    settings: &StartSettings,
    req: &StartRequest,
    image: &ImageRef,
    state_path: &Path,
    limits: ResourceLimits,
    started_at: DateTime<Utc>,
) -> ContainerSpec {
    let name = req.game_id.container_name();
    let mount = settings.mount_path.clone();
    ContainerSpec {
        hostname: name.clone(),
        name,
        image: image.for_docker(),
        network: settings.network.clone(),
        env: vec![
            (settings.state_env_name.clone(), mount.clone()),
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
        log_driver: settings.log_driver.clone(),
        log_opts: settings.log_opts.clone(),
        limits,
    }
}

/// `<state_root>/<game_id>` with the configured mode and owner. The game id
/// is validated, so the join cannot leave the root.
fn prepare_state_dir(settings: &StartSettings, game_id: &GameId) -> std::io::Result<PathBuf> {
    let path = settings.state_root.join(game_id.as_str());
    std::fs::create_dir_all(&path)?;
    std::fs::set_permissions(
        &path,
        std::fs::Permissions::from_mode(settings.state_dir_mode),
    )?;
    let (uid, gid) = settings.state_owner;
    std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
    Ok(path)
}
