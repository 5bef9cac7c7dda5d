//! What the prober's machinery costs: one round of 10,000 `/healthz` probes
//! through [`Prober::probe`] (lease check and streak update in Redis, the
//! concurrency bound, the shared keep-alive client), against a bare loop of
//! the same HTTP requests with the same client settings and the same bound,
//! in the same run.
//!
//! The targets are one local hyper server (a child process, so its CPU is
//! not counted) reached through 10,000 distinct loopback addresses
//! (`127.1.x.y`), i.e. 10,000 distinct hosts with their own connections, as
//! real engines are. Each side runs a cold round (new connections) and a warm
//! round (the pooled keep-alive connections, as every round after the first).
//! CPU time is `getrusage(RUSAGE_SELF)` of this process (the client side;
//! Redis and the HTTP server run elsewhere).
//!
//! Run with `cargo run --release -p system-tests --bin bench-prober` after
//! `source scripts/lib.sh; start_services` (it needs `TEST_DATABASE_URL` and
//! `TEST_REDIS_ADDR`); `scripts/bench` does both.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use healthz_prober::prober::Prober;
use healthz_prober::settings::{AddressMode, ProberSettings};
use healthz_prober::target::{Target, TargetState, Verdict};
use shared::adapters::http_probe::{http_client, http_probe, ProbeClient};
use shared::adapters::redis::streaks::streak_key;
use shared::config::ProbeConfig;
use shared::domain::GameId;
use shared::ports::ContainerEngine;
use system_tests::bench::{self, Figure};
use system_tests::TestEnv;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const TARGETS: usize = 10_000;
const CONCURRENCY: usize = 256;
const TIMEOUT: Duration = Duration::from_secs(2);
const INTERVAL: Duration = Duration::from_secs(15);
const REPETITIONS: usize = 5;

fn main() {
    raise_open_file_limit();
    bench::init_logging();
    pin_self_to_cpu0();
    let serve = std::env::args().nth(1).as_deref() == Some("serve");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if serve {
        runtime.block_on(serve_healthz());
    } else {
        runtime.block_on(bench());
    }
}

/// User + system CPU time of this process so far.
#[allow(unsafe_code)]
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; it is zeroed anyway.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage");
    // SAFETY: initialised by the successful call above (or zeroed).
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// 10,000 keep-alive connections need more than the usual 1024 descriptors.
#[allow(unsafe_code)]
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    let (cur, _) = (limit.rlim_cur, limit.rlim_max);
    if (cur as usize) < TARGETS + 1000 {
        eprintln!(
            "warning: RLIMIT_NOFILE {cur} < {}; keep-alive connections will be refused",
            TARGETS + 1000
        );
    }
}

/// The child: a hyper server answering `{"status":"ok"}` with keep-alive on
/// every address; prints its port, exits when stdin closes.
async fn serve_healthz() {
    use http_body_util::Full;
    use hyper::body::Bytes;
    // A listen backlog far above 256 connects at once: with the default
    // (1024, and cold rounds open 10,000 connections in bursts) the kernel
    // counted listen-queue overflows and a run lost probes.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind("0.0.0.0:0".parse().unwrap()).expect("bind");
    let listener = socket.listen(65_535).expect("listen");
    println!("{}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    std::thread::spawn(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        std::process::exit(0);
    });
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                    Bytes::from_static(b"{\"status\":\"ok\"}"),
                )))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

#[derive(Clone, Copy)]
struct Row {
    wall: Duration,
    /// This process (the probing side).
    cpu: Duration,
    /// The Redis server during the round.
    redis_cpu: Duration,
}

async fn measure<F: std::future::Future<Output = usize>>(round: F, redis: Option<u32>) -> Row {
    let redis_cpu = || redis.and_then(bench::process_cpu).unwrap_or_default();
    let (cpu, redis_before, wall) = (cpu_time(), redis_cpu(), Instant::now());
    let healthy = round.await;
    let row = Row {
        wall: wall.elapsed(),
        cpu: cpu_time() - cpu,
        redis_cpu: redis_cpu().saturating_sub(redis_before),
    };
    assert_eq!(healthy, TARGETS, "every probe of a round must succeed");
    row
}

/// The bare loop: the same requests, same client settings and bound, nothing else.
async fn bare_round(client: &ProbeClient, urls: &Arc<Vec<String>>) -> usize {
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut joins = JoinSet::new();
    for i in 0..urls.len() {
        let (client, urls, permits) = (client.clone(), urls.clone(), permits.clone());
        joins.spawn(async move {
            let _permit = permits.acquire().await.unwrap();
            http_probe(&client, &urls[i], TIMEOUT).await.is_healthy()
        });
    }
    joins.join_all().await.into_iter().filter(|h| *h).count()
}

/// One round through the prober's whole per-slot machinery.
async fn prober_round(prober: &Prober, targets: &Arc<Vec<Target>>, round: u64) -> usize {
    let stop = CancellationToken::new();
    let mut joins = JoinSet::new();
    for i in 0..targets.len() {
        let (prober, targets, stop) = (prober.clone(), targets.clone(), stop.clone());
        joins.spawn(async move {
            let mut state = TargetState::default();
            prober.probe(&targets[i], round, &mut state, &stop).await
        });
    }
    let verdicts = joins.join_all().await;
    verdicts.iter().filter(|v| **v == Verdict::Healthy).count()
}

async fn bench() {
    let env = TestEnv::new().await;
    let mut server = pinned(1, &std::env::current_exe().unwrap())
        .arg("serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the healthz server");
    let mut port = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut port)
        .expect("server port");
    let port: u16 = port.trim().parse().expect("server port");

    let targets: Arc<Vec<Target>> = Arc::new(
        (0..TARGETS)
            .map(|i| Target {
                game_id: GameId::parse(&format!("bench{i}-{}", env.id)).unwrap(),
                container_id: format!("c{i}"),
                engine_endpoint: format!("http://127.1.{}.{}:{port}", i / 250, i % 250 + 1),
                docker_network: env.network.clone(),
                started_at: None,
                committed: Default::default(),
            })
            .collect(),
    );
    let urls: Arc<Vec<String>> = Arc::new(
        targets
            .iter()
            .map(|t| format!("{}/healthz", t.engine_endpoint))
            .collect(),
    );
    let settings = ProberSettings {
        probe: ProbeConfig {
            interval: INTERVAL,
            timeout: TIMEOUT,
            failures_threshold: 3,
            initial_grace: Duration::ZERO,
            concurrency: CONCURRENCY,
            refresh_interval: Duration::from_secs(5),
            address_mode: AddressMode::Hostname,
            shard_count: 1,
            shard_index: 0,
        },
        shutdown_timeout: Duration::from_secs(30),
    };
    let engine: Arc<dyn ContainerEngine> = env.infra.engine.clone();
    let new_prober = || {
        Prober::new(
            settings.clone(),
            env.infra.db.clone(),
            env.infra.redis.clone(),
            engine.clone(),
            env.infra.outbox.clone(),
        )
        .expect("prober")
    };

    // Alternating repetitions, each with a fresh client (cold = its first
    // round, new connections; warm = its second, pooled ones); the medians
    // are reported. Each client is dropped (its connections closed) before
    // the next opens 10,000 of its own.
    let redis = bench::redis_server_pid();
    let repetitions = bench::rounds(REPETITIONS, 2);
    let mut samples: [Vec<Row>; 4] = Default::default();
    for rep in 0..repetitions {
        let client = http_client(INTERVAL).expect("client");
        samples[0].push(measure(bare_round(&client, &urls), redis).await);
        samples[1].push(measure(bare_round(&client, &urls), redis).await);
        drop(client);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let prober = new_prober();
        let slot = 1 + 2 * rep as u64;
        samples[2].push(measure(prober_round(&prober, &targets, slot), redis).await);
        samples[3].push(measure(prober_round(&prober, &targets, slot + 1), redis).await);
        drop(prober);
        tokio::time::sleep(Duration::from_millis(500)).await;
        eprintln!("repetition {rep} done");
    }
    let median = |rows: &mut Vec<Row>| {
        let pick = |rows: &mut Vec<Row>, key: fn(&Row) -> Duration| {
            rows.sort_by_key(key);
            key(&rows[rows.len() / 2])
        };
        Row {
            wall: pick(rows, |r| r.wall),
            cpu: pick(rows, |r| r.cpu),
            redis_cpu: pick(rows, |r| r.redis_cpu),
        }
    };
    let rows: Vec<Row> = samples.iter_mut().map(median).collect();
    let exporter = exporter_round(&env, port).await;

    let per = |d: Duration, n: usize| d / n as u32;
    let [bare_cold, bare_warm, prober_cold, prober_warm] = [rows[0], rows[1], rows[2], rows[3]];
    let with_redis = |r: Row| r.cpu + r.redis_cpu;
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let exporter_per = per(exporter.cpu, exporter.probes);
    let figures = vec![
        Figure::at_most(
            "prober cold, CPU / probe (Redis counted) vs exporter",
            bench::us(per(with_redis(prober_cold), TARGETS)),
            bench::us(exporter_per),
            ratio(per(with_redis(prober_cold), TARGETS), exporter_per),
            0.1,
        ),
        Figure::at_most(
            "prober warm, CPU / probe (Redis counted) vs bare loop",
            bench::us(per(with_redis(prober_warm), TARGETS)),
            bench::us(per(with_redis(bare_warm), TARGETS)),
            ratio(with_redis(prober_warm), with_redis(bare_warm)),
            1.2,
        ),
        Figure::info(
            "prober cold, CPU / probe (Redis counted) vs bare loop",
            bench::us(per(with_redis(prober_cold), TARGETS)),
            bench::us(per(with_redis(bare_cold), TARGETS)),
            ratio(with_redis(prober_cold), with_redis(bare_cold)),
        ),
        Figure::info(
            "prober warm, CPU / probe without Redis vs bare loop",
            bench::us(per(prober_warm.cpu, TARGETS)),
            bench::us(per(bare_warm.cpu, TARGETS)),
            ratio(prober_warm.cpu, bare_warm.cpu),
        ),
        Figure::info(
            "Redis server CPU / probe, prober warm",
            bench::us(per(prober_warm.redis_cpu, TARGETS)),
            bench::us(per(prober_warm.cpu, TARGETS)),
            ratio(prober_warm.redis_cpu, prober_warm.cpu),
        ),
        Figure::info(
            "round wall time, prober warm vs bare loop warm",
            bench::ms(prober_warm.wall),
            bench::ms(bare_warm.wall),
            ratio(prober_warm.wall, bare_warm.wall),
        ),
        Figure::info(
            "round wall time, prober cold vs bare loop cold",
            bench::ms(prober_cold.wall),
            bench::ms(bare_cold.wall),
            ratio(prober_cold.wall, bare_cold.wall),
        ),
    ];
    bench::scale(
        "prober_cpu_us_per_probe_warm",
        per(with_redis(prober_warm), TARGETS).as_secs_f64() * 1e6,
        "us",
    );
    bench::scale(
        "prober_probes_per_s_warm",
        TARGETS as f64 / prober_warm.wall.as_secs_f64(),
        "probes/s",
    );
    bench::scale(
        "redis_cpu_us_per_probe",
        per(prober_warm.redis_cpu, TARGETS).as_secs_f64() * 1e6,
        "us",
    );
    let notes = vec![
        format!(
            "{TARGETS} targets (distinct loopback hosts `127.1.x.y`, one local hyper server with a \
             65,535 listen backlog), concurrency {CONCURRENCY}, timeout {}s, median of \
             {repetitions} alternating repetitions (each side: a fresh client, a cold round, then \
             a warm round). CPU is utime+stime: of the probing process (getrusage) and of the \
             Redis server (`/proc/<pid>/stat`, {}); the target server's is not counted on either side.",
            TIMEOUT.as_secs(),
            if redis.is_some() { "found by its port" } else { "**not found: not counted**" }
        ),
        format!(
            "The exporter: Debian's `prometheus-blackbox-exporter` ({}), module `http_2xx` \
             (prober http, 2 s timeout), its `/probe` endpoint driven by `wrk -t1 -c{CONCURRENCY}` \
             for {} s with a Lua script cycling the same {TARGETS} targets: {} probes, {:.0} \
             probes/s, exporter CPU {} in all; {} of {} spot-checked probes answered \
             `probe_success 1`. The exporter opens a new connection per probe, so it is compared \
             with the prober's cold round. wrk's own CPU is not counted (it is the driver).",
            exporter.version,
            exporter.seconds,
            exporter.probes,
            exporter.probes as f64 / exporter.seconds as f64,
            bench::ms(exporter.cpu),
            exporter.checked_ok,
            exporter.checked
        ),
        "Placement on the 2 cores: this process (the prober or the bare loop, both tokio \
         multi-thread runtimes) and the exporter pinned to CPU 0; the target server and wrk \
         pinned to CPU 1 (`taskset`); the Redis server unpinned. Other work on the machine \
         is not controlled."
            .to_owned(),
        "No PostgreSQL round trip per healthy probe: the probe path (`Prober::probe`) reads \
         and writes Redis only; PostgreSQL is reached when a verdict changes (outbox)."
            .to_owned(),
    ];
    bench::print_section(
        "3. Prober",
        "CPU per probe of the prober against Debian's blackbox exporter and a bare loop of \
         the same HTTP requests (same client, same bound).",
        &figures,
        &notes,
        "scripts/bench --only prober",
    );

    let mut conn = env.redis().manager();
    for chunk in targets.chunks(500) {
        let mut del = redis::cmd("DEL");
        for t in chunk {
            del.arg(streak_key(&t.game_id));
        }
        let _: i64 = del.query_async(&mut conn).await.expect("DEL");
    }
    drop(server.stdin.take());
    let _ = server.wait();
}

/// `program` under `taskset -c cpu` when taskset is there.
fn pinned(cpu: usize, program: &std::path::Path) -> Command {
    if Command::new("taskset").arg("-V").output().is_ok() {
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(cpu.to_string()).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// The probing side on CPU 0 (the target server and wrk run on CPU 1).
#[allow(unsafe_code)]
fn pin_self_to_cpu0() {
    if std::env::args().nth(1).as_deref() == Some("serve") {
        return;
    }
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and the syscall only
    // touch the set given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

struct ExporterRun {
    version: String,
    seconds: u64,
    probes: usize,
    cpu: Duration,
    checked: usize,
    checked_ok: usize,
}

/// Debian's blackbox exporter probing the same targets at the same
/// concurrency, driven by wrk; its CPU from /proc.
async fn exporter_round(env: &TestEnv, target_port: u16) -> ExporterRun {
    let dir = env.state_root.join("blackbox");
    std::fs::create_dir_all(&dir).expect("exporter dir");
    let config = dir.join("blackbox.yml");
    std::fs::write(
        &config,
        "modules:\n  http_2xx:\n    prober: http\n    timeout: 2s\n    http:\n      preferred_ip_protocol: ip4\n",
    )
    .expect("exporter config");
    let script = dir.join("cycle.lua");
    std::fs::write(
        &script,
        format!(
            "local i = 0\nrequest = function()\n  i = i + 1\n  local k = i % {TARGETS}\n  \
             return wrk.format(\"GET\", \"/probe?module=http_2xx&target=http://127.1.\" .. \
             math.floor(k / 250) .. \".\" .. (k % 250 + 1) .. \":{target_port}/healthz\")\nend\n"
        ),
    )
    .expect("wrk script");
    let exporter_bin = std::path::Path::new("/usr/bin/prometheus-blackbox-exporter");
    let version = Command::new(exporter_bin)
        .arg("--version")
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().unwrap_or("").trim().to_owned()
        })
        .unwrap_or_default();
    let port = system_tests::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut exporter = system_tests::job_process::KillOnDrop::spawn(
        pinned(0, exporter_bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "prometheus-blackbox-exporter (apt-get install prometheus-blackbox-exporter)",
    );
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("http://{listen}/-/healthy"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < until, "the exporter did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // taskset execs the exporter: the child's pid is the exporter's.
    let pid = exporter.id();
    let seconds = bench::rounds(10, 5) as u64;
    let before = bench::process_cpu(pid).expect("exporter cpu");
    let wrk = pinned(1, std::path::Path::new("/usr/bin/wrk"))
        .args(["-t1", &format!("-c{CONCURRENCY}"), &format!("-d{seconds}s")])
        .arg("-s")
        .arg(&script)
        .arg(format!("http://{listen}"))
        .output()
        .expect("run wrk (apt-get install wrk)");
    let cpu = bench::process_cpu(pid).expect("exporter cpu") - before;
    let out = String::from_utf8_lossy(&wrk.stdout).to_string();
    eprintln!("{out}");
    let probes: usize = out
        .lines()
        .find_map(|l| l.trim().split_once(" requests in"))
        .and_then(|(n, _)| n.trim().parse().ok())
        .expect("wrk's request count");
    let checked = 20;
    let mut checked_ok = 0;
    for k in 0..checked {
        let url = format!(
            "http://{listen}/probe?module=http_2xx&target=http://127.1.{}.{}:{target_port}/healthz",
            k * 7 / 250,
            k * 7 % 250 + 1
        );
        if let Ok(answer) = http.get(url).send().await {
            if answer
                .text()
                .await
                .unwrap_or_default()
                .contains("probe_success 1")
            {
                checked_ok += 1;
            }
        }
    }
    let _ = exporter.kill();
    ExporterRun {
        version,
        seconds,
        probes,
        cpu,
        checked,
        checked_ok,
    }
}
