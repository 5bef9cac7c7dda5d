//! Per-step timing of one job, for an operator (or the start benchmark)
//! asking where a start's milliseconds go: with the `rtmanager::steps`
//! target at debug (`RUST_LOG=info,rtmanager::steps=debug`), each answered
//! job logs one line `job steps` whose `steps_us` field lists its steps in
//! order with their durations in microseconds (`lease=812 record=401 …`),
//! and the relay logs `outbox row delivered` with the time it delivered
//! each row (`delivered_at_us`), so the result's relay is known too.
//!
//! A step is marked where it ends ([`mark`]); its duration is the time since
//! the previous mark. The clock lives in the job's task (a task-local set by
//! [`timed`]), so the code that does the work (the operations, the Docker
//! adapter's create and start) marks without being handed anything. With
//! the target off, [`timed`] sets no clock and a mark is one failed
//! task-local lookup.

use std::cell::RefCell;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The log target of the step lines.
pub const TARGET: &str = "rtmanager::steps";

tokio::task_local! {
    static CLOCK: RefCell<Clock>;
}

struct Clock {
    last: Instant,
    steps: Vec<(&'static str, Duration)>,
}

/// The steps of one job, in the order they ended.
#[derive(Debug, Default)]
pub struct Steps {
    /// Wall-clock time the clock started, in µs since the Unix epoch.
    pub began_at_us: i64,
    pub steps: Vec<(&'static str, Duration)>,
}

impl Steps {
    /// `name=µs` pairs, space-separated, in order.
    pub fn render(&self) -> String {
        let parts: Vec<String> = self
            .steps
            .iter()
            .map(|(name, took)| format!("{name}={}", took.as_micros()))
            .collect();
        parts.join(" ")
    }

    pub fn total(&self) -> Duration {
        self.steps.iter().map(|(_, took)| *took).sum()
    }
}

/// Whether step lines are wanted (the `rtmanager::steps` target at debug).
pub fn enabled() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::DEBUG)
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Runs `work` with a step clock when step lines are wanted; the steps it
/// marked come back with its output (`None` when they are not wanted).
pub async fn timed<F: Future>(work: F) -> (F::Output, Option<Steps>) {
    if !enabled() {
        return (work.await, None);
    }
    let began_at_us = now_us();
    let clock = RefCell::new(Clock {
        last: Instant::now(),
        steps: Vec::with_capacity(16),
    });
    let (output, clock) = CLOCK
        .scope(clock, async {
            let output = work.await;
            let steps = CLOCK.with(|c| std::mem::take(&mut c.borrow_mut().steps));
            (output, steps)
        })
        .await;
    (
        output,
        Some(Steps {
            began_at_us,
            steps: clock,
        }),
    )
}

/// Ends the current step `name` (it began at the previous mark), when the
/// running task has a step clock.
pub fn mark(name: &'static str) {
    let _ = CLOCK.try_with(|c| {
        let mut clock = c.borrow_mut();
        let now = Instant::now();
        let took = now - clock.last;
        clock.last = now;
        clock.steps.push((name, took));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn marks_outside_a_clock_are_ignored_and_inside_are_kept_in_order() {
        mark("nowhere");
        // The test has no subscriber, so `timed` keeps no clock: set one up
        // the way `timed` does to check the marks.
        let clock = RefCell::new(Clock {
            last: Instant::now(),
            steps: Vec::new(),
        });
        let steps = CLOCK
            .scope(clock, async {
                mark("one");
                mark("two");
                CLOCK.with(|c| std::mem::take(&mut c.borrow_mut().steps))
            })
            .await;
        let names: Vec<_> = steps.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["one", "two"]);
        let rendered = Steps {
            began_at_us: 0,
            steps,
        }
        .render();
        assert!(rendered.starts_with("one="), "{rendered}");
        assert!(rendered.contains(" two="), "{rendered}");
    }
}
