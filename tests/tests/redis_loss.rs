//! Redis loses its data (a `FLUSHALL`, a failover to an empty replica): the
//! job consumers recreate their groups by themselves and go on answering, and
//! the job streams and groups stay bounded.
//!
//! Every test here runs on a private redis-server: the shared one serves the
//! concurrently running tests of other files, which a `FLUSHALL` would break.

use std::collections::HashMap;
use std::time::Duration;

use shared::adapters::redis::ConsumerGroup;
use shared::domain::GameId;
use system_tests::job_process::JobProcess;
use system_tests::services::PrivateRedis;
use system_tests::{Services, TestEnv, ENGINE};
use tokio_util::sync::CancellationToken;

/// A test environment whose every job talks to `redis`.
async fn env_on(redis: &PrivateRedis, overrides: &[(&str, &str)]) -> TestEnv {
    let services = Services {
        redis_addr: Some(redis.addr()),
        ..Services::default()
    };
    TestEnv::with_services(&services, overrides).await
}

async fn command(env: &TestEnv, args: &[&str]) -> redis::Value {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut env.redis().manager())
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

async fn results_for(env: &TestEnv, game: &GameId) -> Vec<HashMap<String, String>> {
    env.read_stream(&env.config.common.streams.job_results)
        .await
        .into_iter()
        .map(|(_, f)| f)
        .filter(|f| f["game_id"] == game.as_str())
        .collect()
}

async fn wait_results(env: &TestEnv, game: &GameId, n: usize, what: &str) {
    env.eventually(what, Duration::from_secs(60), || async {
        (results_for(env, game).await.len() >= n).then_some(())
    })
    .await;
}

/// The value of `metric{stream="<stream>"}` in the shared registry.
fn metric(env: &TestEnv, metric: &str, stream: &str) -> u64 {
    let wanted = format!("{metric}{{stream=\"{stream}\"}} ");
    env.infra
        .metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&wanted).map(|v| v.parse().unwrap()))
        .unwrap_or(0)
}

fn start_job_fields(game: &GameId) -> [(&str, &str); 2] {
    [("game_id", game.as_str()), ("image_ref", ENGINE)]
}

fn stop_job_fields(game: &GameId) -> [(&str, &str); 3] {
    [
        ("game_id", game.as_str()),
        ("reason", "cancelled"),
        ("requested_at_ms", "1775121700000"),
    ]
}

#[tokio::test]
async fn after_a_flushall_the_consumers_recreate_their_groups_and_answer_new_jobs() {
    let redis = PrivateRedis::start();
    let env = env_on(&redis, &[]).await;
    let stop = CancellationToken::new();
    let starter = tokio::spawn(start_job::run(
        (&env.config).into(),
        env.infra.clone(),
        stop.clone(),
    ));
    let stopper = tokio::spawn(stop_job::run(
        (&env.config).into(),
        env.infra.clone(),
        stop.clone(),
    ));
    let (start_stream, stop_stream) = (
        env.config.start_jobs.stream.clone(),
        env.config.stop_jobs.stream.clone(),
    );
    let before = env.game("beforeloss");
    env.xadd(&start_stream, &start_job_fields(&before)).await;
    wait_results(&env, &before, 1, "the start result before the loss").await;
    env.xadd(&stop_stream, &stop_job_fields(&before)).await;
    wait_results(&env, &before, 2, "the stop result before the loss").await;

    command(&env, &["FLUSHALL"]).await;

    let after = env.game("afterloss");
    env.xadd(&start_stream, &start_job_fields(&after)).await;
    wait_results(&env, &after, 1, "the start result after the loss").await;
    env.xadd(&stop_stream, &stop_job_fields(&after)).await;
    wait_results(&env, &after, 2, "the stop result after the loss").await;
    let results = results_for(&env, &after).await;
    assert_eq!(results.len(), 2, "one result per entry: {results:?}");
    assert!(
        results.iter().all(|r| r["outcome"] == "success"),
        "{results:?}"
    );
    for stream in [&start_stream, &stop_stream] {
        assert!(
            metric(&env, "rtmanager_consumer_group_recreations_total", stream) >= 1,
            "{stream}: {}",
            env.infra.metrics.encode()
        );
    }
    stop.cancel();
    starter.await.unwrap().expect("start-job stops gracefully");
    stopper.await.unwrap().expect("stop-job stops gracefully");
}

#[tokio::test]
async fn a_lost_group_is_recreated_after_the_last_acked_entry() {
    let redis = PrivateRedis::start();
    let env = env_on(&redis, &[]).await;
    let stream = env.config.start_jobs.stream.clone();
    let group = env.config.start_jobs.group.clone();
    let stop = CancellationToken::new();
    let starter = tokio::spawn(start_job::run(
        (&env.config).into(),
        env.infra.clone(),
        stop.clone(),
    ));
    let first = env.game("first");
    env.xadd(&stream, &start_job_fields(&first)).await;
    wait_results(&env, &first, 1, "the first result").await;
    // Only the group goes (a failover to a replica that missed it): the
    // answered entry is still in the stream.
    env.eventually("the ack", Duration::from_secs(30), || async {
        let pending = command(&env, &["XPENDING", &stream, &group]).await;
        matches!(pending, redis::Value::Array(ref a) if a[0] == redis::Value::Int(0)).then_some(())
    })
    .await;
    command(&env, &["XGROUP", "DESTROY", &stream, &group]).await;
    let second = env.game("second");
    env.xadd(&stream, &start_job_fields(&second)).await;
    wait_results(&env, &second, 1, "the second result").await;
    // Read in id order: had the group restarted before the first entry, it
    // would have been taken again before the second was answered.
    assert_eq!(metric(&env, "rtmanager_jobs_consumed_total", &stream), 2);
    assert_eq!(results_for(&env, &first).await.len(), 1);
    stop.cancel();
    starter.await.unwrap().expect("start-job stops gracefully");
}

/// A group lost while one of its entries is being worked on: recreated from
/// the last acked id, it hands that entry out again as new, to the consumer
/// that works on it or to another one. Neither may run it a second time: the
/// second run finds the game's lease held and would answer `conflict`,
/// taking the entry's one result from the real run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_entry_in_flight_when_its_group_is_lost_is_answered_once_by_its_run() {
    let redis = PrivateRedis::start();
    let env = env_on(&redis, &[]).await;
    let (stream, group) = (
        env.config.start_jobs.stream.clone(),
        env.config.start_jobs.group.clone(),
    );
    // A start-job process whose starts hold for 8 s once the engine runs.
    let held = JobProcess::ready(
        &env,
        "start-job",
        &[],
        &[
            ("FAILPOINTS", "start-after-create=sleep(8000)".into()),
            ("RTMANAGER_CONSUMER_NAME", "held".into()),
        ],
    )
    .await;
    let game = env.game("inflight");
    env.xadd(&stream, &start_job_fields(&game)).await;
    let name = format!("name=galaxy-game-{game}");
    env.eventually(
        "the held start's engine",
        Duration::from_secs(30),
        || async {
            (!env
                .docker(&["ps", "-q", "--filter", &name])
                .trim()
                .is_empty())
            .then_some(())
        },
    )
    .await;
    command(&env, &["XGROUP", "DESTROY", &stream, &group]).await;
    // A second consumer comes up on the lost group.
    let stop = CancellationToken::new();
    let other = tokio::spawn(start_job::run(
        (&env.config).into(),
        env.infra.clone(),
        stop.clone(),
    ));
    wait_results(&env, &game, 1, "the start's result").await;
    env.eventually("the entry acked", Duration::from_secs(60), || async {
        let pending = command(&env, &["XPENDING", &stream, &group]).await;
        matches!(pending, redis::Value::Array(ref a) if a[0] == redis::Value::Int(0)).then_some(())
    })
    .await;
    let results = results_for(&env, &game).await;
    assert_eq!(results.len(), 1, "one result: {results:?}");
    assert_eq!(
        results[0]["outcome"],
        "success",
        "the real run's answer, not a second run's conflict: {results:?}\n{}",
        held.output()
    );
    stop.cancel();
    other.await.unwrap().expect("start-job stops gracefully");
    assert!(held
        .terminate_within(Duration::from_secs(40))
        .await
        .success());
}

/// The first group ever made follows the start-id setting: `$` skips what
/// the stream already holds. A group lost after an ack comes back after the
/// acked entry, not at `$`.
#[tokio::test]
async fn the_first_group_follows_the_start_id_and_a_lost_one_the_last_ack() {
    let redis = PrivateRedis::start();
    let env = env_on(&redis, &[("RTMANAGER_START_JOBS_GROUP_START_ID", "$")]).await;
    assert_eq!(env.config.start_jobs.group_start_id, "$");
    let (stream, group) = (
        env.config.start_jobs.stream.clone(),
        env.config.start_jobs.group.clone(),
    );
    let old = env.game("beforegroup");
    env.xadd(&stream, &start_job_fields(&old)).await;
    let stop = CancellationToken::new();
    let starter = tokio::spawn(start_job::run(
        (&env.config).into(),
        env.infra.clone(),
        stop.clone(),
    ));
    env.eventually("the group", Duration::from_secs(30), || async {
        let groups = command(&env, &["XINFO", "GROUPS", &stream]).await;
        matches!(groups, redis::Value::Array(ref a) if !a.is_empty()).then_some(())
    })
    .await;
    let first = env.game("first");
    env.xadd(&stream, &start_job_fields(&first)).await;
    wait_results(&env, &first, 1, "the first new entry's result").await;
    env.eventually("the ack", Duration::from_secs(30), || async {
        let pending = command(&env, &["XPENDING", &stream, &group]).await;
        matches!(pending, redis::Value::Array(ref a) if a[0] == redis::Value::Int(0)).then_some(())
    })
    .await;
    command(&env, &["XGROUP", "DESTROY", &stream, &group]).await;
    // Written while the group is gone: `$` would skip it, the offset keeps it.
    let during = env.game("duringloss");
    env.xadd(&stream, &start_job_fields(&during)).await;
    wait_results(
        &env,
        &during,
        1,
        "the entry written while the group was gone",
    )
    .await;
    assert!(
        results_for(&env, &old).await.is_empty(),
        "an entry older than the first group is never answered"
    );
    assert_eq!(results_for(&env, &first).await.len(), 1);
    stop.cancel();
    starter.await.unwrap().expect("start-job stops gracefully");
}

/// Reads up to `count` new entries as `consumer`, leaving them pending.
async fn read_as(env: &TestEnv, stream: &str, group: &str, consumer: &str, count: usize) {
    let count = count.to_string();
    command(
        env,
        &[
            "XREADGROUP",
            "GROUP",
            group,
            consumer,
            "COUNT",
            &count,
            "STREAMS",
            stream,
            ">",
        ],
    )
    .await;
}

async fn ids(env: &TestEnv, stream: &str) -> Vec<String> {
    env.read_stream(stream)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

#[tokio::test]
async fn trimming_keeps_every_entry_a_group_still_needs() {
    let env = TestEnv::new().await;
    let stream = format!("t{}:trim", env.id);
    let group = ConsumerGroup::new(env.redis().clone(), &stream, "g", "me");
    assert!(group.ensure("0").await.unwrap());
    let mut added = Vec::new();
    for i in 0..5 {
        added.push(env.xadd(&stream, &[("n", &i.to_string())]).await);
    }
    // Entries 0-2 delivered, 0 and 1 acked; 2 pending; 3 and 4 never read.
    read_as(&env, &stream, "g", "me", 3).await;
    command(&env, &["XACK", &stream, "g", &added[0], &added[1]]).await;
    assert_eq!(group.trim_done().await.unwrap(), 2);
    assert_eq!(ids(&env, &stream).await, added[2..]);

    // A second group that has read nothing holds everything.
    command(&env, &["XGROUP", "CREATE", &stream, "late", "0"]).await;
    read_as(&env, &stream, "g", "me", 2).await;
    command(&env, &["XACK", &stream, "g", &added[2], &added[3]]).await;
    assert_eq!(group.trim_done().await.unwrap(), 0);
    assert_eq!(ids(&env, &stream).await, added[2..]);

    // Without it, only the pending entry 4 is left.
    command(&env, &["XGROUP", "DESTROY", &stream, "late"]).await;
    assert_eq!(group.trim_done().await.unwrap(), 2);
    assert_eq!(ids(&env, &stream).await, added[4..]);
}

#[tokio::test]
async fn idle_consumers_without_pending_entries_leave_the_group() {
    let env = TestEnv::new().await;
    let stream = format!("t{}:idle", env.id);
    let group = ConsumerGroup::new(env.redis().clone(), &stream, "g", "me");
    group.ensure("0").await.unwrap();
    env.xadd(&stream, &[("n", "1")]).await;
    read_as(&env, &stream, "g", "busy", 1).await;
    command(&env, &["XGROUP", "CREATECONSUMER", &stream, "g", "gone"]).await;
    command(&env, &["XGROUP", "CREATECONSUMER", &stream, "g", "me"]).await;
    let hour = Duration::from_secs(3600);
    assert!(group.remove_idle_consumers(hour).await.unwrap().is_empty());
    // Everyone is idle at least zero: only the one with nothing pending
    // (and not this one) goes.
    let removed = group.remove_idle_consumers(Duration::ZERO).await.unwrap();
    assert_eq!(removed, ["gone"]);
    let consumers: Vec<redis::streams::StreamInfoConsumer> = {
        let reply: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&stream)
            .arg("g")
            .query_async(&mut env.redis().manager())
            .await
            .unwrap();
        reply.consumers
    };
    let mut names: Vec<_> = consumers.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["busy", "me"]);
}
