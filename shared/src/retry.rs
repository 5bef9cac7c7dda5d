//! The one retry policy (backon): 100 ms, doubling, capped at 5 s, no jitter,
//! never giving up. Used where a loop waits for a dependency to come back
//! (the outbox relay, the job consumer, the Docker events listener).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

pub const FIRST: Duration = Duration::from_millis(100);
pub const CAP: Duration = Duration::from_secs(5);

/// A fresh backoff; start a new one after each success.
pub fn backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(FIRST)
        .with_factor(2.0)
        .with_max_delay(CAP)
        .without_max_times()
        .build()
}

/// The next wait of `backoff` (the cap, should it ever run out).
pub fn next(backoff: &mut ExponentialBackoff) -> Duration {
    backoff.next().unwrap_or(CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_100ms_to_5s_without_jitter() {
        let mut b = backoff();
        let waits: Vec<u64> = (0..9).map(|_| next(&mut b).as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }
}
