//! healthz-prober dying between the streak update in Redis and the
//! PostgreSQL commit of the transition it decided: no `probe_failed` or
//! `probe_recovered` is lost, and none is published twice.
//!
//! The death is placed exactly: the prober binary with the fail points
//! (`target/debug/healthz-prober` of the workspace build `cargo build
//! --workspace --bins` that `scripts/test` runs, where the system tests'
//! crate enables `shared/failpoints`) started with
//! `FAILPOINTS=prober-after-streak=return` aborts the process right after
//! the streak script decided a transition, before anything is committed: no
//! shutdown, nothing cleaned up, as after a `kill -9` at that step. A fresh prober then
//! takes over.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::json;
use system_tests::job_process::KillOnDrop;
use system_tests::TestEnv;

mod prober;

use prober::*;

/// The failpoint build of the prober, armed to abort after a streak
/// transition; its log goes to the test's state root.
fn spawn_dying_prober(env: &TestEnv, log_name: &str) -> KillOnDrop {
    let log = std::fs::File::create(env.state_root.join(log_name)).expect("log file");
    KillOnDrop::spawn(
        Command::new(system_tests::job_binary("healthz-prober"))
            .env_clear()
            .envs(env.vars.clone())
            .env("FAILPOINTS", "prober-after-streak=return")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log)),
        "the failpoint prober",
    )
}

/// Waits for the process to die at its fail point.
async fn died_at_the_fail_point(env: &TestEnv, mut child: KillOnDrop) -> ExitStatus {
    let status = env
        .eventually(
            "the prober to die at its fail point",
            Duration::from_secs(20),
            || {
                let status = child.try_wait().expect("try_wait");
                async move { status }
            },
        )
        .await;
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "exit status {status:?}"
    );
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_probe_transition_is_lost_when_the_prober_dies_before_committing_it() {
    let env = fast_env(&[]).await;
    let engine = Engine::start(&env, "dies").await;

    // probe_failed decided in Redis, then the process dies.
    engine.set_health("fail").await;
    died_at_the_fail_point(&env, spawn_dying_prober(&env, "prober-1.log")).await;
    let streak = env.redis().read_streak(&engine.game).await.unwrap();
    assert!(
        streak.as_ref().is_some_and(|s| s.failed_published),
        "the streak took the transition: {streak:?}"
    );
    assert!(
        probe_events(&env, &engine.game).await.is_empty(),
        "nothing committed"
    );

    // A fresh prober publishes it, once.
    let prober = RunningProber::spawn(env.config.clone(), &env);
    let failed = wait_for_event(&env, &engine.game, "probe_failed", Duration::from_secs(10)).await;
    assert_eq!(
        assert_published(&env, &failed).await,
        json!({"consecutive_failures": 3, "last_status": 500, "last_error": "status 500"})
    );
    assert_eq!(failed["container_id"], engine.container_id);
    let hits = engine.hits().await;
    env.eventually("more failing probes", Duration::from_secs(10), || async {
        (engine.hits().await >= hits + 3).then_some(())
    })
    .await;
    prober.stop().await;
    assert_eq!(
        event_types(&probe_events(&env, &engine.game).await),
        ["probe_failed"]
    );
    let failures = env
        .redis()
        .read_streak(&engine.game)
        .await
        .unwrap()
        .expect("streak")
        .consecutive_failures;

    // probe_recovered decided in Redis, then the process dies.
    engine.set_health("ok").await;
    died_at_the_fail_point(&env, spawn_dying_prober(&env, "prober-2.log")).await;
    let streak = env.redis().read_streak(&engine.game).await.unwrap();
    assert!(
        streak.as_ref().is_some_and(|s| !s.failed_published),
        "the streak took the recovery: {streak:?}"
    );
    assert_eq!(
        event_types(&probe_events(&env, &engine.game).await),
        ["probe_failed"]
    );

    // A fresh prober publishes it, once.
    let prober = RunningProber::spawn(env.config.clone(), &env);
    let recovered = wait_for_event(
        &env,
        &engine.game,
        "probe_recovered",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        assert_published(&env, &recovered).await,
        json!({"prior_failure_count": failures})
    );
    let hits = engine.hits().await;
    env.eventually("more healthy probes", Duration::from_secs(10), || async {
        (engine.hits().await >= hits + 3).then_some(())
    })
    .await;
    prober.stop().await;
    assert_eq!(
        event_types(&probe_events(&env, &engine.game).await),
        ["probe_failed", "probe_recovered"]
    );
    let streak = env.redis().read_streak(&engine.game).await.unwrap();
    assert!(
        streak.as_ref().is_some_and(|s| s.pending.is_none()),
        "nothing left pending: {streak:?}"
    );
    forget_streaks(&env, &[&engine.game]).await;
}
