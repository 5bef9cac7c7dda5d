//! Start overhead (issue 14, item 1): a start through the `start-job`
//! process, from the `XADD` of its request to its entry on
//! `runtime:job_results`, against a bare Docker create+start of the same
//! `FROM scratch` image through the API (bollard) with the same settings as
//! the container `start-job` made (network, limits, labels, bind mount, env,
//! hostname, log driver), interleaved round by round (the order swaps every
//! round), in the same run. Each round's container is removed outside the
//! timed part. One extra start with `RUST_LOG=debug` gives a timeline of the
//! job's own log lines (not counted in the figures).
//!
//! Run with `scripts/bench --only start`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use system_tests::bench::{self, Figure};
use system_tests::job_process::JobProcess;
use system_tests::{TestEnv, ENGINE};

/// Reads `runtime:job_results` from `cursor` until the entry of `game`.
async fn result_of(env: &TestEnv, cursor: &mut String, game: &str) -> HashMap<String, String> {
    let mut conn = env.redis().manager();
    let stream = &env.config.common.streams.job_results;
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < until, "no job result for {game} in 60 s");
        let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(500)
            .arg("STREAMS")
            .arg(stream)
            .arg(cursor.as_str())
            .query_async(&mut conn)
            .await
            .expect("XREAD job results");
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in key.ids {
                *cursor = entry.id.clone();
                let fields = shared::adapters::redis::entry_fields(&entry.map);
                if fields.get("game_id").map(String::as_str) == Some(game) {
                    return fields;
                }
            }
        }
    }
}

/// One start through start-job: the time from XADD to its result.
async fn through_start_job(env: &TestEnv, cursor: &mut String, game: &str) -> (Duration, String) {
    let started = Instant::now();
    env.xadd(
        &env.config.start_jobs.stream,
        &[("game_id", game), ("image_ref", ENGINE)],
    )
    .await;
    let result = result_of(env, cursor, game).await;
    let took = started.elapsed();
    assert_eq!(result["outcome"], "success", "start of {game}: {result:?}");
    (took, result["container_id"].clone())
}

/// The create body of `container` (made by start-job), for another name and bind dir.
async fn same_settings(docker: &Docker, container: &str) -> (ContainerCreateBody, String) {
    let info = docker
        .inspect_container(container, None)
        .await
        .expect("inspect start-job's container");
    let config = info.config.expect("container config");
    let host = info.host_config.expect("host config");
    let network = host.network_mode.clone().expect("network mode");
    let bind = host.binds.clone().unwrap_or_default();
    let body = ContainerCreateBody {
        hostname: config.hostname,
        image: config.image,
        env: config.env,
        labels: config.labels,
        host_config: Some(HostConfig {
            binds: None,
            network_mode: Some(network.clone()),
            nano_cpus: host.nano_cpus,
            memory: host.memory,
            pids_limit: host.pids_limit,
            log_config: host.log_config,
            publish_all_ports: Some(false),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(network, EndpointSettings::default())])),
        }),
        ..Default::default()
    };
    let container_path = bind
        .first()
        .and_then(|b| b.split(':').nth(1))
        .expect("start-job's container has a bind mount")
        .to_owned();
    (body, container_path)
}

/// One bare create+start with `body`, its bind mount at `dir`.
async fn bare(
    docker: &Docker,
    body: &ContainerCreateBody,
    name: &str,
    dir: &std::path::Path,
    container_path: &str,
) -> (Duration, String) {
    std::fs::create_dir_all(dir).expect("bare state dir");
    let mut body = body.clone();
    if let Some(host) = body.host_config.as_mut() {
        host.binds = Some(vec![format!("{}:{container_path}:rw", dir.display())]);
    }
    let started = Instant::now();
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(name).build()),
            body,
        )
        .await
        .expect("bare create");
    docker
        .start_container(&created.id, None)
        .await
        .expect("bare start");
    (started.elapsed(), created.id)
}

/// One timed start through start-job; its container removed untimed.
async fn one_ours(env: &TestEnv, docker: &Docker, cursor: &mut String, game: &str) -> Duration {
    let (took, id) = through_start_job(env, cursor, game).await;
    remove(docker, &id).await;
    took
}

async fn remove(docker: &Docker, id: &str) {
    let _ = docker
        .remove_container(
            id,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await;
}

#[tokio::main]
async fn main() {
    bench::init_logging();
    let rounds = bench::rounds(30, 10);
    let env = TestEnv::new().await;
    let docker = Docker::connect_with_local_defaults().expect("docker");
    let mut cursor = "0-0".to_owned();
    let bin = bench::sibling_binary("start-job");
    let job = JobProcess::spawn_binary("start-job", &bin, &env.vars, &[], &[]);
    let job = JobProcess::until_healthy(&env, job).await;

    // Warm-up: one of each, not counted; it also gives the settings to copy.
    let warm = env.game("warm");
    let (_, container) = through_start_job(&env, &mut cursor, warm.as_str()).await;
    let (body, container_path) = same_settings(&docker, &container).await;
    remove(&docker, &container).await;
    let bare_dir = |i: usize| env.state_root.join(format!("bare{i}"));
    let name = |i: usize| format!("rtm-bench-bare{i}-{}", env.id);
    let (_, id) = bare(
        &docker,
        &body,
        &name(9999),
        &bare_dir(9999),
        &container_path,
    )
    .await;
    remove(&docker, &id).await;

    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let game = env.game(&format!("s{i}"));
        if i % 2 == 0 {
            ours.push(one_ours(&env, &docker, &mut cursor, game.as_str()).await);
            let (took, id) = bare(&docker, &body, &name(i), &bare_dir(i), &container_path).await;
            remove(&docker, &id).await;
            peer.push(took);
        } else {
            let (took, id) = bare(&docker, &body, &name(i), &bare_dir(i), &container_path).await;
            remove(&docker, &id).await;
            peer.push(took);
            ours.push(one_ours(&env, &docker, &mut cursor, game.as_str()).await);
        }
        eprintln!("round {i}: ours {:?}, bare {:?}", ours[i], peer[i]);
    }
    job.stop().await;

    // One traced start: the job's own log lines (debug), relative to the XADD.
    let traced = JobProcess::spawn_binary(
        "start-job",
        &bin,
        &env.vars,
        &[(
            "RUST_LOG",
            "debug,hyper=info,hyper_util=info,h2=info,rustls=info,tokio_postgres=info".to_owned(),
        )],
        &[],
    );
    let traced = JobProcess::until_healthy(&env, traced).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let skip = traced.output().lines().count();
    let game = env.game("traced");
    let xadd_at = chrono::Utc::now();
    let (traced_took, id) = through_start_job(&env, &mut cursor, game.as_str()).await;
    remove(&docker, &id).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let timeline = timeline(&traced.output(), skip, xadd_at, traced_took);
    traced.stop().await;

    let (m_ours, m_peer) = (bench::median(&ours), bench::median(&peer));
    let (p_ours, p_peer) = (bench::quantile(&ours, 0.99), bench::quantile(&peer, 0.99));
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let figures = [
        Figure::at_most(
            "start, median",
            bench::ms(m_ours),
            bench::ms(m_peer),
            ratio(m_ours, m_peer),
            1.02,
        ),
        Figure::at_most(
            "start, p99",
            bench::ms(p_ours),
            bench::ms(p_peer),
            ratio(p_ours, p_peer),
            1.05,
        ),
    ];
    let mut notes = vec![
        format!("{rounds} interleaved rounds (the order swaps every round), after one warm-up of each. \
         Ours: `XADD` of a start request → its entry on `runtime:job_results`, through the \
         release `start-job` process (stream read, lease, inspects, state dir, create, start, \
         commit, relay, result). Peer: bollard `create_container` + `start_container` of the \
         same image with the settings copied from the container `start-job` made (network, \
         CPU/memory/pids limits, labels, bind mount, env, hostname, log driver). Our overhead \
         at the median: {:.1} ms.", (m_ours.as_secs_f64() - m_peer.as_secs_f64()) * 1e3),
        "Not done: the REST start (`POST` on the gateway) and the replay path; a per-step \
         budget with our own spans (the job logs no per-step timestamps: the timeline below \
         is what its debug log lines and its libraries' show)."
            .to_owned(),
    ];
    notes.push(format!(
        "Timeline of one extra start with `RUST_LOG=debug` ({}, slower than the rounds above \
         because of the logging), each log line's time after the `XADD`:\n\n\
         | ms after XADD | target | message |\n|---|---|---|\n{timeline}",
        bench::ms(traced_took)
    ));
    bench::print_section(
        "1. Start overhead",
        "A start through `start-job` against a bare Docker create+start of the same image \
         with the same settings.",
        &figures,
        &notes,
        "scripts/bench --only start",
    );
}

/// The log lines after the first `skip`, as Markdown table rows.
fn timeline(
    output: &str,
    skip: usize,
    xadd_at: chrono::DateTime<chrono::Utc>,
    took: Duration,
) -> String {
    let mut rows = String::new();
    for line in output.lines().skip(skip) {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(at) = value["timestamp"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        else {
            continue;
        };
        let offset = (at.with_timezone(&chrono::Utc) - xadd_at)
            .num_microseconds()
            .unwrap_or(0);
        if offset < 0 || offset as f64 > took.as_secs_f64() * 1e6 + 50_000.0 {
            continue;
        }
        let fields = &value["fields"];
        let mut message = fields["message"].as_str().unwrap_or("").to_owned();
        if let Some(statement) = fields["db.statement"].as_str() {
            message = format!("{message} {statement}");
        }
        let message: String = message
            .replace(['|', '\n'], " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(110)
            .collect();
        rows.push_str(&format!(
            "| {:.1} | {} | {} |\n",
            offset as f64 / 1e3,
            value["target"].as_str().unwrap_or(""),
            message
        ));
    }
    if rows.is_empty() {
        rows.push_str("| — | — | no log lines within the start |\n");
    }
    rows
}
