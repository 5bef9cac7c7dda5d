//! The checked range of every numeric and duration setting, in one table.
//!
//! A value outside its range stops the process at start-up with an error
//! naming the variable, before it can reach time arithmetic (a
//! `Duration` added to an `Instant` or a `DateTime` panics on overflow) or
//! a conversion to a narrower type (Docker takes `i32` seconds, Redis `i64`
//! milliseconds). The bounds are generous: they only keep out values no
//! deployment means. The README's settings table shows each [`Range`]
//! as [`Range::describe`] writes it, and a test holds the two together.

use std::fmt;
use std::time::Duration;

use super::ConfigError;

/// A setting's allowed values, bounds included.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Range {
    Duration(Duration, Duration),
    Count(u64, u64),
}

/// A setting's value, as its section parsed it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Duration(Duration),
    Count(u64),
}

impl From<Duration> for Value {
    fn from(d: Duration) -> Self {
        Self::Duration(d)
    }
}

macro_rules! count_value {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(n: $t) -> Self {
                Self::Count(u64::try_from(n).unwrap_or(u64::MAX))
            }
        }
    )*};
}
count_value!(u16, u32, u64, usize);

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
const MINUTE: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;
/// The longest retention: 100 years of 365 days.
pub const MAX_RETENTION: Duration = secs(36_500 * DAY);

use Range::{Count, Duration as Span};

/// Every ranged setting (without the `RTMANAGER_` prefix).
pub const RANGES: &[(&str, Range)] = &[
    // process
    ("SHUTDOWN_TIMEOUT", Span(secs(1), secs(HOUR))),
    // Below 2 a normal slow iteration would restart the process; above 100
    // a wedged loop would go unnoticed for hours.
    ("LIVENESS_STALL_FACTOR", Count(2, 100)),
    // postgres
    ("POSTGRES_MAX_CONNECTIONS", Count(1, 1_000)),
    // redis
    ("GAME_LEASE_TTL_SECONDS", Count(3, DAY)),
    // streams
    ("STREAM_MAXLEN", Count(0, 1_000_000_000_000)),
    ("STREAM_MIN_AGE", Span(secs(0), secs(365 * DAY))),
    ("OUTBOX_RETENTION", Span(secs(MINUTE), MAX_RETENTION)),
    ("DEDUPE_KEY_RETENTION", Span(secs(MINUTE), MAX_RETENTION)),
    // lifecycle
    ("CONTAINER_STOP_TIMEOUT_SECONDS", Count(0, HOUR)),
    ("PATCH_START_GRACE", Span(secs(0), secs(10 * MINUTE))),
    ("LOBBY_INTERNAL_TIMEOUT", Span(ms(1), secs(MINUTE))),
    // state
    ("GAME_STATE_OWNER_UID", Count(0, u32::MAX as u64 - 1)),
    ("GAME_STATE_OWNER_GID", Count(0, u32::MAX as u64 - 1)),
    // consumers
    ("START_JOBS_CONCURRENCY", Count(1, 1_024)),
    ("STOP_JOBS_CONCURRENCY", Count(1, 1_024)),
    ("JOB_RECLAIM_IDLE", Span(secs(1), secs(DAY))),
    ("STREAM_BLOCK", Span(ms(1), secs(30))),
    (
        "CONSUMER_IDLE_REMOVE_AFTER",
        Span(secs(MINUTE), secs(365 * DAY)),
    ),
    // inspect
    ("INSPECT_INTERVAL", Span(secs(1), secs(DAY))),
    ("INSPECT_TIMEOUT", Span(ms(100), secs(10 * MINUTE))),
    ("INSPECT_CONCURRENCY", Count(1, 1_024)),
    ("RECONCILE_INTERVAL", Span(secs(1), secs(7 * DAY))),
    // probe
    ("PROBE_INTERVAL", Span(ms(100), secs(HOUR))),
    ("PROBE_TIMEOUT", Span(ms(10), secs(MINUTE))),
    ("PROBE_FAILURES_THRESHOLD", Count(1, 1_000)),
    ("PROBE_INITIAL_GRACE", Span(secs(0), secs(HOUR))),
    ("PROBE_CONCURRENCY", Count(1, 65_536)),
    ("PROBE_REFRESH_INTERVAL", Span(ms(100), secs(HOUR))),
    ("SHARD_COUNT", Count(1, 1_024)),
    // cleanup
    ("CLEANUP_INTERVAL", Span(secs(1), secs(7 * DAY))),
    ("CONTAINER_RETENTION_DAYS", Count(0, 36_500)),
    // An image can be pulled again; a minute keeps one a start is about to
    // use from going between its pull and its container's creation.
    ("IMAGE_RETENTION", Span(secs(MINUTE), MAX_RETENTION)),
    // retention
    ("OPERATION_LOG_RETENTION", Span(secs(HOUR), MAX_RETENTION)),
    ("REMOVED_RECORD_RETENTION", Span(secs(HOUR), MAX_RETENTION)),
    ("STOP_TOMBSTONE_RETENTION", Span(secs(DAY), MAX_RETENTION)),
    // gateway
    ("HTTP_REQUEST_TIMEOUT", Span(ms(10), secs(HOUR))),
    ("HTTP_BODY_LIMIT", Count(1_024, 64 * 1024 * 1024)),
];

/// The range of `var`; every variable a section checks is in [`RANGES`].
pub fn range_of(var: &str) -> Option<Range> {
    RANGES.iter().find(|(v, _)| *v == var).map(|(_, r)| *r)
}

/// Checks each `(variable, value)` against its range.
pub fn check(values: &[(&str, Value)]) -> Result<(), ConfigError> {
    for (var, value) in values {
        let Some(range) = range_of(var) else {
            return Err(ConfigError::var(
                var,
                "has no range (a bug: add it to RANGES)",
            ));
        };
        if !range.contains(*value) {
            return Err(ConfigError::var(
                var,
                format!("{value} is out of range: must be {}", range.describe()),
            ));
        }
    }
    Ok(())
}

impl Range {
    pub fn contains(self, value: Value) -> bool {
        match (self, value) {
            (Self::Duration(lo, hi), Value::Duration(d)) => (lo..=hi).contains(&d),
            (Self::Count(lo, hi), Value::Count(n)) => (lo..=hi).contains(&n),
            _ => false,
        }
    }

    /// `1s to 1h`, `1 to 1024`: as the README's settings table shows it.
    pub fn describe(self) -> String {
        match self {
            Self::Duration(lo, hi) => format!("{} to {}", span(lo), span(hi)),
            Self::Count(lo, hi) => format!("{lo} to {hi}"),
        }
    }

    /// Values just outside the range (what the tests feed the sections), as
    /// the environment would hold them.
    pub fn outside(self) -> Vec<String> {
        match self {
            Self::Duration(lo, hi) => {
                let mut out = vec![format!("{}ms", hi.as_millis() + 1)];
                if lo >= ms(1) {
                    out.push(format!("{}us", lo.as_micros() - 1));
                }
                out
            }
            Self::Count(lo, hi) => {
                let mut out = vec![(u128::from(hi) + 1).to_string()];
                if lo > 0 {
                    out.push((lo - 1).to_string());
                }
                out
            }
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Duration(d) => f.write_str(&span(*d)),
            Self::Count(n) => write!(f, "{n}"),
        }
    }
}

/// A duration in its largest whole unit (`36500d`, `1h`, `100ms`).
fn span(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    if ms == 0 {
        return format!("{}us", d.as_micros());
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive_and_outside_values_are_just_outside() {
        for (var, range) in RANGES {
            let (lo, hi) = match range {
                Range::Duration(lo, hi) => (Value::Duration(*lo), Value::Duration(*hi)),
                Range::Count(lo, hi) => (Value::Count(*lo), Value::Count(*hi)),
            };
            assert!(range.contains(lo) && range.contains(hi), "{var}");
            assert!(!range.outside().is_empty(), "{var}");
        }
        assert_eq!(span(secs(36_500 * DAY)), "36500d");
        assert_eq!(span(ms(100)), "100ms");
        assert_eq!(span(secs(90)), "90s");
        assert_eq!(span(secs(0)), "0s");
    }

    #[test]
    fn every_variable_is_listed_once() {
        let mut names: Vec<&str> = RANGES.iter().map(|(v, _)| *v).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before);
    }
}
