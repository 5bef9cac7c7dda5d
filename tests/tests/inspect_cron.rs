//! `inspect-cron` against real Docker, PostgreSQL and Redis: the inspect
//! pass, the reconciler, and the binary. Containers are started through the
//! real start service; engines are steered over HTTP (`/control`).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::slice::from_ref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use inspect_cron::inspector::{InspectSettings, Inspector, PassReport};
use serde_json::{json, Value};
use shared::adapters::redis::LeaseStore;
use shared::domain::{GameId, OpSource, Outcome, RuntimeStatus};
use shared::operations::StartRequest;
use shared::ports::{
    ContainerEngine, ContainerInfo, ContainerSpec, ContainerStats, ContainerSummary, EngineError,
    EngineEvents, HealthInfo, ImageInfo, LogChunks, LogOptions, PullPolicy,
};
use system_tests::contract::Contract;
use system_tests::job_process::KillOnDrop;
use system_tests::{docker, inspect, TestEnv, ENGINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The engine image with a Docker HEALTHCHECK (every 1 s, 2 retries).
const HEALTHCHECK_ENGINE: &str = "galaxy-test/engine:healthcheck";

fn inspector(env: &TestEnv) -> Inspector {
    inspect_cron::inspector(&(&env.config).into(), &env.infra)
}

async fn pass(inspector: &Inspector, reconcile: bool) -> PassReport {
    tokio::time::timeout(Duration::from_secs(60), inspector.pass(reconcile))
        .await
        .expect("a pass is bounded")
        .expect("inspect pass")
}

/// Starts the game through the real start service; returns its container id.
async fn start(env: &TestEnv, game: &GameId, image: &str) -> String {
    let service = system_tests::operations(&env.config, &env.infra).expect("start service");
    let outcome = service
        .start(&StartRequest {
            game_id: game.clone(),
            image_ref: image.to_owned(),
            op_source: OpSource::AdminRest,
            source_ref: "test".into(),
        })
        .await;
    assert_eq!(outcome.outcome, Outcome::Success, "{outcome:?}");
    outcome
        .record
        .and_then(|r| r.current_container_id)
        .expect("container id")
}

/// The engine's address on the test network.
fn engine_ip(env: &TestEnv, game: &GameId) -> String {
    let c = inspect(&game.container_name()).expect("container exists");
    c["NetworkSettings"]["Networks"][&env.network]["IPAddress"]
        .as_str()
        .filter(|ip| !ip.is_empty())
        .expect("engine IP")
        .to_owned()
}

/// `POST /control?{query}` to the engine; expects a 200.
async fn control(env: &TestEnv, game: &GameId, query: &str) {
    let ip = engine_ip(env, game);
    let mut stream = tokio::net::TcpStream::connect((ip.as_str(), 8080))
        .await
        .expect("engine reachable on the test network");
    stream
        .write_all(
            format!(
                "POST /control?{query} HTTP/1.1\r\nHost: engine\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{query}: {answer}");
}

/// Polls `docker inspect` of the game's container until `check` holds.
async fn wait_container(env: &TestEnv, game: &GameId, what: &str, check: impl Fn(&Value) -> bool) {
    let name = game.container_name();
    env.eventually(what, Duration::from_secs(30), || {
        let ok = inspect(&name).is_some_and(|c| check(&c));
        async move { ok.then_some(()) }
    })
    .await;
}

async fn wait_health(env: &TestEnv, game: &GameId, status: &str) {
    wait_container(env, game, &format!("docker health {status}"), |c| {
        c["State"]["Health"]["Status"] == status
    })
    .await;
}

/// The game's health events of `event_type`, each validated against the
/// contract on the way.
async fn events(env: &TestEnv, game: &GameId, event_type: &str) -> Vec<HashMap<String, String>> {
    env.flush_outbox().await;
    delivered_events(env, game, event_type).await
}

/// As [`events`], without delivering the outbox first.
async fn delivered_events(
    env: &TestEnv,
    game: &GameId,
    event_type: &str,
) -> Vec<HashMap<String, String>> {
    let contract = Contract::load("runtime-health.asyncapi.yaml");
    env.read_stream(&env.config.common.streams.health_events)
        .await
        .into_iter()
        .map(|(_, fields)| fields)
        .filter(|f| f["game_id"] == game.as_str())
        .inspect(|f| contract.assert_valid("RuntimeHealthEventPayload", f))
        .filter(|f| f["event_type"] == event_type)
        .collect()
}

fn details(event: &HashMap<String, String>) -> Value {
    serde_json::from_str(&event["details"]).expect("details JSON")
}

/// The game's health snapshot is the given event.
async fn assert_snapshot_is(env: &TestEnv, game: &GameId, event: &HashMap<String, String>) {
    let (status, event_type, container_id, snapshot_details) =
        env.snapshot(game).await.expect("health snapshot");
    assert_eq!(event_type, event["event_type"]);
    assert_eq!(
        status, event["event_type"],
        "a failure's status is its type"
    );
    assert_eq!(container_id, event["container_id"]);
    assert_eq!(snapshot_details, details(event));
}

fn op_kinds(ops: &[HashMap<String, String>]) -> Vec<&str> {
    ops.iter().map(|o| o["op_kind"].as_str()).collect()
}

/// Removes the named containers on drop (those not named after a test game).
struct Containers(Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("docker").args(["rm", "-f", name]).output();
        }
    }
}

#[tokio::test]
async fn a_failing_healthcheck_is_reported_once_per_change() {
    let env = TestEnv::new().await;
    let game = env.game("hc");
    let container = start(&env, &game, HEALTHCHECK_ENGINE).await;
    wait_health(&env, &game, "healthy").await;
    let inspector = inspector(&env);
    let report = pass(&inspector, true).await;
    assert_eq!(report.inspected, from_ref(&container));
    assert!(report.unhealthy.is_empty(), "{report:?}");

    control(&env, &game, "health=fail").await;
    wait_health(&env, &game, "unhealthy").await;
    let mut published = Vec::new();
    for _ in 0..3 {
        published.extend(pass(&inspector, false).await.unhealthy);
    }
    assert_eq!(published, from_ref(&game), "once over three passes");
    let reported = events(&env, &game, "inspect_unhealthy").await;
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0]["container_id"], container);
    assert_eq!(
        details(&reported[0]),
        json!({"restart_count": 0, "state": "running", "health": "unhealthy"})
    );
    assert_snapshot_is(&env, &game, &reported[0]).await;

    // Recovery resets the memory: the next failure is news again.
    control(&env, &game, "health=ok").await;
    wait_health(&env, &game, "healthy").await;
    assert!(pass(&inspector, false).await.unhealthy.is_empty());
    control(&env, &game, "health=fail").await;
    wait_health(&env, &game, "unhealthy").await;
    for _ in 0..2 {
        pass(&inspector, false).await;
    }
    let reported = events(&env, &game, "inspect_unhealthy").await;
    assert_eq!(reported.len(), 2, "{reported:?}");
    assert_snapshot_is(&env, &game, &reported[1]).await;
    let record = env.db().get_record(&game).await.unwrap().unwrap();
    assert_eq!(
        record.status,
        RuntimeStatus::Running,
        "inspect never changes a running record"
    );
}

#[tokio::test]
async fn a_restart_count_growth_is_reported_once() {
    let env = TestEnv::new().await;
    let game = env.game("restarts");
    let container = start(&env, &game, ENGINE).await;
    docker(&["update", "--restart", "on-failure:5", &container]);
    let inspector = inspector(&env);
    assert!(pass(&inspector, false).await.unhealthy.is_empty());

    control(&env, &game, "exit=1").await;
    wait_container(&env, &game, "a restart by Docker", |c| {
        c["RestartCount"].as_i64().unwrap_or(0) >= 1 && c["State"]["Status"] == "running"
    })
    .await;
    let mut published = Vec::new();
    for _ in 0..3 {
        published.extend(pass(&inspector, false).await.unhealthy);
    }
    assert_eq!(published, from_ref(&game));
    let reported = events(&env, &game, "inspect_unhealthy").await;
    assert_eq!(reported.len(), 1, "{reported:?}");
    let d = details(&reported[0]);
    assert!(d["restart_count"].as_i64().unwrap() >= 1, "{d}");
    assert_eq!(
        (d["state"].as_str(), d["health"].as_str()),
        (Some("running"), Some(""))
    );
    assert_eq!(reported[0]["container_id"], container);
    assert_snapshot_is(&env, &game, &reported[0]).await;
}

#[tokio::test]
async fn a_crash_left_orphan_is_adopted_and_foreign_containers_are_untouched() {
    let env = TestEnv::new().await;
    let owned = |game: &GameId| {
        vec![
            "--label".to_owned(),
            "com.galaxy.owner=rtmanager".to_owned(),
            "--label".to_owned(),
            format!("com.galaxy.game_id={game}"),
            "--label".to_owned(),
            format!("com.galaxy.engine_image_ref={ENGINE}"),
            "--network".to_owned(),
            env.network.clone(),
        ]
    };
    let run = |verb: &str, name: &str, labels: Vec<String>| {
        let mut args = vec![verb.to_owned()];
        if verb == "run" {
            args.push("-d".into());
        }
        args.extend(["--name".to_owned(), name.to_owned()]);
        args.extend(labels);
        args.push(ENGINE.to_owned());
        docker(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // A running orphan and one created but never started (crash mid-start).
    let game = env.game("orphan");
    let orphan = run("run", &game.container_name(), owned(&game));
    let created_game = env.game("orphan-created");
    let created = run(
        "create",
        &created_game.container_name(),
        owned(&created_game),
    );
    // No owner label: never rtmanager's, whatever its other labels say.
    let foreign_game = env.game("foreign");
    run(
        "run",
        &foreign_game.container_name(),
        vec![
            "--label".into(),
            format!("com.galaxy.game_id={foreign_game}"),
            "--network".into(),
            env.network.clone(),
        ],
    );
    // Owner-labelled, but with a game id that cannot be one.
    let bad_name = format!("rtm-bad-label-{}", env.id);
    let _cleanup = Containers(vec![bad_name.clone()]);
    let bad = run(
        "run",
        &bad_name,
        vec![
            "--label".into(),
            "com.galaxy.owner=rtmanager".into(),
            "--label".into(),
            "com.galaxy.game_id=../../etc".into(),
            "--network".into(),
            env.network.clone(),
        ],
    );

    let inspector = inspector(&env);
    let report = pass(&inspector, true).await;
    let mut expected = vec![game.clone(), created_game.clone()];
    expected.sort();
    assert_eq!(report.adopted, expected, "{report:?}");
    assert!(report.ignored.contains(&bad), "{report:?}");

    let record = env
        .db()
        .get_record(&game)
        .await
        .unwrap()
        .expect("adopted record");
    assert_eq!(record.status, RuntimeStatus::Running);
    assert_eq!(
        record.current_container_id.as_deref(),
        Some(orphan.as_str())
    );
    assert_eq!(record.current_image_ref.as_deref(), Some(ENGINE));
    assert_eq!(
        record.engine_endpoint,
        format!("http://galaxy-game-{game}:8080")
    );
    assert_eq!(
        record.state_path,
        env.state_root.join(game.as_str()).display().to_string()
    );
    assert_eq!(record.docker_network, env.network);
    assert!(record.started_at.is_some());
    let ops = env.operations(&game).await;
    assert_eq!(op_kinds(&ops), ["reconcile_adopt"]);
    assert_eq!(ops[0]["op_source"], "auto_reconcile");
    assert_eq!(ops[0]["source_ref"], report.pass_id);
    assert_eq!(ops[0]["container_id"], orphan);
    assert_eq!(ops[0]["image_ref"], ENGINE);
    assert_eq!(ops[0]["outcome"], "success");

    let created_record = env.db().get_record(&created_game).await.unwrap().unwrap();
    assert_eq!(created_record.status, RuntimeStatus::Stopped);
    assert_eq!(
        created_record.current_container_id.as_deref(),
        Some(created.as_str())
    );
    assert_eq!(
        op_kinds(&env.operations(&created_game).await),
        ["reconcile_adopt"]
    );

    assert!(env.db().get_record(&foreign_game).await.unwrap().is_none());
    for name in [
        foreign_game.container_name(),
        bad_name.clone(),
        game.container_name(),
    ] {
        assert_eq!(
            inspect(&name).expect("never removed")["State"]["Status"],
            "running",
            "{name} never stopped"
        );
    }
    assert_eq!(
        inspect(&created_game.container_name()).unwrap()["State"]["Status"],
        "created"
    );

    // Adopted once: the next pass finds the records.
    let again = pass(&inspector, true).await;
    assert!(again.adopted.is_empty(), "{again:?}");
    assert_eq!(env.operations(&game).await.len(), 1);
    assert!(events(&env, &game, "inspect_unhealthy").await.is_empty());
}

#[tokio::test]
async fn a_vanished_container_is_disposed_and_reported_once() {
    let env = TestEnv::new().await;
    let game = env.game("vanished");
    let container = start(&env, &game, ENGINE).await;
    docker(&["rm", "-f", &container]);
    let inspector = inspector(&env);
    // An inspect-only pass leaves it to the reconciler.
    let report = pass(&inspector, false).await;
    assert!(report.disposed.is_empty());
    let report = pass(&inspector, true).await;
    assert_eq!(report.disposed, from_ref(&game), "{report:?}");
    assert!(pass(&inspector, true).await.disposed.is_empty());

    let record = env.db().get_record(&game).await.unwrap().unwrap();
    assert_eq!(record.status, RuntimeStatus::Removed);
    assert!(record.removed_at.is_some());
    let ops = env.operations(&game).await;
    assert_eq!(op_kinds(&ops), ["start", "reconcile_dispose"]);
    assert_eq!(
        (ops[1]["op_source"].as_str(), ops[1]["source_ref"].as_str()),
        ("auto_reconcile", report.pass_id.as_str())
    );
    assert_eq!(ops[1]["container_id"], container);
    let disappeared = events(&env, &game, "container_disappeared").await;
    assert_eq!(disappeared.len(), 1, "{disappeared:?}");
    assert_eq!(disappeared[0]["container_id"], container);
    assert_eq!(details(&disappeared[0]), json!({}));
    assert_snapshot_is(&env, &game, &disappeared[0]).await;
}

#[tokio::test]
async fn an_exited_container_is_observed_as_stopped() {
    let env = TestEnv::new().await;
    let game = env.game("exited");
    let container = start(&env, &game, ENGINE).await;
    docker(&["stop", "-t", "5", &container]);
    let inspector = inspector(&env);

    // Between reconciliations the exit is reported, the record left alone.
    let report = pass(&inspector, false).await;
    assert_eq!(report.unhealthy, from_ref(&game));
    assert_eq!(
        env.db().get_record(&game).await.unwrap().unwrap().status,
        RuntimeStatus::Running
    );
    let report = pass(&inspector, true).await;
    assert_eq!(report.observed_exits, from_ref(&game), "{report:?}");
    assert!(
        report.unhealthy.is_empty(),
        "that observation was already published"
    );

    let record = env.db().get_record(&game).await.unwrap().unwrap();
    assert_eq!(record.status, RuntimeStatus::Stopped);
    assert!(record.stopped_at.is_some());
    let ops = env.operations(&game).await;
    assert_eq!(op_kinds(&ops), ["start", "reconcile_observe_exit"]);
    assert_eq!(
        (ops[1]["op_source"].as_str(), ops[1]["source_ref"].as_str()),
        ("auto_reconcile", report.pass_id.as_str())
    );
    let reported = events(&env, &game, "inspect_unhealthy").await;
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(
        details(&reported[0]),
        json!({"restart_count": 0, "state": "exited", "health": ""})
    );
    assert_snapshot_is(&env, &game, &reported[0]).await;
    assert!(pass(&inspector, true).await.observed_exits.is_empty());
    assert!(inspect(&container).is_some(), "the container is kept");
}

#[tokio::test]
async fn a_game_under_an_operation_is_skipped_until_its_lease_is_free() {
    let env = TestEnv::new().await;
    let game = env.game("leased");
    let container = start(&env, &game, ENGINE).await;
    docker(&["stop", "-t", "5", &container]);
    let lease = LeaseStore::new(env.redis().clone(), Duration::from_secs(30))
        .try_acquire(&game)
        .await
        .unwrap()
        .expect("lease");
    let inspector = inspector(&env);
    for reconcile in [false, true] {
        let report = pass(&inspector, reconcile).await;
        assert_eq!(report.busy, from_ref(&game), "{report:?}");
        assert!(report.unhealthy.is_empty() && report.observed_exits.is_empty());
    }
    assert_eq!(
        env.db().get_record(&game).await.unwrap().unwrap().status,
        RuntimeStatus::Running
    );
    assert_eq!(op_kinds(&env.operations(&game).await), ["start"]);
    assert!(events(&env, &game, "inspect_unhealthy").await.is_empty());

    lease.release().await;
    let report = pass(&inspector, true).await;
    assert_eq!(report.observed_exits, from_ref(&game), "{report:?}");
    assert_eq!(
        env.db().get_record(&game).await.unwrap().unwrap().status,
        RuntimeStatus::Stopped
    );
    assert_eq!(events(&env, &game, "inspect_unhealthy").await.len(), 1);
}

/// A wrapper around the real Docker engine that delays the inspect of one
/// container far beyond the inspect timeout; every call goes to Docker.
struct DockerWithOneStalledInspect {
    docker: Arc<dyn ContainerEngine>,
    stalled: String,
    inspected: Mutex<Vec<String>>,
}

#[async_trait]
impl ContainerEngine for DockerWithOneStalledInspect {
    async fn ping(&self) -> Result<(), EngineError> {
        self.docker.ping().await
    }
    async fn network_exists(&self, name: &str) -> Result<bool, EngineError> {
        self.docker.network_exists(name).await
    }
    async fn ensure_image(&self, image: &str, policy: PullPolicy) -> Result<(), EngineError> {
        self.docker.ensure_image(image, policy).await
    }
    async fn inspect_image(&self, image: &str) -> Result<ImageInfo, EngineError> {
        self.docker.inspect_image(image).await
    }
    async fn containers_of_image(&self, image_id: &str) -> Result<Vec<String>, EngineError> {
        self.docker.containers_of_image(image_id).await
    }
    async fn remove_image(&self, image: &str) -> Result<(), EngineError> {
        self.docker.remove_image(image).await
    }
    async fn inspect_container(&self, id: &str) -> Result<Option<ContainerInfo>, EngineError> {
        self.inspected.lock().unwrap().push(id.to_owned());
        if id == self.stalled {
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
        self.docker.inspect_container(id).await
    }
    async fn run(&self, spec: &ContainerSpec) -> Result<ContainerInfo, EngineError> {
        self.docker.run(spec).await
    }
    async fn start(&self, id: &str) -> Result<(), EngineError> {
        self.docker.start(id).await
    }
    async fn remove(&self, id: &str) -> Result<(), EngineError> {
        self.docker.remove(id).await
    }
    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), EngineError> {
        self.docker.stop(id, timeout).await
    }
    async fn list_managed(&self) -> Result<Vec<ContainerSummary>, EngineError> {
        self.docker.list_managed().await
    }
    async fn subscribe_events(&self, since_nano: Option<i64>) -> Result<EngineEvents, EngineError> {
        self.docker.subscribe_events(since_nano).await
    }
    async fn daemon_id(&self) -> Result<String, EngineError> {
        self.docker.daemon_id().await
    }
    async fn stats_snapshot(&self, id: &str) -> Result<ContainerStats, EngineError> {
        self.docker.stats_snapshot(id).await
    }
    fn logs(&self, id: &str, options: &LogOptions) -> LogChunks {
        self.docker.logs(id, options)
    }
    async fn health_info(&self, id: &str) -> Result<Option<HealthInfo>, EngineError> {
        self.docker.health_info(id).await
    }
}

#[tokio::test]
async fn one_stalled_inspect_never_delays_the_others() {
    let env = TestEnv::with(&[
        ("RTMANAGER_INSPECT_TIMEOUT", "500ms"),
        ("RTMANAGER_INSPECT_CONCURRENCY", "2"),
    ])
    .await;
    let stalled_game = env.game("stalled");
    let exited_game = env.game("stalled-exited");
    let fine_game = env.game("stalled-fine");
    let stalled = start(&env, &stalled_game, ENGINE).await;
    let exited = start(&env, &exited_game, ENGINE).await;
    let fine = start(&env, &fine_game, ENGINE).await;
    docker(&["stop", "-t", "5", &exited]);
    docker(&["stop", "-t", "5", &stalled]);

    let engine = Arc::new(DockerWithOneStalledInspect {
        docker: env.infra.engine.clone(),
        stalled: stalled.clone(),
        inspected: Mutex::default(),
    });
    let stalling = Inspector::new(
        engine.clone(),
        env.db().clone(),
        env.infra.outbox.clone(),
        LeaseStore::new(env.redis().clone(), env.config.common.redis.lease_ttl),
        InspectSettings::from_config(&(&env.config).into()),
    );
    let report = pass(&stalling, false).await;
    assert_eq!(report.timed_out, from_ref(&stalled), "{report:?}");
    let mut others = vec![exited.clone(), fine.clone()];
    others.sort();
    assert_eq!(report.inspected, others, "the others were inspected");
    assert_eq!(
        report.unhealthy,
        from_ref(&exited_game),
        "and their results produced"
    );
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(
        engine
            .inspected
            .lock()
            .unwrap()
            .iter()
            .filter(|c| **c == stalled)
            .count(),
        1
    );
    assert_eq!(
        events(&env, &exited_game, "inspect_unhealthy").await.len(),
        1
    );
    assert!(events(&env, &stalled_game, "inspect_unhealthy")
        .await
        .is_empty());

    // The real engine sees the stalled one's exit at the next pass.
    let report = pass(&inspector(&env), false).await;
    assert_eq!(report.unhealthy, from_ref(&stalled_game), "{report:?}");
}

fn inspect_cron_binary() -> std::path::PathBuf {
    system_tests::job_binary("inspect-cron")
}

#[tokio::test]
async fn the_binary_runs_one_pass_delivers_its_events_and_exits_zero() {
    let env = TestEnv::new().await;
    let game = env.game("binary-once");
    let container = start(&env, &game, ENGINE).await;
    env.flush_outbox().await;
    docker(&["rm", "-f", &container]);

    let out = tokio::task::spawn_blocking({
        let vars = env.vars.clone();
        move || {
            Command::new(inspect_cron_binary())
                .env_clear()
                .envs(vars)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "exit status {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        env.db().get_record(&game).await.unwrap().unwrap().status,
        RuntimeStatus::Removed
    );
    // Delivered by the binary itself: no flush here.
    let disappeared = delivered_events(&env, &game, "container_disappeared").await;
    assert_eq!(disappeared.len(), 1, "{disappeared:?}");
}

#[tokio::test]
async fn the_binary_loops_with_every_and_exits_zero_on_sigterm() {
    let env = TestEnv::new().await;
    let game = env.game("binary-every");
    let container = start(&env, &game, ENGINE).await;
    let mut child = KillOnDrop::spawn(
        Command::new(inspect_cron_binary())
            .args(["--every", "300ms"])
            .env_clear()
            .envs(env.vars.clone())
            .env("RTMANAGER_RECONCILE_INTERVAL", "1s")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
        "inspect-cron --every",
    );
    docker(&["stop", "-t", "5", &container]);
    // Later passes see the exit; a later reconciling one records it. The
    // background relay delivers the event.
    let (e, g) = (&env, &game);
    env.eventually(
        "the exit recorded",
        Duration::from_secs(20),
        move || async move {
            let record = e.db().get_record(g).await.ok()??;
            (record.status == RuntimeStatus::Stopped).then_some(())
        },
    )
    .await;
    env.eventually(
        "the event delivered",
        Duration::from_secs(10),
        move || async move {
            (!delivered_events(e, g, "inspect_unhealthy").await.is_empty()).then_some(())
        },
    )
    .await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    })
    .await
    .unwrap();
    assert!(out.0.success(), "exit status {:?}: {}", out.0, out.1);
    assert_eq!(
        delivered_events(&env, &game, "inspect_unhealthy")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn the_binary_refuses_bad_arguments_and_settings() {
    let env = TestEnv::new().await;
    let run = |args: &[&str], extra: &[(&str, &str)]| {
        Command::new(inspect_cron_binary())
            .args(args)
            .env_clear()
            .envs(env.vars.clone())
            .envs(extra.iter().copied())
            .output()
            .unwrap()
    };
    let help = run(&["--help"], &[]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--every"));

    let bad_every = run(&["--every", "soon"], &[]);
    assert!(!bad_every.status.success());
    assert!(String::from_utf8_lossy(&bad_every.stderr).contains("usage: inspect-cron"));

    let no_redis = run(&[], &[("RTMANAGER_REDIS_MASTER_ADDR", "127.0.0.1:1")]);
    assert!(!no_redis.status.success());
    let stderr = String::from_utf8_lossy(&no_redis.stderr);
    assert!(stderr.contains("RTMANAGER_REDIS_MASTER_ADDR"), "{stderr}");

    let bad_timeout = run(&[], &[("RTMANAGER_INSPECT_TIMEOUT", "0s")]);
    assert!(!bad_timeout.status.success());
    let stderr = String::from_utf8_lossy(&bad_timeout.stderr);
    assert!(stderr.contains("RTMANAGER_INSPECT_TIMEOUT"), "{stderr}");
}
