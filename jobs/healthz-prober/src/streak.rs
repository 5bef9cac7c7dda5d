//! From a streak observation to the health event it calls for, and the
//! commit (or undo) of that event.
//!
//! The streak lives in Redis, not in memory, so it survives a prober restart
//! or a reshard: hash `rtmanager:probe:{rtmanager:game_lease:<base64url(game_id)>}` with
//! `container_id`, `consecutive_failures`, `failed_published` (`1` while a
//! `probe_failed` waits for its `probe_recovered`), `failed_container` (the
//! container that `probe_failed` was about) and `last_slot`. One Lua script
//! ([`RedisClient::observe_streak`], in `shared/src/adapters/redis/streaks.rs`)
//! applies an observation and decides atomically whether to publish, so when
//! two probers briefly overlap on a game only one can win a transition; and
//! because an observation carries its slot, the second observation of the
//! same slot is ignored (`Duplicate`) instead of counting the failure twice.
//! The same script skips a failure while the game's lease is held, the
//! atomic second lease check. The key expires a day (or 100 intervals) after
//! the last observation.
//!
//! A transition is only as good as its event: if the event cannot be
//! committed (PostgreSQL away) the prober retries with the one retry policy
//! ([`shared::retry`]); if it is stopped before it succeeds, it restores the
//! state the script replaced ([`RedisClient::undo_streak`]), so the
//! transition is decided again later rather than lost. Events go through the
//! one health publisher ([`Outbox::health`]: snapshot + outbox row in one
//! transaction).
//!
//! Redis may lose a streak (`FLUSHALL`, a failover without persistence). The
//! published state of a streak is also in PostgreSQL, though: the health
//! snapshot committed with each event (`probe_failed` until its
//! `probe_recovered`). So the script seeds a missing hash from it (passed with
//! each observation, from the target refresh), and after the loss an open
//! `probe_failed` is still closed by one `probe_recovered`, and a still
//! failing engine is not reported twice ([`TargetState::seed`](crate::target::TargetState::seed) says why a
//! snapshot up to one refresh old does).
//!
//! A new container (restart, patch) starts a new streak: its failures are
//! counted from zero. An open `probe_failed` is not forgotten, though: the
//! first success, on whichever container, publishes `probe_recovered` (with
//! the count right before it, i.e. the old container's streak when the new
//! one succeeds at once). If the new container instead fails up to the
//! threshold, it gets its own `probe_failed` (the snapshot would otherwise
//! show `healthy` from its `container_started` while it fails), and one
//! `probe_recovered` closes both. So every `probe_failed` is followed by a
//! `probe_recovered`, and the health snapshot is never stale.

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use shared::adapters::postgres::{CommittedStreak, OpenProbeFailure};
use shared::adapters::RedisClient;
use shared::adapters::{StreakPreImage, StreakVerdict};
use shared::domain::{HealthDetails, HealthEvent};
use shared::outbox::Outbox;
use shared::retry;

#[cfg(doc)]
use crate::target::TargetState;
use crate::target::{Skip, Target, Verdict};
use shared::adapters::ProbeResult;

/// What an observation of the streak calls for.
pub(crate) enum Transition {
    /// Nothing to publish: the slot's verdict is final.
    Settled(Verdict),
    /// A `probe_failed` or `probe_recovered` to commit ([`commit`]).
    Publish(HealthEvent),
}

/// The transition the script decided for `result` of `target`.
pub(crate) fn transition(
    verdict: StreakVerdict,
    result: &ProbeResult,
    target: &Target,
) -> Transition {
    let at_ms = Utc::now().timestamp_millis();
    let (game, container) = (&target.game_id, target.container_id.as_str());
    let event = match (verdict, result) {
        (StreakVerdict::Healthy, _) => return Transition::Settled(Verdict::Healthy),
        (
            StreakVerdict::Counted {
                consecutive_failures,
            },
            _,
        ) => {
            return Transition::Settled(Verdict::Failing {
                consecutive_failures,
            })
        }
        (StreakVerdict::Duplicate, _) => return Transition::Settled(Verdict::Duplicate),
        (StreakVerdict::Skipped, _) => return Transition::Settled(Verdict::Discarded),
        (
            StreakVerdict::Recovered {
                prior_failure_count,
            },
            _,
        ) => HealthEvent::probe_recovered(game, container, at_ms, prior_failure_count),
        (
            StreakVerdict::Failed {
                consecutive_failures,
            },
            ProbeResult::Unhealthy { status, error },
        ) => HealthEvent::probe_failed(
            game,
            container,
            at_ms,
            consecutive_failures,
            i64::from(*status),
            error,
        ),
        (StreakVerdict::Failed { .. }, _) => {
            tracing::error!(game_id = %target.game_id, "probe streak failed on a healthy probe");
            return Transition::Settled(Verdict::Discarded);
        }
    };
    Transition::Publish(event)
}

/// The streak a committed event leaves, for [`TargetState::seed`](crate::target::TargetState::seed):
/// newer than the target's snapshot until the next refresh reads it back.
pub(crate) fn committed(verdict: &Verdict, event: &HealthEvent) -> Option<CommittedStreak> {
    let open_failure = match verdict {
        Verdict::Failed {
            consecutive_failures,
        } => Some(OpenProbeFailure {
            container_id: event.container_id.clone(),
            consecutive_failures: *consecutive_failures,
        }),
        Verdict::Recovered { .. } => None,
        _ => return None,
    };
    Some(CommittedStreak {
        open_failure,
        occurred_at_ms: event.occurred_at_ms,
    })
}

/// Commits `event` through the outbox, retrying until it succeeds or `stop`;
/// when stopped first, gives the transition back: restores `pre`, what the
/// observation of `slot` replaced.
pub(crate) async fn commit(
    outbox: &Outbox,
    redis: &RedisClient,
    target: &Target,
    slot: u64,
    pre: &StreakPreImage,
    event: &HealthEvent,
    stop: &CancellationToken,
) -> Verdict {
    let mut backoff = retry::backoff();
    loop {
        match outbox.publish(&[outbox.health(event)]).await {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(game_id = %target.game_id, error = %e, "probe event not committed; retrying");
            }
        }
        let stopped = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep(retry::next(&mut backoff)) => false,
        };
        if stopped {
            // Give the transition back, so it is decided again later.
            let undone = redis.undo_streak(&target.game_id, slot, pre).await;
            tracing::warn!(game_id = %target.game_id, undone = ?undone, "stopping before the probe event was committed; streak transition given back");
            return Verdict::NotProbed(Skip::Cancelled);
        }
    }
    match event.details {
        HealthDetails::ProbeFailed {
            consecutive_failures,
            ref last_error,
            ..
        } => {
            tracing::info!(game_id = %target.game_id, consecutive_failures, last_error = %last_error, "probe_failed");
            Verdict::Failed {
                consecutive_failures,
            }
        }
        HealthDetails::ProbeRecovered {
            prior_failure_count,
        } => {
            tracing::info!(game_id = %target.game_id, prior_failure_count, "probe_recovered");
            Verdict::Recovered {
                prior_failure_count,
            }
        }
        _ => Verdict::Discarded,
    }
}
