//! Harness for the system tests: real PostgreSQL, Redis and Docker.
//!
//! Each [`TestEnv`] is isolated: its own PostgreSQL schema (named by the DSN's
//! `search_path`, as in production), its own stream names (a random prefix),
//! its own Docker network and state root, and unique game ids. Containers,
//! the network and the schema are removed on drop.
//!
//! Needs `TEST_DATABASE_URL` and `TEST_REDIS_ADDR` (set by `scripts/test`) and
//! the `galaxy-test/engine:*` images (built by `scripts/build-test-images`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use serde_json::Value;
use shared::adapters::postgres::Database;
use shared::adapters::redis::RedisClient;
use shared::bootstrap::Infra;
use shared::config::{Config, Secret};
use shared::domain::GameId;

pub mod contract;
pub mod docker_proxy;
pub mod held_engine;
pub mod job_process;
pub mod monitoring;
pub mod redis_topologies;
pub mod services;

pub const ENGINE: &str = "galaxy-test/engine:1.0.0";

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test, which starts PostgreSQL and Redis and exports it")
    })
}

pub fn random_suffix() -> String {
    let mut rng = rand::rng();
    (0..8)
        .map(|_| (b'a' + rng.random_range(0..26u8)) as char)
        .collect()
}

/// Where a [`TestEnv`]'s dependencies are: the shared test services
/// (`TEST_DATABASE_URL`, `TEST_REDIS_ADDR`, the machine's Docker daemon)
/// unless a test brings its own ([`services`]).
#[derive(Debug, Clone, Default)]
pub struct Services {
    /// A Redis address instead of `TEST_REDIS_ADDR`.
    pub redis_addr: Option<String>,
    /// A PostgreSQL URL instead of `TEST_DATABASE_URL` (the env's schema is
    /// created there).
    pub database_url: Option<String>,
    /// A Docker daemon instead of the machine's (`unix://…` or `tcp://…`):
    /// the env's network is created there, and its containers removed there.
    pub docker_host: Option<String>,
}

pub struct TestEnv {
    pub id: String,
    pub schema: String,
    pub dsn: String,
    pub network: String,
    pub state_root: PathBuf,
    pub config: Config,
    /// The `RTMANAGER_*` variables `config` was read from: what a job binary
    /// started by a test needs to join this environment.
    pub vars: Vec<(String, String)>,
    pub infra: Infra,
    /// The daemon of a private Docker, when not the machine's.
    docker_host: Option<String>,
    games: Mutex<Vec<GameId>>,
}

impl TestEnv {
    pub async fn new() -> Self {
        Self::with(&[]).await
    }

    /// `overrides` are extra `RTMANAGER_*` variables for this test.
    pub async fn with(overrides: &[(&str, &str)]) -> Self {
        Self::with_services(&Services::default(), overrides).await
    }

    /// An env on `services` (private ones a test may stop), with `overrides`.
    pub async fn with_services(services: &Services, overrides: &[(&str, &str)]) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("info")
            .try_init();
        let base = services
            .database_url
            .clone()
            .unwrap_or_else(|| required_env("TEST_DATABASE_URL"));
        let redis_addr = services
            .redis_addr
            .clone()
            .unwrap_or_else(|| required_env("TEST_REDIS_ADDR"));
        let id = random_suffix();
        let schema = format!("t_{id}");
        let admin = Database::connect(&base, 1)
            .await
            .expect("connect TEST_DATABASE_URL (is PostgreSQL running? use scripts/test)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(admin.pool())
            .await
            .expect("create test schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        let dsn = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        let network = format!("rtm-test-{id}");
        let docker_host = services.docker_host.clone();
        match &docker_host {
            None => drop(docker(&["network", "create", &network])),
            // An explicit subnet outside Docker's default pools, so a private
            // daemon's bridge never overlaps one of the machine's daemon.
            Some(host) => {
                let subnet = format!("10.231.{}.0/24", rand::random_range(1..250u8));
                docker(&[
                    "-H", host, "network", "create", "--subnet", &subnet, &network,
                ]);
            }
        }
        let state_root = std::env::temp_dir().join(format!("rtm-test-{id}"));
        std::fs::create_dir_all(&state_root).expect("state root");

        let mut vars: HashMap<String, String> = [
            ("RTMANAGER_POSTGRES_PRIMARY_DSN", dsn.as_str()),
            ("RTMANAGER_REDIS_MASTER_ADDR", redis_addr.as_str()),
            ("RTMANAGER_DOCKER_NETWORK", network.as_str()),
            (
                "RTMANAGER_GAME_STATE_ROOT",
                state_root.to_str().expect("utf-8 path"),
            ),
            ("RTMANAGER_METRICS_ADDR", ""),
            ("RTMANAGER_JOB_RECLAIM_IDLE", "2s"),
            ("RTMANAGER_STREAM_BLOCK", "200ms"),
            ("RTMANAGER_SHUTDOWN_TIMEOUT", "20s"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for stream in [
            "START_JOBS",
            "STOP_JOBS",
            "JOB_RESULTS",
            "HEALTH_EVENTS",
            "NOTIFICATION_INTENTS",
        ] {
            let default = match stream {
                "START_JOBS" => "runtime:start_jobs",
                "STOP_JOBS" => "runtime:stop_jobs",
                "JOB_RESULTS" => "runtime:job_results",
                "HEALTH_EVENTS" => "runtime:health_events",
                _ => "notification:intents",
            };
            vars.insert(
                format!("RTMANAGER_{stream}_STREAM"),
                format!("t{id}:{default}"),
            );
        }
        if let Some(host) = &docker_host {
            vars.insert("RTMANAGER_DOCKER_HOST".to_owned(), host.clone());
        }
        for (k, v) in overrides {
            vars.insert((*k).to_owned(), (*v).to_owned());
        }
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let config = Config::from_vars(vars.clone()).expect("test config");
        let infra = shared::bootstrap::connect(&config.common, true)
            .await
            .expect("bootstrap");
        Self {
            id,
            schema,
            dsn,
            network,
            state_root,
            config,
            vars,
            infra,
            docker_host,
            games: Mutex::default(),
        }
    }

    /// A docker CLI command against this env's daemon; panics on failure.
    pub fn docker(&self, args: &[&str]) -> String {
        let mut all: Vec<&str> = Vec::with_capacity(args.len() + 2);
        if let Some(host) = &self.docker_host {
            all.extend(["-H", host.as_str()]);
        }
        all.extend_from_slice(args);
        docker(&all)
    }

    fn docker_command(&self) -> Command {
        let mut cmd = Command::new("docker");
        if let Some(host) = &self.docker_host {
            cmd.args(["-H", host]);
        }
        cmd
    }

    /// A unique game id; its container is removed when the env drops.
    pub fn game(&self, name: &str) -> GameId {
        let game = GameId::parse(&format!("{name}-{}", self.id)).expect("valid test game id");
        self.games.lock().unwrap().push(game.clone());
        game
    }

    pub fn db(&self) -> &Database {
        &self.infra.db
    }

    pub fn redis(&self) -> &RedisClient {
        &self.infra.redis
    }

    /// Delivers everything pending in the outbox to Redis now.
    pub async fn flush_outbox(&self) {
        let relay = self.infra.outbox.relay(self.infra.redis.clone());
        while relay.deliver_pending().await.expect("outbox relay") > 0 {}
    }

    /// All entries of a stream, as (id, fields).
    pub async fn read_stream(&self, stream: &str) -> Vec<(String, HashMap<String, String>)> {
        let mut conn = self.redis().manager();
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .expect("XRANGE");
        reply
            .ids
            .into_iter()
            .map(|e| (e.id, shared::adapters::redis::entry_fields(&e.map)))
            .collect()
    }

    pub async fn xadd(&self, stream: &str, fields: &[(&str, &str)]) -> String {
        let mut conn = self.redis().manager();
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream).arg("*");
        for (k, v) in fields {
            cmd.arg(k).arg(v);
        }
        cmd.query_async(&mut conn).await.expect("XADD")
    }

    /// Polls `check` until it returns `Some`, or panics after `deadline`.
    pub async fn eventually<T, F, Fut>(&self, what: &str, deadline: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn operations(&self, game: &GameId) -> Vec<HashMap<String, String>> {
        let rows = sqlx::query(
            "SELECT op_kind, op_source, source_ref, image_ref, container_id, outcome, error_code, error_message \
             FROM operation_log WHERE game_id = $1 ORDER BY id",
        )
        .bind(game.as_str())
        .fetch_all(self.db().pool())
        .await
        .expect("operation_log");
        rows.iter()
            .map(|r| {
                use sqlx::Row;
                [
                    "op_kind",
                    "op_source",
                    "source_ref",
                    "image_ref",
                    "container_id",
                    "outcome",
                    "error_code",
                    "error_message",
                ]
                .iter()
                .map(|c| (c.to_string(), r.get::<String, _>(*c)))
                .collect()
            })
            .collect()
    }

    pub async fn snapshot(&self, game: &GameId) -> Option<(String, String, String, Value)> {
        use sqlx::Row;
        sqlx::query("SELECT status, event_type, container_id, details FROM health_snapshots WHERE game_id = $1")
            .bind(game.as_str())
            .fetch_optional(self.db().pool())
            .await
            .expect("health_snapshots")
            .map(|r| {
                (
                    r.get("status"),
                    r.get("event_type"),
                    r.get("container_id"),
                    r.get::<sqlx::types::Json<Value>, _>("details").0,
                )
            })
    }

    /// Records that rtmanager stops or removes `container` (what an
    /// operation commits before it acts).
    pub async fn record_intent(
        &self,
        kind: shared::domain::IntentKind,
        game: &GameId,
        container: &str,
    ) {
        let mut tx = self.db().begin().await.expect("begin");
        tx.record_intent(kind, game, container)
            .await
            .expect("record intent");
        tx.commit().await.expect("commit intent");
    }

    pub fn redis_password(&self) -> Secret {
        Secret::default()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for game in self.games.lock().unwrap().iter() {
            let _ = self
                .docker_command()
                .args(["rm", "-f", &game.container_name()])
                .output();
        }
        // Also what no `game()` registered: containers the gateway's fuzzing
        // started with ids it made up. They would keep the network alive.
        let attached = self
            .docker_command()
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("network={}", self.network),
            ])
            .output();
        if let Ok(out) = attached {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = self.docker_command().args(["rm", "-f", id]).output();
            }
        }
        let _ = self
            .docker_command()
            .args(["network", "rm", &self.network])
            .output();
        let _ = std::fs::remove_dir_all(&self.state_root);
    }
}

/// The path of a job binary next to the test executable
/// (a workspace debug build: it carries the crash tests' fail points, since
/// this crate enables `shared/failpoints`)
/// (`target/debug/deps/<test>-…` -> `target/debug/<job>`).
pub fn job_binary(job: &str) -> PathBuf {
    let bin = std::env::current_exe()
        .expect("test executable path")
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory")
        .join(job);
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --bins` (scripts/test does)",
        bin.display()
    );
    bin
}

/// One in-process `docker-events`, stopped deterministically.
pub struct DockerEventsTask {
    stop: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl DockerEventsTask {
    pub fn spawn(config: &Config, infra: &Infra) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let handle = tokio::spawn(docker_events::run(
            config.into(),
            infra.clone(),
            stop.clone(),
        ));
        Self { stop, handle }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.handle
            .await
            .expect("listener task")
            .expect("graceful stop");
    }
}

/// A loopback port free at the time of asking (for a process's listener).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind port 0")
        .local_addr()
        .expect("local address")
        .port()
}

/// Runs a docker CLI command, panicking with its output on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `docker inspect` of a container as JSON; `None` when it does not exist.
pub fn inspect(name: &str) -> Option<Value> {
    let out = Command::new("docker")
        .args(["inspect", name])
        .output()
        .expect("docker CLI");
    if !out.status.success() {
        return None;
    }
    let all: Value = serde_json::from_slice(&out.stdout).expect("inspect JSON");
    all.get(0).cloned()
}

/// The lifecycle operations over `infra`, configured from every section of
/// `config` (tests change a section and build their own).
pub fn operations(
    config: &Config,
    infra: &Infra,
) -> anyhow::Result<shared::operations::Operations> {
    shared::bootstrap::operations(infra, &config.common, &config.lifecycle, &config.state)
}
