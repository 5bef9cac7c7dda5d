//! Harness for the system tests: real PostgreSQL, Redis and Docker.
//!
//! Each [`TestEnv`] is isolated: its own PostgreSQL schema (named by the DSN's
//! `search_path`, as in production), its own stream names (a random prefix),
//! its own Docker network and state root, and game ids that end in its id.
//! Everything it made is removed when it drops, also when its test fails
//! (see `Leftovers`).
//!
//! Needs `TEST_DATABASE_URL` and `TEST_REDIS_ADDR` (set by `scripts/test`) and
//! the `galaxy-test/engine:*` images (built by `scripts/build-test-images`).
//! With `RTM_TEST_LEDGER` set (`scripts/test` sets it), each env appends its
//! id to that file, so the run's end can check that none left anything.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use rand::Rng;
use serde_json::Value;
use shared::adapters::postgres::Database;
use shared::adapters::redis::RedisClient;
use shared::bootstrap::Infra;
use shared::config::{Config, Secret};
use shared::domain::GameId;

pub mod bench;
pub mod contract;
pub mod docker_proxy;
pub mod fake_registry;
pub mod held_engine;
pub mod https;
pub mod job_process;
pub mod monitoring;
pub mod redis_topologies;
pub mod services;
pub mod tls;

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
    /// Removes what the env made when it drops; last, so the env's own pools
    /// are already dropped when its schema goes.
    _leftovers: Leftovers,
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
        let network = format!("rtm-test-{id}");
        let docker_host = services.docker_host.clone();
        let state_root = std::env::temp_dir().join(format!("rtm-test-{id}"));
        ledger(&id);
        ledger_file(
            ".names",
            &format!(
                "{id} {}::{}",
                std::env::current_exe()
                    .ok()
                    .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                    .unwrap_or_default(),
                std::thread::current().name().unwrap_or("?")
            ),
        );
        // From here on, whatever fails (a panic in this function too) leaves
        // nothing behind: the guard removes all of it.
        let mut leftovers = Leftovers {
            id: id.clone(),
            schema: schema.clone(),
            network: network.clone(),
            docker_host: docker_host.clone(),
            state_root: state_root.clone(),
            // A private server disappears with its test's directory; only
            // what the shared services keep needs removing.
            database_url: services.database_url.is_none().then(|| base.clone()),
            redis_addr: services.redis_addr.is_none().then(|| redis_addr.clone()),
            instance: None,
        };
        let admin = Database::connect(&base, 1)
            .await
            .expect("connect TEST_DATABASE_URL (is PostgreSQL running? use scripts/test)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(admin.pool())
            .await
            .expect("create test schema");
        admin.pool().close().await;
        let sep = if base.contains('?') { '&' } else { '?' };
        let dsn = format!("{base}{sep}options=-c%20search_path%3D{schema}");
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
        // Names this schema's outbox (and docker-events' keys) in Redis.
        let instance: String = sqlx::query_scalar("SELECT instance_id FROM outbox_identity")
            .fetch_one(infra.db.pool())
            .await
            .expect("the outbox identity of the test schema");
        ledger(&format!("{id} {instance}"));
        leftovers.instance = Some(instance);
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
            _leftovers: leftovers,
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

    /// A unique game id, `{name}-{id}`: its container, lease and streak are
    /// removed when the env drops (they are found by that suffix).
    pub fn game(&self, name: &str) -> GameId {
        GameId::parse(&format!("{name}-{}", self.id)).expect("valid test game id")
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
    /// The admin notification intents about `game` on the intents stream,
    /// after the outbox is flushed: each entry's fields.
    pub async fn admin_intents(&self, game: &GameId) -> Vec<HashMap<String, String>> {
        self.flush_outbox().await;
        self.read_stream(&self.config.common.streams.notification_intents)
            .await
            .into_iter()
            .filter(|(_, f)| f["payload"].contains(game.as_str()))
            .map(|(_, f)| f)
            .collect()
    }

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

/// Appends `line` to `RTM_TEST_LEDGER` when it is set: `scripts/test` checks
/// at the end of the run that nothing an env of the ledger made is left.
fn ledger(line: &str) {
    ledger_file("", line);
}

/// Appends `line` to `$RTM_TEST_LEDGER{suffix}`: `.names` says which test
/// made each env, `.errors` what its cleanup could not remove and why, so
/// the leftover check can name the test (a passing test's output is not
/// shown).
fn ledger_file(suffix: &str, line: &str) {
    let Some(path) = std::env::var_os("RTM_TEST_LEDGER") else {
        return;
    };
    let mut path = path;
    path.push(suffix);
    let path = PathBuf::from(path);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("RTM_TEST_LEDGER {}: {e}", path.display()));
    // One write per line: appends of concurrent tests do not interleave.
    file.write_all(format!("{line}\n").as_bytes())
        .expect("write RTM_TEST_LEDGER");
}

/// Everything a [`TestEnv`] made outside the test process, removed on drop:
/// the containers (on its network, or named after its game ids, which end in
/// its id: the gateway's fuzzing starts games under ids it makes up), the
/// images tagged `…-{id}`, the network, the schema, its Redis keys and the
/// state root. Errors are printed, never raised: a drop runs while a failed
/// test unwinds, and `scripts/test` checks at the end what is left.
struct Leftovers {
    id: String,
    schema: String,
    network: String,
    docker_host: Option<String>,
    state_root: PathBuf,
    /// The shared PostgreSQL holding the schema (`None` for a private one).
    database_url: Option<String>,
    /// The shared Redis (`None` for a private one).
    redis_addr: Option<String>,
    /// `outbox_identity.instance_id`: names the delivery marks and the
    /// docker-events lease and cursor of the schema in Redis.
    instance: Option<String>,
}

impl Leftovers {
    fn docker(&self, args: &[&str]) -> Option<String> {
        let mut cmd = Command::new("docker");
        if let Some(host) = &self.docker_host {
            cmd.args(["-H", host]);
        }
        let out = cmd.args(args).output().ok()?;
        if !out.status.success() {
            eprintln!(
                "test env {}: docker {args:?}: {}",
                self.id,
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn remove_docker_objects(&self) {
        self.remove_containers();
        let suffix = format!("-{}:", self.id);
        let images: Vec<String> = self
            .docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .unwrap_or_default()
            .lines()
            .filter(|image| image.contains(&suffix))
            .map(str::to_owned)
            .collect();
        for image in &images {
            self.docker(&["rmi", "--no-prune", image]);
        }
        self.remove_network();
    }

    /// The env's containers: named after its game ids, or on its network.
    fn remove_containers(&self) {
        let named = format!("name=-{}$", self.id);
        let attached = format!("network={}", self.network);
        let mut containers: Vec<String> = [named, attached]
            .iter()
            .filter_map(|filter| self.docker(&["ps", "-aq", "--filter", filter]))
            .flat_map(|out| {
                out.split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        containers.sort();
        containers.dedup();
        if !containers.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(containers.iter().map(String::as_str));
            self.docker(&args);
        }
    }

    /// Removes the network, retrying: a job task of the test may still be
    /// running while the env drops (a spawned task outlives the test's
    /// locals) and attach a container after `remove_containers` ran; each
    /// retry removes what got attached since. A network Docker keeps for a
    /// stale endpoint of its own ("active endpoints", none listed) outlasts
    /// every retry: the reason goes to `$RTM_TEST_LEDGER.errors`.
    fn remove_network(&self) {
        let mut last_error = String::new();
        for attempt in 0..40 {
            if attempt > 0 {
                self.remove_containers();
            }
            let mut cmd = Command::new("docker");
            if let Some(host) = &self.docker_host {
                cmd.args(["-H", host]);
            }
            let out = match cmd.args(["network", "rm", &self.network]).output() {
                Ok(out) => out,
                Err(e) => {
                    last_error = e.to_string();
                    std::thread::sleep(std::time::Duration::from_millis(250));
                    continue;
                }
            };
            let stderr = String::from_utf8_lossy(&out.stderr);
            // Gone already (removed, or never made): nothing to do.
            if out.status.success() || stderr.contains("not found") {
                return;
            }
            last_error = stderr.trim().to_owned();
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        eprintln!(
            "test env {}: network {} left: {last_error}",
            self.id, self.network
        );
        ledger_file(
            ".errors",
            &format!("{} network rm {}: {last_error}", self.id, self.network),
        );
    }

    /// Whether `key` is one of this env's: its streams (and the delivery
    /// marks, which carry a stream's name), its schema's instance, or the
    /// lease or probe streak of one of its games.
    fn owns_key(&self, key: &str) -> bool {
        if key.contains(&format!("t{}:", self.id)) {
            return true;
        }
        if self.instance.as_deref().is_some_and(|i| key.contains(i)) {
            return true;
        }
        let Some((_, segment)) = key.split_once("rtmanager:game_lease:") else {
            return false;
        };
        let segment = segment.trim_end_matches('}');
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(segment)
            .is_ok_and(|game| game.ends_with(format!("-{}", self.id).as_bytes()))
    }

    async fn drop_schema(&self, url: &str) -> Result<(), String> {
        use sqlx::Connection as _;
        let connect = sqlx::PgConnection::connect(url);
        let mut conn = tokio::time::timeout(Duration::from_secs(10), connect)
            .await
            .map_err(|_| "no connection within 10 s".to_owned())?
            .map_err(|e| e.to_string())?;
        sqlx::query("SET lock_timeout = '2s'")
            .execute(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let drop = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        for _ in 0..5 {
            match sqlx::query(sqlx::AssertSqlSafe(drop.clone()))
                .execute(&mut conn)
                .await
            {
                Ok(_) => return Ok(()),
                // A task of the test still in a transaction on the schema
                // (a relay pass, a handler) holds a lock, and on a
                // current-thread runtime it cannot run while this drop
                // blocks: end its session.
                Err(e)
                    if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("55P03") =>
                {
                    sqlx::query(
                        "SELECT pg_terminate_backend(l.pid) FROM pg_locks l \
                         JOIN pg_class c ON c.oid = l.relation \
                         JOIN pg_namespace n ON n.oid = c.relnamespace \
                         WHERE n.nspname = $1 AND l.pid <> pg_backend_pid()",
                    )
                    .bind(&self.schema)
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("still locked after 5 tries".to_owned())
    }

    async fn clear_redis(&self, addr: &str) -> Result<usize, String> {
        let client = redis::Client::open(format!("redis://{addr}")).map_err(|e| e.to_string())?;
        let mut conn = tokio::time::timeout(
            Duration::from_secs(10),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| "no connection within 10 s".to_owned())?
        .map_err(|e| e.to_string())?;
        let mut ours: Vec<Vec<u8>> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            ours.extend(
                keys.into_iter()
                    .filter(|k| self.owns_key(&String::from_utf8_lossy(k))),
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        for batch in ours.chunks(500) {
            let _: i64 = redis::cmd("DEL")
                .arg(batch)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(ours.len())
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        self.remove_docker_objects();
        // Drop is synchronous and may run on the test's own (current-thread)
        // runtime, which cannot block on a future: PostgreSQL and Redis are
        // cleaned from a thread of their own, on a runtime of its own. The
        // schema goes first, so nothing of the env writes to Redis after.
        let this = &*self;
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => return eprintln!("test env {}: cleanup runtime: {e}", this.id),
                };
                runtime.block_on(async {
                    if let Some(url) = &this.database_url {
                        if let Err(e) = this.drop_schema(url).await {
                            eprintln!("test env {}: drop schema {}: {e}", this.id, this.schema);
                        }
                    }
                    if let Some(addr) = &this.redis_addr {
                        if let Err(e) = this.clear_redis(addr).await {
                            eprintln!("test env {}: Redis keys on {addr}: {e}", this.id);
                        }
                    }
                });
            });
        });
        // A job task still running may have attached a container after all;
        // with its records gone its rollback has removed it by now.
        self.remove_network();
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
