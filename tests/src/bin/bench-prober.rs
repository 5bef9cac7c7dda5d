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
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
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

struct Row {
    wall: Duration,
    cpu: Duration,
}

async fn measure<F: std::future::Future<Output = usize>>(round: F) -> Row {
    let (cpu, wall) = (cpu_time(), Instant::now());
    let healthy = round.await;
    let row = Row {
        wall: wall.elapsed(),
        cpu: cpu_time() - cpu,
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
    let mut server = Command::new(std::env::current_exe().unwrap())
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
    let mut samples: [Vec<Row>; 4] = Default::default();
    for rep in 0..REPETITIONS {
        let client = http_client(INTERVAL).expect("client");
        samples[0].push(measure(bare_round(&client, &urls)).await);
        samples[1].push(measure(bare_round(&client, &urls)).await);
        drop(client);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let prober = new_prober();
        let slot = 1 + 2 * rep as u64;
        samples[2].push(measure(prober_round(&prober, &targets, slot)).await);
        samples[3].push(measure(prober_round(&prober, &targets, slot + 1)).await);
        drop(prober);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let median = |rows: &mut Vec<Row>| {
        rows.sort_by_key(|r| r.cpu);
        let cpu = rows[rows.len() / 2].cpu;
        rows.sort_by_key(|r| r.wall);
        Row {
            wall: rows[rows.len() / 2].wall,
            cpu,
        }
    };
    let rows: Vec<Row> = samples.iter_mut().map(median).collect();
    let names = [
        "bare loop, cold",
        "bare loop, warm",
        "prober, cold",
        "prober, warm",
    ];

    println!(
        "{TARGETS} targets (distinct loopback hosts), concurrency {CONCURRENCY}, {} CPUs, median of {REPETITIONS} rounds each",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<16} {:>8} {:>9} {:>13} {:>10}",
        "one round", "wall ms", "probes/s", "CPU us/probe", "CPU vs bare"
    );
    for (i, row) in rows.iter().enumerate() {
        // Each prober round against the bare round of the same temperature.
        let bare = &rows[i % 2];
        println!(
            "{:<16} {:>8.0} {:>9.0} {:>13.1} {:>9.2}x",
            names[i],
            row.wall.as_secs_f64() * 1e3,
            TARGETS as f64 / row.wall.as_secs_f64(),
            row.cpu.as_secs_f64() * 1e6 / TARGETS as f64,
            row.cpu.as_secs_f64() / bare.cpu.as_secs_f64()
        );
    }

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
