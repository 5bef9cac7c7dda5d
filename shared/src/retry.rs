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

/// Runs `attempt` until it succeeds or fails for good: a failure
/// `transient` accepts is reported to `on_retry` and tried again after the
/// policy's next wait (a wait that counts as progress for the main loop
/// running it, see [`crate::liveness::retry_sleep`]). The caller going away
/// ends the loop.
pub async fn while_transient<T, E, F>(
    mut attempt: impl FnMut() -> F,
    transient: impl Fn(&E) -> bool,
    on_retry: impl Fn(&E),
) -> Result<T, E>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    let mut backoff = backoff();
    loop {
        match attempt().await {
            Err(e) if transient(&e) => {
                on_retry(&e);
                crate::liveness::retry_sleep(next(&mut backoff)).await;
            }
            settled => return settled,
        }
    }
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

    #[tokio::test]
    async fn a_transient_failure_is_retried_and_a_lasting_one_returned() {
        let mut calls = 0;
        let retried = std::cell::Cell::new(0);
        let out: Result<u32, &str> = while_transient(
            || {
                calls += 1;
                let answer = match calls {
                    1 | 2 => Err("away"),
                    3 => Err("refused"),
                    _ => Ok(calls),
                };
                async move { answer }
            },
            |e| *e == "away",
            |_| retried.set(retried.get() + 1),
        )
        .await;
        assert_eq!((out, retried.get()), (Err("refused"), 2));
    }
}
