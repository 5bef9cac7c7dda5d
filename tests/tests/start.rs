//! The start operation against real Docker, PostgreSQL and Redis.

use std::sync::Arc;

use shared::domain::{ErrorCode, GameId, OpSource, Outcome};
use shared::operations::{OperationOutcome, Operations, StartRequest};
use system_tests::contract::Contract;
use system_tests::{docker, inspect, TestEnv, ENGINE};

fn service(env: &TestEnv) -> Operations {
    system_tests::operations(&env.config, &env.infra).expect("start service")
}

fn request(game: &GameId, image: &str) -> StartRequest {
    StartRequest {
        game_id: game.clone(),
        image_ref: image.to_owned(),
        op_source: OpSource::AdminRest,
        source_ref: "req-1".into(),
    }
}

fn assert_failed(outcome: &OperationOutcome, code: ErrorCode) {
    assert_eq!(
        (outcome.outcome, outcome.error_code),
        (Outcome::Failure, Some(code)),
        "{outcome:?}"
    );
}

async fn intents_for(env: &TestEnv, game: &GameId) -> Vec<String> {
    env.admin_intents(game)
        .await
        .into_iter()
        .map(|mut f| f.remove("notification_type").unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn a_fresh_start_creates_the_container_record_log_and_event() {
    let env = TestEnv::new().await;
    let game = env.game("fresh");
    let outcome = service(&env).start(&request(&game, ENGINE)).await;
    assert_eq!(
        (outcome.outcome, outcome.error_code),
        (Outcome::Success, None),
        "{outcome:?}"
    );
    let record = outcome.record.expect("record");
    let container_id = record.current_container_id.clone().expect("container id");

    let c = inspect(&game.container_name()).expect("container exists");
    assert_eq!(c["Id"], container_id.as_str());
    assert_eq!(c["Name"], format!("/galaxy-game-{game}"));
    assert_eq!(c["Config"]["Hostname"], format!("galaxy-game-{game}"));
    assert_eq!(c["State"]["Status"], "running");
    let labels = &c["Config"]["Labels"];
    assert_eq!(labels["com.galaxy.owner"], "rtmanager");
    assert_eq!(labels["com.galaxy.kind"], "game-engine");
    assert_eq!(labels["com.galaxy.game_id"], game.as_str());
    assert_eq!(labels["com.galaxy.engine_image_ref"], ENGINE);
    assert!(
        labels["com.galaxy.started_at_ms"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > 0
    );
    let env_vars: Vec<&str> = c["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        env_vars.contains(&"GAME_STATE_PATH=/var/lib/galaxy-game"),
        "{env_vars:?}"
    );
    assert!(
        env_vars.contains(&"STORAGE_PATH=/var/lib/galaxy-game"),
        "{env_vars:?}"
    );
    let state_dir = env.state_root.join(game.as_str());
    assert_eq!(
        c["HostConfig"]["Binds"][0],
        format!("{}:/var/lib/galaxy-game:rw", state_dir.display())
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&state_dir).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    // Limits come from the image labels (0.5 CPU, 64m, 128 pids).
    assert_eq!(c["HostConfig"]["NanoCpus"], 500_000_000);
    assert_eq!(c["HostConfig"]["Memory"], 64 * 1024 * 1024);
    assert_eq!(c["HostConfig"]["PidsLimit"], 128);
    assert_eq!(c["HostConfig"]["LogConfig"]["Type"], "json-file");
    assert_eq!(
        c["HostConfig"]["PortBindings"]
            .as_object()
            .map_or(0, |m| m.len()),
        0
    );
    assert_eq!(
        c["NetworkSettings"]["Ports"]
            .as_object()
            .map_or(0, |m| m.values().filter(|v| !v.is_null()).count()),
        0
    );
    assert!(c["NetworkSettings"]["Networks"][&env.network].is_object());

    assert_eq!(
        record.engine_endpoint,
        format!("http://galaxy-game-{game}:8080")
    );
    let stored = env
        .db()
        .get_record(&game)
        .await
        .unwrap()
        .expect("stored record");
    assert_eq!(stored.status.as_str(), "running");
    assert_eq!(stored.current_image_ref.as_deref(), Some(ENGINE));
    let ops = env.operations(&game).await;
    assert_eq!(ops.len(), 1);
    assert_eq!(
        (
            ops[0]["op_kind"].as_str(),
            ops[0]["op_source"].as_str(),
            ops[0]["outcome"].as_str()
        ),
        ("start", "admin_rest", "success")
    );
    assert_eq!(ops[0]["source_ref"], "req-1");
    assert_eq!(ops[0]["container_id"], container_id);

    env.flush_outbox().await;
    let events = env
        .read_stream(&env.config.common.streams.health_events)
        .await;
    assert_eq!(events.len(), 1);
    let (_, fields) = &events[0];
    Contract::load("runtime-health.asyncapi.yaml")
        .assert_valid("RuntimeHealthEventPayload", fields);
    assert_eq!(fields["event_type"], "container_started");
    assert_eq!(fields["container_id"], container_id);
    let snapshot = env.snapshot(&game).await.expect("snapshot");
    assert_eq!(
        (snapshot.0.as_str(), snapshot.1.as_str()),
        ("healthy", "container_started")
    );
    assert_eq!(snapshot.3, serde_json::json!({"image_ref": ENGINE}));
    assert!(intents_for(&env, &game).await.is_empty());
}

#[tokio::test]
async fn a_replay_is_a_no_op_and_another_image_is_a_conflict() {
    let env = TestEnv::new().await;
    let game = env.game("replay");
    let svc = service(&env);
    let first = svc.start(&request(&game, ENGINE)).await;
    assert_eq!(first.outcome, Outcome::Success);
    let replay = svc.start(&request(&game, ENGINE)).await;
    assert_eq!(
        (replay.outcome, replay.error_code),
        (Outcome::Success, Some(ErrorCode::ReplayNoOp))
    );
    assert_eq!(
        replay.record.unwrap().current_container_id,
        first.record.unwrap().current_container_id
    );
    let other = svc.start(&request(&game, "galaxy-test/engine:1.0.1")).await;
    assert_failed(&other, ErrorCode::Conflict);
    let ops = env.operations(&game).await;
    let codes: Vec<&str> = ops.iter().map(|o| o["error_code"].as_str()).collect();
    assert_eq!(codes, ["", "replay_no_op", "conflict"]);
    assert_eq!(
        docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("name=^galaxy-game-{game}$")
        ])
        .lines()
        .count(),
        1
    );
}

#[tokio::test]
async fn a_start_after_a_stop_replaces_the_kept_container() {
    let env = TestEnv::new().await;
    let game = env.game("restart");
    let svc = service(&env);
    let first = svc
        .start(&request(&game, ENGINE))
        .await
        .record
        .expect("started");
    let old_id = first.current_container_id.unwrap();
    let created_at = env
        .db()
        .get_record(&game)
        .await
        .unwrap()
        .unwrap()
        .created_at;
    // What the stop operation leaves: a stopped container and a stopped record.
    docker(&["stop", "-t", "1", &game.container_name()]);
    sqlx::query(
        "UPDATE runtime_records SET status = 'stopped', stopped_at = now() WHERE game_id = $1",
    )
    .bind(game.as_str())
    .execute(env.db().pool())
    .await
    .unwrap();
    let second = svc.start(&request(&game, "galaxy-test/engine:1.0.1")).await;
    assert_eq!(second.outcome, Outcome::Success, "{second:?}");
    let record = second.record.unwrap();
    assert_ne!(
        record.current_container_id.as_deref(),
        Some(old_id.as_str())
    );
    let stored = env.db().get_record(&game).await.unwrap().unwrap();
    assert_eq!(stored.created_at, created_at, "created_at is preserved");
    assert_eq!(stored.current_container_id, record.current_container_id);
    let c = inspect(&game.container_name()).unwrap();
    assert_eq!(c["State"]["Status"], "running");
    assert_eq!(
        c["Config"]["Labels"]["com.galaxy.engine_image_ref"],
        "galaxy-test/engine:1.0.1"
    );
    assert!(inspect(&old_id).is_none(), "the old container is gone");
}

#[tokio::test]
async fn twenty_concurrent_starts_of_one_game_make_exactly_one_container() {
    let env = TestEnv::new().await;
    let game = env.game("race");
    let svc = Arc::new(service(&env));
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (svc, barrier, req) = (svc.clone(), barrier.clone(), request(&game, ENGINE));
            tokio::spawn(async move {
                barrier.wait().await;
                svc.start(&req).await
            })
        })
        .collect();
    let mut fresh = 0;
    for t in tasks {
        let o = t.await.unwrap();
        match (o.outcome, o.error_code) {
            (Outcome::Success, None) => fresh += 1,
            (Outcome::Success, Some(ErrorCode::ReplayNoOp))
            | (Outcome::Failure, Some(ErrorCode::Conflict)) => {}
            other => panic!("unexpected outcome {other:?}: {o:?}"),
        }
    }
    assert_eq!(fresh, 1);
    let containers = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.galaxy.game_id={game}"),
    ]);
    assert_eq!(containers.lines().count(), 1, "{containers}");
    assert_eq!(env.operations(&game).await.len(), 20);
}

#[tokio::test]
async fn invalid_image_refs_are_start_config_invalid_with_an_intent() {
    let env = TestEnv::new().await;
    let svc = service(&env);
    for (i, bad) in [
        "Galaxy/Engine:1",
        "galaxy test:1",
        "",
        "galaxy/engine:",
        "galaxy/ENGINE:1",
    ]
    .into_iter()
    .enumerate()
    {
        let game = env.game(&format!("badimg{i}"));
        let outcome = svc.start(&request(&game, bad)).await;
        assert_failed(&outcome, ErrorCode::StartConfigInvalid);
        assert!(inspect(&game.container_name()).is_none());
        assert!(
            !env.state_root.join(game.as_str()).exists(),
            "no state dir for {bad:?}"
        );
        assert_eq!(
            intents_for(&env, &game).await,
            ["runtime.start_config_invalid"]
        );
        let ops = env.operations(&game).await;
        assert_eq!(
            (ops[0]["outcome"].as_str(), ops[0]["error_code"].as_str()),
            ("failure", "start_config_invalid")
        );
    }
    let intents = env
        .read_stream(&env.config.common.streams.notification_intents)
        .await;
    let contract = Contract::load("notification-intents.asyncapi.yaml");
    for (_, fields) in &intents {
        contract.assert_valid("NotificationIntentEnvelope", fields);
    }
}

#[tokio::test]
async fn a_missing_network_is_start_config_invalid() {
    let env = TestEnv::new().await;
    let game = env.game("nonet");
    let mut config = env.config.clone();
    config.common.docker.network = format!("missing-{}", env.id);
    let svc = system_tests::operations(&config, &env.infra).unwrap();
    let outcome = svc.start(&request(&game, ENGINE)).await;
    assert_failed(&outcome, ErrorCode::StartConfigInvalid);
    assert!(outcome.error_message.contains("missing"), "{outcome:?}");
    assert!(inspect(&game.container_name()).is_none());
    assert_eq!(
        intents_for(&env, &game).await,
        ["runtime.start_config_invalid"]
    );
}

#[tokio::test]
async fn pull_failures_are_image_pull_failed_with_an_intent() {
    let env = TestEnv::new().await;
    // `never` with an image that is not present.
    let mut config = env.config.clone();
    config.lifecycle.pull_policy = shared::ports::PullPolicy::Never;
    let never = system_tests::operations(&config, &env.infra).unwrap();
    let game = env.game("never");
    let outcome = never
        .start(&request(&game, "galaxy-test/engine:9.9.9"))
        .await;
    assert_failed(&outcome, ErrorCode::ImagePullFailed);
    assert_eq!(
        intents_for(&env, &game).await,
        ["runtime.image_pull_failed"]
    );
    // `never` with a present image works.
    let present = env.game("present");
    assert_eq!(
        never.start(&request(&present, ENGINE)).await.outcome,
        Outcome::Success
    );

    // `if_missing` of an image no registry serves: a real pull that fails.
    let game = env.game("pull");
    let outcome = service(&env)
        .start(&request(&game, "127.0.0.1:9/galaxy/missing:1.0.0"))
        .await;
    assert_failed(&outcome, ErrorCode::ImagePullFailed);
    assert!(inspect(&game.container_name()).is_none());
    assert_eq!(
        intents_for(&env, &game).await,
        ["runtime.image_pull_failed"]
    );
}

#[tokio::test]
async fn bad_image_labels_fall_back_to_the_defaults() {
    let env = TestEnv::new().await;
    let game = env.game("badlabels");
    let outcome = service(&env)
        .start(&request(&game, "galaxy-test/engine:badlabels"))
        .await;
    assert_eq!(outcome.outcome, Outcome::Success, "{outcome:?}");
    let c = inspect(&game.container_name()).unwrap();
    assert_eq!(c["HostConfig"]["NanoCpus"], 1_000_000_000);
    assert_eq!(c["HostConfig"]["Memory"], 512 * 1024 * 1024);
    assert_eq!(c["HostConfig"]["PidsLimit"], 512);
}

#[tokio::test]
async fn a_failed_record_write_removes_the_new_container() {
    let env = TestEnv::new().await;
    let game = env.game("rollback");
    // Sabotage the real table for this one game.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'sabotaged'; END $$ LANGUAGE plpgsql; \
         CREATE TRIGGER refuse BEFORE INSERT ON runtime_records FOR EACH ROW WHEN (NEW.game_id = '{game}') EXECUTE FUNCTION refuse();"
    )))
    .execute(env.db().pool())
    .await
    .unwrap();
    let outcome = service(&env).start(&request(&game, ENGINE)).await;
    assert_failed(&outcome, ErrorCode::ContainerStartFailed);
    // PostgreSQL's text stays in the log; the caller reads ours.
    assert_eq!(
        outcome.error_message, "upsert runtime record: database error",
        "{outcome:?}"
    );
    assert!(
        inspect(&game.container_name()).is_none(),
        "the container was rolled back"
    );
    assert!(env.db().get_record(&game).await.unwrap().is_none());
    let ops = env.operations(&game).await;
    assert_eq!(
        ops.len(),
        1,
        "only the failure row; the success row rolled back with the record"
    );
    assert_eq!(ops[0]["error_code"], "container_start_failed");
    assert_eq!(
        intents_for(&env, &game).await,
        ["runtime.container_start_failed"]
    );
    env.flush_outbox().await;
    assert!(
        env.read_stream(&env.config.common.streams.health_events)
            .await
            .is_empty(),
        "no container_started"
    );
}

#[tokio::test]
async fn an_unrecorded_owned_container_is_adopted_and_a_foreign_one_is_left_alone() {
    let env = TestEnv::new().await;
    let svc = service(&env);
    // An orphan of a crash between create and record.
    let orphan = env.game("orphan");
    let labels = [
        "com.galaxy.owner=rtmanager".to_owned(),
        "com.galaxy.kind=game-engine".to_owned(),
        format!("com.galaxy.game_id={orphan}"),
        format!("com.galaxy.engine_image_ref={ENGINE}"),
    ];
    let mut args = vec![
        "create".to_owned(),
        "--name".into(),
        orphan.container_name(),
        "--network".into(),
        env.network.clone(),
    ];
    for l in &labels {
        args.push("--label".into());
        args.push(l.clone());
    }
    args.push(ENGINE.into());
    let orphan_id = docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let adopted = svc.start(&request(&orphan, ENGINE)).await;
    assert_eq!(adopted.outcome, Outcome::Success, "{adopted:?}");
    assert_eq!(
        adopted.record.unwrap().current_container_id.as_deref(),
        Some(orphan_id.as_str())
    );
    assert_eq!(inspect(&orphan_id).unwrap()["State"]["Status"], "running");

    // Same orphan shape, other image: conflict, untouched.
    let other = env.game("orphan2");
    let other_id = docker(&[
        "create",
        "--name",
        &other.container_name(),
        "--label",
        "com.galaxy.owner=rtmanager",
        "--label",
        "com.galaxy.engine_image_ref=galaxy-test/engine:2.0.0",
        ENGINE,
    ]);
    assert_failed(
        &svc.start(&request(&other, ENGINE)).await,
        ErrorCode::Conflict,
    );
    assert!(inspect(&other_id).is_some());

    // Not ours: conflict, never touched.
    let foreign = env.game("foreign");
    let foreign_id = docker(&["create", "--name", &foreign.container_name(), ENGINE]);
    let outcome = svc.start(&request(&foreign, ENGINE)).await;
    assert_failed(&outcome, ErrorCode::Conflict);
    assert!(outcome.error_message.contains("not managed"), "{outcome:?}");
    assert_eq!(inspect(&foreign_id).unwrap()["State"]["Status"], "created");
}

#[tokio::test]
async fn docker_unreachable_is_docker_unavailable() {
    let env = TestEnv::new().await;
    let game = env.game("nodocker");
    let dead = shared::adapters::docker::DockerEngine::connect("tcp://127.0.0.1:9").unwrap();
    let svc = Operations::new(
        shared::operations::OperationDeps {
            engine: Arc::new(dead),
            db: env.infra.db.clone(),
            outbox: env.infra.outbox.clone(),
            leases: shared::adapters::redis::LeaseStore::new(
                env.infra.redis.clone(),
                env.config.common.redis.lease_ttl,
            ),
            lobby: None,
            metrics: env.infra.metrics.clone(),
        },
        env.config
            .lifecycle
            .operation_settings(&env.config.common.docker, &env.config.state),
    );
    let outcome = svc.start(&request(&game, ENGINE)).await;
    assert_failed(&outcome, ErrorCode::DockerUnavailable);
    assert!(
        intents_for(&env, &game).await.is_empty(),
        "no admin intent for an outage"
    );
}
