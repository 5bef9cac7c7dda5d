//! What the prober test files share: fast settings, engines steered over
//! HTTP, an in-process prober, and reads of the health stream.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use shared::adapters::redis::streaks::streak_key;
use shared::domain::{GameId, OpSource};
use shared::operations::StartRequest;
use system_tests::contract::Contract;
use system_tests::{inspect, TestEnv, ENGINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Fast probing; `container_ip` because the test runs on the Docker host.
pub const FAST: &[(&str, &str)] = &[
    ("RTMANAGER_PROBE_INTERVAL", "300ms"),
    ("RTMANAGER_PROBE_TIMEOUT", "200ms"),
    ("RTMANAGER_PROBE_FAILURES_THRESHOLD", "3"),
    ("RTMANAGER_PROBE_INITIAL_GRACE", "0s"),
    ("RTMANAGER_PROBE_REFRESH_INTERVAL", "200ms"),
    ("RTMANAGER_PROBE_CONCURRENCY", "8"),
    ("RTMANAGER_PROBE_ADDRESS_MODE", "container_ip"),
];

pub async fn fast_env(extra: &[(&str, &str)]) -> TestEnv {
    let vars: Vec<(&str, &str)> = FAST.iter().chain(extra).copied().collect();
    TestEnv::with(&vars).await
}

/// A running engine started through the start service.
pub struct Engine {
    pub game: GameId,
    pub container_id: String,
    pub ip: String,
}

impl Engine {
    pub async fn start(env: &TestEnv, name: &str) -> Self {
        let game = env.game(name);
        Self::start_game(env, game).await
    }

    pub async fn start_game(env: &TestEnv, game: GameId) -> Self {
        let service = system_tests::operations(&env.config, &env.infra).expect("start service");
        let outcome = service
            .start(&StartRequest {
                game_id: game.clone(),
                image_ref: ENGINE.to_owned(),
                op_source: OpSource::AdminRest,
                source_ref: "prober-test".into(),
            })
            .await;
        let Some(record) = outcome.record.clone() else {
            panic!("start: {outcome:?}");
        };
        let container = inspect(&game.container_name()).expect("engine container");
        let ip = container["NetworkSettings"]["Networks"][&env.network]["IPAddress"]
            .as_str()
            .expect("engine IP on the test network")
            .to_owned();
        let engine = Self {
            game,
            container_id: record.current_container_id.expect("container id"),
            ip,
        };
        // The engine answers as soon as its container runs; wait for it anyway.
        env.eventually("the engine to answer", Duration::from_secs(5), || async {
            engine.try_http("GET", "/hits").await.ok()
        })
        .await;
        engine
    }

    pub async fn try_http(&self, method: &str, path: &str) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect((self.ip.as_str(), 8080)).await?;
        stream
            .write_all(
                format!(
                    "{method} {path} HTTP/1.1\r\nHost: engine\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
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

    /// `/healthz` hits so far: every probe the engine has seen.
    pub async fn hits(&self) -> u64 {
        let (status, body) = self.try_http("GET", "/hits").await.expect("GET /hits");
        assert_eq!(status, 200);
        body.trim().parse().expect("hit count")
    }

    pub async fn set_health(&self, mode: &str) {
        let (status, _) = self
            .try_http("POST", &format!("/control?health={mode}"))
            .await
            .expect("POST /control");
        assert_eq!(status, 200, "health={mode}");
    }
}

/// An in-process prober (`healthz_prober::run`, as the binary runs it).
pub struct RunningProber {
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningProber {
    pub fn spawn(config: shared::config::Config, env: &TestEnv) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(healthz_prober::run(
            (&config).into(),
            env.infra.clone(),
            stop.clone(),
        ));
        Self { stop, task }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("prober stops within 10 s")
            .expect("prober task")
            .expect("prober run");
    }
}

/// The game's `probe_*` events on the health stream, oldest first.
pub async fn probe_events(env: &TestEnv, game: &GameId) -> Vec<HashMap<String, String>> {
    env.flush_outbox().await;
    env.read_stream(&env.config.common.streams.health_events)
        .await
        .into_iter()
        .map(|(_, fields)| fields)
        .filter(|f| f["game_id"] == game.as_str() && f["event_type"].starts_with("probe_"))
        .collect()
}

pub async fn wait_for_event(
    env: &TestEnv,
    game: &GameId,
    event_type: &str,
    deadline: Duration,
) -> HashMap<String, String> {
    env.eventually(event_type, deadline, || async {
        probe_events(env, game)
            .await
            .into_iter()
            .find(|f| f["event_type"] == event_type)
    })
    .await
}

/// Validates the event against the contract and checks that it is the
/// game's current health snapshot; returns its details.
pub async fn assert_published(env: &TestEnv, fields: &HashMap<String, String>) -> Value {
    Contract::load("runtime-health.asyncapi.yaml")
        .assert_valid("RuntimeHealthEventPayload", fields);
    let details: Value = serde_json::from_str(&fields["details"]).expect("details JSON");
    let game = GameId::parse(&fields["game_id"]).unwrap();
    let (status, event_type, container_id, snapshot_details) =
        env.snapshot(&game).await.expect("health snapshot");
    let expected_status = match fields["event_type"].as_str() {
        "probe_recovered" => "healthy",
        other => other,
    };
    assert_eq!(
        (
            status.as_str(),
            event_type.as_str(),
            container_id.as_str(),
            &snapshot_details
        ),
        (
            expected_status,
            fields["event_type"].as_str(),
            fields["container_id"].as_str(),
            &details
        ),
        "snapshot of {game}"
    );
    details
}

pub fn event_types(events: &[HashMap<String, String>]) -> Vec<&str> {
    events.iter().map(|f| f["event_type"].as_str()).collect()
}

pub async fn forget_streaks(env: &TestEnv, games: &[&GameId]) {
    let mut conn = env.redis().manager();
    for game in games {
        let _: Result<i64, _> = redis::cmd("DEL")
            .arg(streak_key(game))
            .query_async(&mut conn)
            .await;
    }
}
