//! The health sources together: what one of them reported is not reported
//! again by another, and what happens while one is busy is not lost.
//!
//! - A removal behind rtmanager's back is seen by docker-events (`destroy`,
//!   or its catch-up) and by inspect-cron's reconcile pass (a running record
//!   without its container): one `container_disappeared`, whichever sees it
//!   first.
//! - A death during docker-events' catch-up is delivered by the subscription
//!   opened before it, even when the daemon's replay buffer (its last 256
//!   events) no longer holds it.
//!
//! The windows are opened at exact steps: an inspect held back by
//! [`HeldInspectEngine`] (the caller gets the daemon's answer only when the
//! test releases it), never by a sleep.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::TagImageOptionsBuilder;
use shared::bootstrap::Infra;
use shared::domain::{GameId, OpSource, Outcome, RuntimeStatus};
use shared::operations::StartRequest;
use system_tests::held_engine::HeldInspectEngine;
use system_tests::{docker, DockerEventsTask, TestEnv, ENGINE};

const WAIT: Duration = Duration::from_secs(30);

async fn start_game(env: &TestEnv, name: &str) -> (GameId, String) {
    let game = env.game(name);
    let outcome = system_tests::operations(&env.config, &env.infra)
        .expect("operations")
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

/// The game's observations (all but `container_started`), delivered now,
/// in stream order.
async fn observed(env: &TestEnv, game: &GameId) -> Vec<String> {
    env.flush_outbox().await;
    env.read_stream(&env.config.common.streams.health_events)
        .await
        .into_iter()
        .map(|(_, fields): (String, HashMap<String, String>)| fields)
        .filter(|f| f["game_id"] == game.as_str() && f["event_type"] != "container_started")
        .map(|f| f["event_type"].clone())
        .collect()
}

async fn await_observed(env: &TestEnv, game: &GameId, event_type: &str) -> Vec<String> {
    env.eventually(&format!("{event_type} of {game}"), WAIT, || async {
        let seen = observed(env, game).await;
        seen.iter().any(|e| e == event_type).then_some(seen)
    })
    .await
}

fn count(events: &[String], event_type: &str) -> usize {
    events.iter().filter(|e| *e == event_type).count()
}

/// One reconciling pass of inspect-cron, as its loop runs it.
async fn reconcile(env: &TestEnv) -> inspect_cron::inspector::PassReport {
    inspect_cron::inspector(&(&env.config).into(), &env.infra)
        .pass(true)
        .await
        .expect("reconcile pass")
}

async fn status_of(env: &TestEnv, game: &GameId) -> RuntimeStatus {
    env.db()
        .get_record(game)
        .await
        .unwrap()
        .expect("record")
        .status
}

/// Kills a sentinel container and waits for its report: docker-events
/// handles events in daemon order after its catch-up, so everything it was
/// going to do before that is done.
async fn barrier(env: &TestEnv, name: &str) {
    let (game, container) = start_game(env, name).await;
    docker(&["kill", &container]);
    await_observed(env, &game, "container_exited").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_docker_events_reported_is_not_reported_again_by_the_reconcile_pass() {
    let env = TestEnv::new().await;
    let listener = DockerEventsTask::spawn(&env.config, &env.infra);
    let (game, container) = start_game(&env, "rm-events-first").await;

    docker(&["rm", "-f", &container]);
    let seen = await_observed(&env, &game, "container_disappeared").await;
    assert_eq!(count(&seen, "container_disappeared"), 1, "{seen:?}");
    // By design the record stays running for the reconciler.
    assert_eq!(status_of(&env, &game).await, RuntimeStatus::Running);

    let report = reconcile(&env).await;
    assert_eq!(report.disposed, std::slice::from_ref(&game), "{report:?}");
    assert_eq!(status_of(&env, &game).await, RuntimeStatus::Removed);
    let ops = env.operations(&game).await;
    assert_eq!(ops.last().unwrap()["op_kind"], "reconcile_dispose");

    barrier(&env, "rm-events-first-barrier").await;
    let seen = observed(&env, &game).await;
    assert_eq!(
        seen,
        ["container_exited", "container_disappeared"],
        "one container_disappeared for one removal"
    );
    listener.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_the_reconcile_pass_reported_is_not_reported_again_by_docker_events() {
    let env = TestEnv::new().await;
    let (game, container) = start_game(&env, "rm-reconcile-first").await;
    docker(&["rm", "-f", &container]);

    // docker-events' catch-up reads the record (running) and inspects the
    // container (gone); the answer is held while the reconcile pass
    // disposes the record and reports the disappearance.
    let engine = Arc::new(HeldInspectEngine::new(env.infra.engine.clone()));
    let mut hold = engine.hold_next_inspect(&container);
    let infra = Infra {
        engine: engine.clone(),
        ..env.infra.clone()
    };
    let listener = DockerEventsTask::spawn(&env.config, &infra);
    hold.reached(WAIT).await;

    let report = reconcile(&env).await;
    assert_eq!(report.disposed, std::slice::from_ref(&game), "{report:?}");
    assert_eq!(
        observed(&env, &game).await,
        ["container_disappeared"],
        "reported by the reconcile pass"
    );

    // The catch-up goes on with what it read before the pass.
    hold.release();
    barrier(&env, "rm-reconcile-first-barrier").await;
    assert_eq!(
        observed(&env, &game).await,
        ["container_disappeared"],
        "one container_disappeared for one removal"
    );
    assert_eq!(status_of(&env, &game).await, RuntimeStatus::Removed);
    listener.stop().await;
}

/// Daemon events that are none of rtmanager's business (image tags), enough
/// to push everything before them out of the daemon's replay buffer (it
/// keeps the last 256 events of every kind). Returns the tags made.
async fn flood_daemon_events(env: &TestEnv, n: usize) -> Vec<String> {
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker socket");
    let repo = format!("rtm-flood-{}", env.id);
    let tags: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
    futures_util::future::join_all(tags.iter().map(|tag| {
        let docker = docker.clone();
        let options = TagImageOptionsBuilder::default()
            .repo(&repo)
            .tag(tag)
            .build();
        async move { docker.tag_image(ENGINE, Some(options)).await }
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<()>, _>>()
    .expect("docker tag");
    tags.iter().map(|t| format!("{repo}:{t}")).collect()
}

async fn remove_tags(tags: &[String]) {
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker socket");
    for tag in tags {
        let _ = docker
            .remove_image(
                tag,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_death_during_the_catch_up_is_reported_after_it_from_the_subscription() {
    let env = TestEnv::new().await;
    let (game, container) = start_game(&env, "dies-in-catch-up").await;

    // The catch-up inspects the container (running) and is held there, as a
    // catch-up of many records is busy for a while.
    let engine = Arc::new(HeldInspectEngine::new(env.infra.engine.clone()));
    let mut hold = engine.hold_next_inspect(&container);
    let infra = Infra {
        engine: engine.clone(),
        ..env.infra.clone()
    };
    let listener = DockerEventsTask::spawn(&env.config, &infra);
    hold.reached(WAIT).await;

    // The engine dies during the catch-up, and the daemon forgets it: only
    // a subscription that was already open when it died still has it.
    docker(&["kill", &container]);
    let tags = flood_daemon_events(&env, 300).await;
    hold.release();

    let seen = await_observed(&env, &game, "container_exited").await;
    assert_eq!(seen, ["container_exited"]);
    assert_eq!(status_of(&env, &game).await, RuntimeStatus::Stopped);
    barrier(&env, "dies-in-catch-up-barrier").await;
    assert_eq!(observed(&env, &game).await, ["container_exited"], "once");
    listener.stop().await;
    remove_tags(&tags).await;
}
