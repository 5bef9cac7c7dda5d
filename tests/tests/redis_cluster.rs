//! Redis as a Cluster: `RTMANAGER_REDIS_MASTER_ADDR` names one node, the
//! processes recognise the Cluster and route each command to its slot, and
//! every script touches keys of one slot. Three masters of the test's own
//! ([`RedisCluster`]).

use std::time::Duration;

use shared::adapters::redis::delivery::delivered_marker;
use shared::adapters::redis::streaks::streak_key;
use shared::adapters::redis::{lease_key, Topology};
use system_tests::docker;
use system_tests::redis_topologies::RedisCluster;
use system_tests::TestEnv;

mod production;
use production::{
    gateway_vars, now_ms, set_engine_health, spawn_jobs, start_fields, stop_fields, wait_all_use,
    wait_event, wait_results, FAST_PROBES, LONG_RUNNING,
};

async fn env_on(cluster: &RedisCluster) -> TestEnv {
    let addr = cluster.nodes[0].addr();
    let overrides: Vec<(&str, &str)> = [("RTMANAGER_REDIS_MASTER_ADDR", addr.as_str())]
        .into_iter()
        .chain(FAST_PROBES.iter().copied())
        .collect();
    TestEnv::with(&overrides).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_core_path_runs_with_every_process_on_a_cluster() {
    let cluster = RedisCluster::start();
    let env = env_on(&cluster).await;
    assert_eq!(env.redis().topology(), Topology::Cluster);
    let (_gateway, gateway_extra) = gateway_vars();
    let mut jobs = spawn_jobs(&env, LONG_RUNNING, |job| match job {
        "rest-gateway" => gateway_extra.clone(),
        _ => vec![],
    });
    wait_all_use(
        &env,
        &jobs,
        &cluster.nodes[0].addr(),
        Duration::from_secs(60),
    )
    .await;

    // Start: a result, and the start service's event.
    let since = now_ms();
    let game = env.game("cluster");
    env.xadd(&env.config.start_jobs.stream, &start_fields(&game))
        .await;
    let started = wait_results(&env, &game, since, 1).await;
    assert_eq!(started[0]["outcome"], "success", "{started:?}");
    wait_event(&env, &game, since, "container_started").await;
    // The prober's streak script (streak and lease) and docker-events.
    set_engine_health(&env, &game, "fail").await;
    wait_event(&env, &game, since, "probe_failed").await;
    let killed = env.game("killed");
    env.xadd(&env.config.start_jobs.stream, &start_fields(&killed))
        .await;
    wait_results(&env, &killed, since, 1).await;
    docker(&["kill", &killed.container_name()]);
    wait_event(&env, &killed, since, "container_exited").await;

    // Stop: a result.
    env.xadd(&env.config.stop_jobs.stream, &stop_fields(&game))
        .await;
    let results = wait_results(&env, &game, since, 2).await;
    assert_eq!(results[1]["outcome"], "success", "{results:?}");
    for job in &mut jobs {
        assert!(job.is_running(), "{} exited: {}", job.job, job.output());
        assert!(
            job.output().contains("\"topology\":\"cluster\""),
            "{} logs that it runs on a Cluster: {}",
            job.job,
            job.output()
        );
    }
    for job in jobs {
        let name = job.job.clone();
        let status = job.stop().await;
        assert!(status.success(), "{name} exits cleanly: {status:?}");
    }
}

#[tokio::test]
async fn keys_a_script_uses_together_share_a_slot() {
    let cluster = RedisCluster::start();
    let game = shared::domain::GameId::parse("game-1").unwrap();
    assert_eq!(
        cluster.keyslot(&streak_key(&game)),
        cluster.keyslot(&lease_key(&game)),
        "the streak script reads the lease"
    );
    for stream in [
        "runtime:job_results",
        "runtime:health_events",
        "notification:intents",
        "runtime:start_jobs:dead",
        "tabc:runtime:stop_jobs:dead",
        "{tenant}:runtime:health_events",
    ] {
        assert_eq!(
            cluster.keyslot(&delivered_marker("instance", 7, stream)),
            cluster.keyslot(stream),
            "the delivery script writes the marker with {stream}"
        );
    }
}
