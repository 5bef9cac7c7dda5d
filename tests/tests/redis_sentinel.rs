//! Redis behind Sentinel: every process finds the master through the
//! sentinels, and follows a failover by itself. The master, a replica and
//! three sentinels are the test's own ([`SentinelSet`]).

use std::time::Duration;

use system_tests::docker;
use system_tests::job_process::JobProcess;
use system_tests::redis_topologies::SentinelSet;
use system_tests::TestEnv;

mod production;
use production::{
    entries_for, gateway_vars, http, now_ms, set_engine_health, spawn_jobs, start_fields,
    stop_fields, wait_all_use, wait_event, wait_results, FAST_PROBES, LONG_RUNNING,
};

/// How long after the master died every process must use the new one (the
/// README's stated bound, 15 s): the sentinels' failover (down after 1 s,
/// then the election and promotion), plus the processes' one-second look at
/// the sentinels, plus slack for a loaded 2-core machine running the suite.
const FOLLOW_BOUND: Duration = SentinelSet::FAILOVER_TIME.saturating_add(Duration::from_secs(10));

async fn env_on(set: &SentinelSet) -> TestEnv {
    let vars = set.vars();
    let overrides: Vec<(&str, &str)> = vars
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(FAST_PROBES.iter().copied())
        .collect();
    TestEnv::with(&overrides).await
}

#[tokio::test(flavor = "multi_thread")]
async fn every_process_follows_a_failover_and_answers_each_job_once() {
    let set = SentinelSet::start();
    let env = env_on(&set).await;
    let (gateway, gateway_extra) = gateway_vars();
    let mut jobs = spawn_jobs(&env, LONG_RUNNING, |job| match job {
        "rest-gateway" => gateway_extra.clone(),
        _ => vec![],
    });
    let first = set.master.addr();
    wait_all_use(&env, &jobs, &first, Duration::from_secs(60)).await;

    // Before the failover: a game is started through the stream.
    let started_before = now_ms();
    let before = env.game("before");
    env.xadd(&env.config.start_jobs.stream, &start_fields(&before))
        .await;
    let results = wait_results(&env, &before, started_before, 1).await;
    assert_eq!(results[0]["outcome"], "success", "{results:?}");
    wait_event(&env, &before, started_before, "container_started").await;

    set.kill_master();
    let killed_at = tokio::time::Instant::now();
    let killed_ms = now_ms();
    let promoted = set.replica.addr();
    env.eventually(
        "the sentinels to promote the replica",
        FOLLOW_BOUND,
        || async { (set.named_master().as_deref() == Some(promoted.as_str())).then_some(()) },
    )
    .await;
    let promoted_in = killed_at.elapsed();
    let left = FOLLOW_BOUND.saturating_sub(killed_at.elapsed());
    wait_all_use(&env, &jobs, &promoted, left).await;
    eprintln!(
        "master killed: replica promoted after {promoted_in:?}, every process on it after {:?} (bound {FOLLOW_BOUND:?})",
        killed_at.elapsed()
    );
    for job in &mut jobs {
        assert!(job.is_running(), "{} exited: {}", job.job, job.output());
        assert!(
            job.output().contains("\"redis master\""),
            "{} logs the master it uses",
            job.job
        );
    }
    // The test's own client follows too before it appends anything.
    let mut master = env.redis().master();
    env.eventually(
        "the test's client to use the new master",
        FOLLOW_BOUND.saturating_sub(killed_at.elapsed()),
        || {
            let moved =
                master.borrow_and_update().clone().map(|m| m.addr) == Some(promoted.clone());
            async move { moved.then_some(()) }
        },
    )
    .await;

    // Jobs appended on the new master are answered, once each.
    let after = env.game("after");
    env.xadd(&env.config.start_jobs.stream, &start_fields(&after))
        .await;
    env.xadd(&env.config.stop_jobs.stream, &stop_fields(&before))
        .await;
    let started = wait_results(&env, &after, killed_ms, 1).await;
    assert_eq!(started[0]["outcome"], "success", "{started:?}");
    let stopped = wait_results(&env, &before, killed_ms, 1).await;
    assert_eq!(stopped[0]["outcome"], "success", "{stopped:?}");

    // Health events keep flowing, from each source: the start service,
    // the prober (a failing engine), the gateway (a restart, under a lease
    // and a stop intent on the new master) and docker-events (a killed
    // engine).
    wait_event(&env, &after, killed_ms, "container_started").await;
    set_engine_health(&env, &after, "fail").await;
    wait_event(&env, &after, killed_ms, "probe_failed").await;
    let ready = http(&gateway, "GET", "/readyz", "").await.unwrap();
    assert_eq!(ready.0, 200, "{ready:?}");
    let restarted_ms = now_ms();
    let restart = http(
        &gateway,
        "POST",
        &format!("/api/v1/internal/runtimes/{}/restart", after.as_str()),
        "{}",
    )
    .await
    .unwrap();
    assert_eq!(restart.0, 200, "{restart:?}");
    wait_event(&env, &after, restarted_ms, "container_started").await;
    docker(&["kill", &after.container_name()]);
    wait_event(&env, &after, restarted_ms, "container_exited").await;

    // Once each: a reclaim period later, still one answer per job.
    tokio::time::sleep(env.config.start_jobs.reclaim_idle * 2).await;
    let results = &env.config.common.streams.job_results;
    assert_eq!(
        entries_for(&env, results, &after, killed_ms).await.len(),
        1,
        "one result for the start job"
    );
    assert_eq!(
        entries_for(&env, results, &before, killed_ms).await.len(),
        1,
        "one result for the stop job"
    );
    for job in jobs {
        let name = job.job.clone();
        let status = job.stop().await;
        assert!(status.success(), "{name} exits cleanly: {status:?}");
    }
}

#[tokio::test]
async fn a_demoted_master_is_left_for_the_one_the_sentinels_promote() {
    let set = SentinelSet::start();
    let env = env_on(&set).await;
    let stream = env.config.common.streams.health_events.clone();
    env.xadd(&stream, &[("n", "1")]).await;
    // A manual failover: the old master stays up and becomes a replica.
    assert_eq!(
        set.sentinels[0].cli(&["SENTINEL", "FAILOVER", &set.name]),
        "OK"
    );
    let promoted = set.replica.addr();
    let mut master = env.redis().master();
    env.eventually(
        "the client to use the promoted master",
        FOLLOW_BOUND,
        || {
            let moved =
                master.borrow_and_update().clone().map(|m| m.addr) == Some(promoted.clone());
            async move { moved.then_some(()) }
        },
    )
    .await;
    env.eventually("the old master to be demoted", FOLLOW_BOUND, || async {
        set.master
            .cli(&["INFO", "replication"])
            .contains("role:slave")
            .then_some(())
    })
    .await;
    // Writes land on the promoted master, which the demoted one follows.
    env.xadd(&stream, &[("n", "2")]).await;
    assert_eq!(set.replica.cli(&["XLEN", &stream]), "2");
    env.eventually(
        "the demoted node to replicate the write",
        FOLLOW_BOUND,
        || async { (set.master.cli(&["XLEN", &stream]) == "2").then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_process_finds_the_master_through_any_sentinel_that_answers() {
    let set = SentinelSet::start();
    // The first sentinel listed is down: the next ones are asked.
    set.sentinels[0].kill("TERM");
    let env = env_on(&set).await;
    let redis = env.redis();
    assert_eq!(
        redis.master().borrow().clone().map(|m| m.addr),
        Some(set.master.addr())
    );
    redis.ping().await.unwrap();
}

#[tokio::test]
async fn the_binary_refuses_bad_sentinel_settings_naming_the_variables() {
    let env = TestEnv::new().await;
    let sentinel_only = [("RTMANAGER_REDIS_SENTINEL_ADDRS", "127.0.0.1:26379")];
    let master_only = [("RTMANAGER_REDIS_SENTINEL_MASTER", "galaxy")];
    let both_ways = [
        ("RTMANAGER_REDIS_SENTINEL_ADDRS", "127.0.0.1:26379"),
        ("RTMANAGER_REDIS_SENTINEL_MASTER", "galaxy"),
    ];
    for (vars, keep_master_addr, named) in [
        (
            &sentinel_only[..],
            false,
            &[
                "RTMANAGER_REDIS_SENTINEL_MASTER",
                "RTMANAGER_REDIS_SENTINEL_ADDRS",
            ][..],
        ),
        (
            &master_only[..],
            false,
            &[
                "RTMANAGER_REDIS_SENTINEL_ADDRS",
                "RTMANAGER_REDIS_SENTINEL_MASTER",
            ][..],
        ),
        (
            &both_ways[..],
            true,
            &[
                "RTMANAGER_REDIS_MASTER_ADDR",
                "RTMANAGER_REDIS_SENTINEL_ADDRS",
            ][..],
        ),
        (
            &[][..],
            false,
            &[
                "RTMANAGER_REDIS_MASTER_ADDR",
                "RTMANAGER_REDIS_SENTINEL_ADDRS",
            ][..],
        ),
        // Nothing answers there: the start-up error names where it looked.
        (
            &both_ways[..],
            false,
            &["RTMANAGER_REDIS_SENTINEL_ADDRS", "127.0.0.1:26379"][..],
        ),
    ] {
        let mut cmd = std::process::Command::new(system_tests::job_binary("start-job"));
        cmd.env_clear()
            .envs(env.vars.clone())
            .envs(vars.iter().copied());
        if !keep_master_addr {
            cmd.env_remove("RTMANAGER_REDIS_MASTER_ADDR");
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{vars:?}: {:?}", out.status);
        for name in named {
            assert!(stderr.contains(name), "{vars:?}: {stderr}");
        }
    }
}

#[tokio::test]
async fn the_username_never_reaches_the_output() {
    let set = SentinelSet::start();
    let env = env_on(&set).await;
    let user = format!("user-{}", env.id);
    // A wrong password: the process stops at start-up, saying why.
    let mut job = JobProcess::spawn(
        "start-job",
        &env.vars,
        &[
            ("RTMANAGER_REDIS_USERNAME", user.clone()),
            ("RTMANAGER_REDIS_PASSWORD", "not-the-password".into()),
        ],
        &[],
    );
    env.eventually("start-job to exit", Duration::from_secs(30), || {
        let running = job.is_running();
        async move { (!running).then_some(()) }
    })
    .await;
    let output = job.output();
    assert!(
        output.contains("RTMANAGER_REDIS_SENTINEL_ADDRS"),
        "{output}"
    );
    assert!(
        !output.contains(&user),
        "the username is not printed: {output}"
    );
    assert!(!output.contains("not-the-password"), "{output}");
}
