//! Every job runs as the ACL user the README documents for it, with exactly
//! those rules: the `ACL SETUSER` lines are read from the README and applied
//! to a Redis of the test's own, every job is run through its paths as its
//! user, and Redis must have denied nothing (`ACL LOG` stays empty).

use std::time::Duration;

use system_tests::docker;
use system_tests::job_process::JobProcess;
use system_tests::redis_topologies::RedisNode;
use system_tests::{random_suffix, TestEnv};

mod production;
use production::{
    gateway_vars, http, now_ms, set_engine_health, spawn_jobs, start_fields, stop_fields,
    wait_all_use, wait_event, wait_results, FAST_PROBES, LONG_RUNNING,
};

const JOBS: &[&str] = &[
    "start-job",
    "stop-job",
    "docker-events",
    "healthz-prober",
    "rest-gateway",
    "inspect-cron",
    "cleanup-cron",
];

/// The README's `ACL SETUSER rtm-<job> …` lines, as (job, arguments after
/// `ACL SETUSER <user>`).
fn documented_rules() -> Vec<(String, Vec<String>)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    readme
        .lines()
        .filter_map(|line| line.strip_prefix("ACL SETUSER rtm-"))
        .map(|rest| {
            let mut words = rest.split_whitespace().map(str::to_owned);
            let job = words.next().expect("user name");
            (job, words.collect())
        })
        .collect()
}

/// Sends `ACL SETUSER <user> <rules…>` with the README's placeholder
/// password replaced.
async fn create_user(env: &TestEnv, user: &str, rules: &[String], password: &str) {
    let mut cmd = redis::cmd("ACL");
    cmd.arg("SETUSER").arg(user);
    for rule in rules {
        cmd.arg(rule.replace(">CHANGE-ME", &format!(">{password}")));
    }
    let _: () = cmd
        .query_async(&mut env.redis().manager())
        .await
        .unwrap_or_else(|e| panic!("ACL SETUSER {user}: {e}"));
}

/// What Redis refused since the log was last reset, one line per entry.
async fn acl_denials(env: &TestEnv) -> Vec<String> {
    let log: Vec<redis::Value> = redis::cmd("ACL")
        .arg("LOG")
        .query_async(&mut env.redis().manager())
        .await
        .expect("ACL LOG");
    log.iter().map(|entry| format!("{entry:?}")).collect()
}

/// Runs a one-shot job as its user to its end, which must be a success.
async fn run_once(env: &TestEnv, job: &str, user: &[(&'static str, String)], args: &[&str]) {
    let mut process = JobProcess::spawn(job, &env.vars, user, args);
    env.eventually(
        &format!("{job} {args:?} to finish"),
        Duration::from_secs(60),
        || {
            let running = process.is_running();
            async move { (!running).then_some(()) }
        },
    )
    .await;
    let output = process.output();
    let status = process.stop().await;
    assert!(status.success(), "{job} {args:?}: {status:?}\n{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_job_runs_as_its_documented_acl_user() {
    let redis = RedisNode::server(None, &[]);
    let addr = redis.addr();
    let mut overrides = vec![("RTMANAGER_REDIS_MASTER_ADDR", addr.as_str())];
    // The rules name the default streams; this Redis is the test's alone.
    overrides.extend([
        ("RTMANAGER_START_JOBS_STREAM", "runtime:start_jobs"),
        ("RTMANAGER_STOP_JOBS_STREAM", "runtime:stop_jobs"),
        ("RTMANAGER_JOB_RESULTS_STREAM", "runtime:job_results"),
        ("RTMANAGER_HEALTH_EVENTS_STREAM", "runtime:health_events"),
        (
            "RTMANAGER_NOTIFICATION_INTENTS_STREAM",
            "notification:intents",
        ),
        // cleanup-cron removes the container of a game stopped just now.
        ("RTMANAGER_CONTAINER_RETENTION_DAYS", "0"),
    ]);
    overrides.extend(FAST_PROBES.iter().copied());
    let env = TestEnv::with(&overrides).await;

    let rules = documented_rules();
    let mut documented: Vec<&str> = rules.iter().map(|(job, _)| job.as_str()).collect();
    documented.sort_unstable();
    let mut expected = JOBS.to_vec();
    expected.sort_unstable();
    assert_eq!(documented, expected, "one documented user per job");
    // Distinctive names, so the output can be searched for them.
    let prefix = format!("acl{}", random_suffix());
    let password = format!("pw-{}", random_suffix());
    for (job, job_rules) in &rules {
        create_user(&env, &format!("{prefix}-{job}"), job_rules, &password).await;
    }
    let _: () = redis::cmd("ACL")
        .arg("LOG")
        .arg("RESET")
        .query_async(&mut env.redis().manager())
        .await
        .unwrap();
    let user = |job: &str| {
        vec![
            ("RTMANAGER_REDIS_USERNAME", format!("{prefix}-{job}")),
            ("RTMANAGER_REDIS_PASSWORD", password.clone()),
        ]
    };

    let (gateway, gateway_extra) = gateway_vars();
    let jobs = spawn_jobs(&env, LONG_RUNNING, |job| {
        let mut vars = user(job);
        if job == "rest-gateway" {
            vars.extend(gateway_extra.clone());
        }
        vars
    });
    wait_all_use(&env, &jobs, &addr, Duration::from_secs(60)).await;

    // start-job, the prober (failure and recovery), the gateway (a
    // restart), docker-events (a killed engine), stop-job.
    let since = now_ms();
    let game = env.game("acl");
    env.xadd(&env.config.start_jobs.stream, &start_fields(&game))
        .await;
    let started = wait_results(&env, &game, since, 1).await;
    assert_eq!(started[0]["outcome"], "success", "{started:?}");
    wait_event(&env, &game, since, "container_started").await;
    set_engine_health(&env, &game, "fail").await;
    wait_event(&env, &game, since, "probe_failed").await;
    set_engine_health(&env, &game, "ok").await;
    wait_event(&env, &game, since, "probe_recovered").await;
    let restarted_ms = now_ms();
    let restart = http(
        &gateway,
        "POST",
        &format!("/api/v1/internal/runtimes/{}/restart", game.as_str()),
        "{}",
    )
    .await
    .unwrap();
    assert_eq!(restart.0, 200, "{restart:?}");
    wait_event(&env, &game, restarted_ms, "container_started").await;
    let killed = env.game("killed");
    env.xadd(&env.config.start_jobs.stream, &start_fields(&killed))
        .await;
    wait_results(&env, &killed, since, 1).await;
    docker(&["kill", &killed.container_name()]);
    wait_event(&env, &killed, since, "container_exited").await;
    env.xadd(&env.config.stop_jobs.stream, &stop_fields(&game))
        .await;
    let results = wait_results(&env, &game, since, 2).await;
    assert_eq!(results[1]["outcome"], "success", "{results:?}");
    let ready = http(&gateway, "GET", "/readyz", "").await.unwrap();
    assert_eq!(ready.0, 200, "{ready:?}");

    // The one-shot jobs: a reconcile pass (the killed engine's record), a
    // cleanup (the stopped game's container) and the gateway's file_sd sync.
    run_once(&env, "inspect-cron", &user("inspect-cron"), &[]).await;
    run_once(&env, "cleanup-cron", &user("cleanup-cron"), &[]).await;
    let file_sd = env.state_root.join("file_sd.json");
    run_once(
        &env,
        "rest-gateway",
        &user("rest-gateway"),
        &["sync-file-sd", "--out", file_sd.to_str().unwrap()],
    )
    .await;
    // A reclaim round of both consumers (trim, idle consumers) runs too.
    tokio::time::sleep(env.config.start_jobs.reclaim_idle * 2).await;

    let mut outputs = Vec::new();
    for job in jobs {
        let name = job.job.clone();
        let output = job.output();
        let status = job.stop().await;
        assert!(
            status.success(),
            "{name} exits cleanly: {status:?}\n{output}"
        );
        outputs.push((name, output));
    }
    assert_eq!(
        acl_denials(&env).await,
        Vec::<String>::new(),
        "Redis denied nothing"
    );
    for (name, output) in &outputs {
        assert!(
            !output.contains(&prefix) && !output.contains(&password),
            "{name} never prints its Redis user or password:\n{output}"
        );
    }
}
