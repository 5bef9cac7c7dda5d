//! What the observability and readiness test files share: every
//! long-running job as a process of its own (inspect-cron and cleanup-cron
//! with `--every`), their `/healthz`, `/readyz` and `/metrics`, and reads of
//! one series.

// Each test file uses a part of this module.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::Value;
use system_tests::job_process::JobProcess;
use system_tests::TestEnv;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `RTMANAGER_LIVENESS_STALL_FACTOR` of the tests: the smallest allowed, so
/// every main loop here is watched at the floor, `shared::liveness::MIN_STALL`
/// (10 s; the consumers' 10.4 s: twice their 200 ms block plus the 5 s retry
/// cap).
pub const STALL_FACTOR: &str = "2";

/// Longer than every stall limit above: a loop that stopped ticking for a
/// dependency's absence is caught within it.
pub const STALL_WINDOW: Duration = Duration::from_secs(14);

/// The long-running jobs and their arguments.
pub const LONG_RUNNING: &[(&str, &[&str])] = &[
    ("start-job", &[]),
    ("stop-job", &[]),
    ("docker-events", &[]),
    ("healthz-prober", &[]),
    ("inspect-cron", &["--every", "1s"]),
    ("cleanup-cron", &["--every", "1s"]),
    ("rest-gateway", &[]),
];

/// Fast probing from the Docker host.
pub const FAST_PROBES: &[(&str, &str)] = &[
    ("RTMANAGER_PROBE_INTERVAL", "300ms"),
    ("RTMANAGER_PROBE_TIMEOUT", "200ms"),
    ("RTMANAGER_PROBE_FAILURES_THRESHOLD", "3"),
    ("RTMANAGER_PROBE_INITIAL_GRACE", "0s"),
    ("RTMANAGER_PROBE_REFRESH_INTERVAL", "200ms"),
    ("RTMANAGER_PROBE_ADDRESS_MODE", "container_ip"),
];

/// The env's settings for these tests: fast probes and the test stall factor.
pub fn settings<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    FAST_PROBES
        .iter()
        .copied()
        .chain([("RTMANAGER_LIVENESS_STALL_FACTOR", STALL_FACTOR)])
        .chain(extra.iter().copied())
        .collect()
}

/// The long-running jobs, each a process with its endpoints up.
pub struct Fleet {
    pub jobs: Vec<JobProcess>,
    /// The gateway's API address.
    pub api: String,
}

impl Fleet {
    /// Starts `jobs` (names of [`LONG_RUNNING`]) with the env's settings
    /// plus `extra`, and waits until each one's `/healthz` answers.
    pub async fn start(env: &TestEnv, jobs: &[&str], extra: &[(&'static str, String)]) -> Self {
        let api = format!("127.0.0.1:{}", system_tests::free_port());
        let starting = LONG_RUNNING
            .iter()
            .filter(|(job, _)| jobs.contains(job))
            .map(|(job, args)| {
                let mut vars: Vec<(&'static str, String)> = extra.to_vec();
                vars.push(("RTMANAGER_CONSUMER_NAME", format!("{job}-{}", env.id)));
                if *job == "rest-gateway" {
                    vars.push(("RTMANAGER_INTERNAL_HTTP_ADDR", api.clone()));
                    vars.push(("RTMANAGER_API_AUTH", "disabled".to_owned()));
                }
                async move { JobProcess::ready(env, job, args, &vars).await }
            });
        let jobs = futures_util::future::join_all(starting).await;
        Self { jobs, api }
    }

    /// Every long-running job.
    pub async fn all(env: &TestEnv, extra: &[(&'static str, String)]) -> Self {
        let names: Vec<&str> = LONG_RUNNING.iter().map(|(job, _)| *job).collect();
        Self::start(env, &names, extra).await
    }

    pub fn job(&self, name: &str) -> &JobProcess {
        self.jobs
            .iter()
            .find(|j| j.job == name)
            .unwrap_or_else(|| panic!("{name} is not in the fleet"))
    }

    /// None has exited.
    pub fn assert_running(&mut self) {
        for job in &mut self.jobs {
            let name = job.job.clone();
            assert!(job.is_running(), "{name} exited:\n{}", tail(job));
        }
    }
}

/// The end of a process's output, for failure messages.
pub fn tail(job: &JobProcess) -> String {
    let out = job.output();
    let lines: Vec<&str> = out.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// `GET path` on `addr`: the status and the body (JSON when it is).
pub async fn get(addr: &str, path: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: rtm\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&raw).into_owned())
    };
    // The endpoints are bounded: an answer within 10 s or a failure.
    let text = match tokio::time::timeout(Duration::from_secs(10), exchange).await {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => panic!("GET {addr}{path}: {e}"),
        Err(_) => panic!("GET {addr}{path} did not answer within 10 s"),
    };
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

pub async fn get_json(addr: &str, path: &str) -> (u16, Value) {
    let (status, body) = get(addr, path).await;
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET {addr}{path}: {status} {body:?} is not JSON: {e}"));
    (status, json)
}

pub async fn healthz(job: &JobProcess) -> (u16, Value) {
    get_json(&job.metrics_addr, "/healthz").await
}

pub async fn readyz(job: &JobProcess) -> (u16, Value) {
    get_json(&job.metrics_addr, "/readyz").await
}

pub async fn metrics(job: &JobProcess) -> String {
    let (status, body) = get(&job.metrics_addr, "/metrics").await;
    assert_eq!(status, 200, "{}: /metrics {body}", job.job);
    body
}

/// The value of one series of an OpenMetrics text: `series` is the name
/// with its labels exactly as encoded (`rtmanager_probes_total{result="ok",reason=""}`),
/// or the bare name of an unlabelled one.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Unix time now, in seconds.
pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}
