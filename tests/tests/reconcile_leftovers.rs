//! What a crashed operation leaves for the reconciler, on real PostgreSQL,
//! Redis and Docker: a restart that died after creating the new container
//! (record `stopped`, the new container running unwatched), and a start that
//! died after creating its container when a stop arrived meanwhile. The
//! crash is a panic at a failure point (`shared`'s `failpoints` feature):
//! nothing after it runs, as after a kill.

use std::sync::LazyLock;
use std::time::Duration;

use shared::domain::{GameId, OpSource, Outcome, StopReason};
use shared::operations::{OperationRequest, Operations, StartRequest};
use system_tests::{inspect, TestEnv, ENGINE};

/// Failure points are global to the process: these tests take turns.
static ONE_AT_A_TIME: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(Default::default);

fn request(game: &GameId, source_ref: &str) -> OperationRequest {
    OperationRequest {
        game_id: game.clone(),
        op_source: OpSource::AdminRest,
        source_ref: source_ref.into(),
    }
}

async fn record_of(env: &TestEnv, game: &GameId) -> Option<(String, String)> {
    sqlx::query_as("SELECT status, current_container_id FROM runtime_records WHERE game_id = $1")
        .bind(game.as_str())
        .fetch_optional(env.db().pool())
        .await
        .unwrap()
}

fn container_of(game: &GameId) -> (String, bool) {
    let c = inspect(&game.container_name()).expect("the game's container");
    (
        c["Id"].as_str().unwrap().to_owned(),
        c["State"]["Running"].as_bool().unwrap(),
    )
}

/// Runs `op` with the failure point `start-after-create` panicking: the
/// operation dies right after its (inner) start created the container.
/// Runs `op` on `game` until it dies at the failure point, then waits for
/// its lease to go: a dying holder releases it from a detached task (the
/// lease's `Drop`), which the next operation would otherwise race.
async fn dies_after_create<F, Fut>(env: &TestEnv, game: &GameId, op: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = shared::operations::OperationOutcome> + Send + 'static,
{
    dies_at(env, game, "start-after-create", op).await;
}

/// Runs `op` on `game` with the failure point `point` panicking, as
/// [`dies_after_create`] does.
async fn dies_at<F, Fut>(env: &TestEnv, game: &GameId, point: &str, op: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = shared::operations::OperationOutcome> + Send + 'static,
{
    fail::cfg(point, "panic").unwrap();
    let died = tokio::spawn(op()).await;
    fail::remove(point);
    assert!(
        died.unwrap_err().is_panic(),
        "the operation died at the failure point"
    );
    let leases = shared::adapters::LeaseStore::new(
        env.infra.redis.clone(),
        env.config.common.redis.lease_ttl,
    );
    env.eventually(
        "the dead operation's lease released",
        Duration::from_secs(10),
        || async { (!leases.is_held(game).await.unwrap_or(true)).then_some(()) },
    )
    .await;
}

async fn start(ops: &Operations, game: &GameId) -> String {
    let outcome = ops
        .start(&StartRequest {
            game_id: game.clone(),
            image_ref: ENGINE.into(),
            op_source: OpSource::AdminRest,
            source_ref: "start".into(),
        })
        .await;
    assert_eq!(outcome.outcome, Outcome::Success, "{outcome:?}");
    outcome.record.unwrap().current_container_id.unwrap()
}

async fn reconcile(env: &TestEnv) {
    inspect_cron::inspector(&(&env.config).into(), &env.infra)
        .pass(true)
        .await
        .expect("reconcile pass");
}

async fn log_rows(env: &TestEnv, game: &GameId) -> Vec<(String, String)> {
    sqlx::query_as("SELECT op_kind, op_source FROM operation_log WHERE game_id = $1 ORDER BY id")
        .bind(game.as_str())
        .fetch_all(env.db().pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_that_died_after_creating_the_new_container_is_adopted_into_its_record() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::new().await;
    let ops = system_tests::operations(&env.config, &env.infra).unwrap();
    let game = env.game("restartdied");
    let old = start(&ops, &game).await;
    dies_after_create(&env, &game, {
        let (ops, req) = (ops.clone(), request(&game, "restart"));
        move || async move { ops.restart(&req).await }
    })
    .await;
    let (new, running) = container_of(&game);
    assert_ne!(new, old);
    assert!(running);
    assert_eq!(record_of(&env, &game).await.unwrap().0, "stopped");

    reconcile(&env).await;
    assert_eq!(
        record_of(&env, &game).await,
        Some(("running".to_owned(), new.clone())),
        "the unwatched container is the game's again"
    );
    assert_eq!(
        log_rows(&env, &game).await.last().unwrap(),
        &("reconcile_adopt".to_owned(), "auto_reconcile".to_owned())
    );
    assert!(container_of(&game).1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leftover_container_that_a_newer_stop_superseded_is_stopped_not_adopted() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::new().await;
    let ops = system_tests::operations(&env.config, &env.infra).unwrap();
    let stop_later = || chrono::Utc::now().timestamp_millis() + 60_000;

    // A restart died after creating its new container; then a stop came
    // (the record was stopped: `replay_no_op`, with a tombstone).
    let restarted = env.game("supersededrestart");
    start(&ops, &restarted).await;
    dies_after_create(&env, &restarted, {
        let (ops, req) = (ops.clone(), request(&restarted, "restart"));
        move || async move { ops.restart(&req).await }
    })
    .await;
    let stop = ops
        .stop(
            &request(&restarted, "stop"),
            StopReason::Cancelled,
            Some(stop_later()),
        )
        .await;
    assert_eq!(stop.outcome, Outcome::Success, "{stop:?}");

    // A first start died after creating its container; then a stop came (no
    // record: a tombstone).
    let fresh = env.game("supersededstart");
    dies_after_create(&env, &fresh, {
        let ops = ops.clone();
        let req = StartRequest {
            game_id: fresh.clone(),
            image_ref: ENGINE.into(),
            op_source: OpSource::LobbyStream,
            source_ref: "1-0".into(),
        };
        move || async move { ops.start(&req).await }
    })
    .await;
    let stop = ops
        .stop(
            &request(&fresh, "stop"),
            StopReason::Cancelled,
            Some(stop_later()),
        )
        .await;
    assert_eq!(stop.outcome, Outcome::Success, "{stop:?}");
    assert!(container_of(&fresh).1);

    reconcile(&env).await;
    for game in [&restarted, &fresh] {
        let (container, running) = container_of(game);
        assert!(!running, "{game}: the superseded container is stopped");
        let (status, named) = record_of(&env, game).await.expect("a record");
        assert_eq!(status, "stopped", "{game}");
        assert_eq!(named, container, "{game}: the record names the container");
        let intents = shared::adapters::IntentStore::new(env.db().clone());
        assert!(
            intents
                .is_recorded(shared::domain::IntentKind::Stop, &container)
                .await
                .unwrap(),
            "{game}: its stop is rtmanager's own, reported by no source"
        );
        assert_eq!(
            log_rows(&env, game).await.last().unwrap(),
            &("stop".to_owned(), "auto_reconcile".to_owned()),
            "{game}"
        );
    }
    // A second pass finds nothing more to do.
    let before = log_rows(&env, &fresh).await.len();
    reconcile(&env).await;
    assert_eq!(log_rows(&env, &fresh).await.len(), before);
}

/// A restart and a patch that died after creating the new container, before
/// starting it (the old one already removed under the game's name): the
/// record is `stopped` on a container that is gone. The pass points it at
/// the created container, so record and Docker agree, and a cleanup then
/// removes the container that exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_or_patch_that_died_before_starting_the_new_container_is_pointed_at_it() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::new().await;
    let ops = system_tests::operations(&env.config, &env.infra).unwrap();
    let restarted = env.game("notstartedrestart");
    let patched = env.game("notstartedpatch");
    for (game, patch) in [
        (&restarted, None),
        (&patched, Some("galaxy-test/engine:1.0.1")),
    ] {
        let old = start(&ops, game).await;
        dies_at(&env, game, "docker-after-create", {
            let (ops, req) = (ops.clone(), request(game, "recreate"));
            move || async move {
                match patch {
                    Some(image) => ops.patch(&req, image).await,
                    None => ops.restart(&req).await,
                }
            }
        })
        .await;
        let (new, running) = container_of(game);
        assert_ne!(new, old, "{game}");
        assert!(!running, "{game}: created, not started");
        assert!(inspect(&old).is_none(), "{game}: the old one was removed");
    }

    reconcile(&env).await;
    for (game, image) in [(&restarted, ENGINE), (&patched, "galaxy-test/engine:1.0.1")] {
        let (container, running) = container_of(game);
        assert!(!running, "{game}");
        assert_eq!(
            record_of(&env, game).await,
            Some(("stopped".to_owned(), container)),
            "{game}: the record names the container that exists"
        );
        let record = env.db().get_record(game).await.unwrap().unwrap();
        assert_eq!(record.current_image_ref.as_deref(), Some(image), "{game}");
        assert_eq!(
            log_rows(&env, game).await.last().unwrap(),
            &("reconcile_adopt".to_owned(), "auto_reconcile".to_owned()),
            "{game}"
        );
    }
    let before = log_rows(&env, &restarted).await.len();
    reconcile(&env).await;
    assert_eq!(
        log_rows(&env, &restarted).await.len(),
        before,
        "settled once"
    );

    // The cleanup acts on the container that exists.
    let cleaned = ops.cleanup(&request(&restarted, "cleanup")).await;
    assert_eq!(cleaned.outcome, Outcome::Success, "{cleaned:?}");
    assert!(inspect(&restarted.container_name()).is_none(), "removed");
}
