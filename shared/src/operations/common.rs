//! What every operation shares: the lease prologue, the mapping of adapter
//! errors to stable codes, and [`Operations::finish`], the one place an
//! outcome is recorded (operation-log row, admin intent, metric, log line).

use chrono::{DateTime, Utc};

use super::metrics::DurationLabels;
use super::{OperationOutcome, OperationRequest, Operations};
use crate::adapters::postgres::StoreError;
use crate::adapters::IntentKind;
use crate::domain::{
    AdminIntent, ErrorCode, GameId, NotificationType, OpKind, OpSource, OperationEntry, Outcome,
    RuntimeRecord,
};
use crate::game_lock::{GameLock, LockError};
use crate::ports::EngineError;
use crate::telemetry::steps;
use crate::telemetry::OperationLabels;

/// A step failure on its way to becoming an [`OperationOutcome`].
pub(super) struct Failure {
    pub code: ErrorCode,
    pub message: String,
    /// The container the failed operation made or touched, when known.
    pub container_id: String,
    /// PostgreSQL could not be reached for a step: see
    /// [`OperationOutcome::database_away`].
    pub database_away: bool,
    /// What Docker, PostgreSQL, Redis or the OS said: for the operator's
    /// log line only. Callers get `message`, which we write, since the
    /// engines' text names hosts, paths, SQL and versions they need not
    /// see and may change with any upgrade.
    pub detail: String,
}

pub(super) fn fail(code: ErrorCode, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
        container_id: String::new(),
        database_away: false,
        detail: String::new(),
    }
}

/// A store error as a step failure: its own code (`service_unavailable`
/// while PostgreSQL is away, `conflict` when fenced, `internal_error`
/// otherwise) unless `code` overrides it.
pub(super) fn store_fail(e: &StoreError, code: Option<ErrorCode>, context: &str) -> Failure {
    let what = match e {
        StoreError::Unavailable(_) => "PostgreSQL is unavailable",
        StoreError::Fenced { .. } => "the game's lease was taken over by a later holder",
        StoreError::Query(_) | StoreError::Corrupt(_) => "database error",
    };
    Failure {
        database_away: matches!(e, StoreError::Unavailable(_)),
        ..fail(
            code.unwrap_or_else(|| e.code()),
            format!("{context}: {what}"),
        )
    }
    .with_detail(e)
}

impl Failure {
    pub fn with_container(mut self, container_id: &str) -> Self {
        self.container_id = container_id.to_owned();
        self
    }

    pub fn with_detail(mut self, detail: impl std::fmt::Display) -> Self {
        self.detail = detail.to_string();
        self
    }
}

/// Docker unreachable is `docker_unavailable` whatever the step; any other
/// engine error takes the step's own code.
pub(super) fn engine_failure(
    step_code: ErrorCode,
    context: &str,
) -> impl Fn(EngineError) -> Failure + '_ {
    move |e| {
        let what = match &e {
            EngineError::Unavailable(_) => "Docker is unreachable",
            EngineError::NotFound(_) => "Docker found no such object",
            EngineError::Conflict(_) => "Docker reported a conflict",
            EngineError::Rejected(_) => "Docker refused it",
        };
        let code = match e {
            EngineError::Unavailable(_) => ErrorCode::DockerUnavailable,
            _ => step_code,
        };
        fail(code, format!("{context}: {what}")).with_detail(e)
    }
}

/// PostgreSQL away is `service_unavailable`, any other store error `internal_error`.
pub(super) fn store_failure(context: &str) -> impl Fn(StoreError) -> Failure + '_ {
    move |e| store_fail(&e, None, context)
}

/// What a successful operation hands back.
pub(super) struct Done {
    pub record: Option<RuntimeRecord>,
    /// `replay_no_op` when nothing had to be done.
    pub code: Option<ErrorCode>,
    pub image_ref: String,
    pub container_id: String,
    /// The operation-log row was written in the operation's own commit.
    pub logged: bool,
}

impl Done {
    /// Nothing to do: the record is already where the request wants it.
    pub fn replay(record: Option<RuntimeRecord>) -> Self {
        Self::applied(record, Some(ErrorCode::ReplayNoOp))
    }

    /// Done; image and container are the record's.
    pub fn applied(record: Option<RuntimeRecord>, code: Option<ErrorCode>) -> Self {
        let image_ref = record
            .as_ref()
            .and_then(|r| r.current_image_ref.clone())
            .unwrap_or_default();
        let container_id = record
            .as_ref()
            .and_then(|r| r.current_container_id.clone())
            .unwrap_or_default();
        Self {
            record,
            code,
            image_ref,
            container_id,
            logged: false,
        }
    }
}

impl Operations {
    /// The lock prologue (lease and fencing token, [`crate::game_lock`]):
    /// `conflict` when another operation holds the game,
    /// `service_unavailable` when Redis or PostgreSQL is away.
    pub(super) async fn lock(&self, game_id: &GameId) -> Result<GameLock, Failure> {
        let began = std::time::Instant::now();
        let locked = self.locks.try_lock(game_id).await;
        self.timings
            .lease_acquire
            .observe(began.elapsed().as_secs_f64());
        match locked {
            Ok(Some(lock)) => Ok(lock),
            Ok(None) => {
                self.timings.lease_conflicts.inc();
                Err(fail(
                    ErrorCode::Conflict,
                    "another lifecycle operation is in progress for this game",
                ))
            }
            Err(e @ LockError::Lease(_)) => Err(fail(
                ErrorCode::ServiceUnavailable,
                "take game lease: Redis is unavailable",
            )
            .with_detail(e)),
            Err(LockError::Fence(e)) => Err(store_failure("take fencing token")(e)),
        }
    }

    /// Runs `body` under the game's lock, releases it, and records the
    /// outcome. `requested_image` is the image a failure's row names.
    pub(super) async fn locked(
        &self,
        req: &OperationRequest,
        op: OpKind,
        requested_image: &str,
        body: impl AsyncFnOnce(&GameLock, DateTime<Utc>) -> Result<Done, Failure>,
    ) -> OperationOutcome {
        let started_at = Utc::now();
        let locked = self.lock(&req.game_id).await;
        steps::mark("lease");
        let result = match locked {
            Ok(lock) => {
                let result = body(&lock, started_at).await;
                lock.release().await;
                steps::mark("release");
                result
            }
            Err(f) => Err(f),
        };
        let outcome = self
            .finish(req, op, requested_image, started_at, result)
            .await;
        steps::mark("finish");
        outcome
    }

    /// Records the outcome: its operation-log row (unless the operation's own
    /// commit wrote it), a start failure's admin intent in the same
    /// transaction, the metric and one log line.
    pub(super) async fn finish(
        &self,
        req: &OperationRequest,
        op: OpKind,
        requested_image: &str,
        started_at: DateTime<Utc>,
        result: Result<Done, Failure>,
    ) -> OperationOutcome {
        let database_away = result.as_ref().is_err_and(|f| f.database_away);
        let detail = result
            .as_ref()
            .err()
            .map(|f| f.detail.clone())
            .unwrap_or_default();
        let (outcome, code, message, image, container, record, logged) = match result {
            Ok(done) => (
                Outcome::Success,
                done.code,
                String::new(),
                done.image_ref,
                done.container_id,
                done.record,
                done.logged,
            ),
            Err(f) => (
                Outcome::Failure,
                Some(f.code),
                f.message,
                requested_image.to_owned(),
                f.container_id,
                None,
                false,
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
        // A stream job that met one of our own dependencies away is not
        // answered: it stays pending and runs again (see the stream
        // consumer), so its row is written by the run that is answered.
        let retried_later = database_away && req.op_source == OpSource::LobbyStream;
        if !logged && !retried_later {
            // Retried while PostgreSQL is away: the row is the only record of
            // what was done, and a job is answered only after it. The caller
            // going away (a shutdown drain, an HTTP client) ends the wait.
            let recorded = crate::retry::while_transient(
                || self.log_operation(&entry),
                |e| matches!(e, StoreError::Unavailable(_)),
                |e| tracing::warn!(game_id = %req.game_id, op_kind = %op, error = %e, "recording the operation failed; retrying"),
            )
            .await;
            if let Err(e) = recorded {
                tracing::error!(game_id = %req.game_id, op_kind = %op, error = %e, "recording the operation failed");
            }
        }
        let code_str = code.map(ErrorCode::as_str).unwrap_or("");
        let took = (entry.finished_at - started_at)
            .to_std()
            .unwrap_or_default();
        self.timings
            .duration
            .get_or_create(&DurationLabels {
                op_kind: op.as_str().into(),
                outcome: outcome.as_str().into(),
            })
            .observe(took.as_secs_f64());
        self.metrics
            .operations
            .get_or_create(&OperationLabels {
                op_kind: op.as_str().into(),
                outcome: outcome.as_str().into(),
                error_code: code_str.into(),
            })
            .inc();
        match outcome {
            Outcome::Success => {
                tracing::info!(game_id = %req.game_id, op_kind = %op, op_source = %req.op_source, source_ref = %req.source_ref, container_id = %entry.container_id, image_ref = %entry.image_ref, error_code = code_str, "operation done")
            }
            Outcome::Failure => {
                tracing::warn!(game_id = %req.game_id, op_kind = %op, op_source = %req.op_source, source_ref = %req.source_ref, image_ref = %entry.image_ref, error_code = code_str, error_message = %message, error_detail = %detail, "operation failed")
            }
        }
        OperationOutcome {
            outcome,
            error_code: code,
            error_message: message,
            record,
            database_away,
        }
    }

    /// The row, and for a failed start its admin intent, in one transaction.
    async fn log_operation(&self, entry: &OperationEntry) -> Result<(), StoreError> {
        let intent = match (entry.op_kind, entry.outcome, entry.error_code) {
            (OpKind::Start, Outcome::Failure, Some(code)) => {
                NotificationType::for_start_failure(code).map(|notification_type| AdminIntent {
                    notification_type,
                    game_id: entry.game_id.clone(),
                    image_ref: entry.image_ref.clone(),
                    error_code: code,
                    error_message: entry.error_message.clone(),
                    attempted_at_ms: entry.finished_at.timestamp_millis(),
                })
            }
            _ => None,
        };
        let mut tx = self.outbox.begin().await?;
        tx.append_operation(entry).await?;
        if let Some(intent) = &intent {
            tx.stage(&self.outbox.request_intent(intent, &entry.source_ref))
                .await?;
        }
        tx.commit().await
    }

    /// Records, before acting and under the game's fencing token, that
    /// rtmanager itself stops or removes the container, so the health
    /// sources do not report it as a failure.
    pub(super) async fn record_intent(
        &self,
        kind: IntentKind,
        game_id: &GameId,
        container_id: &str,
        lock: &GameLock,
    ) -> Result<(), Failure> {
        let recorded = async {
            let mut tx = self.db.begin().await?;
            tx.fence(lock.fence());
            tx.record_intent(kind, game_id, container_id).await?;
            tx.commit().await
        };
        recorded
            .await
            .map_err(|e| store_fail(&e, None, &format!("record {} intent", kind.as_str())))
    }

    /// Undoes [`Self::record_intent`] after the step it announced failed
    /// (best effort: a leftover only silences reports on that container).
    /// Kept when the daemon did not answer (`Unavailable`): the request may
    /// have reached it and the container may be stopping or gone by our
    /// hand, and a forgotten intent would let every health source report
    /// that as a failure; the caller answers a failure, so the step is
    /// asked again anyway. Fenced like the intent: a holder whose lease was
    /// taken over must not delete an intent the newer holder relies on (a
    /// fenced forget keeps the intent, the safe side).
    pub(super) async fn forget_intent(
        &self,
        kind: IntentKind,
        game_id: &GameId,
        container_id: &str,
        error: &EngineError,
        lock: &GameLock,
    ) {
        if matches!(error, EngineError::Unavailable(_)) {
            tracing::info!(game_id = %game_id, container_id, intent = kind.as_str(), "the daemon did not answer; keeping the intent");
            return;
        }
        let forgotten = async {
            let mut tx = self.db.begin().await?;
            tx.fence(lock.fence());
            tx.forget_intent(kind, container_id).await?;
            tx.commit().await
        };
        if let Err(e) = forgotten.await {
            tracing::warn!(game_id = %game_id, container_id, error = %e, "forgetting the intent of a failed step failed");
        }
    }

    pub(super) async fn load_record(
        &self,
        game_id: &GameId,
    ) -> Result<Option<RuntimeRecord>, Failure> {
        self.db
            .get_record(game_id)
            .await
            .map_err(store_failure("load runtime record"))
    }
}
