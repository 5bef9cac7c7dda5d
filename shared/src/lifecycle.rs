//! The rest of the lifecycle: stop, cleanup, restart and patch, on the same
//! model as start (per-game lease, an operation-log row for every outcome,
//! stable codes, idempotent replays, no half-made container).
//!
//! - **stop**: records a stop *intent* (so `docker-events` does not report the
//!   die as a failure), stops gracefully (`RTMANAGER_CONTAINER_STOP_TIMEOUT_SECONDS`,
//!   then kill), `running -> stopped`; the container is kept. A stop for a game
//!   with no record leaves a tombstone with its `requested_at_ms`; a start
//!   requested earlier is then a `conflict` (the jobs run in separate
//!   processes and can be processed out of order). Stopped or removed:
//!   `replay_no_op`.
//! - **cleanup** (`cleanup_container`): stopped runtimes only (`conflict` when
//!   running); removal intent, container removed, `stopped -> removed`; the
//!   state directory is never deleted.
//! - **restart**: one outer lease; inner stop, then inner start of the current
//!   image (the start replaces the kept container under the same name, so the
//!   endpoint stays). Three operation-log rows (outer, inner stop, inner start)
//!   share one correlation id in `source_ref`. `conflict` on a removed record.
//! - **patch**: like restart onto a new image. Both tags must be semver
//!   (`image_ref_not_semver`) with the same major and minor (`semver_patch_only`),
//!   checked before any Docker call; the new image is pulled and inspected
//!   before the old container is stopped; if the new container fails to start
//!   or exits within `RTMANAGER_PATCH_START_GRACE`, the game is brought back
//!   on the old image and the failure is reported (`container_start_failed`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::adapters::postgres::{
    mark_removed, mark_stopped, put_stop_tombstone, Database, StoreError,
};
use crate::adapters::redis::{IntentKind, IntentStore, Lease, LeaseStore};
use crate::domain::{
    ErrorCode, GameId, ImageRef, OpKind, OpSource, OperationEntry, Outcome, RuntimeRecord,
    RuntimeStatus, StopReason,
};
use crate::ports::{ContainerEngine, EngineError, PullPolicy};
use crate::start::{StartOutcome, StartRequest, StartService};
use crate::telemetry::{Metrics, OperationLabels};

/// The outcome of any lifecycle operation (the start service's shape).
pub type OperationOutcome = StartOutcome;

/// Who asks for an operation on which game.
#[derive(Debug, Clone)]
pub struct OperationRequest {
    pub game_id: GameId,
    pub op_source: OpSource,
    /// Stream entry id or REST request id; restart and patch use it as the
    /// correlation id of their three rows.
    pub source_ref: String,
}

#[derive(Clone)]
pub struct LifecycleService {
    start: StartService,
    engine: Arc<dyn ContainerEngine>,
    db: Database,
    leases: LeaseStore,
    intents: IntentStore,
    pull_policy: PullPolicy,
    stop_timeout: Duration,
    patch_grace: Duration,
    metrics: Metrics,
}

struct Failure {
    code: ErrorCode,
    message: String,
}

fn fail(code: ErrorCode, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

fn engine_fail(code: ErrorCode, context: &'static str) -> impl Fn(EngineError) -> Failure {
    move |e| match e {
        EngineError::Unavailable(m) => {
            fail(ErrorCode::DockerUnavailable, format!("{context}: {m}"))
        }
        other => fail(code, format!("{context}: {other}")),
    }
}

fn store_fail(context: &'static str) -> impl Fn(StoreError) -> Failure {
    move |e| fail(e.code(), format!("{context}: {e}"))
}

/// What a successful step hands back: the record and an optional replay code.
struct Done {
    record: Option<RuntimeRecord>,
    code: Option<ErrorCode>,
    image_ref: String,
    container_id: String,
}

impl LifecycleService {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        start: StartService,
        engine: Arc<dyn ContainerEngine>,
        db: Database,
        intents: IntentStore,
        pull_policy: PullPolicy,
        stop_timeout: Duration,
        patch_grace: Duration,
        metrics: Metrics,
    ) -> Self {
        Self {
            leases: start.leases().clone(),
            start,
            engine,
            db,
            intents,
            pull_policy,
            stop_timeout,
            patch_grace,
            metrics,
        }
    }

    pub fn start_service(&self) -> &StartService {
        &self.start
    }

    async fn locked<'a, F, Fut>(
        &'a self,
        req: &'a OperationRequest,
        op: OpKind,
        body: F,
    ) -> OperationOutcome
    where
        F: FnOnce(&'a Self, Lease, DateTime<Utc>) -> Fut,
        Fut: std::future::Future<Output = (Result<Done, Failure>, Lease)>,
    {
        let started_at = Utc::now();
        let lease = match self.leases.try_acquire(&req.game_id).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                let f = fail(
                    ErrorCode::Conflict,
                    "another lifecycle operation is in progress for this game",
                );
                return self.finish(req, op, started_at, Err(f)).await;
            }
            Err(e) => {
                let f = fail(
                    ErrorCode::ServiceUnavailable,
                    format!("acquire game lease: {e}"),
                );
                return self.finish(req, op, started_at, Err(f)).await;
            }
        };
        let (result, lease) = body(self, lease, started_at).await;
        lease.release().await;
        self.finish(req, op, started_at, result).await
    }

    /// Writes the operation's row (unless the step already did in its
    /// transaction) and shapes the outcome.
    async fn finish(
        &self,
        req: &OperationRequest,
        op: OpKind,
        started_at: DateTime<Utc>,
        result: Result<Done, Failure>,
    ) -> OperationOutcome {
        let (outcome, code, message, image, container, record) = match result {
            Ok(done) => (
                Outcome::Success,
                done.code,
                String::new(),
                done.image_ref,
                done.container_id,
                done.record,
            ),
            Err(f) => (
                Outcome::Failure,
                Some(f.code),
                f.message,
                String::new(),
                String::new(),
                None,
            ),
        };
        let entry = OperationEntry {
            game_id: req.game_id.clone(),
            op_kind: op,
            op_source: req.op_source,
            source_ref: req.source_ref.clone(),
            image_ref: image,
            container_id: container,
            outcome,
            error_code: code,
            error_message: message.clone(),
            started_at,
            finished_at: Utc::now(),
        };
        if let Err(e) = self.db.append_operation(&entry).await {
            tracing::error!(game_id = %req.game_id, op_kind = %op, error = %e, "operation log append failed");
        }
        self.metrics
            .operations
            .get_or_create(&OperationLabels {
                op_kind: op.as_str().into(),
                outcome: outcome.as_str().into(),
                error_code: code.map(ErrorCode::as_str).unwrap_or("").into(),
            })
            .inc();
        match outcome {
            Outcome::Success => {
                tracing::info!(game_id = %req.game_id, op_kind = %op, op_source = %req.op_source, error_code = code.map(ErrorCode::as_str).unwrap_or(""), "operation done")
            }
            Outcome::Failure => {
                tracing::warn!(game_id = %req.game_id, op_kind = %op, op_source = %req.op_source, error_code = code.map(ErrorCode::as_str).unwrap_or(""), error_message = %message, "operation failed")
            }
        }
        OperationOutcome {
            outcome,
            error_code: code,
            error_message: message,
            record,
        }
    }

    async fn record(&self, game_id: &GameId) -> Result<Option<RuntimeRecord>, Failure> {
        self.db
            .get_record(game_id)
            .await
            .map_err(store_fail("load runtime record"))
    }

    // --- stop ---------------------------------------------------------------

    pub async fn stop(
        &self,
        req: &OperationRequest,
        reason: StopReason,
        requested_at_ms: Option<i64>,
    ) -> OperationOutcome {
        self.locked(req, OpKind::Stop, |this, lease, _| async move {
            (this.stop_steps(req, reason, requested_at_ms).await, lease)
        })
        .await
    }

    async fn stop_steps(
        &self,
        req: &OperationRequest,
        reason: StopReason,
        requested_at_ms: Option<i64>,
    ) -> Result<Done, Failure> {
        let Some(record) = self.record(&req.game_id).await? else {
            let at = requested_at_ms.unwrap_or_else(|| Utc::now().timestamp_millis());
            let mut conn = self
                .db
                .acquire()
                .await
                .map_err(store_fail("stop tombstone"))?;
            put_stop_tombstone(&mut conn, &req.game_id, at, reason.as_str())
                .await
                .map_err(store_fail("stop tombstone"))?;
            return Ok(Done {
                record: None,
                code: Some(ErrorCode::ReplayNoOp),
                image_ref: String::new(),
                container_id: String::new(),
            });
        };
        let container = record.current_container_id.clone().unwrap_or_default();
        let image = record.current_image_ref.clone().unwrap_or_default();
        if record.status != RuntimeStatus::Running {
            return Ok(Done {
                record: Some(record),
                code: Some(ErrorCode::ReplayNoOp),
                image_ref: image,
                container_id: container,
            });
        }
        self.intents
            .record(IntentKind::Stop, &container)
            .await
            .map_err(|e| {
                fail(
                    ErrorCode::ServiceUnavailable,
                    format!("record stop intent: {e}"),
                )
            })?;
        self.engine
            .stop(&container, self.stop_timeout)
            .await
            .map_err(engine_fail(ErrorCode::Internal, "stop container"))?;
        let mut conn = self
            .db
            .acquire()
            .await
            .map_err(store_fail("mark stopped"))?;
        if !mark_stopped(&mut conn, &req.game_id, &container, Utc::now())
            .await
            .map_err(store_fail("mark stopped"))?
        {
            // The record moved on (an observed exit got there first): stopped anyway.
            tracing::info!(game_id = %req.game_id, "record already left running during the stop");
        }
        let record = self.record(&req.game_id).await?;
        Ok(Done {
            record,
            code: None,
            image_ref: image,
            container_id: container,
        })
    }

    // --- cleanup ------------------------------------------------------------

    pub async fn cleanup(&self, req: &OperationRequest) -> OperationOutcome {
        self.locked(req, OpKind::CleanupContainer, |this, lease, _| async move {
            (this.cleanup_steps(req).await, lease)
        })
        .await
    }

    async fn cleanup_steps(&self, req: &OperationRequest) -> Result<Done, Failure> {
        let record = self.record(&req.game_id).await?.ok_or_else(|| {
            fail(
                ErrorCode::NotFound,
                format!("no runtime record for game {}", req.game_id),
            )
        })?;
        let container = record.current_container_id.clone().unwrap_or_default();
        let image = record.current_image_ref.clone().unwrap_or_default();
        match record.status {
            RuntimeStatus::Removed => {
                return Ok(Done {
                    record: Some(record),
                    code: Some(ErrorCode::ReplayNoOp),
                    image_ref: image,
                    container_id: container,
                })
            }
            RuntimeStatus::Running => {
                return Err(fail(
                    ErrorCode::Conflict,
                    "the runtime is running; stop it before cleanup",
                ))
            }
            RuntimeStatus::Stopped => {}
        }
        self.intents
            .record(IntentKind::Removal, &container)
            .await
            .map_err(|e| {
                fail(
                    ErrorCode::ServiceUnavailable,
                    format!("record removal intent: {e}"),
                )
            })?;
        self.engine
            .remove(&container)
            .await
            .map_err(engine_fail(ErrorCode::Internal, "remove container"))?;
        let mut conn = self
            .db
            .acquire()
            .await
            .map_err(store_fail("mark removed"))?;
        mark_removed(&mut conn, &req.game_id, &container, Utc::now())
            .await
            .map_err(store_fail("mark removed"))?;
        let record = self.record(&req.game_id).await?;
        Ok(Done {
            record,
            code: None,
            image_ref: image,
            container_id: container,
        })
    }

    // --- restart and patch --------------------------------------------------

    pub async fn restart(&self, req: &OperationRequest) -> OperationOutcome {
        self.locked(req, OpKind::Restart, |this, lease, _| async move {
            let result = this.recreate(req, None, &lease).await;
            (result, lease)
        })
        .await
    }

    pub async fn patch(&self, req: &OperationRequest, new_image_ref: &str) -> OperationOutcome {
        self.locked(req, OpKind::Patch, |this, lease, _| async move {
            let result = this.recreate(req, Some(new_image_ref), &lease).await;
            (result, lease)
        })
        .await
    }

    /// Inner stop, then inner start of the current (restart) or new (patch)
    /// image, under the caller's outer lease.
    async fn recreate(
        &self,
        req: &OperationRequest,
        new_image: Option<&str>,
        lease: &Lease,
    ) -> Result<Done, Failure> {
        let record = self.record(&req.game_id).await?.ok_or_else(|| {
            fail(
                ErrorCode::NotFound,
                format!("no runtime record for game {}", req.game_id),
            )
        })?;
        if record.status == RuntimeStatus::Removed {
            return Err(fail(
                ErrorCode::Conflict,
                "the runtime was removed; start it instead",
            ));
        }
        let current = record.current_image_ref.clone().unwrap_or_default();
        let target = match new_image {
            None => current.clone(),
            Some(new) => {
                check_patch(&current, new)?;
                // Pull and inspect before touching the running container.
                self.engine
                    .ensure_image(new, self.pull_policy)
                    .await
                    .map_err(engine_fail(ErrorCode::ImagePullFailed, "pull new image"))?;
                self.engine
                    .inspect_image(new)
                    .await
                    .map_err(engine_fail(ErrorCode::ImagePullFailed, "inspect new image"))?;
                new.to_owned()
            }
        };
        let inner = OperationRequest {
            game_id: req.game_id.clone(),
            op_source: req.op_source,
            source_ref: req.source_ref.clone(),
        };
        let stopped_at = Utc::now();
        let stop = self
            .stop_steps(&inner, StopReason::AdminRequest, None)
            .await;
        let stop_failed = stop.as_ref().err().map(|f| (f.code, f.message.clone()));
        self.finish(&inner, OpKind::Stop, stopped_at, stop).await;
        if let Some((code, message)) = stop_failed {
            return Err(fail(code, format!("inner stop: {message}")));
        }

        let started = self.inner_start(req, &target, lease).await;
        if started.outcome == Outcome::Success && new_image.is_some() {
            if let Some(exited) = self.exited_within_grace(&started).await {
                return self.roll_back(req, &current, lease, exited).await;
            }
        }
        if started.outcome == Outcome::Success {
            let record = started.record;
            let container_id = record
                .as_ref()
                .and_then(|r| r.current_container_id.clone())
                .unwrap_or_default();
            return Ok(Done {
                record,
                code: None,
                image_ref: target,
                container_id,
            });
        }
        let code = started.error_code.unwrap_or(ErrorCode::Internal);
        if new_image.is_some() {
            return self
                .roll_back(
                    req,
                    &current,
                    lease,
                    format!("{code}: {}", started.error_message),
                )
                .await;
        }
        Err(fail(
            code,
            format!("inner start: {}", started.error_message),
        ))
    }

    async fn inner_start(
        &self,
        req: &OperationRequest,
        image: &str,
        lease: &Lease,
    ) -> StartOutcome {
        let start = StartRequest {
            game_id: req.game_id.clone(),
            image_ref: image.to_owned(),
            op_source: req.op_source,
            source_ref: req.source_ref.clone(),
        };
        self.start.run(&start, Utc::now(), Some(lease)).await
    }

    /// `Some(reason)` when the new container is not running after the grace.
    async fn exited_within_grace(&self, started: &StartOutcome) -> Option<String> {
        let container = started.record.as_ref()?.current_container_id.clone()?;
        tokio::time::sleep(self.patch_grace).await;
        match self.engine.inspect_container(&container).await {
            Ok(Some(info)) if info.state == "running" => None,
            Ok(Some(info)) => Some(format!(
                "the new container exited with code {} within the grace",
                info.exit_code
            )),
            Ok(None) => Some("the new container vanished within the grace".into()),
            Err(e) => Some(format!("inspect of the new container failed: {e}")),
        }
    }

    /// Brings the game back on `old_image` after a failed patch.
    async fn roll_back(
        &self,
        req: &OperationRequest,
        old_image: &str,
        lease: &Lease,
        why: String,
    ) -> Result<Done, Failure> {
        if let Ok(Some(record)) = self.db.get_record(&req.game_id).await {
            if record.status == RuntimeStatus::Running {
                // The new container died on its own: the record follows (CAS).
                let container = record.current_container_id.unwrap_or_default();
                if let Ok(mut conn) = self.db.acquire().await {
                    let _ = mark_stopped(&mut conn, &req.game_id, &container, Utc::now()).await;
                }
            }
        }
        let back = self.inner_start(req, old_image, lease).await;
        let restored = if back.outcome == Outcome::Success {
            format!("rolled back to {old_image}")
        } else {
            format!("rollback to {old_image} failed too: {}", back.error_message)
        };
        Err(fail(
            ErrorCode::ContainerStartFailed,
            format!("patch failed ({why}); {restored}"),
        ))
    }
}

/// Both tags semver, same major and minor: checked before any Docker call.
pub fn check_patch(current: &str, new: &str) -> Result<(), ErrorCode> {
    let version = |raw: &str| {
        ImageRef::parse(raw)
            .ok()
            .and_then(|r| r.tag().map(str::to_owned))
            .and_then(|t| semver::Version::parse(t.trim_start_matches('v')).ok())
    };
    match (version(current), version(new)) {
        (Some(a), Some(b)) if a.major == b.major && a.minor == b.minor => Ok(()),
        (Some(_), Some(_)) => Err(ErrorCode::SemverPatchOnly),
        _ => Err(ErrorCode::ImageRefNotSemver),
    }
}

impl From<ErrorCode> for Failure {
    fn from(code: ErrorCode) -> Self {
        let message = match code {
            ErrorCode::SemverPatchOnly => {
                "a patch may change only the patch version (same major and minor)"
            }
            _ => "both the current and the new image tag must be semver versions",
        };
        fail(code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_keep_major_and_minor_and_need_semver_tags() {
        assert_eq!(check_patch("g/e:1.0.0", "g/e:1.0.1"), Ok(()));
        assert_eq!(check_patch("g/e:1.0.1", "g/e:1.0.0"), Ok(()));
        assert_eq!(
            check_patch("g/e:1.0.0", "g/e:1.1.0"),
            Err(ErrorCode::SemverPatchOnly)
        );
        assert_eq!(
            check_patch("g/e:1.0.0", "g/e:2.0.0"),
            Err(ErrorCode::SemverPatchOnly)
        );
        assert_eq!(
            check_patch("g/e:latest", "g/e:1.0.1"),
            Err(ErrorCode::ImageRefNotSemver)
        );
        assert_eq!(
            check_patch("g/e:1.0.0", "g/e"),
            Err(ErrorCode::ImageRefNotSemver)
        );
        assert_eq!(
            check_patch("g/e:1.0.0", "G/E:1.0.1"),
            Err(ErrorCode::ImageRefNotSemver)
        );
    }
}
