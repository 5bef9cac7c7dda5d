//! `docker-events` against real Docker, PostgreSQL and Redis: the mapping of
//! daemon events to health events, suppression of rtmanager's own actions,
//! and exactly-once across listener restarts, two instances and a restart of
//! a private Docker daemon.
//!
//! Negative checks ("nothing was published for X") are sequenced, never
//! slept: the listener handles events in daemon order, so once a later
//! container's death is on the stream, everything before it was handled.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use docker_events::listener::ListenerKeys;
use serde_json::{json, Value};
use shared::adapters::docker::DockerEngine;
use shared::bootstrap::Infra;
use shared::config::Config;
use shared::domain::IntentKind;
use shared::domain::{GameId, OpSource, Outcome, RuntimeStatus};
use shared::operations::StartRequest;
use shared::ports::ContainerEngine;
use system_tests::contract::Contract;
use system_tests::job_process::KillOnDrop;
use system_tests::services::PrivateDockerd;
use system_tests::{docker, inspect, DockerEventsTask, TestEnv, ENGINE};

const WAIT: Duration = Duration::from_secs(30);

/// Starts the engine for a new game through the start service; returns the
/// game and its container id.
async fn start_game(env: &TestEnv, config: &Config, infra: &Infra, name: &str) -> (GameId, String) {
    let game = env.game(name);
    let service = system_tests::operations(config, infra).expect("start service");
    let outcome = service
        .start(&StartRequest {
            game_id: game.clone(),
            image_ref: ENGINE.to_owned(),
            op_source: OpSource::AdminRest,
            source_ref: format!("test-{name}"),
        })
        .await;
    assert_eq!(outcome.outcome, Outcome::Success, "{outcome:?}");
    let container = outcome
        .record
        .and_then(|r| r.current_container_id)
        .expect("container id");
    (game, container)
}

async fn start_games(env: &TestEnv, names: &[&str]) -> Vec<(GameId, String)> {
    futures_util::future::join_all(
        names
            .iter()
            .map(|n| start_game(env, &env.config, &env.infra, n)),
    )
    .await
}

/// `POST /control?{query}` to the engine of `game`, on the test network.
fn control(env: &TestEnv, game: &GameId, query: &str) {
    let info = inspect(&game.container_name()).expect("engine container");
    let ip = info["NetworkSettings"]["Networks"][&env.network]["IPAddress"]
        .as_str()
        .expect("engine IP address")
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match TcpStream::connect((ip.as_str(), 8080)) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("engine {ip}:8080 unreachable: {e}"),
        }
    };
    write!(
        stream,
        "POST /control?{query} HTTP/1.1\r\nHost: engine\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "control {query}: {response}"
    );
}

/// Every entry of the test's health stream, delivered now.
async fn stream_events(env: &TestEnv) -> Vec<HashMap<String, String>> {
    env.flush_outbox().await;
    env.read_stream(&env.config.common.streams.health_events)
        .await
        .into_iter()
        .map(|(_, fields)| fields)
        .collect()
}

/// The observations (everything but the start's `container_started`) of one
/// game, in stream order, as (event_type, details).
async fn observed(env: &TestEnv, game: &GameId) -> Vec<(String, Value)> {
    stream_events(env)
        .await
        .into_iter()
        .filter(|f| f["game_id"] == game.as_str() && f["event_type"] != "container_started")
        .map(|f| {
            (
                f["event_type"].clone(),
                serde_json::from_str(&f["details"]).expect("details JSON"),
            )
        })
        .collect()
}

/// Waits until `game` has at least `n` observations and returns them.
async fn await_observed(env: &TestEnv, game: &GameId, n: usize) -> Vec<(String, Value)> {
    env.eventually(&format!("{n} observation(s) of {game}"), WAIT, || async {
        let seen = observed(env, game).await;
        (seen.len() >= n).then_some(seen)
    })
    .await
}

fn exited(exit_code: i64, oom: bool) -> (String, Value) {
    (
        "container_exited".into(),
        json!({"exit_code": exit_code, "oom": oom}),
    )
}

fn oom(exit_code: i64) -> (String, Value) {
    ("container_oom".into(), json!({"exit_code": exit_code}))
}

fn disappeared() -> (String, Value) {
    ("container_disappeared".into(), json!({}))
}

/// Every entry validates against the contract, and each game's snapshot is
/// its newest event (the first of equal times: the snapshot keeps it).
async fn assert_contract_and_snapshots(env: &TestEnv) {
    let contract = Contract::load("runtime-health.asyncapi.yaml");
    let events = stream_events(env).await;
    let mut games: Vec<&str> = events.iter().map(|f| f["game_id"].as_str()).collect();
    games.sort();
    games.dedup();
    for fields in &events {
        contract.assert_valid("RuntimeHealthEventPayload", fields);
    }
    for game in games {
        let newest = events
            .iter()
            .filter(|f| f["game_id"] == game)
            .rev()
            .max_by_key(|f| f["occurred_at_ms"].parse::<i64>().unwrap())
            .unwrap();
        let (status, event_type, container_id, details) = env
            .snapshot(&GameId::parse(game).unwrap())
            .await
            .expect("snapshot");
        let expected_status = match newest["event_type"].as_str() {
            "container_started" => "healthy",
            other => other,
        };
        assert_eq!(
            (
                status.as_str(),
                event_type.as_str(),
                container_id.as_str(),
                details
            ),
            (
                expected_status,
                newest["event_type"].as_str(),
                newest["container_id"].as_str(),
                serde_json::from_str::<Value>(&newest["details"]).unwrap()
            ),
            "snapshot of {game}"
        );
    }
}

async fn status_of(env: &TestEnv, game: &GameId) -> RuntimeStatus {
    env.db()
        .get_record(game)
        .await
        .unwrap()
        .expect("record")
        .status
}

/// Kills a sentinel container and waits for its report: from then on the
/// listener follows the live stream, and everything before is handled.
async fn barrier(env: &TestEnv, name: &str) -> GameId {
    let (game, _) = start_game(env, &env.config, &env.infra, name).await;
    docker(&["kill", &game.container_name()]);
    assert_eq!(await_observed(env, &game, 1).await, [exited(137, false)]);
    game
}

#[tokio::test]
async fn exits_are_reported_with_their_code_and_oom_flag_and_stop_the_record() {
    let env = TestEnv::new().await;
    let listener = DockerEventsTask::spawn(&env.config, &env.infra);
    // Reported from the live stream, not by the catch-up of a late start.
    barrier(&env, "warmup").await;
    let games = start_games(&env, &["killed", "exit3", "oom"]).await;
    let (killed, exit3, oomed) = (&games[0].0, &games[1].0, &games[2].0);

    docker(&["kill", &killed.container_name()]);
    control(&env, exit3, "exit=3");
    control(&env, oomed, "oom=1");

    assert_eq!(await_observed(&env, killed, 1).await, [exited(137, false)]);
    assert_eq!(await_observed(&env, exit3, 1).await, [exited(3, false)]);
    assert_eq!(
        await_observed(&env, oomed, 2).await,
        [oom(137), exited(137, true)]
    );
    let oomed_state = &inspect(&oomed.container_name()).unwrap()["State"];
    assert_eq!(oomed_state["OOMKilled"], true, "{oomed_state}");

    for (game, container) in &games {
        let record = env.db().get_record(game).await.unwrap().unwrap();
        assert_eq!(record.status, RuntimeStatus::Stopped, "{game}");
        assert_eq!(
            record.current_container_id.as_deref(),
            Some(container.as_str())
        );
        assert!(record.stopped_at.is_some());
        // An observation is not an operation: only the start's row.
        let ops = env.operations(game).await;
        assert_eq!(ops.len(), 1, "{game}: {ops:?}");
        assert_eq!(ops[0]["op_kind"], "start");
    }
    // occurred_at_ms is the daemon's time of the event.
    let events = stream_events(&env).await;
    let exit = events
        .iter()
        .find(|f| f["game_id"] == killed.as_str() && f["event_type"] == "container_exited")
        .unwrap();
    let finished = chrono::DateTime::parse_from_rfc3339(
        inspect(&killed.container_name()).unwrap()["State"]["FinishedAt"]
            .as_str()
            .unwrap(),
    )
    .unwrap()
    .timestamp_millis();
    let at: i64 = exit["occurred_at_ms"].parse().unwrap();
    assert!(
        (at - finished).abs() < 1000,
        "{at} vs FinishedAt {finished}"
    );
    assert_eq!(exit["container_id"], games[0].1);

    assert_contract_and_snapshots(&env).await;
    listener.stop().await;
}

#[tokio::test]
async fn a_container_removed_from_outside_is_reported_disappeared() {
    let env = TestEnv::new().await;
    let listener = DockerEventsTask::spawn(&env.config, &env.infra);
    let (game, container) = start_game(&env, &env.config, &env.infra, "rmf").await;

    docker(&["rm", "-f", &game.container_name()]);

    // `rm -f` kills, then removes: the kill is an exit, the removal a
    // disappearance; the record stays running for the reconciler.
    assert_eq!(
        await_observed(&env, &game, 2).await,
        [exited(137, false), disappeared()]
    );
    let record = env.db().get_record(&game).await.unwrap().unwrap();
    assert_eq!(record.status, RuntimeStatus::Running);
    assert_eq!(record.current_container_id, Some(container));
    barrier(&env, "after").await;
    assert_eq!(observed(&env, &game).await.len(), 2, "nothing twice");
    assert_contract_and_snapshots(&env).await;
    listener.stop().await;
}

#[tokio::test]
async fn rtmanagers_own_stops_and_removals_and_zero_exits_are_not_reported() {
    let env = TestEnv::new().await;
    let listener = DockerEventsTask::spawn(&env.config, &env.infra);
    barrier(&env, "warmup").await;
    let games = start_games(&env, &["stopintent", "rmintent", "stopped", "zero"]).await;

    // A stop rtmanager records before it acts: the die is its own.
    let (stop_intent, c1) = &games[0];
    env.record_intent(IntentKind::Stop, stop_intent, c1).await;
    docker(&["kill", &stop_intent.container_name()]);

    // A removal rtmanager records before it acts: neither die nor destroy.
    let (removal_intent, c2) = &games[1];
    env.record_intent(IntentKind::Removal, removal_intent, c2)
        .await;
    docker(&["rm", "-f", &removal_intent.container_name()]);

    // A record no longer running with the container (rtmanager stopped it).
    let (stopped, c3) = &games[2];
    let mut tx = env.db().begin().await.unwrap();
    assert!(tx
        .mark_stopped(stopped, c3, chrono::Utc::now())
        .await
        .unwrap());
    tx.commit().await.unwrap();
    docker(&["rm", "-f", &stopped.container_name()]);

    // A zero exit publishes nothing, as in the Go service.
    let (zero, _) = &games[3];
    control(&env, zero, "exit=0");
    env.eventually("the zero exit", WAIT, || async {
        (inspect(&zero.container_name()).unwrap()["State"]["Status"] == "exited").then_some(())
    })
    .await;

    // A managed container without a record (like a start's rollback).
    let orphan = env.game("orphan");
    docker(&[
        "run",
        "-d",
        "--name",
        &orphan.container_name(),
        "--network",
        &env.network,
        "--label",
        "com.galaxy.owner=rtmanager",
        "--label",
        &format!("com.galaxy.game_id={orphan}"),
        ENGINE,
    ]);
    docker(&["rm", "-f", &orphan.container_name()]);

    barrier(&env, "after").await;
    for game in games.iter().map(|(g, _)| g).chain([&orphan]) {
        assert_eq!(observed(&env, game).await, [], "{game}");
    }
    assert_eq!(status_of(&env, stop_intent).await, RuntimeStatus::Running);
    assert_eq!(status_of(&env, zero).await, RuntimeStatus::Running);
    assert_contract_and_snapshots(&env).await;
    listener.stop().await;
}

#[tokio::test]
async fn deaths_while_the_listener_is_stopped_are_each_reported_once_after_its_restart() {
    let env = TestEnv::new().await;
    let games = start_games(&env, &["before", "kill", "exit3", "oom", "removed"]).await;
    let [before, killed, exit3, oomed, removed] = [
        &games[0].0,
        &games[1].0,
        &games[2].0,
        &games[3].0,
        &games[4].0,
    ];

    let first = DockerEventsTask::spawn(&env.config, &env.infra);
    barrier(&env, "warmup").await;
    docker(&["kill", &before.container_name()]);
    assert_eq!(await_observed(&env, before, 1).await, [exited(137, false)]);
    first.stop().await;
    // The cursor is the daemon time of the last event handled (the die of
    // `before`, or its destroy): the next subscription starts there.
    let keys = keys(&env, env.infra.engine.as_ref()).await;
    let mut conn = env.redis().manager();
    let cursor: Option<i64> = redis::cmd("GET")
        .arg(&keys.cursor)
        .query_async(&mut conn)
        .await
        .unwrap();
    let cursor_ms = cursor.expect("a cursor") / 1_000_000;
    let before_at: i64 = stream_events(&env)
        .await
        .iter()
        .find(|f| f["game_id"] == before.as_str() && f["event_type"] == "container_exited")
        .unwrap()["occurred_at_ms"]
        .parse()
        .unwrap();
    assert!(
        cursor_ms >= before_at,
        "cursor {cursor_ms} before {before_at}"
    );

    docker(&["kill", &killed.container_name()]);
    control(&env, exit3, "exit=3");
    control(&env, oomed, "oom=1");
    docker(&["rm", "-f", &removed.container_name()]);
    env.eventually("the deaths", WAIT, || async {
        [killed, exit3, oomed]
            .iter()
            .all(|g| inspect(&g.container_name()).unwrap()["State"]["Status"] == "exited")
            .then_some(())
    })
    .await;

    let second = DockerEventsTask::spawn(&env.config, &env.infra);
    assert_eq!(await_observed(&env, killed, 1).await, [exited(137, false)]);
    assert_eq!(await_observed(&env, exit3, 1).await, [exited(3, false)]);
    assert_eq!(
        await_observed(&env, oomed, 2).await,
        [oom(137), exited(137, true)]
    );
    // The catch-up (first) finds the removed container gone; the replay from
    // the cursor then reports its kill, which only the daemon's event log
    // still knows, and finds its disappearance already reported.
    let mut seen = await_observed(&env, removed, 2).await;
    seen.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(seen, [disappeared(), exited(137, false)]);
    // Replay and catch-up both saw every death; a later death proves both
    // are done.
    barrier(&env, "after").await;
    assert_eq!(observed(&env, before).await, [exited(137, false)]);
    assert_eq!(observed(&env, killed).await.len(), 1);
    assert_eq!(observed(&env, exit3).await.len(), 1);
    assert_eq!(observed(&env, oomed).await.len(), 2);
    assert_eq!(observed(&env, removed).await.len(), 2);
    assert_eq!(status_of(&env, removed).await, RuntimeStatus::Running);
    for (game, _) in &games[..4] {
        assert_eq!(
            status_of(&env, game).await,
            RuntimeStatus::Stopped,
            "{game}"
        );
    }
    assert_contract_and_snapshots(&env).await;
    second.stop().await;
}

async fn keys(env: &TestEnv, engine: &dyn ContainerEngine) -> ListenerKeys {
    let instance: String = sqlx::query_scalar("SELECT instance_id FROM outbox_identity")
        .fetch_one(env.db().pool())
        .await
        .unwrap();
    ListenerKeys::new(&instance, &engine.daemon_id().await.unwrap())
}

async fn lease_held(env: &TestEnv, keys: &ListenerKeys) -> bool {
    let mut conn = env.redis().manager();
    redis::cmd("EXISTS")
        .arg(&keys.lease)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn two_listeners_publish_each_death_once_and_the_standby_takes_over() {
    let env = TestEnv::new().await;
    let keys = keys(&env, env.infra.engine.as_ref()).await;
    let games = start_games(&env, &["one", "two", "three"]).await;

    let holder = DockerEventsTask::spawn(&env.config, &env.infra);
    env.eventually("the holder's lease", WAIT, || async {
        lease_held(&env, &keys).await.then_some(())
    })
    .await;
    let standby = DockerEventsTask::spawn(&env.config, &env.infra);

    docker(&["kill", &games[0].0.container_name()]);
    docker(&["kill", &games[1].0.container_name()]);
    assert_eq!(
        await_observed(&env, &games[0].0, 1).await,
        [exited(137, false)]
    );
    assert_eq!(
        await_observed(&env, &games[1].0, 1).await,
        [exited(137, false)]
    );

    // The holder leaves (releasing its lease); the standby takes over, replays
    // from the shared cursor and reports the next death, once.
    holder.stop().await;
    docker(&["kill", &games[2].0.container_name()]);
    assert_eq!(
        await_observed(&env, &games[2].0, 1).await,
        [exited(137, false)]
    );
    assert!(lease_held(&env, &keys).await, "the standby holds it now");
    barrier(&env, "after").await;
    for (game, _) in &games {
        assert_eq!(observed(&env, game).await.len(), 1, "{game}");
    }
    assert_contract_and_snapshots(&env).await;
    standby.stop().await;
    assert!(!lease_held(&env, &keys).await, "released on shutdown");
}

#[tokio::test]
async fn deaths_across_a_restart_of_the_docker_daemon_are_each_reported_once() {
    let env = TestEnv::new().await;
    let mut daemon = PrivateDockerd::start();
    daemon.load_image(ENGINE);
    // An explicit subnet outside Docker's default pools, so this daemon's
    // bridge never overlaps one of the machine's daemon.
    let subnet = format!("10.231.{}.0/24", rand::random_range(1..250u8));
    daemon.cli(&["network", "create", "--subnet", &subnet, &env.network]);
    let mut config = env.config.clone();
    config.common.docker.host = daemon.host();
    let infra = Infra {
        engine: Arc::new(DockerEngine::connect(&daemon.host()).unwrap()),
        ..env.infra.clone()
    };
    let games: Vec<(GameId, String)> = futures_util::future::join_all(
        ["warmup", "a", "b", "c", "d"].map(|n| start_game(&env, &config, &infra, n)),
    )
    .await;
    let [warmup, a, b, c, d] = [
        &games[0].0,
        &games[1].0,
        &games[2].0,
        &games[3].0,
        &games[4].0,
    ];
    let listener = DockerEventsTask::spawn(&config, &infra);
    // Once the warm-up death is reported, the listener reads the live stream.
    daemon.cli(&["kill", &warmup.container_name()]);
    assert_eq!(await_observed(&env, warmup, 1).await, [exited(137, false)]);

    // a dies while the listener follows the daemon.
    daemon.cli(&["kill", &a.container_name()]);
    assert_eq!(await_observed(&env, a, 1).await, [exited(137, false)]);

    // b dies while the daemon is down: the restarted daemon has no event of
    // it (its event log starts empty), only the catch-up can see it.
    let b_pid = daemon.cli(&["inspect", "-f", "{{.State.Pid}}", &b.container_name()]);
    daemon.stop();
    assert!(Command::new("kill")
        .args(["-KILL", &b_pid])
        .status()
        .unwrap()
        .success());
    env.eventually("b's process gone", WAIT, || async {
        (!std::path::Path::new(&format!("/proc/{b_pid}")).exists()).then_some(())
    })
    .await;
    daemon.start_again();
    assert_eq!(await_observed(&env, b, 1).await, [exited(137, false)]);

    // c dies after the reconnection, on the live stream again.
    daemon.cli(&["kill", &c.container_name()]);
    assert_eq!(await_observed(&env, c, 1).await, [exited(137, false)]);

    assert_eq!(observed(&env, a).await.len(), 1, "a once");
    assert_eq!(observed(&env, b).await.len(), 1, "b once");
    assert_eq!(observed(&env, d).await, [], "d is still running");
    for game in [warmup, a, b, c] {
        assert_eq!(
            status_of(&env, game).await,
            RuntimeStatus::Stopped,
            "{game}"
        );
    }
    assert_eq!(status_of(&env, d).await, RuntimeStatus::Running);
    assert_contract_and_snapshots(&env).await;
    listener.stop().await;
}

fn docker_events_binary() -> std::path::PathBuf {
    system_tests::job_binary("docker-events")
}

#[tokio::test]
async fn the_binary_reports_a_death_and_exits_zero_on_sigterm_releasing_its_lease() {
    let env = TestEnv::new().await;
    let keys = keys(&env, env.infra.engine.as_ref()).await;
    let (game, _) = start_game(&env, &env.config, &env.infra, "bin").await;
    let log = std::fs::File::create(env.state_root.join("docker-events.log")).unwrap();
    let mut child = KillOnDrop::spawn(
        Command::new(docker_events_binary())
            .env_clear()
            .envs(env.vars.clone())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log)),
        "docker-events",
    );
    env.eventually("the binary's lease", WAIT, || async {
        lease_held(&env, &keys).await.then_some(())
    })
    .await;
    docker(&["kill", &game.container_name()]);
    // Its own relay delivers: read the stream without flushing here.
    env.eventually("the binary's report", WAIT, || async {
        env.read_stream(&env.config.common.streams.health_events)
            .await
            .iter()
            .any(|(_, f)| f["game_id"] == game.as_str() && f["event_type"] == "container_exited")
            .then_some(())
    })
    .await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(!lease_held(&env, &keys).await, "released on SIGTERM");
    assert_contract_and_snapshots(&env).await;
}
