//! The windows between an operation's steps, on real PostgreSQL, Redis and
//! Docker, reached deterministically with failure points (the `fail` crate,
//! `shared`'s `failpoints` feature, which only this test crate enables):
//! an ambiguous commit, and a lease Redis lost while its holder worked on,
//! with the fencing tokens that make the late holder's commit fail.
//!
//! Failure points are global to the process, so these tests take turns.

use std::sync::LazyLock;
use std::time::Duration;

use shared::adapters::postgres::StoreError;
use shared::adapters::redis::lease_key;
use shared::adapters::LeaseStore;
use shared::domain::{ErrorCode, GameId, OpSource, Outcome};
use shared::game_lock::GameLocks;
use shared::operations::StartRequest;
use system_tests::{inspect, TestEnv, ENGINE};

static ONE_AT_A_TIME: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(Default::default);

fn start_request(game: &GameId) -> StartRequest {
    StartRequest {
        game_id: game.clone(),
        image_ref: ENGINE.to_owned(),
        op_source: OpSource::AdminRest,
        source_ref: "crash-window".into(),
    }
}

async fn record_container(env: &TestEnv, game: &GameId) -> Option<(String, String)> {
    sqlx::query_as("SELECT status, current_container_id FROM runtime_records WHERE game_id = $1")
        .bind(game.as_str())
        .fetch_optional(env.db().pool())
        .await
        .unwrap()
}

async fn log_kinds(env: &TestEnv, game: &GameId) -> Vec<(String, String)> {
    sqlx::query_as("SELECT op_kind, outcome FROM operation_log WHERE game_id = $1 ORDER BY id")
        .bind(game.as_str())
        .fetch_all(env.db().pool())
        .await
        .unwrap()
}

/// Removes the failure point when dropped, so a failed test cannot leave it
/// configured for the next one.
struct Failpoint(&'static str);

impl Failpoint {
    fn set(name: &'static str, actions: &str) -> Self {
        fail::cfg(name, actions).expect("failpoint actions");
        Self(name)
    }
}

impl Drop for Failpoint {
    fn drop(&mut self) {
        fail::remove(self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_start_whose_commit_reply_is_lost_keeps_its_container_and_succeeds() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::new().await;
    let operations = system_tests::operations(&env.config, &env.infra).unwrap();
    let game = env.game("replylost");
    let outcome = {
        let _lost = Failpoint::set("start-commit-reply-lost", "return");
        operations.start(&start_request(&game)).await
    };
    assert_eq!(outcome.outcome, Outcome::Success, "{outcome:?}");
    let (status, container) = record_container(&env, &game).await.expect("record");
    assert_eq!(status, "running");
    let info = inspect(&container).expect("the committed container is kept");
    assert_eq!(info["State"]["Running"], true);
    assert_eq!(
        log_kinds(&env, &game).await,
        [("start".to_owned(), "success".to_owned())],
        "one row: the one the commit wrote"
    );
}

#[tokio::test]
async fn a_commit_under_a_superseded_fencing_token_fails_and_writes_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::new().await;
    let locks = GameLocks::new(
        LeaseStore::new(env.redis().clone(), Duration::from_secs(30)),
        env.db().clone(),
    );
    let game = env.game("fenced");
    let first = locks.try_lock(&game).await.unwrap().expect("free game");
    // Redis loses the lease (a restart without persistence, a failover):
    // a second holder gets it and takes the next token.
    let mut conn = env.redis().manager();
    let _: i64 = redis::cmd("DEL")
        .arg(lease_key(&game))
        .query_async(&mut conn)
        .await
        .unwrap();
    let second = locks.try_lock(&game).await.unwrap().expect("lease gone");
    assert!(second.fence().token > first.fence().token);

    let mut late = env.db().begin().await.unwrap();
    late.fence(first.fence());
    late.put_stop_tombstone(&game, 1, "cancelled")
        .await
        .unwrap();
    let refused = late.commit().await.unwrap_err();
    assert!(matches!(refused, StoreError::Fenced { .. }), "{refused}");
    assert_eq!(refused.code(), ErrorCode::Conflict);
    assert_eq!(env.db().stop_tombstone(&game).await.unwrap(), None);

    let mut current = env.db().begin().await.unwrap();
    current.fence(second.fence());
    current
        .put_stop_tombstone(&game, 2, "cancelled")
        .await
        .unwrap();
    current.commit().await.expect("the current holder commits");
    assert_eq!(env.db().stop_tombstone(&game).await.unwrap(), Some(2));
    first.release().await;
    second.release().await;
}

/// The scenario: a start has created its container; Redis loses the
/// game lease; the reconciler takes the game and adopts the container; the
/// start wakes up. Before the fix it removed the container, leaving the
/// record on a container that was gone. Now it never removes it: a start that
/// knows its lease is lost answers `conflict`; one that does not yet know
/// finds the record running on its own container and answers `success`.
async fn start_losing_its_lease_to_the_reconciler(lease_ttl_secs: &str, notice_the_loss: bool) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::with(&[("RTMANAGER_GAME_LEASE_TTL_SECONDS", lease_ttl_secs)]).await;
    let operations = system_tests::operations(&env.config, &env.infra).unwrap();
    let game = env.game("adopted");
    let paused = Failpoint::set("start-after-create", "pause");
    let start = tokio::spawn({
        let operations = operations.clone();
        let request = start_request(&game);
        async move { operations.start(&request).await }
    });
    let container = env
        .eventually("the start's container", Duration::from_secs(60), || async {
            inspect(&game.container_name()).map(|c| c["Id"].as_str().unwrap().to_owned())
        })
        .await;
    let mut conn = env.redis().manager();
    let _: i64 = redis::cmd("DEL")
        .arg(lease_key(&game))
        .query_async(&mut conn)
        .await
        .unwrap();
    let inspector = inspect_cron::inspector(&(&env.config).into(), &env.infra);
    let report = inspector.pass(true).await.expect("reconcile pass");
    assert_eq!(
        record_container(&env, &game).await,
        Some(("running".to_owned(), container.clone())),
        "adopted: {report:?}"
    );
    if notice_the_loss {
        // The renewal (every third of the TTL) finds the lease gone.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    drop(paused);
    let outcome = start.await.unwrap();
    if notice_the_loss {
        assert_eq!(outcome.outcome, Outcome::Failure, "{outcome:?}");
        assert_eq!(outcome.error_code, Some(ErrorCode::Conflict), "{outcome:?}");
    } else {
        assert_eq!(outcome.outcome, Outcome::Success, "{outcome:?}");
        let answered = outcome.record.and_then(|r| r.current_container_id);
        assert_eq!(answered.as_deref(), Some(container.as_str()));
    }
    let info = inspect(&container).expect("the adopted container is kept");
    assert_eq!(info["State"]["Running"], true);
    assert_eq!(
        record_container(&env, &game).await,
        Some(("running".to_owned(), container)),
        "record and Docker agree"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_start_that_knows_it_lost_its_lease_answers_conflict_and_keeps_the_adopted_container() {
    start_losing_its_lease_to_the_reconciler("3", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_start_unaware_its_lease_was_taken_over_answers_success_on_the_adopted_container() {
    start_losing_its_lease_to_the_reconciler("30", false).await;
}

/// A stop that dies between stopping the container and marking the record
/// (a kill, or the shutdown drain cutting it off). Its intent was committed
/// before the container was stopped, so no source reports the exit: an
/// inspect-only pass publishes nothing for it, the reconciler marks the record stopped without an `inspect_unhealthy`, and
/// the prober no longer probes the container.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stop_that_dies_after_stopping_the_container_is_reported_by_no_source() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::new().await;
    let operations = system_tests::operations(&env.config, &env.infra).unwrap();
    let game = env.game("stopdies");
    let started = operations.start(&start_request(&game)).await;
    assert_eq!(started.outcome, Outcome::Success, "{started:?}");
    let container = started.record.unwrap().current_container_id.unwrap();
    let probed = |targets: Vec<shared::adapters::postgres::ProbeTarget>| {
        targets.iter().any(|t| t.record.game_id == game)
    };
    assert!(probed(env.db().probe_targets().await.unwrap()));

    let died = {
        let _dies = Failpoint::set("stop-after-container-stop", "panic");
        let operations = operations.clone();
        let request = shared::operations::OperationRequest {
            game_id: game.clone(),
            op_source: OpSource::AdminRest,
            source_ref: "stop".into(),
        };
        tokio::spawn(async move {
            operations
                .stop(&request, shared::domain::StopReason::Cancelled, None)
                .await
        })
        .await
    };
    assert!(
        died.unwrap_err().is_panic(),
        "the stop died at the failpoint"
    );
    assert_eq!(inspect(&container).unwrap()["State"]["Running"], false);
    assert_eq!(
        record_container(&env, &game).await,
        Some(("running".to_owned(), container.clone())),
        "the record was not marked"
    );
    assert!(
        !probed(env.db().probe_targets().await.unwrap()),
        "the prober skips a container being stopped"
    );

    // The dead stop's lease goes from its Drop's detached task; an
    // inspect-only pass that found it held would skip the game and prove
    // nothing.
    let leases = LeaseStore::new(env.redis().clone(), Duration::from_secs(30));
    env.eventually(
        "the dead stop's lease to go",
        Duration::from_secs(30),
        || async { (!leases.is_held(&game).await.unwrap()).then_some(()) },
    )
    .await;
    let inspector = inspect_cron::inspector(&(&env.config).into(), &env.infra);
    // An inspect-only pass (most passes are: the reconcile interval is
    // longer) sees the record running on an exited container first.
    let inspected = inspector.pass(false).await.expect("inspect pass");
    assert!(
        inspected.busy.is_empty() && inspected.inspected.contains(&container),
        "the inspect pass looked at the container: {inspected:?}"
    );
    inspector.pass(true).await.expect("reconcile pass");
    assert_eq!(
        record_container(&env, &game).await,
        Some(("stopped".to_owned(), container)),
        "the reconciler settles the record"
    );
    env.flush_outbox().await;
    let reported: Vec<String> = env
        .read_stream(&env.config.common.streams.health_events)
        .await
        .into_iter()
        .filter(|(_, f)| f["game_id"] == game.as_str())
        .map(|(_, f)| f["event_type"].clone())
        .collect();
    assert_eq!(reported, ["container_started"], "nothing for the stop");
}

/// A start job run again after a crash between its failure commit and its
/// result (the entry is reclaimed, no result found) fails again: one admin
/// intent per request all the same, though the wire's idempotency key holds
/// the attempt time. Another request is another intent.
#[tokio::test]
async fn a_failed_start_run_again_for_the_same_request_raises_one_admin_intent() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::new().await;
    let operations = system_tests::operations(&env.config, &env.infra).unwrap();
    let game = env.game("twointents");
    let request = |source_ref: &str| StartRequest {
        image_ref: "galaxy-test/absent:9.9.9".into(),
        source_ref: source_ref.into(),
        ..start_request(&game)
    };
    for source_ref in ["1775121650000-0", "1775121650000-0", "1775121650001-0"] {
        let outcome = operations.start(&request(source_ref)).await;
        assert_eq!(
            outcome.error_code,
            Some(ErrorCode::ImagePullFailed),
            "{outcome:?}"
        );
    }
    let intents = env.admin_intents(&game).await;
    assert_eq!(intents.len(), 2, "one per request: {intents:?}");
}

fn game_request(game: &GameId, source_ref: &str) -> shared::operations::OperationRequest {
    shared::operations::OperationRequest {
        game_id: game.clone(),
        op_source: OpSource::LobbyStream,
        source_ref: source_ref.into(),
    }
}

/// Both directions of a stop and a start processed out of their request
/// order, on a game that has a record: an older start must not undo a
/// newer stop, and an older stop must not stop a newer start.
#[tokio::test]
async fn a_stop_and_a_start_processed_out_of_order_keep_the_newer_request() {
    // Its stops must not meet another test's armed stop failure point.
    let _turn = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::new().await;
    let ops = system_tests::operations(&env.config, &env.infra).unwrap();
    let game = env.game("outoforder");
    let start_at = |t: i64, r: &str| {
        let req = StartRequest {
            op_source: OpSource::LobbyStream,
            source_ref: r.into(),
            ..start_request(&game)
        };
        let ops = ops.clone();
        async move { ops.start_requested(&req, Some(t)).await }
    };
    let stop_at = |t: i64, r: &str| {
        let req = game_request(&game, r);
        let ops = ops.clone();
        async move {
            ops.stop(&req, shared::domain::StopReason::Cancelled, Some(t))
                .await
        }
    };
    let code = |o: &shared::operations::OperationOutcome| (o.outcome, o.error_code);

    assert_eq!(code(&start_at(100, "s1").await), (Outcome::Success, None));
    assert_eq!(code(&stop_at(150, "p1").await), (Outcome::Success, None));
    // Lobby: start at 200, stop at 300; the stop is processed first.
    assert_eq!(
        code(&stop_at(300, "p2").await),
        (Outcome::Success, Some(ErrorCode::ReplayNoOp))
    );
    let late_start = start_at(200, "s2").await;
    assert_eq!(
        code(&late_start),
        (Outcome::Failure, Some(ErrorCode::Conflict)),
        "{late_start:?}"
    );
    assert_eq!(record_container(&env, &game).await.unwrap().0, "stopped");

    // Lobby: stop at 350, start at 400; the start is processed first.
    assert_eq!(code(&start_at(400, "s3").await), (Outcome::Success, None));
    let late_stop = stop_at(350, "p3").await;
    assert_eq!(
        code(&late_stop),
        (Outcome::Failure, Some(ErrorCode::Conflict)),
        "{late_stop:?}"
    );
    let (status, container) = record_container(&env, &game).await.unwrap();
    assert_eq!(status, "running");
    assert_eq!(inspect(&container).unwrap()["State"]["Running"], true);
    // A newer stop still stops it.
    assert_eq!(code(&stop_at(500, "p4").await), (Outcome::Success, None));

    // Lobby: start at 600, start at 700 (answered from the running record),
    // stop at 650 processed last: the replayed start is the newer request.
    assert_eq!(code(&start_at(600, "s4").await), (Outcome::Success, None));
    assert_eq!(
        code(&start_at(700, "s5").await),
        (Outcome::Success, Some(ErrorCode::ReplayNoOp))
    );
    let older_stop = stop_at(650, "p5").await;
    assert_eq!(
        code(&older_stop),
        (Outcome::Failure, Some(ErrorCode::Conflict)),
        "{older_stop:?}"
    );
    let (status, container) = record_container(&env, &game).await.unwrap();
    assert_eq!(status, "running");
    assert_eq!(inspect(&container).unwrap()["State"]["Running"], true);
}

/// Holds the task that reaches `point` (a callback fail point: it runs and
/// the code goes on) until [`Held::go`], and says when it got there.
struct Held {
    point: &'static str,
    reached: Option<std::sync::mpsc::Receiver<()>>,
    go: std::sync::mpsc::Sender<()>,
}

impl Held {
    fn at(point: &'static str) -> Self {
        let (reached_tx, reached) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let (reached_tx, go_rx) = (
            std::sync::Mutex::new(reached_tx),
            std::sync::Mutex::new(go_rx),
        );
        fail::cfg_callback(point, move || {
            let _ = reached_tx.lock().unwrap().send(());
            let _ = go_rx.lock().unwrap().recv();
        })
        .expect("callback fail point");
        Self {
            point,
            reached: Some(reached),
            go,
        }
    }

    async fn reached(&mut self) {
        let reached = self.reached.take().expect("waited once");
        let point = self.point;
        tokio::task::spawn_blocking(move || reached.recv_timeout(Duration::from_secs(120)))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("the operation never reached {point}: {e}"));
    }

    fn go(&self) {
        fail::remove(self.point);
        let _ = self.go.send(());
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.go();
    }
}

/// Redis loses `game`'s lease (a restart without persistence, a failover)
/// while its holder is held at a step; a second holder takes it and the
/// next fencing token. Returns the second holder's lock.
async fn take_over(env: &TestEnv, game: &GameId) -> shared::game_lock::GameLock {
    let mut conn = env.redis().manager();
    let _: i64 = redis::cmd("DEL")
        .arg(lease_key(game))
        .query_async(&mut conn)
        .await
        .unwrap();
    let locks = GameLocks::new(
        LeaseStore::new(env.redis().clone(), Duration::from_secs(30)),
        env.db().clone(),
    );
    locks
        .try_lock(game)
        .await
        .unwrap()
        .expect("the lease is gone")
}

/// The game's successful `operation_log` rows of `kind`.
async fn rows(env: &TestEnv, game: &GameId, kind: &str) -> usize {
    log_kinds(env, game)
        .await
        .iter()
        .filter(|(k, outcome)| k == kind && outcome == "success")
        .count()
}

/// Stop, cleanup, restart, patch and the reconciler, each held just before
/// its commit while Redis loses the game's lease and a second holder takes
/// it: each commit is refused under the superseded token (`conflict`, or a
/// busy game for the reconciler), and nothing of it is written: the record
/// is as the operation found it and no success row is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_operation_committing_under_a_superseded_fencing_token_writes_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::new().await;
    let ops = system_tests::operations(&env.config, &env.infra).unwrap();
    let request = |game: &GameId| shared::operations::OperationRequest {
        game_id: game.clone(),
        op_source: OpSource::AdminRest,
        source_ref: "superseded".into(),
    };
    let started = async |game: &GameId| {
        let outcome = ops.start(&start_request(game)).await;
        assert_eq!(outcome.outcome, Outcome::Success, "{outcome:?}");
        outcome.record.unwrap().current_container_id.unwrap()
    };
    let conflict = |what: &str, o: shared::operations::OperationOutcome| {
        assert_eq!(
            (o.outcome, o.error_code),
            (Outcome::Failure, Some(ErrorCode::Conflict)),
            "{what}: {o:?}"
        );
    };

    // The reconciler first (a pass settles every game of the env, and only
    // this one's commit must meet the held point): a running record whose
    // container was removed behind our back, held before the dispose
    // commits.
    let game = env.game("fencedreconcile");
    let container = started(&game).await;
    system_tests::docker(&["rm", "-f", &container]);
    let mut held = Held::at("inspect-before-commit");
    let pass = tokio::spawn({
        let inspector = inspect_cron::inspector(&(&env.config).into(), &env.infra);
        async move { inspector.pass(true).await }
    });
    held.reached().await;
    let second = take_over(&env, &game).await;
    held.go();
    let report = pass.await.unwrap().expect("reconcile pass");
    assert!(
        report.busy.contains(&game) && report.disposed.is_empty(),
        "reconcile: refused: {report:?}"
    );
    assert_eq!(
        record_container(&env, &game).await,
        Some(("running".to_owned(), container)),
        "reconcile: the dispose was not written"
    );
    assert_eq!(rows(&env, &game, "reconcile_dispose").await, 0, "reconcile");
    second.release().await;

    // Stop: held after the Docker stop, before the mark.
    let game = env.game("fencedstop");
    let container = started(&game).await;
    let mut held = Held::at("stop-after-container-stop");
    let op = tokio::spawn({
        let (ops, req) = (ops.clone(), request(&game));
        async move {
            ops.stop(&req, shared::domain::StopReason::Cancelled, None)
                .await
        }
    });
    held.reached().await;
    let second = take_over(&env, &game).await;
    held.go();
    conflict("stop", op.await.unwrap());
    assert_eq!(
        record_container(&env, &game).await,
        Some(("running".to_owned(), container)),
        "stop: the mark was not written"
    );
    assert_eq!(rows(&env, &game, "stop").await, 0, "stop");
    second.release().await;

    // Cleanup: held after the Docker remove, before the mark.
    let game = env.game("fencedcleanup");
    let container = started(&game).await;
    let stopped = ops
        .stop(&request(&game), shared::domain::StopReason::Cancelled, None)
        .await;
    assert_eq!(stopped.outcome, Outcome::Success, "{stopped:?}");
    let mut held = Held::at("cleanup-after-remove");
    let op = tokio::spawn({
        let (ops, req) = (ops.clone(), request(&game));
        async move { ops.cleanup(&req).await }
    });
    held.reached().await;
    let second = take_over(&env, &game).await;
    held.go();
    conflict("cleanup", op.await.unwrap());
    assert_eq!(
        record_container(&env, &game).await,
        Some(("stopped".to_owned(), container)),
        "cleanup: the mark was not written"
    );
    assert_eq!(rows(&env, &game, "cleanup_container").await, 0, "cleanup");
    second.release().await;

    // Restart and patch: held in the inner start, after its new container
    // was created, before the record commit. The container is left to the
    // new holder (the reconciler), not removed.
    for (call, patch) in [
        ("restart", None),
        ("patch", Some("galaxy-test/engine:1.0.1")),
    ] {
        let game = env.game(&format!("fenced{call}"));
        let old = started(&game).await;
        let mut held = Held::at("start-after-create");
        let op = tokio::spawn({
            let (ops, req) = (ops.clone(), request(&game));
            async move {
                match patch {
                    Some(image) => ops.patch(&req, image).await,
                    None => ops.restart(&req).await,
                }
            }
        });
        held.reached().await;
        let created = inspect(&game.container_name()).expect("the new container");
        let created = created["Id"].as_str().unwrap().to_owned();
        assert_ne!(created, old, "{call}");
        let second = take_over(&env, &game).await;
        held.go();
        conflict(call, op.await.unwrap());
        let (status, named) = record_container(&env, &game).await.unwrap();
        assert_eq!(
            (status.as_str(), named.as_str()),
            ("stopped", old.as_str()),
            "{call}: the inner start's record was not written"
        );
        assert!(
            inspect(&created).is_some(),
            "{call}: the new container is kept for the new holder (a patch does not roll back)"
        );
        assert_eq!(
            rows(&env, &game, "start").await,
            1,
            "{call}: the first start's only"
        );
        assert_eq!(rows(&env, &game, call).await, 0, "{call}");
        second.release().await;
    }
}
