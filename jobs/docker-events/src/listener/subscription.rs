//! Nothing lost across restarts: the cursor, and resubscription.
//!
//! The time of the last handled event is kept in Redis
//! (`rtmanager:docker_events:cursor:{instance}:{daemon_id}`). Every
//! (re)subscription asks the daemon for events `since` that cursor
//! (inclusive): the overlap is handled again and, by the dedupe keys of
//! [`super::publication`], publishes nothing new, so no separate set of seen
//! events is kept. Without a cursor (first start) it subscribes from two
//! seconds before now. While the daemon is away it retries by the one retry
//! policy ([`shared::retry`]: 100 ms doubling to 5 s).
//!
//! The daemon keeps only its last 256 events (of every kind, ours or not)
//! and forgets them on restart, so every (re)subscription is followed by a
//! [`super::catch_up`] by inspection. The order is what makes it whole:
//!
//! 1. subscribe, and wait until the daemon has answered
//!    ([`ContainerEngine::subscribe_events`]): from then on every event is
//!    delivered live, and `since` (in the past) covers the moment before;
//! 2. catch up, while the events arriving meanwhile are read off the
//!    connection into memory (a reader that stops reading would make the
//!    daemon drop events for it);
//! 3. handle what was buffered, then the live stream, each event once.
//!
//! So a death during a long catch-up (many records after a daemon restart)
//! is delivered by the subscription, whatever the replay buffer still holds;
//! one the catch-up also saw is published once, by the dedupe keys.
//!
//! [`ContainerEngine::subscribe_events`]: shared::ports::ContainerEngine::subscribe_events

use std::collections::VecDeque;

use chrono::Utc;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use shared::retry;

use super::lease::{DaemonLease, HoldEnd};
use super::{Listener, ListenerError};

/// Without a cursor, how far back the first subscription starts.
const NO_CURSOR_LOOKBACK_NANOS: i64 = 2_000_000_000;

/// Now, in the daemon's unit (ns). `chrono` has no nanoseconds past 2262;
/// the fallback keeps `now - lookback` from overflowing.
fn now_nanos() -> i64 {
    Utc::now()
        .timestamp_nanos_opt()
        .unwrap_or(i64::MAX - NO_CURSOR_LOOKBACK_NANOS)
}

impl Listener {
    /// Resubscribes, with capped backoff, until shutdown or the lease is gone.
    pub(super) async fn hold(&self, held: &DaemonLease, shutdown: &CancellationToken) -> HoldEnd {
        let mut backoff = retry::backoff();
        loop {
            self.heartbeat.tick();
            let began = tokio::time::Instant::now();
            let mut progressed = false;
            let failure = match self.follow(held, shutdown, &mut progressed).await {
                Ok(end) => return end,
                Err(e) => e,
            };
            // A session that lived or worked for a while starts a fresh backoff.
            if progressed || began.elapsed() >= retry::CAP {
                backoff = retry::backoff();
            }
            let delay = retry::next(&mut backoff);
            tracing::warn!(error = %failure, retry_in_ms = delay.as_millis() as u64, "docker events interrupted; resubscribing");
            self.metrics.reconnects.inc();
            let stopped = self
                .heartbeat
                .idle(async {
                    tokio::select! {
                        _ = shutdown.cancelled() => true,
                        _ = tokio::time::sleep(delay) => false,
                    }
                })
                .await;
            if stopped {
                return HoldEnd::Shutdown;
            }
            if held.lease.is_lost() {
                return HoldEnd::LeaseLost;
            }
        }
    }

    /// One subscription: subscribe from the cursor, catch up by inspection
    /// while buffering what arrives, then handle events in daemon order.
    /// `progressed` is set once the catch-up is done, so a later failure is
    /// a fresh outage.
    async fn follow(
        &self,
        held: &DaemonLease,
        shutdown: &CancellationToken,
        progressed: &mut bool,
    ) -> Result<HoldEnd, ListenerError> {
        if self.engine.daemon_id().await? != held.daemon_id {
            return Ok(HoldEnd::DaemonChanged);
        }
        let cursor = self.redis.read_cursor(&held.keys.cursor).await?;
        let since = cursor.unwrap_or_else(|| now_nanos() - NO_CURSOR_LOOKBACK_NANOS);
        let mut events = self.engine.subscribe_events(Some(since)).await?;
        self.heartbeat.tick();
        let mut buffered = VecDeque::new();
        let caught_up_in = tokio::time::Instant::now();
        let published = {
            let catch_up = self.catch_up();
            tokio::pin!(catch_up);
            loop {
                tokio::select! {
                    result = &mut catch_up => break result?,
                    item = events.next() => {
                        self.heartbeat.tick();
                        buffered.push_back(item.ok_or(ListenerError::StreamEnded)??);
                    }
                }
            }
        };
        self.metrics
            .catch_up_duration
            .observe(caught_up_in.elapsed().as_secs_f64());
        *progressed = true;
        // The daemon time handled last: the cursor, once an event moves it.
        let mut handled_nano = since;
        tracing::info!(
            since_nano = since,
            caught_up = published,
            buffered = buffered.len(),
            "following docker events"
        );
        let mut check = tokio::time::interval(self.settings.lease_check);
        loop {
            self.heartbeat.beat().await;
            self.metrics
                .cursor_age
                .set((now_nanos() - handled_nano).max(0) as f64 / 1e9);
            let event = match buffered.pop_front() {
                Some(event) => event,
                None => tokio::select! {
                    _ = shutdown.cancelled() => return Ok(HoldEnd::Shutdown),
                    _ = check.tick() => {
                        if held.lease.is_lost() {
                            return Ok(HoldEnd::LeaseLost);
                        }
                        continue;
                    }
                    item = events.next() => item.ok_or(ListenerError::StreamEnded)??,
                },
            };
            self.metrics.saw(&event.action);
            if shutdown.is_cancelled() {
                return Ok(HoldEnd::Shutdown);
            }
            // A holder that lost its lease stops at once: the new holder
            // resubscribes from the cursor, not yet past this event.
            if held.lease.is_lost() {
                return Ok(HoldEnd::LeaseLost);
            }
            // The cursor moves only past a handled event: a failure leaves
            // it before, and the event is handled again.
            self.handle(&event).await?;
            self.redis
                .write_cursor(&held.keys.cursor, event.time_nano)
                .await?;
            handled_nano = event.time_nano;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shared::retry;

    /// The waits between resubscriptions, and what a fresh session restarts from.
    #[test]
    fn backoff_doubles_from_100ms_to_5s_and_resets() {
        let mut b = retry::backoff();
        let steps: Vec<u64> = (0..8)
            .map(|_| retry::next(&mut b).as_millis() as u64)
            .collect();
        assert_eq!(steps, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b = retry::backoff();
        assert_eq!(retry::next(&mut b), Duration::from_millis(100));
    }
}
