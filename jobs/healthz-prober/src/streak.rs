//! From a streak observation to the health event it calls for, and the
//! commit of that event (kept pending in Redis until it is committed).
//!
//! The streak lives in Redis, not in memory, so it survives a prober restart
//! or a reshard: hash `rtmanager:probe:{rtmanager:game_lease:<base64url(game_id)>}` with
//! `container_id`, `consecutive_failures`, `failed_published` (`1` while a
//! `probe_failed` waits for its `probe_recovered`), `failed_container` (the
//! container that `probe_failed` was about), `last_slot` and, between a
//! transition and its commit, `pending`. One Lua script
//! ([`RedisClient::observe_streak`], in `shared/src/adapters/redis/streaks.rs`)
//! applies an observation and decides atomically whether to publish, so when
//! two probers briefly overlap on a game only one can win a transition; and
//! because an observation carries its slot, the second observation of the
//! same slot is ignored (`Duplicate`) instead of counting the failure twice.
//! The same script skips a failure while the game's lease is held, the
//! atomic second lease check. The key expires a day (or 100 intervals) after
//! the last observation.
//!
//! A transition is only as good as its event, and the streak (Redis) and
//! the event (PostgreSQL) cannot be written in one transaction. So the
//! script stores the transition it decides with the streak, as `pending`
//! (the event's fields and the slot), and the prober clears it only after
//! the event is committed ([`RedisClient::settle_streak`]). While a
//! transition is pending, the script applies no observation: it hands the
//! pending one back, and the prober commits it first and observes again.
//! The commit is idempotent (the outbox dedupe key
//! `health:{event_type}:{container_id}:{slot}`,
//! [`HealthEvent::probe_transition_key`]), so committing it twice (the
//! first commit went through but the prober died before clearing it; two
//! probers overlapping) publishes it once. So a prober killed anywhere
//! between the script and the commit loses nothing: the next observation of
//! the game, by its restart or by whichever prober owns the game then,
//! commits the transition with its original time and counts. If the event
//! cannot be committed (PostgreSQL away), the prober retries with the one
//! retry policy ([`shared::retry`]); stopped first, it leaves the
//! transition pending for the next observation. Events go through the one
//! health publisher ([`Outbox::health_once`]: snapshot + outbox row in one
//! transaction).
//!
//! Redis may lose a streak (`FLUSHALL`, a failover without persistence). The
//! published state of a streak is also in PostgreSQL, though: the health
//! snapshot committed with each event (`probe_failed` until its
//! `probe_recovered`). So the script answers `missing` for a hash it does not
//! have, the prober reads that game's snapshot as PostgreSQL holds it now and
//! observes again with it as the seed; after the loss an open `probe_failed`
//! is still closed by one `probe_recovered`, and a still failing engine is not
//! reported twice (with PostgreSQL away too, the refresh's copy stands in:
//! [`TargetState::seed`](crate::target::TargetState::seed)).
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

use tokio_util::sync::CancellationToken;

use shared::adapters::postgres::{CommittedStreak, OpenProbeFailure};
use shared::adapters::{PendingTransition, RedisClient, StreakVerdict};
use shared::domain::{HealthDetails, HealthEvent, HealthSource};
use shared::outbox::Outbox;
use shared::retry;

#[cfg(doc)]
use crate::target::TargetState;
use crate::target::{Skip, Verdict};

/// What an observation of the streak calls for.
pub(crate) enum Transition {
    /// Nothing to publish: the slot's verdict is final.
    Settled(Verdict),
    /// A `probe_failed` or `probe_recovered` just decided, to commit
    /// ([`commit`]).
    Decided(PendingTransition),
    /// An earlier transition still pending: commit it, then observe again.
    Earlier(PendingTransition),
}

/// The transition the script decided (or found pending).
pub(crate) fn transition(verdict: StreakVerdict, pending: Option<PendingTransition>) -> Transition {
    let settled = match (verdict, pending) {
        (StreakVerdict::Pending, Some(pending)) => return Transition::Earlier(pending),
        (StreakVerdict::Recovered { .. } | StreakVerdict::Failed { .. }, Some(pending)) => {
            return Transition::Decided(pending)
        }
        (StreakVerdict::Healthy, _) => Verdict::Healthy,
        (
            StreakVerdict::Counted {
                consecutive_failures,
            },
            _,
        ) => Verdict::Failing {
            consecutive_failures,
        },
        (StreakVerdict::Duplicate, _) => Verdict::Duplicate,
        (StreakVerdict::Skipped, _) => Verdict::Discarded,
        // The prober answers a missing streak itself (a second observation
        // seeded from PostgreSQL) and never passes it here.
        (StreakVerdict::Missing, _) => Verdict::Discarded,
        (verdict, None) => {
            tracing::error!(?verdict, "probe streak transition without its event");
            Verdict::Discarded
        }
    };
    Transition::Settled(settled)
}

/// The streak a committed event leaves, for [`TargetState::seed`](crate::target::TargetState::seed):
/// newer than the target's snapshot until the next refresh reads it back.
pub(crate) fn committed(event: &HealthEvent) -> Option<CommittedStreak> {
    let open_failure = match event.details {
        HealthDetails::ProbeFailed {
            consecutive_failures,
            ..
        } => Some(OpenProbeFailure {
            container_id: event.container_id.clone(),
            consecutive_failures,
        }),
        HealthDetails::ProbeRecovered { .. } => None,
        _ => return None,
    };
    Some(CommittedStreak {
        open_failure,
        occurred_at_ms: event.occurred_at_ms,
    })
}

/// Commits the pending transition's event through the outbox (once, by its
/// slot's dedupe key), retrying until it succeeds or `stop`, then clears it
/// from the streak. Returns the slot's verdict for the event, or
/// `NotProbed(Cancelled)` when stopped first: the transition then stays
/// pending, for the next observation of the game to commit.
pub(crate) async fn commit(
    outbox: &Outbox,
    redis: &RedisClient,
    pending: &PendingTransition,
    stop: &CancellationToken,
) -> Verdict {
    let event = &pending.event;
    let key = event.probe_transition_key(pending.slot);
    let mut backoff = retry::backoff();
    loop {
        match outbox
            .publish(&[outbox.health_once(HealthSource::HealthzProber, event, &key)])
            .await
        {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(game_id = %event.game_id, error = %e, "probe event not committed; retrying");
            }
        }
        let stopped = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep(retry::next(&mut backoff)) => false,
        };
        if stopped {
            tracing::warn!(game_id = %event.game_id, slot = pending.slot, "stopping before the probe event was committed; the transition stays pending for the next observation");
            return Verdict::NotProbed(Skip::Cancelled);
        }
    }
    // Left set (Redis away), it is committed again by the next observation,
    // which publishes nothing new.
    if let Err(e) = redis.settle_streak(&event.game_id, pending).await {
        tracing::warn!(game_id = %event.game_id, error = %e, "pending probe transition not cleared; the next observation clears it");
    }
    match event.details {
        HealthDetails::ProbeFailed {
            consecutive_failures,
            ref last_error,
            ..
        } => {
            tracing::info!(game_id = %event.game_id, consecutive_failures, last_error = %last_error, "probe_failed");
            Verdict::Failed {
                consecutive_failures,
            }
        }
        HealthDetails::ProbeRecovered {
            prior_failure_count,
        } => {
            tracing::info!(game_id = %event.game_id, prior_failure_count, "probe_recovered");
            Verdict::Recovered {
                prior_failure_count,
            }
        }
        _ => Verdict::Discarded,
    }
}
