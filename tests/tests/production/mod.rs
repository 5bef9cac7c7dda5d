//! What the Redis-in-production test files share: the long-running jobs as
//! processes of their own, and the core path (start job, result, events,
//! stop job) read back from the streams.

// Each test file uses a part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use shared::domain::GameId;
use system_tests::job_process::JobProcess;
use system_tests::{inspect, TestEnv, ENGINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Fast probing from the Docker host.
pub const FAST_PROBES: &[(&str, &str)] = &[
    ("RTMANAGER_PROBE_INTERVAL", "300ms"),
    ("RTMANAGER_PROBE_TIMEOUT", "200ms"),
    ("RTMANAGER_PROBE_FAILURES_THRESHOLD", "3"),
    ("RTMANAGER_PROBE_INITIAL_GRACE", "0s"),
    ("RTMANAGER_PROBE_REFRESH_INTERVAL", "200ms"),
    ("RTMANAGER_PROBE_ADDRESS_MODE", "container_ip"),
];

/// The long-running jobs, each a process of its own.
pub const LONG_RUNNING: &[&str] = &[
    "start-job",
    "stop-job",
    "docker-events",
    "healthz-prober",
    "rest-gateway",
];

/// The gateway's settings besides the environment's: its API on a free
/// port, no tokens.
pub fn gateway_vars() -> (String, Vec<(&'static str, String)>) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    (
        addr.clone(),
        vec![
            ("RTMANAGER_INTERNAL_HTTP_ADDR", addr),
            ("RTMANAGER_API_AUTH", "disabled".to_owned()),
        ],
    )
}

/// Starts `jobs`, each with `vars` and what `extra` adds for it.
pub fn spawn_jobs(
    env: &TestEnv,
    jobs: &[&str],
    mut extra: impl FnMut(&str) -> Vec<(&'static str, String)>,
) -> Vec<JobProcess> {
    jobs.iter()
        .map(|job| {
            let mut vars = extra(job);
            vars.push(("RTMANAGER_CONSUMER_NAME", format!("{job}-{}", env.id)));
            JobProcess::spawn(job, &env.vars, &vars, &[])
        })
        .collect()
}

/// Waits until every process reports `addr` as its Redis master.
pub async fn wait_all_use(env: &TestEnv, jobs: &[JobProcess], addr: &str, deadline: Duration) {
    let until = tokio::time::Instant::now() + deadline;
    for job in jobs {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        env.eventually(
            &format!("{} to use the Redis master {addr}", job.job),
            left,
            || async { (job.redis_master().await.as_deref() == Some(addr)).then_some(()) },
        )
        .await;
    }
}

pub fn start_fields(game: &GameId) -> [(&str, &str); 3] {
    [
        ("game_id", game.as_str()),
        ("image_ref", ENGINE),
        ("requested_at_ms", "1775121700000"),
    ]
}

pub fn stop_fields(game: &GameId) -> [(&str, &str); 3] {
    [
        ("game_id", game.as_str()),
        ("reason", "cancelled"),
        ("requested_at_ms", "1775121800000"),
    ]
}

/// The entries of `stream` about `game` appended at or after `since_ms`.
pub async fn entries_for(
    env: &TestEnv,
    stream: &str,
    game: &GameId,
    since_ms: u64,
) -> Vec<HashMap<String, String>> {
    env.read_stream(stream)
        .await
        .into_iter()
        .filter(|(id, _)| {
            id.split('-')
                .next()
                .and_then(|ms| ms.parse::<u64>().ok())
                .is_some_and(|ms| ms >= since_ms)
        })
        .map(|(_, f)| f)
        .filter(|f| f.get("game_id").map(String::as_str) == Some(game.as_str()))
        .collect()
}

/// Waits for `n` job results about `game` since `since_ms`; returns them.
pub async fn wait_results(
    env: &TestEnv,
    game: &GameId,
    since_ms: u64,
    n: usize,
) -> Vec<HashMap<String, String>> {
    let stream = env.config.common.streams.job_results.clone();
    env.eventually(
        &format!("{n} job result(s) for {game}"),
        Duration::from_secs(90),
        || async {
            let results = entries_for(env, &stream, game, since_ms).await;
            (results.len() >= n).then_some(results)
        },
    )
    .await
}

/// Waits for a health event of `event_type` about `game` since `since_ms`.
pub async fn wait_event(env: &TestEnv, game: &GameId, since_ms: u64, event_type: &str) {
    let stream = env.config.common.streams.health_events.clone();
    env.eventually(
        &format!("a {event_type} event for {game}"),
        Duration::from_secs(60),
        || async {
            entries_for(env, &stream, game, since_ms)
                .await
                .iter()
                .any(|e| e.get("event_type").map(String::as_str) == Some(event_type))
                .then_some(())
        },
    )
    .await
}

/// Unix time now, in ms (stream entry ids are such times).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Sets a running engine's health mode (`ok`, `fail`) over its control
/// route, on its address in the test network.
pub async fn set_engine_health(env: &TestEnv, game: &GameId, mode: &str) {
    let container = inspect(&game.container_name()).expect("engine container");
    let ip = container["NetworkSettings"]["Networks"][&env.network]["IPAddress"]
        .as_str()
        .expect("engine IP on the test network")
        .to_owned();
    let status = http(
        &format!("{ip}:8080"),
        "POST",
        &format!("/control?health={mode}"),
        "",
    )
    .await
    .expect("engine control route")
    .0;
    assert_eq!(status, 200, "health={mode}");
}

/// One HTTP/1.1 request; the status and the body.
pub async fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: rtm\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}
