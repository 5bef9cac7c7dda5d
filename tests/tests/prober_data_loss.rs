//! healthz-prober after Redis lost a failure streak (`FLUSHALL`, a failover
//! without persistence): the published state of the streak is recovered
//! from what PostgreSQL committed, so an open `probe_failed` is closed by
//! exactly one `probe_recovered` and never reported twice. The streak is
//! lost by deleting the game's key: the shared test Redis serves other
//! tests at the same time.

use std::time::Duration;

use serde_json::Value;
use system_tests::TestEnv;

mod prober;

use prober::*;

/// Fails the engine until `probe_failed` is published (and committed).
async fn open_failure_streak(env: &TestEnv, engine: &Engine) {
    engine.set_health("fail").await;
    let failed = wait_for_event(env, &engine.game, "probe_failed", Duration::from_secs(10)).await;
    assert_published(env, &failed).await;
    assert_eq!(failed["container_id"], engine.container_id);
}

/// Lets the (only) prober of the engine observe at least `probes` more
/// failures and finish their streak updates: a prober task runs one probe,
/// including its commit, before the next one's HTTP request.
async fn observe_failures(env: &TestEnv, engine: &Engine, probes: u64) {
    let hits = engine.hits().await;
    env.eventually("more failing probes", Duration::from_secs(10), || async {
        (engine.hits().await > hits + probes).then_some(())
    })
    .await;
}

/// Waits for the one `probe_recovered`, lets a few healthy probes pass and
/// checks that the streak's events are exactly one failure, one recovery;
/// returns the recovery's `prior_failure_count`.
async fn assert_recovered_once(env: &TestEnv, engine: &Engine, prober: RunningProber) -> i64 {
    let recovered = wait_for_event(
        env,
        &engine.game,
        "probe_recovered",
        Duration::from_secs(10),
    )
    .await;
    let details: Value = assert_published(env, &recovered).await;
    let hits = engine.hits().await;
    env.eventually("more healthy probes", Duration::from_secs(5), || async {
        (engine.hits().await >= hits + 3).then_some(())
    })
    .await;
    prober.stop().await;
    assert_eq!(
        event_types(&probe_events(env, &engine.game).await),
        ["probe_failed", "probe_recovered"]
    );
    details["prior_failure_count"]
        .as_i64()
        .expect("prior_failure_count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streak_lost_mid_failure_with_the_engine_healthy_at_once_recovers_once() {
    let env = fast_env(&[]).await;
    let engine = Engine::start(&env, "lost-ok").await;
    let prober = RunningProber::spawn(env.config.clone(), &env);
    open_failure_streak(&env, &engine).await;

    forget_streaks(&env, &[&engine.game]).await;
    engine.set_health("ok").await;
    let prior = assert_recovered_once(&env, &engine, prober).await;
    assert!(prior >= 3, "prior_failure_count {prior}");
    forget_streaks(&env, &[&engine.game]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streak_lost_while_still_failing_is_not_reported_twice() {
    let env = fast_env(&[]).await;
    let engine = Engine::start(&env, "lost-fail").await;
    let prober = RunningProber::spawn(env.config.clone(), &env);
    open_failure_streak(&env, &engine).await;

    forget_streaks(&env, &[&engine.game]).await;
    observe_failures(&env, &engine, 4).await;
    assert_eq!(
        event_types(&probe_events(&env, &engine.game).await),
        ["probe_failed"]
    );
    let streak = env
        .redis()
        .read_streak(&engine.game)
        .await
        .unwrap()
        .expect("streak");
    assert!(streak.failed_published, "{streak:?}");
    assert_eq!(streak.failed_container, engine.container_id);

    engine.set_health("ok").await;
    let prior = assert_recovered_once(&env, &engine, prober).await;
    assert!(prior >= 7, "prior_failure_count {prior}");
    forget_streaks(&env, &[&engine.game]).await;
}

/// A new prober knows nothing of the streak but what PostgreSQL committed
/// (the health snapshot): it must neither report the failure again nor miss
/// the recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streak_lost_while_the_prober_was_down_is_recovered_from_the_snapshot() {
    let env = fast_env(&[]).await;
    let engine = Engine::start(&env, "lost-down").await;
    let first = RunningProber::spawn(env.config.clone(), &env);
    open_failure_streak(&env, &engine).await;
    first.stop().await;

    forget_streaks(&env, &[&engine.game]).await;
    let second = RunningProber::spawn(env.config.clone(), &env);
    observe_failures(&env, &engine, 4).await;
    assert_eq!(
        event_types(&probe_events(&env, &engine.game).await),
        ["probe_failed"]
    );

    engine.set_health("ok").await;
    let prior = assert_recovered_once(&env, &engine, second).await;
    assert!(prior >= 7, "prior_failure_count {prior}");
    forget_streaks(&env, &[&engine.game]).await;
}

/// Another prober (an overlapping shard, the one before a restart) commits a
/// `probe_failed` after this prober's last target refresh, and Redis then
/// loses the streak: the refresh's snapshot is stale, so the seed must come
/// from what PostgreSQL holds now, or the recovery goes unreported and the
/// game's snapshot says `probe_failed` for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streak_lost_after_another_probers_commit_is_seeded_from_postgres_as_it_is_now() {
    let env = fast_env(&[("RTMANAGER_PROBE_REFRESH_INTERVAL", "1h")]).await;
    let engine = Engine::start(&env, "lost-stale").await;
    let prober = RunningProber::spawn(env.config.clone(), &env);
    let hits = engine.hits().await;
    env.eventually("healthy probes", Duration::from_secs(10), || async {
        (engine.hits().await >= hits + 3).then_some(())
    })
    .await;

    // The other prober's commit, as it stages it (once per slot), while the
    // engine failed for it; then Redis loses the streak it had set.
    let failed = shared::domain::HealthEvent::probe_failed(
        &engine.game,
        &engine.container_id,
        chrono::Utc::now().timestamp_millis(),
        3,
        503,
        "",
    );
    let outbox = &env.infra.outbox;
    let key = failed.probe_transition_key(1);
    let staged = outbox
        .publish(&[outbox.health_once(shared::domain::HealthSource::HealthzProber, &failed, &key)])
        .await
        .unwrap();
    assert_eq!(staged, [true]);
    forget_streaks(&env, &[&engine.game]).await;

    let prior = assert_recovered_once(&env, &engine, prober).await;
    assert_eq!(prior, 3, "the committed streak's count");
    forget_streaks(&env, &[&engine.game]).await;
}
