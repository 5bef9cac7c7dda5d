//! `restart` and `patch`: one outer lease; inner stop, then inner start of the
//! current (restart) or new (patch) image; the start replaces the kept
//! container under the same name, so the endpoint stays. Three operation-log
//! rows (outer, inner stop, inner start) share one correlation id in
//! `source_ref`. `conflict` on a removed record.
//!
//! Patch: both tags must be semver (`image_ref_not_semver`) with the same
//! major and minor (`semver_patch_only`), checked before any Docker call; the
//! new image is pulled and inspected before the old container is stopped; if
//! the new container fails to start or exits within
//! `RTMANAGER_PATCH_START_GRACE`, the game is brought back on the old image
//! and the failure is reported (`container_start_failed`); not when the
//! inner start answered `conflict` (another holder owns the game: its lease
//! was lost or its commit fenced), which is the answer then.

use chrono::Utc;

use super::common::{engine_failure, fail, Done, Failure};
use super::{OperationOutcome, OperationRequest, Operations, StartRequest};
use crate::domain::{ErrorCode, ImageRef, OpKind, Outcome, RuntimeStatus, StopReason};
use crate::game_lock::GameLock;

impl Operations {
    pub async fn restart(&self, req: &OperationRequest) -> OperationOutcome {
        self.locked(req, OpKind::Restart, "", async |lock, _| {
            self.recreate(req, None, lock).await
        })
        .await
    }

    pub async fn patch(&self, req: &OperationRequest, new_image_ref: &str) -> OperationOutcome {
        self.locked(req, OpKind::Patch, "", async |lock, _| {
            self.recreate(req, Some(new_image_ref), lock).await
        })
        .await
    }

    /// Inner stop, then inner start of the current (restart) or new (patch)
    /// image, under the caller's outer lock.
    async fn recreate(
        &self,
        req: &OperationRequest,
        new_image: Option<&str>,
        lock: &GameLock,
    ) -> Result<Done, Failure> {
        let record = self.load_record(&req.game_id).await?.ok_or_else(|| {
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
                    .ensure_image(new, self.settings.start.pull_policy)
                    .await
                    .map_err(engine_failure(ErrorCode::ImagePullFailed, "pull new image"))?;
                self.engine
                    .inspect_image(new)
                    .await
                    .map_err(engine_failure(
                        ErrorCode::ImagePullFailed,
                        "inspect new image",
                    ))?;
                new.to_owned()
            }
        };
        let stopped_at = Utc::now();
        let stop = self
            .stop_steps(req, StopReason::AdminRequest, None, lock)
            .await;
        let stop_failed = stop.as_ref().err().map(|f| (f.code, f.message.clone()));
        self.finish(req, OpKind::Stop, "", stopped_at, stop).await;
        if let Some((code, message)) = stop_failed {
            return Err(fail(code, format!("inner stop: {message}")));
        }

        crate::failpoints::crash_point("recreate-after-stop");
        let started = self.inner_start(req, &target, lock).await;
        if started.outcome == Outcome::Success && new_image.is_some() {
            if let Some(exited) = self.exited_within_grace(&started).await {
                return self.roll_back(req, &current, lock, exited).await;
            }
        }
        if started.outcome == Outcome::Success {
            return Ok(Done {
                image_ref: target,
                ..Done::applied(started.record, None)
            });
        }
        let code = started.error_code.unwrap_or(ErrorCode::Internal);
        // A `conflict` means another holder owns the game now (the lease
        // lost or the commit fenced): what the start left is that holder's
        // to settle. A rollback would remove the new container under it.
        if new_image.is_some() && code != ErrorCode::Conflict {
            let why = format!("{code}: {}", started.error_message);
            return self.roll_back(req, &current, lock, why).await;
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
        lock: &GameLock,
    ) -> OperationOutcome {
        let start = StartRequest {
            game_id: req.game_id.clone(),
            image_ref: image.to_owned(),
            op_source: req.op_source,
            source_ref: req.source_ref.clone(),
        };
        self.start_under(&start, lock).await
    }

    /// `Some(reason)` when the new container is not running after the grace.
    async fn exited_within_grace(&self, started: &OperationOutcome) -> Option<String> {
        let container = started.record.as_ref()?.current_container_id.clone()?;
        tokio::time::sleep(self.settings.patch_grace).await;
        match self.engine.inspect_container(&container).await {
            Ok(Some(info)) if info.state.is_running() => None,
            Ok(Some(info)) => Some(format!(
                "the new container exited with code {} within the grace",
                info.exit_code
            )),
            Ok(None) => Some("the new container vanished within the grace".into()),
            Err(e) => {
                tracing::warn!(container_id = %container, error = %e, "inspect of the new container failed");
                Some("inspect of the new container failed".into())
            }
        }
    }

    /// Brings the game back on `old_image` after a failed patch.
    async fn roll_back(
        &self,
        req: &OperationRequest,
        old_image: &str,
        lock: &GameLock,
        why: String,
    ) -> Result<Done, Failure> {
        if let Ok(Some(record)) = self.db.get_record(&req.game_id).await {
            if record.status == RuntimeStatus::Running {
                // The new container died on its own: the record follows (CAS).
                let container = record.current_container_id.unwrap_or_default();
                if let Ok(mut tx) = self.db.begin().await {
                    tx.fence(lock.fence());
                    if tx
                        .mark_stopped(&req.game_id, &container, Utc::now())
                        .await
                        .is_ok()
                    {
                        let _ = tx.commit().await;
                    }
                }
            }
        }
        let back = self.inner_start(req, old_image, lock).await;
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
