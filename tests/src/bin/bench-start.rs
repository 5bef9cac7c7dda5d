//! Start overhead (issue 14, item 1), three start paths against Docker's own
//! cost, each interleaved round by round with its peer in the same run:
//!
//! - a start through the `start-job` process, from the `XADD` of its
//!   request to its entry on `runtime:job_results`, against a bare Docker
//!   create+start of the same `FROM scratch` image through the API (bollard)
//!   with the same settings as the container `start-job` made (network,
//!   limits, labels, bind mount, env, hostname, log driver);
//! - a start through the `rest-gateway` process (`POST
//!   …/runtimes/{game_id}/start`, whose `200` with the record means started),
//!   against the same bare create+start;
//! - the replay (a start job for a game already running on the same image,
//!   answered `replay_no_op`), against Docker's own idempotent start (`POST
//!   /containers/{id}/start` of the running container: `304`).
//!
//! The order swaps every round; each round's containers are removed outside
//! the timed part. Then a separate measured pass (not in the figures above)
//! runs a fresh `start-job` with its step lines on
//! (`RUST_LOG=info,rtmanager::steps=debug`, `shared::telemetry::steps`) and
//! publishes each step's median and p99 against a budget.
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

/// The gateway's bearer token (at least 32 characters, no placeholder).
const TOKEN: &str = "bench-start-token-0123456789abcdef0123";

/// Microseconds since the Unix epoch (the clock the step lines use).
fn now_us() -> i64 {
    shared::telemetry::steps::now_us()
}

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

/// One start job through start-job, from its XADD to its result.
struct Job {
    took: Duration,
    container: String,
    /// Wall clock (µs since the epoch) just before the XADD and just after
    /// the result was read: the ends of the step timeline.
    xadd_at_us: i64,
    read_at_us: i64,
}

/// One start job through start-job; `expect` is the result's `error_code`
/// (empty for a fresh start, `replay_no_op` for a replay).
async fn through_start_job(env: &TestEnv, cursor: &mut String, game: &str, expect: &str) -> Job {
    let xadd_at_us = now_us();
    let started = Instant::now();
    env.xadd(
        &env.config.start_jobs.stream,
        &[("game_id", game), ("image_ref", ENGINE)],
    )
    .await;
    let result = result_of(env, cursor, game).await;
    let took = started.elapsed();
    let read_at_us = now_us();
    assert_eq!(result["outcome"], "success", "start of {game}: {result:?}");
    assert_eq!(
        result.get("error_code").map_or("", String::as_str),
        expect,
        "start of {game}: {result:?}"
    );
    Job {
        took,
        container: result["container_id"].clone(),
        xadd_at_us,
        read_at_us,
    }
}

/// The gateway and how to reach it.
struct Gateway {
    http: reqwest::Client,
    base: String,
}

impl Gateway {
    /// One REST start: from the request to its `200` with the record.
    async fn start(&self, game: &str) -> (Duration, String) {
        let url = format!("{}/api/v1/internal/runtimes/{game}/start", self.base);
        let started = Instant::now();
        let answer = self
            .http
            .post(&url)
            .bearer_auth(TOKEN)
            .header("Content-Type", "application/json")
            .body(serde_json::json!({ "image_ref": ENGINE }).to_string())
            .send()
            .await
            .expect("POST start");
        let status = answer.status();
        let bytes = answer.bytes().await.expect("start answer body");
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("start answer JSON");
        let took = started.elapsed();
        assert_eq!(status, 200, "REST start of {game}: {body}");
        let container = body["current_container_id"]
            .as_str()
            .expect("the record names its container")
            .to_owned();
        (took, container)
    }
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

/// The bare peer: `body` with its bind mount under `root`.
struct Bare<'a> {
    docker: &'a Docker,
    body: ContainerCreateBody,
    container_path: String,
    root: std::path::PathBuf,
    suffix: String,
}

/// One bare create+start: the whole, the create and the start.
struct BareRun {
    took: Duration,
    create: Duration,
    start: Duration,
}

impl Bare<'_> {
    /// One bare create+start of container `n`, removed untimed.
    async fn run(&self, n: usize) -> BareRun {
        let dir = self.root.join(format!("bare{n}"));
        std::fs::create_dir_all(&dir).expect("bare state dir");
        let mut body = self.body.clone();
        if let Some(host) = body.host_config.as_mut() {
            host.binds = Some(vec![format!(
                "{}:{}:rw",
                dir.display(),
                self.container_path
            )]);
        }
        let name = format!("rtm-bench-bare{n}-{}", self.suffix);
        let started = Instant::now();
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await
            .expect("bare create");
        let create = started.elapsed();
        self.docker
            .start_container(&created.id, None)
            .await
            .expect("bare start");
        let took = started.elapsed();
        remove(self.docker, &created.id).await;
        BareRun {
            took,
            create,
            start: took - create,
        }
    }
}

/// Docker's own idempotent start: `POST /containers/{id}/start` of a
/// running container (`304`, which bollard answers as `Ok`).
async fn docker_replay(docker: &Docker, id: &str) -> Duration {
    let started = Instant::now();
    docker
        .start_container(id, None)
        .await
        .expect("start of a running container");
    started.elapsed()
}

async fn remove(docker: &Docker, id: &str) {
    let _ = docker
        .remove_container(
            id,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await;
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn ms_f(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// CPU time of `pid` spent in `work`.
async fn cpu_of<T>(pid: u32, work: impl std::future::Future<Output = T>) -> (T, Duration) {
    let before = bench::process_cpu(pid).unwrap_or_default();
    let out = work.await;
    let after = bench::process_cpu(pid).unwrap_or_default();
    (out, after.saturating_sub(before))
}

#[tokio::main]
async fn main() {
    bench::init_logging();
    let rounds = bench::rounds(30, 10);
    let measured = bench::rounds(10, 3);
    let env = TestEnv::with(&[("RTMANAGER_API_TOKENS", TOKEN)]).await;
    let docker = Docker::connect_with_local_defaults().expect("docker");
    let mut cursor = "0-0".to_owned();
    let job_bin = bench::sibling_binary("start-job");
    let job = JobProcess::spawn_binary("start-job", &job_bin, &env.vars, &[], &[]);
    let job = JobProcess::until_healthy(&env, job).await;
    let job_pid = job.pid().expect("start-job pid");
    let addr = format!("127.0.0.1:{}", system_tests::free_port());
    let gateway_bin = bench::sibling_binary("rest-gateway");
    let gateway_process = JobProcess::spawn_binary(
        "rest-gateway",
        &gateway_bin,
        &env.vars,
        &[("RTMANAGER_INTERNAL_HTTP_ADDR", addr.clone())],
        &[],
    );
    let gateway_process = JobProcess::until_healthy(&env, gateway_process).await;
    let gateway_pid = gateway_process.pid().expect("rest-gateway pid");
    let gateway = Gateway {
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        base: format!("http://{addr}"),
    };

    // Warm-up: one of each, not counted; it also gives the settings to copy.
    let warm = env.game("warm");
    let first = through_start_job(&env, &mut cursor, warm.as_str(), "").await;
    let (body, container_path) = same_settings(&docker, &first.container).await;
    through_start_job(&env, &mut cursor, warm.as_str(), "replay_no_op").await;
    docker_replay(&docker, &first.container).await;
    remove(&docker, &first.container).await;
    let (_, id) = gateway.start(env.game("warm-rest").as_str()).await;
    remove(&docker, &id).await;
    let bare = Bare {
        docker: &docker,
        body,
        container_path,
        root: env.state_root.clone(),
        suffix: env.id.clone(),
    };
    bare.run(9999).await;

    let (mut ours, mut rest, mut replay) = (Vec::new(), Vec::new(), Vec::new());
    let (mut peer, mut peer_replay) = (Vec::new(), Vec::new());
    let (mut job_cpu, mut replay_cpu, mut gateway_cpu) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for i in 0..rounds {
        let game = env.game(&format!("s{i}"));
        let rest_game = env.game(&format!("r{i}"));
        let stream_start = async {
            let (job, cpu) = cpu_of(
                job_pid,
                through_start_job(&env, &mut cursor, game.as_str(), ""),
            )
            .await;
            job_cpu += cpu;
            job
        };
        let started = if i % 2 == 0 {
            let started = stream_start.await;
            peer.push(bare.run(2 * i).await.took);
            let ((took, id), cpu) = cpu_of(gateway_pid, gateway.start(rest_game.as_str())).await;
            gateway_cpu += cpu;
            rest.push(took);
            remove(&docker, &id).await;
            peer.push(bare.run(2 * i + 1).await.took);
            started
        } else {
            peer.push(bare.run(2 * i).await.took);
            let ((took, id), cpu) = cpu_of(gateway_pid, gateway.start(rest_game.as_str())).await;
            gateway_cpu += cpu;
            rest.push(took);
            remove(&docker, &id).await;
            peer.push(bare.run(2 * i + 1).await.took);
            stream_start.await
        };
        ours.push(started.took);
        // The replay, on the game just started, against Docker's own.
        let replay_start = async {
            let (job, cpu) = cpu_of(
                job_pid,
                through_start_job(&env, &mut cursor, game.as_str(), "replay_no_op"),
            )
            .await;
            replay_cpu += cpu;
            job.took
        };
        if i % 2 == 0 {
            replay.push(replay_start.await);
            peer_replay.push(docker_replay(&docker, &started.container).await);
        } else {
            peer_replay.push(docker_replay(&docker, &started.container).await);
            replay.push(replay_start.await);
        }
        remove(&docker, &started.container).await;
        eprintln!(
            "round {i}: job {:?}, rest {:?}, bare {:?} {:?}, replay {:?}, docker replay {:?}",
            ours[i],
            rest[i],
            peer[2 * i],
            peer[2 * i + 1],
            replay[i],
            peer_replay[i]
        );
    }
    job.stop().await;
    gateway_process.stop().await;

    // The measured pass: a fresh start-job with its step lines on; its
    // first start (one-time costs of the process) reported apart.
    let steps_job = JobProcess::spawn_binary(
        "start-job",
        &job_bin,
        &env.vars,
        &[("RUST_LOG", "info,rtmanager::steps=debug".to_owned())],
        &[],
    );
    let steps_job = JobProcess::until_healthy(&env, steps_job).await;
    let mut timed: Vec<(String, Job)> = Vec::new();
    let mut bare_steps: Vec<BareRun> = Vec::new();
    for i in 0..=measured {
        let game = env.game(&format!("m{i}"));
        let job = through_start_job(&env, &mut cursor, game.as_str(), "").await;
        remove(&docker, &job.container).await;
        timed.push((game.to_string(), job));
        if i > 0 {
            bare_steps.push(bare.run(10_000 + i).await);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, output) = steps_job.stop_with_output().await;
    let stream = env.config.common.streams.job_results.clone();
    let mut step_runs: Vec<Vec<(String, Duration)>> = timed
        .iter()
        .map(|(game, job)| step_timeline(&output, game, &stream, job))
        .collect();
    let cold = step_runs.remove(0);
    let bare_create = bench::median(&bare_steps.iter().map(|b| b.create).collect::<Vec<_>>());
    let bare_start = bench::median(&bare_steps.iter().map(|b| b.start).collect::<Vec<_>>());
    let bare_whole = bench::median(&bare_steps.iter().map(|b| b.took).collect::<Vec<_>>());
    let measured_whole = bench::median(&timed[1..].iter().map(|(_, j)| j.took).collect::<Vec<_>>());
    let steps_table = budget_table(&step_runs, &cold, bare_create, bare_start, bare_whole);

    let (m_ours, m_peer) = (bench::median(&ours), bench::median(&peer));
    let (p_ours, p_peer) = (bench::quantile(&ours, 0.99), bench::quantile(&peer, 0.99));
    let (m_rest, p_rest) = (bench::median(&rest), bench::quantile(&rest, 0.99));
    let (m_replay, p_replay) = (bench::median(&replay), bench::quantile(&replay, 0.99));
    let (m_dreplay, p_dreplay) = (
        bench::median(&peer_replay),
        bench::quantile(&peer_replay, 0.99),
    );
    let figures = [
        Figure::at_most(
            "start-job start, median",
            bench::ms(m_ours),
            bench::ms(m_peer),
            ratio(m_ours, m_peer),
            1.02,
        ),
        Figure::at_most(
            "start-job start, p99",
            bench::ms(p_ours),
            bench::ms(p_peer),
            ratio(p_ours, p_peer),
            1.05,
        ),
        Figure::at_most(
            "REST start, median",
            bench::ms(m_rest),
            bench::ms(m_peer),
            ratio(m_rest, m_peer),
            1.02,
        ),
        Figure::at_most(
            "REST start, p99",
            bench::ms(p_rest),
            bench::ms(p_peer),
            ratio(p_rest, p_peer),
            1.05,
        ),
        Figure::at_most(
            "replay (start-job, `replay_no_op`) vs Docker start of a running container, median",
            bench::ms(m_replay),
            bench::ms(m_dreplay),
            ratio(m_replay, m_dreplay),
            1.02,
        ),
        Figure::at_most(
            "replay vs Docker start of a running container, p99",
            bench::ms(p_replay),
            bench::ms(p_dreplay),
            ratio(p_replay, p_dreplay),
            1.05,
        ),
        Figure::info(
            "replay vs a bare create+start (what a replay saves)",
            bench::ms(m_replay),
            bench::ms(m_peer),
            ratio(m_replay, m_peer),
        ),
    ];
    let per_start = |cpu: Duration| cpu / rounds as u32;
    let overhead = ms_f(m_ours) - ms_f(m_peer);
    let notes = vec![
        format!(
            "{rounds} rounds, after one warm-up of each. Each round: a start through \
             `start-job`, a start through `rest-gateway`, two bare create+starts \
             (the order swaps every round; the bare figures pool both), then a replay \
             and Docker's own idempotent start, in alternating order. Start-job: \
             `XADD` of a start request → its entry on `runtime:job_results` (stream \
             read, lease, inspects, state dir, create, start, commit, relay, result), \
             release `start-job` process. REST: `POST /api/v1/internal/runtimes/{{game_id}}/start` \
             on the release `rest-gateway` (plain HTTP on loopback, one reqwest client \
             with keep-alive, bearer token) → its `200` with the record, which the \
             contract says means started (a REST start publishes no job result). \
             Replay: the same start job again for the running game → its \
             `replay_no_op` result (lease, record read, operation-log row, result; \
             no Docker call); its peer is `POST /containers/{{id}}/start` of the \
             running container, which Docker answers `304`. Bare: bollard \
             `create_container` + `start_container` of the same image with the settings \
             copied from the container `start-job` made (network, CPU/memory/pids \
             limits, labels, bind mount, env, hostname, log driver)."
        ),
        format!(
            "Our overhead at the median: {overhead:.1} ms through start-job, {:.1} ms \
             through REST. CPU per start (utime+stime from `/proc`, read around each \
             start): start-job {} per fresh start, {} per replay; rest-gateway {} \
             per REST start.",
            ms_f(m_rest) - ms_f(m_peer),
            bench::ms(per_start(job_cpu)),
            bench::ms(per_start(replay_cpu)),
            bench::ms(per_start(gateway_cpu)),
        ),
        format!(
            "Per-step budget: a separate measured pass (not in the figures above) of \
             {measured} starts through a fresh release `start-job` with its step lines \
             on (`RUST_LOG=info,rtmanager::steps=debug`: each answered job logs `job \
             steps` with its steps in µs, the relay logs when it delivered the result; \
             `shared/src/telemetry/steps.rs`), each followed by a bare create+start \
             (median {} here; this pass's start-job starts: median {}). The steps are \
             consecutive: stream read is the `XADD` to the job's task starting, relay \
             the result's commit to its `XADD` by the relay, result read that `XADD` to \
             the benchmark's `XREAD` returning. Budget: Docker's create and start get \
             the bare create's and start's medians; our steps share the allowed \
             overhead, 0.02 × the bare median = {:.2} ms, by fixed fractions (about \
             45% before the create, 55% after the start, as the issue's trace split \
             ~4 ms : ~5 ms). `ack` runs beside the relay, off the path, and has no \
             budget. The first start of the process is its own column (one-time \
             costs; not in the medians).\n\n{steps_table}",
            bench::ms(bare_whole),
            bench::ms(measured_whole),
            ms_f(bare_whole) * 0.02,
        ),
    ];
    eprintln!("SCALE start_ms_median {:.1} ms", ms_f(m_ours));
    eprintln!("SCALE start_overhead_ms_median {overhead:.1} ms");
    eprintln!(
        "SCALE start_job_cpu_ms_per_start {:.2} ms",
        ms_f(per_start(job_cpu))
    );
    eprintln!("SCALE docker_create_start_ms_median {:.1} ms", ms_f(m_peer));
    eprintln!("SCALE rest_start_ms_median {:.1} ms", ms_f(m_rest));
    eprintln!("SCALE start_replay_ms_median {:.1} ms", ms_f(m_replay));
    eprintln!(
        "SCALE rest_gateway_cpu_ms_per_start {:.2} ms",
        ms_f(per_start(gateway_cpu))
    );
    bench::print_section(
        "1. Start overhead",
        "Starts through `start-job` and `rest-gateway`, and the replay, against a bare \
         Docker create+start of the same image with the same settings (the replay: \
         against Docker's own idempotent start).",
        &figures,
        &notes,
        "scripts/bench --only start",
    );
}

/// The steps of one start in order, from the measured pass's output:
/// `stream_read`, the `job steps` line's steps (the marks of
/// `shared::telemetry::steps`), `relay` and `result_read`. `ack` comes last
/// (it runs beside the relay).
fn step_timeline(output: &str, game: &str, stream: &str, job: &Job) -> Vec<(String, Duration)> {
    let mut steps_line = None;
    let mut delivered_at = None;
    for line in output.lines() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let fields = &value["fields"];
        if fields["game_id"].as_str() != Some(game) {
            continue;
        }
        match fields["message"].as_str() {
            Some("job steps") => steps_line = Some(fields.clone()),
            Some("outbox row delivered") if fields["stream"].as_str() == Some(stream) => {
                delivered_at = fields["delivered_at_us"].as_i64();
            }
            _ => {}
        }
    }
    let fields = steps_line.unwrap_or_else(|| panic!("no `job steps` line for {game}"));
    let delivered_at =
        delivered_at.unwrap_or_else(|| panic!("no `outbox row delivered` line for {game}"));
    let began = fields["began_at_us"].as_i64().expect("began_at_us");
    let us = |v: i64| Duration::from_micros(v.max(0) as u64);
    let mut out = vec![("stream_read".to_owned(), us(began - job.xadd_at_us))];
    let mut at = began;
    let mut ack = None;
    for pair in fields["steps_us"].as_str().unwrap_or("").split_whitespace() {
        let (name, v) = pair.split_once('=').expect("name=µs");
        let v: i64 = v.parse().expect("µs");
        if name == "ack" {
            ack = Some(us(v));
            continue;
        }
        at += v;
        out.push((name.to_owned(), us(v)));
        if name == "result" {
            break;
        }
    }
    out.push(("relay".to_owned(), us(delivered_at - at)));
    out.push(("result_read".to_owned(), us(job.read_at_us - delivered_at)));
    if let Some(ack) = ack {
        out.push(("ack".to_owned(), ack));
    }
    out
}

/// Each step's share of the allowed overhead (0.02 × the bare median);
/// `create` and `start` are budgeted at Docker's own medians instead.
const SHARES: &[(&str, f64, &str)] = &[
    (
        "stream_read",
        0.08,
        "`XADD` → the job's task runs (XREADGROUP wake-up, spawn)",
    ),
    (
        "answered_check",
        0.05,
        "was this entry answered before (one PostgreSQL read)",
    ),
    ("lease", 0.08, "Redis lease + PostgreSQL fencing token"),
    (
        "record",
        0.05,
        "runtime record read (and the stop tombstone)",
    ),
    (
        "inspects",
        0.12,
        "image ref check, network inspect, image present, image inspect",
    ),
    (
        "state_dir",
        0.03,
        "create, chmod, chown of the state directory",
    ),
    ("existing", 0.05, "inspect of a same-name container"),
    ("create", 0.0, "Docker create"),
    ("start", 0.0, "Docker start"),
    ("inspect_started", 0.06, "inspect of the started container"),
    (
        "commit",
        0.14,
        "record, operation log, `container_started` in one transaction",
    ),
    ("release", 0.03, "lease release"),
    ("finish", 0.03, "outcome: metrics, log line"),
    ("result", 0.10, "the job result committed to the outbox"),
    ("relay", 0.12, "result commit → its `XADD` by the relay"),
    ("result_read", 0.06, "`XADD` → the caller's `XREAD` returns"),
];

fn budget_table(
    runs: &[Vec<(String, Duration)>],
    cold: &[(String, Duration)],
    bare_create: Duration,
    bare_start: Duration,
    bare_whole: Duration,
) -> String {
    let allowed = bare_whole.as_secs_f64() * 1e3 * 0.02;
    let mut rows = String::from(
        "| step | what | median ms | p99 ms | budget ms | over? | first start of the process ms |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let mut names: Vec<String> = SHARES.iter().map(|(n, _, _)| (*n).to_owned()).collect();
    for run in runs {
        for (name, _) in run {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    let (mut sum_median, mut sum_budget, mut over) = (0.0, 0.0, Vec::new());
    for name in &names {
        let samples: Vec<Duration> = runs
            .iter()
            .filter_map(|r| r.iter().find(|(n, _)| n == name).map(|(_, d)| *d))
            .collect();
        if samples.is_empty() {
            continue;
        }
        let (median, p99) = (
            ms_f(bench::median(&samples)),
            ms_f(bench::quantile(&samples, 0.99)),
        );
        let share = SHARES.iter().find(|(n, _, _)| n == name);
        let budget = match name.as_str() {
            "create" => Some(ms_f(bare_create)),
            "start" => Some(ms_f(bare_start)),
            "ack" => None,
            _ => share.map(|(_, s, _)| s * allowed),
        };
        let what = match name.as_str() {
            "ack" => "`XACK` + the stream offset kept (beside the relay, off the path)",
            _ => share.map_or("", |(_, _, w)| w),
        };
        let first = cold
            .iter()
            .find(|(n, _)| n == name)
            .map_or("—".to_owned(), |(_, d)| format!("{:.2}", ms_f(*d)));
        let (budget_cell, over_cell) = match budget {
            Some(b) => {
                sum_median += median;
                sum_budget += b;
                let is_over = median > b;
                if is_over {
                    over.push(format!("{name} ({median:.2} ms > {b:.2} ms)"));
                }
                (
                    format!("{b:.2}"),
                    if is_over { "**over**" } else { "no" }.to_owned(),
                )
            }
            None => ("—".to_owned(), "—".to_owned()),
        };
        rows.push_str(&format!(
            "| {name} | {what} | {median:.2} | {p99:.2} | {budget_cell} | {over_cell} | {first} |\n"
        ));
    }
    rows.push_str(&format!(
        "| **sum on the path** | | {sum_median:.2} | | {sum_budget:.2} | {} | {:.2} |\n",
        if sum_median > sum_budget {
            "**over**"
        } else {
            "no"
        },
        cold.iter()
            .filter(|(n, _)| n != "ack")
            .map(|(_, d)| ms_f(*d))
            .sum::<f64>(),
    ));
    rows.push_str(&format!(
        "\nAbove budget: {}.",
        if over.is_empty() {
            "nothing".to_owned()
        } else {
            over.join(", ")
        }
    ));
    rows
}
