//! Liveness and readiness of every long-running process, each the real
//! binary: start-job, stop-job, docker-events, healthz-prober,
//! `inspect-cron --every`, `cleanup-cron --every`, rest-gateway.
//!
//! - A dependency away (a private PostgreSQL or Redis stopped, the Docker
//!   socket cut behind a proxy): `/readyz` answers 503 naming the check in
//!   every process that uses it, and 200 again once it is back; `/healthz`
//!   stays 200 throughout, for longer than the stall limit, since waiting
//!   for a dependency is not being stuck; no process exits.
//! - A consumer whose group is gone (its stream key replaced by a string):
//!   `/readyz` names `consumer_group` while Redis answers, and recovers when
//!   the consumer can recreate it.
//! - A main loop wedged on purpose (the `main-loop-stall` fail point):
//!   `/healthz` fails naming the loop, `/readyz` stays 200, and a wedged
//!   consumer's lag still shows on `/metrics`.

use std::cell::RefCell;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use system_tests::docker_proxy::DockerSocketProxy;
use system_tests::job_process::JobProcess;
use system_tests::services::{PrivatePostgres, PrivateRedis};
use system_tests::{Services, TestEnv};

mod observed;

use observed::*;

const DEADLINE: Duration = Duration::from_secs(60);

/// The failed checks of a `/readyz` answer.
fn failed(body: &Value) -> Vec<String> {
    body["failed"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Each job's `/readyz` answers 200 (within the deadline).
async fn all_ready(env: &TestEnv, jobs: &[JobProcess]) {
    for job in jobs {
        env.eventually(&format!("{} ready", job.job), DEADLINE, || async {
            let (status, body) = readyz(job).await;
            (status == 200 && body["status"] == "ready").then_some(())
        })
        .await;
    }
}

/// Takes a dependency away (`away`) and brings it back (`back`): every job
/// of the fleet answers `/readyz` 503 naming `check` meanwhile, and each of
/// `bystanders` (which do not use it) stays ready; every `/healthz` stays
/// 200 for [`STALL_WINDOW`]; nobody exits; all are ready again after.
async fn ride_out(
    env: &TestEnv,
    fleet: &mut Fleet,
    bystanders: &[JobProcess],
    check: &str,
    away: impl FnOnce(),
    back: impl FnOnce(),
) {
    all_ready(env, &fleet.jobs).await;
    all_ready(env, bystanders).await;
    away();
    for job in &fleet.jobs {
        let body = env
            .eventually(
                &format!("{} unready naming {check}", job.job),
                DEADLINE,
                || async {
                    let (status, body) = readyz(job).await;
                    (status == 503 && failed(&body).iter().any(|c| c == check)).then_some(body)
                },
            )
            .await;
        assert_eq!(body["status"], "not_ready", "{}: {body}", job.job);
        assert_eq!(body["checks"][check], "failed", "{}: {body}", job.job);
    }
    let until = Instant::now() + STALL_WINDOW;
    while Instant::now() < until {
        for job in fleet.jobs.iter().chain(bystanders) {
            let (status, body) = healthz(job).await;
            assert_eq!(
                (status, &body),
                (200, &json!({"status": "ok"})),
                "{} while {check} is away:\n{}",
                job.job,
                tail(job)
            );
        }
        for job in bystanders {
            let (status, body) = readyz(job).await;
            assert_eq!(status, 200, "{} does not use {check}: {body}", job.job);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    fleet.assert_running();
    back();
    all_ready(env, &fleet.jobs).await;
    fleet.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_is_unready_naming_postgres_while_it_is_away_and_stays_live() {
    let pg = PrivatePostgres::start();
    let services = Services {
        database_url: Some(pg.url()),
        ..Services::default()
    };
    let env = TestEnv::with_services(&services, &settings(&[])).await;
    let mut fleet = Fleet::all(&env, &[]).await;
    ride_out(
        &env,
        &mut fleet,
        &[],
        "postgres",
        || pg.stop(),
        || pg.start_again(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_is_unready_naming_redis_while_it_is_away_and_stays_live() {
    let redis = PrivateRedis::start();
    let services = Services {
        redis_addr: Some(redis.addr()),
        ..Services::default()
    };
    let env = TestEnv::with_services(&services, &settings(&[])).await;
    let mut fleet = Fleet::all(&env, &[]).await;
    // Back empty: the consumers recreate their groups themselves, and
    // `consumer_group` is ready again once they did.
    let redis = RefCell::new(redis);
    ride_out(
        &env,
        &mut fleet,
        &[],
        "redis",
        || redis.borrow_mut().stop(),
        || redis.borrow_mut().start_again(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_using_docker_is_unready_naming_it_while_it_is_away_and_stays_live() {
    let proxy = RefCell::new(DockerSocketProxy::start(Path::new("/var/run/docker.sock")));
    let host = proxy.borrow().host();
    let env = TestEnv::with(&settings(&[])).await;
    let mut fleet = Fleet::all(&env, &[("RTMANAGER_DOCKER_HOST", host.clone())]).await;
    // A prober in hostname mode probes without Docker: not its dependency.
    let hostname_prober = JobProcess::ready(
        &env,
        "healthz-prober",
        &[],
        &[
            ("RTMANAGER_DOCKER_HOST", host),
            ("RTMANAGER_PROBE_ADDRESS_MODE", "hostname".to_owned()),
            (
                "RTMANAGER_CONSUMER_NAME",
                format!("hostname-prober-{}", env.id),
            ),
        ],
    )
    .await;
    let (_, body) = readyz(&hostname_prober).await;
    assert_eq!(
        body,
        json!({"status": "ready", "checks": {"postgres": "ok", "redis": "ok"}})
    );
    ride_out(
        &env,
        &mut fleet,
        &[hostname_prober],
        "docker",
        || proxy.borrow_mut().cut(),
        || proxy.borrow_mut().restore(),
    )
    .await;
}

/// start-job and stop-job, their stream keys replaced by strings: no group
/// can exist there (nor be recreated) while Redis itself answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_without_its_group_is_unready_naming_consumer_group_until_it_recreates_it() {
    let env = TestEnv::with(&settings(&[])).await;
    let fleet = Fleet::start(&env, &["start-job", "stop-job"], &[]).await;
    all_ready(&env, &fleet.jobs).await;
    let streams = [
        env.config.start_jobs.stream.clone(),
        env.config.stop_jobs.stream.clone(),
    ];
    let mut redis = env.redis().manager();
    for stream in &streams {
        let _: () = redis::pipe()
            .cmd("DEL")
            .arg(stream)
            .ignore()
            .cmd("SET")
            .arg(stream)
            .arg("not a stream")
            .ignore()
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    for job in &fleet.jobs {
        let body = env
            .eventually(
                &format!("{} without its group", job.job),
                DEADLINE,
                || async {
                    let (status, body) = readyz(job).await;
                    (status == 503).then_some(body)
                },
            )
            .await;
        assert_eq!(
            body,
            json!({"status": "not_ready", "failed": ["consumer_group"],
                   "checks": {"consumer_group": "failed", "docker": "ok", "postgres": "ok", "redis": "ok"}}),
            "{}",
            job.job
        );
        let text = metrics(job).await;
        assert_eq!(
            sample(&text, "rtmanager_ready{check=\"consumer_group\"}"),
            Some(0.0),
            "{text}"
        );
        assert_eq!(healthz(job).await.0, 200);
    }
    for stream in &streams {
        let _: () = redis::cmd("DEL")
            .arg(stream)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    all_ready(&env, &fleet.jobs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_main_loop_fails_healthz_naming_it_while_readyz_stays_200() {
    let env = TestEnv::with(&settings(&[])).await;
    // Three iterations, then each main loop hangs for ten minutes.
    let wedge = [(
        "FAILPOINTS",
        "main-loop-stall=3*off->return(600000)".to_owned(),
    )];
    let fleet = Fleet::all(&env, &wedge).await;
    let loops = [
        ("start-job", "consumer"),
        ("stop-job", "consumer"),
        ("docker-events", "docker-events listener"),
        ("healthz-prober", "probe refresh"),
        ("inspect-cron", "inspect passes"),
        ("cleanup-cron", "cleanup passes"),
        ("rest-gateway", "outbox relay"),
    ];
    for (name, main_loop) in loops {
        let job = fleet.job(name);
        let body = env
            .eventually(&format!("{name}'s /healthz failing"), DEADLINE, || async {
                let (status, body) = healthz(job).await;
                (status == 503).then_some(body)
            })
            .await;
        assert_eq!(body["status"], "stalled", "{name}: {body}");
        assert_eq!(body["stalled"][0]["loop"], main_loop, "{name}: {body}");
        // Whole milliseconds: a loop silent for 10000.4 ms of a 10000 ms
        // limit has stalled and reports 10000.
        assert!(
            body["stalled"][0]["silent_for_ms"].as_u64().unwrap()
                >= body["stalled"][0]["limit_ms"].as_u64().unwrap(),
            "{name}: {body}"
        );
        let (status, body) = readyz(job).await;
        assert_eq!(status, 200, "{name} is wedged, not unready: {body}");
    }

    // The wedged start-job reads nothing more: its lag shows what waits.
    let start_job = fleet.job("start-job");
    let stream = env.config.start_jobs.stream.clone();
    for n in 0..3 {
        let game = format!("never-read-{n}");
        env.xadd(
            &stream,
            &[("game_id", &game), ("image_ref", system_tests::ENGINE)],
        )
        .await;
    }
    let lag = format!("rtmanager_consumer_group_lag{{stream=\"{stream}\"}}");
    env.eventually("the wedged consumer's lag", DEADLINE, || async {
        (sample(&metrics(start_job).await, &lag) == Some(3.0)).then_some(())
    })
    .await;
    // Nor does it recreate a group Redis lost: not ready, naming it.
    let _: () = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(&stream)
        .arg(&env.config.start_jobs.group)
        .query_async(&mut env.redis().manager())
        .await
        .unwrap();
    let (status, body) = readyz(start_job).await;
    assert_eq!(
        (status, failed(&body)),
        (503, vec!["consumer_group".to_owned()]),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_factor_out_of_range_stops_the_process_at_start_up() {
    let env = TestEnv::new().await;
    for factor in ["1", "101", "often"] {
        let job = JobProcess::spawn(
            "start-job",
            &env.vars,
            &[("RTMANAGER_LIVENESS_STALL_FACTOR", factor.to_owned())],
            &[],
        );
        let status = job.dies_within(DEADLINE).await;
        assert!(!status.success(), "factor {factor}: {status}");
    }
    let job = JobProcess::spawn(
        "start-job",
        &env.vars,
        &[("RTMANAGER_LIVENESS_STALL_FACTOR", "1".to_owned())],
        &[],
    );
    env.eventually("the start-up error", DEADLINE, || async {
        let out = job.output();
        out.contains("RTMANAGER_LIVENESS_STALL_FACTOR")
            .then_some(())
    })
    .await;
}

/// inspect-cron and cleanup-cron waiting 30 s between passes, three times
/// their 10 s stall limit: a wait is not a stall, `/healthz` stays 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_longer_than_the_stall_limit_for_the_next_pass_is_not_a_stall() {
    let env = TestEnv::with(&settings(&[])).await;
    let mut crons = Vec::new();
    for job in ["inspect-cron", "cleanup-cron"] {
        crons.push(JobProcess::ready(&env, job, &["--every", "30s"], &[]).await);
    }
    let until = Instant::now() + STALL_WINDOW;
    while Instant::now() < until {
        for job in &crons {
            let (status, body) = healthz(job).await;
            assert_eq!(status, 200, "{} between passes: {body}", job.job);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for job in &mut crons {
        assert!(job.is_running(), "{}:\n{}", job.job, tail(job));
    }
}
