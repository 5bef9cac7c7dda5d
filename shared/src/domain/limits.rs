//! Container resource limits read from image labels, with Docker's parsing rules.

use std::fmt;

/// Docker refuses a memory limit below 6 MiB; we refuse it before the daemon does.
pub const MIN_MEMORY_BYTES: i64 = 6 * 1024 * 1024;

/// `--memory`: bytes, parsed like Docker's `RAMInBytes` (`512m`, `1g`, `1.5g`,
/// `64MiB`; binary units; no exponent notation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimit(i64);

/// `--cpus`: a positive number of CPUs, stored as Docker's `NanoCpus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuQuota(i64);

/// `--pids-limit`: a positive number of processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidsLimit(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {raw:?} is invalid: {reason}")]
pub struct LimitError {
    pub what: &'static str,
    pub raw: String,
    pub reason: &'static str,
}

impl MemoryLimit {
    pub fn parse(raw: &str) -> Result<Self, LimitError> {
        let err = |reason| LimitError {
            what: "memory",
            raw: raw.to_owned(),
            reason,
        };
        let s = raw.trim();
        let number_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, mut suffix) = s.split_at(number_end);
        let valid_number = !number.is_empty()
            && !number.starts_with('.')
            && !number.ends_with('.')
            && number.matches('.').count() <= 1;
        if !valid_number {
            return Err(err(
                "expected a number with an optional unit (b, k, m, g, t, p)",
            ));
        }
        suffix = suffix.strip_prefix(' ').unwrap_or(suffix);
        let mut chars = suffix.chars();
        let multiplier: f64 = match chars.next().map(|c| c.to_ascii_lowercase()) {
            None => 1.0,
            Some('b') if suffix.len() == 1 => 1.0,
            Some('k') => 1024.0,
            Some('m') => 1024.0 * 1024.0,
            Some('g') => 1024.0 * 1024.0 * 1024.0,
            Some('t') => 1024.0f64.powi(4),
            Some('p') => 1024.0f64.powi(5),
            Some(_) => return Err(err("unknown unit")),
        };
        let rest: String = chars.collect::<String>().to_ascii_lowercase();
        if multiplier > 1.0 && !matches!(rest.as_str(), "" | "b" | "i" | "ib") {
            return Err(err("unknown unit"));
        }
        let value: f64 = number.parse().map_err(|_| err("not a number"))?;
        let bytes = value * multiplier;
        if !bytes.is_finite() || bytes >= i64::MAX as f64 {
            return Err(err("too large"));
        }
        let bytes = bytes as i64;
        if bytes < MIN_MEMORY_BYTES {
            return Err(err("below Docker's minimum of 6 MiB"));
        }
        Ok(Self(bytes))
    }

    pub fn bytes(self) -> i64 {
        self.0
    }
}

impl CpuQuota {
    pub fn parse(raw: &str) -> Result<Self, LimitError> {
        let err = |reason| LimitError {
            what: "cpu_quota",
            raw: raw.to_owned(),
            reason,
        };
        let value: f64 = raw.trim().parse().map_err(|_| err("not a number"))?;
        if !(0.01..=1024.0).contains(&value) {
            return Err(err("must be between 0.01 and 1024 CPUs"));
        }
        Ok(Self((value * 1e9).round() as i64))
    }

    pub fn nano_cpus(self) -> i64 {
        self.0
    }
}

impl PidsLimit {
    pub fn parse(raw: &str) -> Result<Self, LimitError> {
        let err = |reason| LimitError {
            what: "pids_limit",
            raw: raw.to_owned(),
            reason,
        };
        let value: i64 = raw.trim().parse().map_err(|_| err("not an integer"))?;
        if value <= 0 {
            return Err(err("must be positive"));
        }
        Ok(Self(value))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for MemoryLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}b", self.0)
    }
}

/// The limits a container is created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceLimits {
    pub cpu: CpuQuota,
    pub memory: MemoryLimit,
    pub pids: PidsLimit,
}

/// Image label names the Go service reads limits from.
pub const LABEL_CPU_QUOTA: &str = "com.galaxy.cpu_quota";
pub const LABEL_MEMORY: &str = "com.galaxy.memory";
pub const LABEL_PIDS_LIMIT: &str = "com.galaxy.pids_limit";

impl ResourceLimits {
    /// Reads the three image labels; a missing label takes the default, and a
    /// bad one takes the default too, reported back so the caller can warn.
    pub fn from_image_labels(
        labels: &std::collections::HashMap<String, String>,
        defaults: ResourceLimits,
    ) -> (Self, Vec<LimitError>) {
        let mut rejected = Vec::new();
        let cpu = label_or(
            labels,
            LABEL_CPU_QUOTA,
            defaults.cpu,
            CpuQuota::parse,
            &mut rejected,
        );
        let memory = label_or(
            labels,
            LABEL_MEMORY,
            defaults.memory,
            MemoryLimit::parse,
            &mut rejected,
        );
        let pids = label_or(
            labels,
            LABEL_PIDS_LIMIT,
            defaults.pids,
            PidsLimit::parse,
            &mut rejected,
        );
        (Self { cpu, memory, pids }, rejected)
    }
}

fn label_or<T>(
    labels: &std::collections::HashMap<String, String>,
    key: &str,
    default: T,
    parse: fn(&str) -> Result<T, LimitError>,
    rejected: &mut Vec<LimitError>,
) -> T {
    match labels.get(key) {
        None => default,
        Some(raw) => parse(raw).unwrap_or_else(|e| {
            rejected.push(e);
            default
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: i64 = 1024 * 1024;

    #[test]
    fn memory_parses_like_docker() {
        for (raw, bytes) in [
            ("512m", 512 * MI),
            ("512M", 512 * MI),
            ("1g", 1024 * MI),
            ("1.5g", 1536 * MI),
            ("64MiB", 64 * MI),
            ("64mb", 64 * MI),
            ("64 m", 64 * MI),
            ("8388608", 8 * MI),
            ("8388608b", 8 * MI),
            ("7000k", 7000 * 1024),
        ] {
            assert_eq!(
                MemoryLimit::parse(raw).map(MemoryLimit::bytes),
                Ok(bytes),
                "{raw}"
            );
        }
    }

    #[test]
    fn memory_rejects_what_docker_rejects() {
        for bad in [
            "",
            "m",
            "1e3",
            "-1m",
            "1.2.3m",
            "12parsecs",
            "1x",
            "1mx",
            ".5g",
            "1m",
        ] {
            assert!(MemoryLimit::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cpu_and_pids_must_be_positive_numbers() {
        assert_eq!(CpuQuota::parse("0.5").unwrap().nano_cpus(), 500_000_000);
        assert_eq!(CpuQuota::parse("1.0").unwrap().nano_cpus(), 1_000_000_000);
        for bad in ["lots", "0", "-1", "NaN", "inf"] {
            assert!(CpuQuota::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(PidsLimit::parse("128").unwrap().get(), 128);
        for bad in ["-3", "0", "1.5", "x"] {
            assert!(PidsLimit::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_labels_fall_back_to_defaults_and_are_reported() {
        let defaults = ResourceLimits {
            cpu: CpuQuota::parse("1.0").unwrap(),
            memory: MemoryLimit::parse("512m").unwrap(),
            pids: PidsLimit::parse("512").unwrap(),
        };
        let labels = [
            (LABEL_CPU_QUOTA, "lots"),
            (LABEL_MEMORY, "64m"),
            (LABEL_PIDS_LIMIT, "-3"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let (limits, rejected) = ResourceLimits::from_image_labels(&labels, defaults);
        assert_eq!(limits.cpu, defaults.cpu);
        assert_eq!(limits.memory.bytes(), 64 * MI);
        assert_eq!(limits.pids, defaults.pids);
        assert_eq!(rejected.len(), 2);
    }
}
