//! The gateway's observe and discovery routes on real containers, PostgreSQL
//! and Redis, served by `rest_gateway::run` on port 0; a real Prometheus
//! (Debian's `prometheus`) discovering targets through HTTP SD and file SD;
//! Schemathesis against the REST contract.
//!
//! Prometheus (a Debian package) and Schemathesis (in the project's virtual
//! environment, `.local/venv`) are installed by `scripts/install-test-tools`
//! (run by `scripts/test`); a missing tool fails the test with that fix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use shared::adapters::docker::DockerEngine;
use shared::domain::{GameId, OpSource, Outcome, StopReason};
use shared::operations::StartRequest;
use shared::operations::{OperationRequest, Operations};
use system_tests::{random_suffix, TestEnv, ENGINE};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "monitoring-test-token-0123456789abcdef01";
const HEALTHCHECK_ENGINE: &str = "galaxy-test/engine:healthcheck";
const START_LINE: &str = "test-engine listening on";

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

async fn env() -> TestEnv {
    TestEnv::with(&[("RTMANAGER_API_TOKENS", TOKEN)]).await
}

/// The gateway, served in-process until dropped.
struct Gateway {
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Gateway {
    async fn start(env: &TestEnv) -> Self {
        Self::start_with(env, env.infra.clone()).await
    }

    async fn start_with(env: &TestEnv, infra: shared::bootstrap::Infra) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let config = env.config.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = rest_gateway::run((&config).into(), infra, listener, stop).await {
                panic!("rest-gateway failed: {e:#}");
            }
        });
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Self {
            base,
            http,
            shutdown,
        }
    }

    fn targets_url(&self) -> String {
        format!("{}/api/v1/internal/monitoring/targets", self.base)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Status and JSON body.
    async fn get_json(&self, path: &str) -> (u16, Value) {
        let resp = self.get(path).await;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.expect("body");
        let json = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "GET {path}: {status} body is not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        });
        (status, json)
    }

    async fn get_text(&self, path: &str) -> (u16, String) {
        let resp = self.get(path).await;
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn lifecycle(env: &TestEnv) -> Operations {
    system_tests::operations(&env.config, &env.infra).expect("lifecycle service")
}

async fn start(svc: &Operations, game: &GameId, image: &str) -> String {
    let outcome = svc
        .start(&StartRequest {
            game_id: game.clone(),
            image_ref: image.to_owned(),
            op_source: OpSource::AdminRest,
            source_ref: "monitoring-test".into(),
        })
        .await;
    assert_eq!(outcome.outcome, Outcome::Success, "{outcome:?}");
    outcome
        .record
        .and_then(|r| r.current_container_id)
        .expect("container id")
}

fn op(game: &GameId) -> OperationRequest {
    OperationRequest {
        game_id: game.clone(),
        op_source: OpSource::AdminRest,
        source_ref: format!("monitoring-test-{}", random_suffix()),
    }
}

async fn stop(svc: &Operations, game: &GameId) {
    let done = svc.stop(&op(game), StopReason::Cancelled, None).await;
    assert_eq!(done.outcome, Outcome::Success, "{done:?}");
}

async fn stop_and_clean_up(svc: &Operations, game: &GameId) {
    stop(svc, game).await;
    let done = svc.cleanup(&op(game)).await;
    assert_eq!(done.outcome, Outcome::Success, "{done:?}");
}

fn assert_error(status: u16, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

/// The groups of the targets endpoint, by game id.
async fn discovered(gw: &Gateway, query: &str) -> BTreeMap<String, Value> {
    let (status, body) = gw
        .get_json(&format!("/api/v1/internal/monitoring/targets{query}"))
        .await;
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .expect("an array of target groups")
        .iter()
        .map(|g| {
            (
                g["labels"]["game_id"].as_str().unwrap().to_owned(),
                g.clone(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Observe: stats, logs, health
// ---------------------------------------------------------------------------

#[tokio::test]
async fn stats_of_a_running_engine_are_one_snapshot_within_its_limits() {
    let env = env().await;
    let svc = lifecycle(&env);
    let game = env.game("stats");
    let container = start(&svc, &game, ENGINE).await;
    let gw = Gateway::start(&env).await;
    let (status, s) = gw
        .get_json(&format!("/api/v1/internal/runtimes/{game}/stats"))
        .await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["container_id"], container.as_str());
    // The image's com.galaxy.memory=64m label is the container's limit.
    assert_eq!(s["memory_limit_bytes"], 64 * 1024 * 1024, "{s}");
    assert!(s["cpu_percent"].as_f64().unwrap() >= 0.0, "{s}");
    let used = s["memory_used_bytes"].as_i64().unwrap();
    assert!(used > 0 && used < 64 * 1024 * 1024, "{s}");
    for counter in ["network_rx_bytes", "network_tx_bytes"] {
        assert!(s[counter].as_i64().unwrap() >= 0, "{counter}: {s}");
    }
    for counter in ["block_read_bytes", "block_write_bytes"] {
        assert!(s[counter].as_i64().unwrap() >= -1, "{counter}: {s}");
    }
    assert!(s["read_at_ms"].as_i64().unwrap() > 0, "{s}");
}

#[tokio::test]
async fn logs_hold_the_engine_start_line_and_tail_limits_them() {
    let env = env().await;
    let svc = lifecycle(&env);
    let game = env.game("logs");
    start(&svc, &game, ENGINE).await;
    let gw = Gateway::start(&env).await;
    let logs = format!("/api/v1/internal/runtimes/{game}/logs");
    // The engine prints its start line right after it starts.
    let text = env
        .eventually(
            "the engine's start line",
            Duration::from_secs(20),
            || async {
                let (status, text) = gw.get_text(&logs).await;
                assert_eq!(status, 200, "{text}");
                text.contains(START_LINE).then_some(text)
            },
        )
        .await;
    assert!(text.ends_with('\n'), "{text:?}");

    let resp = gw.get(&format!("{logs}?tail=1")).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let one = resp.text().await.unwrap();
    assert_eq!(one.lines().count(), 1, "{one:?}");
    assert!(text.ends_with(&one), "the last line: {one:?} of {text:?}");

    let (_, stamped) = gw.get_text(&format!("{logs}?tail=1&timestamps=true")).await;
    let (stamp, line) = stamped.split_once(' ').expect("a timestamp prefix");
    assert!(
        chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
        "{stamped:?}"
    );
    assert_eq!(line, one);

    let (_, none) = gw.get_text(&format!("{logs}?tail=0")).await;
    assert_eq!(none, "");

    for bad in [
        "tail=10001",
        "tail=-1",
        "tail=all",
        "timestamps=yes",
        "color=1",
    ] {
        let (status, body) = gw.get_json(&format!("{logs}?{bad}")).await;
        assert_error(status, &body, 400, "invalid_request");
    }
}

#[tokio::test]
async fn followed_logs_stream_until_the_container_stops() {
    let env = env().await;
    let svc = lifecycle(&env);
    let game = env.game("follow");
    start(&svc, &game, ENGINE).await;
    let gw = Gateway::start(&env).await;
    let mut resp = gw
        .get(&format!(
            "/api/v1/internal/runtimes/{game}/logs?follow=true&tail=100"
        ))
        .await;
    assert_eq!(resp.status(), 200);
    let mut seen = String::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        while !seen.contains(START_LINE) {
            match resp.chunk().await.expect("log chunk") {
                Some(chunk) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                None => panic!("the followed stream ended early: {seen:?}"),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no start line within 20 s: {seen:?}");

    // The stream is still open; stopping the container ends it.
    let stopper = {
        let svc = svc.clone();
        let game = game.clone();
        tokio::spawn(async move { stop(&svc, &game).await })
    };
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = resp.chunk().await.expect("log chunk") {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the followed stream did not end after the stop"
    );
    stopper.await.unwrap();
}

#[tokio::test]
async fn docker_health_is_reported_with_and_without_a_healthcheck() {
    let env = env().await;
    let svc = lifecycle(&env);
    let plain = env.game("nohc");
    let checked = env.game("hc");
    start(&svc, &plain, ENGINE).await;
    start(&svc, &checked, HEALTHCHECK_ENGINE).await;
    let gw = Gateway::start(&env).await;

    let (status, h) = gw
        .get_json(&format!("/api/v1/internal/runtimes/{plain}/health"))
        .await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["has_healthcheck"], false, "{h}");
    assert_eq!(h["status"], "none", "{h}");
    assert_eq!(h["failing_streak"], 0, "{h}");

    // Interval 1 s: healthy after the first passing check.
    let h = env
        .eventually(
            "a healthy Docker health check",
            Duration::from_secs(30),
            || async {
                let (status, h) = gw
                    .get_json(&format!("/api/v1/internal/runtimes/{checked}/health"))
                    .await;
                assert_eq!(status, 200, "{h}");
                assert_eq!(h["has_healthcheck"], true, "{h}");
                (h["status"] == "healthy").then_some(h)
            },
        )
        .await;
    assert_eq!(h["failing_streak"], 0, "{h}");
    assert!(h["last_output"].is_string(), "{h}");
}

#[tokio::test]
async fn observe_routes_answer_400_for_bad_ids_and_404_without_a_container() {
    let env = env().await;
    let svc = lifecycle(&env);
    let gone = env.game("gone");
    start(&svc, &gone, ENGINE).await;
    stop_and_clean_up(&svc, &gone).await;
    let unknown = env.game("never");
    let gw = Gateway::start(&env).await;
    for route in ["stats", "logs", "health"] {
        for bad in ["-starts-with-dash", "has.dot", "a%20b", &"x".repeat(52)] {
            let (status, body) = gw
                .get_json(&format!("/api/v1/internal/runtimes/{bad}/{route}"))
                .await;
            assert_error(status, &body, 400, "invalid_request");
        }
        for missing in [&unknown, &gone] {
            let (status, body) = gw
                .get_json(&format!("/api/v1/internal/runtimes/{missing}/{route}"))
                .await;
            assert_error(status, &body, 404, "not_found");
        }
    }
}

#[tokio::test]
async fn observe_routes_answer_503_when_docker_is_unreachable() {
    let env = env().await;
    let svc = lifecycle(&env);
    let game = env.game("nodocker");
    start(&svc, &game, ENGINE).await;
    let mut infra = env.infra.clone();
    // A loopback port nothing listens on: every Docker call is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    infra.engine = std::sync::Arc::new(
        DockerEngine::connect(&format!("tcp://127.0.0.1:{port}")).expect("client"),
    );
    let gw = Gateway::start_with(&env, infra).await;
    for route in ["stats", "logs", "health", "logs?follow=true"] {
        let (status, body) = gw
            .get_json(&format!("/api/v1/internal/runtimes/{game}/{route}"))
            .await;
        assert_error(status, &body, 503, "docker_unavailable");
    }
}

// ---------------------------------------------------------------------------
// Discovery over HTTP
// ---------------------------------------------------------------------------

#[tokio::test]
async fn discovery_lists_running_games_and_stopped_ones_only_on_request() {
    let env = env().await;
    let svc = lifecycle(&env);
    let running = env.game("up");
    let stopped = env.game("down");
    start(&svc, &running, ENGINE).await;
    start(&svc, &stopped, ENGINE).await;
    stop(&svc, &stopped).await;
    let gw = Gateway::start(&env).await;

    let resp = gw.get("/api/v1/internal/monitoring/targets").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let active = discovered(&gw, "").await;
    assert_eq!(
        active.keys().collect::<Vec<_>>(),
        [running.as_str()],
        "{active:?}"
    );
    let group = &active[running.as_str()];
    let address = format!("galaxy-game-{running}:8080");
    assert_eq!(group["targets"], serde_json::json!([address]));
    let labels = group["labels"].as_object().unwrap();
    assert_eq!(labels["vmid"], running.as_str());
    assert_eq!(labels["instance"], address.as_str());
    assert_eq!(labels["container_type"], "game-engine");
    assert_eq!(labels["image_ref"], ENGINE);
    assert_eq!(labels["__meta_rtmanager_status"], "running");
    assert_eq!(labels["__meta_rtmanager_connectable"], "true");
    assert_eq!(labels["__meta_rtmanager_operation_in_progress"], "false");
    assert_eq!(labels["__meta_rtmanager_last_operation"], "start");
    for (name, value) in labels {
        assert!(
            name.chars().next().unwrap().is_ascii_alphabetic() || name.starts_with('_'),
            "{name}"
        );
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{name}"
        );
        assert!(value.is_string(), "{name}: {value}");
    }
    // No secret of the configuration appears anywhere in the answer.
    let raw = gw
        .get("/api/v1/internal/monitoring/targets?include=historical")
        .await
        .text()
        .await
        .unwrap();
    for secret in [TOKEN, env.dsn.as_str(), env.schema.as_str()] {
        assert!(!raw.contains(secret), "{secret} leaked: {raw}");
    }

    let all = discovered(&gw, "?include=historical").await;
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(
        all[stopped.as_str()]["labels"]["__meta_rtmanager_status"],
        "stopped"
    );
    assert_eq!(
        all[stopped.as_str()]["labels"]["__meta_rtmanager_connectable"],
        "false"
    );
    assert_eq!(
        all[stopped.as_str()]["labels"]["__meta_rtmanager_last_operation"],
        "stop"
    );

    // A held lease is an operation in progress.
    let leases =
        shared::adapters::redis::LeaseStore::new(env.infra.redis.clone(), Duration::from_secs(30));
    let lease = leases.try_acquire(&running).await.unwrap().expect("lease");
    let busy = discovered(&gw, "").await;
    let labels = &busy[running.as_str()]["labels"];
    assert_eq!(labels["__meta_rtmanager_operation_in_progress"], "true");
    assert_eq!(labels["__meta_rtmanager_operation_type"], "unknown");
    lease.release().await;

    let (status, body) = gw
        .get_json("/api/v1/internal/monitoring/targets?include=everything")
        .await;
    assert_error(status, &body, 400, "invalid_request");
}

#[tokio::test]
async fn discovery_fails_closed_without_a_token() {
    let env = env().await;
    let gw = Gateway::start(&env).await;
    for auth in [None, Some("Bearer wrong-token"), Some("Basic Zm9vOmJhcg==")] {
        let mut req = gw.http.get(gw.targets_url());
        if let Some(value) = auth {
            req = req.header("authorization", value);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{auth:?}");
        let body = resp.text().await.unwrap();
        assert!(!body.contains("galaxy-game-"), "{body}");
    }
}

#[tokio::test]
async fn a_failed_discovery_is_an_error_and_leaves_the_file_sd_file_alone() {
    let env = env().await;
    let svc = lifecycle(&env);
    let game = env.game("sabotage");
    start(&svc, &game, ENGINE).await;
    let out = env.state_root.join("targets.json");
    assert_eq!(
        rest_gateway::file_sd::sync_file_sd(&env.config.common.redis, &env.infra, &out)
            .await
            .unwrap(),
        1
    );
    let before = std::fs::read(&out).unwrap();
    let gw = Gateway::start(&env).await;
    sqlx::query("ALTER TABLE health_snapshots RENAME TO health_snapshots_gone")
        .execute(env.db().pool())
        .await
        .unwrap();

    let (status, body) = gw.get_json("/api/v1/internal/monitoring/targets").await;
    assert!(status >= 500, "{status} {body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    let err = rest_gateway::file_sd::sync_file_sd(&env.config.common.redis, &env.infra, &out)
        .await
        .expect_err("the sync must fail");
    assert!(format!("{err:#}").contains("left unchanged"), "{err:#}");
    assert_eq!(std::fs::read(&out).unwrap(), before);
    assert!(rest_gateway::file_sd::run_once(&(&env.config).into(), &out)
        .await
        .is_err());
    assert_eq!(std::fs::read(&out).unwrap(), before);

    sqlx::query("ALTER TABLE health_snapshots_gone RENAME TO health_snapshots")
        .execute(env.db().pool())
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------
// A real Prometheus
// ---------------------------------------------------------------------------

/// A Prometheus server of our own (not the Debian package's service), on a
/// free loopback port with a temporary data directory; killed on drop.
struct Prometheus {
    child: Child,
    base: String,
    dir: PathBuf,
    http: reqwest::Client,
}

impl Prometheus {
    async fn start(scrape_configs: &str) -> Self {
        let binary = which("prometheus").unwrap_or_else(|| {
            panic!("prometheus is not installed: run scripts/install-test-tools (apt-get install prometheus)")
        });
        let dir = std::env::temp_dir().join(format!("rtm-prom-{}", random_suffix()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1m\n  scrape_timeout: 1s\n  evaluation_interval: 1m\nscrape_configs:\n{scrape_configs}"
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let spawned = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn();
        let child = spawned.unwrap_or_else(|e| {
            let _ = std::fs::remove_dir_all(&dir);
            panic!("start prometheus: {e}")
        });
        let prometheus = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        };
        let until = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ready = prometheus
                .http
                .get(format!("{}/-/ready", prometheus.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break prometheus;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "prometheus did not become ready: {}",
                prometheus.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Active targets of `job`, by their `game_id` discovered label.
    async fn targets(&self, job: &str) -> BTreeMap<String, Value> {
        let body: Value = serde_json::from_slice(
            &self
                .http
                .get(format!("{}/api/v1/targets?state=active", self.base))
                .send()
                .await
                .expect("prometheus /api/v1/targets")
                .bytes()
                .await
                .unwrap(),
        )
        .expect("targets JSON");
        body["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t["scrapePool"] == job)
            .filter_map(|t| {
                let game = t["discoveredLabels"]["game_id"].as_str()?.to_owned();
                Some((game, t))
            })
            .collect()
    }

    /// Waits until the discovered games of `job` are exactly `games`.
    async fn wait_for(&self, job: &str, games: &[&GameId]) -> BTreeMap<String, Value> {
        let want: Vec<&str> = games.iter().map(|g| g.as_str()).collect();
        let until = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let found = self.targets(job).await;
            if found.keys().map(String::as_str).eq(want.iter().copied()) {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "prometheus job {job}: wanted {want:?}, found {:?}\n{}",
                found.keys().collect::<Vec<_>>(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.is_file())
    })
}

fn assert_prometheus_labels(target: &Value, game: &GameId) {
    let discovered = &target["discoveredLabels"];
    let labels = &target["labels"];
    let address = format!("galaxy-game-{game}:8080");
    assert_eq!(discovered["__address__"], address.as_str(), "{target}");
    assert_eq!(discovered["__meta_rtmanager_status"], "running", "{target}");
    assert_eq!(
        discovered["__meta_rtmanager_connectable"], "true",
        "{target}"
    );
    for (name, value) in [
        ("vmid", game.as_str()),
        ("game_id", game.as_str()),
        ("container_type", "game-engine"),
        ("instance", address.as_str()),
        ("image_ref", ENGINE),
    ] {
        assert_eq!(labels[name], value, "{name}: {target}");
    }
    // Lifecycle state stays in the discovered (meta) labels only.
    assert!(labels.get("__meta_rtmanager_status").is_none(), "{target}");
}

#[tokio::test]
async fn prometheus_http_sd_discovers_running_games_and_drops_cleaned_up_ones() {
    let env = env().await;
    let svc = lifecycle(&env);
    let kept = env.game("promkeep");
    let dropped = env.game("promdrop");
    start(&svc, &kept, ENGINE).await;
    start(&svc, &dropped, ENGINE).await;
    let gw = Gateway::start(&env).await;
    let prometheus = Prometheus::start(&format!(
        "  - job_name: rtmanager-http-sd\n    http_sd_configs:\n      - url: {}\n        refresh_interval: 1s\n        authorization:\n          type: Bearer\n          credentials: {TOKEN}\n",
        gw.targets_url()
    ))
    .await;
    let found = prometheus
        .wait_for("rtmanager-http-sd", &[&dropped, &kept])
        .await;
    assert_prometheus_labels(&found[kept.as_str()], &kept);
    assert_prometheus_labels(&found[dropped.as_str()], &dropped);

    stop_and_clean_up(&svc, &dropped).await;
    prometheus.wait_for("rtmanager-http-sd", &[&kept]).await;
}

#[tokio::test]
async fn prometheus_file_sd_follows_each_sync_file_sd_run() {
    let env = env().await;
    let svc = lifecycle(&env);
    let kept = env.game("filekeep");
    let dropped = env.game("filedrop");
    start(&svc, &kept, ENGINE).await;
    start(&svc, &dropped, ENGINE).await;
    let dir = env.state_root.join("file-sd");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("targets.json");
    let sync = |out: PathBuf| {
        let (config, infra) = (env.config.clone(), env.infra.clone());
        async move {
            rest_gateway::file_sd::sync_file_sd(&config.common.redis, &infra, &out)
                .await
                .expect("sync-file-sd")
        }
    };
    assert_eq!(sync(out.clone()).await, 2);
    let prometheus = Prometheus::start(&format!(
        "  - job_name: rtmanager-file-sd\n    file_sd_configs:\n      - files: ['{}']\n        refresh_interval: 1s\n",
        out.display()
    ))
    .await;
    let found = prometheus
        .wait_for("rtmanager-file-sd", &[&dropped, &kept])
        .await;
    assert_prometheus_labels(&found[kept.as_str()], &kept);
    assert_eq!(
        found[kept.as_str()]["discoveredLabels"]["__meta_filepath"],
        out.to_str().unwrap()
    );

    stop_and_clean_up(&svc, &dropped).await;
    // Until the next sync the file still lists it: nothing else writes it.
    assert_eq!(prometheus.targets("rtmanager-file-sd").await.len(), 2);
    // The binary's entry point this time (its own connections, no Docker).
    let written = rest_gateway::file_sd::run_once(&(&env.config).into(), &out)
        .await
        .expect("rest-gateway sync-file-sd");
    assert_eq!(written, 1);
    prometheus.wait_for("rtmanager-file-sd", &[&kept]).await;
    assert_only_file(&dir, "targets.json");
}

fn assert_only_file(dir: &Path, name: &str) {
    let names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [name], "temporary files left behind");
}

// ---------------------------------------------------------------------------
// Schemathesis against the REST contract
// ---------------------------------------------------------------------------

/// `not_a_server_error`, except for the two documented 502 outcomes of a
/// lifecycle operation whose request was valid (an image that cannot be
/// pulled, a container that does not start): a fuzzer sending well-formed
/// image references meets them by design. Anything else at 500 or above, or a
/// 5xx without the error envelope, fails the run.
///
/// And every valid game id the run sends ends in the test env's id, as the
/// ids of its own games do (`TestEnv::game`), so whatever the fuzzer starts,
/// from the contract's examples or from generated ids, is the env's to
/// remove. An invalid id is sent as drawn: it never reaches Docker.
const SCHEMATHESIS_HOOKS: &str = r#"
import os
import re

import schemathesis

DOCUMENTED_502 = {"image_pull_failed", "container_start_failed"}
GAME_SUFFIX = "-" + os.environ["RTM_TEST_ENV_ID"]
VALID_GAME_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,50}")


# Right before each request, whatever phase made the case (the contract's
# examples are not drawn, so a `map_` hook never sees them).
@schemathesis.hook
def before_call(ctx, case, **kwargs):
    game = (case.path_parameters or {}).get("game_id")
    if isinstance(game, str) and VALID_GAME_ID.fullmatch(game) and not game.endswith(GAME_SUFFIX):
        case.path_parameters["game_id"] = game[: 51 - len(GAME_SUFFIX)] + GAME_SUFFIX


@schemathesis.check
def rtm_no_server_error(ctx, response, case):
    if response.status_code < 500:
        return None
    try:
        code = response.json()["error"]["code"]
    except Exception:
        code = None
    if response.status_code == 502 and code in DOCUMENTED_502:
        return None
    raise AssertionError(
        f"server error {response.status_code} (code {code!r}): {response.text[:300]}"
    )
"#;

/// Property-based requests from `contracts/rest-gateway.openapi.yaml` (bad
/// bodies, bad ids, unknown fields, wrong types, out-of-range values) against
/// the running gateway: no server error, no crash. Half of the observe
/// requests name a live game, so stats, logs and health of a real container
/// are fuzzed too (without `follow`, which would stream until the request
/// timeout). Bounded: 20 examples per operation, 10 s a request, 4 minutes.
/// Every game the run reached carries the env's id.
#[tokio::test]
async fn schemathesis_finds_no_server_error_in_the_rest_contract() {
    let st = schemathesis();
    // `REST_GATEWAY_CONTRACT` points the run at another copy of the contract.
    let contract = std::env::var_os("REST_GATEWAY_CONTRACT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../contracts/rest-gateway.openapi.yaml")
        });
    let contract = contract
        .canonicalize()
        .unwrap_or_else(|e| panic!("the REST contract {}: {e}", contract.display()));
    let env = env().await;
    let svc = lifecycle(&env);
    let game = env.game("st");
    start(&svc, &game, ENGINE).await;
    let gw = Gateway::start(&env).await;

    let hooks = env.state_root.join("schemathesis_hooks.py");
    std::fs::write(&hooks, SCHEMATHESIS_HOOKS).unwrap();
    let config = env.state_root.join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[dictionaries.live_games]
values = ["{game}"]

[[operations]]
include-path-regex = '^/api/v1/internal/runtimes/\{{game_id\}}/(stats|logs|health)$'
parameters = {{ "path.game_id" = {{ dictionary = "live_games", probability = 0.5 }}, "query.follow" = "false" }}
"#
        ),
    )
    .unwrap();

    let mut cmd = tokio::process::Command::new(st);
    cmd.arg("--no-color")
        .arg(format!("--config-file={}", config.display()))
        .arg("run")
        .arg(&contract)
        .arg(format!("--url={}", gw.base))
        .arg(format!("--header=Authorization: Bearer {TOKEN}"))
        .args([
            "--checks=rtm_no_server_error",
            "--max-examples=20",
            "--request-timeout=10",
            "--workers=1",
            "--seed=1",
            "--suppress-health-check=all",
            "--generation-database=none",
        ])
        .env("SCHEMATHESIS_HOOKS", &hooks)
        .env("RTM_TEST_ENV_ID", &env.id)
        .env("NO_COLOR", "1")
        .current_dir(&env.state_root)
        .kill_on_drop(true)
        .stdin(Stdio::null());
    let out = tokio::time::timeout(Duration::from_secs(240), cmd.output())
        .await
        .expect("schemathesis finished within 4 minutes")
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found failures ({}):\n{stdout}\n{stderr}",
        out.status
    );
    println!("{stdout}");
    // The run really exercised operations (not an empty or unreadable schema).
    assert!(
        stdout.contains(" passed") && !stdout.contains("0 generated"),
        "{stdout}\n{stderr}"
    );

    // The ids that got past validation: each has a record or a log row.
    let reached: Vec<String> = sqlx::query_scalar(
        "SELECT game_id FROM runtime_records UNION SELECT game_id FROM operation_log ORDER BY 1",
    )
    .fetch_all(env.db().pool())
    .await
    .unwrap();
    let suffix = format!("-{}", env.id);
    let foreign: Vec<&String> = reached.iter().filter(|g| !g.ends_with(&suffix)).collect();
    assert!(
        foreign.is_empty(),
        "games without the env's id: {foreign:?}"
    );
    assert!(
        reached.iter().any(|g| g != game.as_str()),
        "the run reached no game of its own making: {reached:?}"
    );
}

/// The `st` command of the project's virtual environment
/// (`$RTM_STATE/venv`, `.local/venv` by default), where
/// `scripts/install-test-tools` installs Schemathesis.
fn schemathesis() -> PathBuf {
    let state = std::env::var_os("RTM_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.local"));
    let st = state.join("venv/bin/st");
    assert!(
        st.is_file(),
        "schemathesis is not installed at {}: run scripts/install-test-tools",
        st.display()
    );
    st
}
