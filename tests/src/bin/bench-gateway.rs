//! Gateway (issue 14, item 5): the release `rest-gateway` under `wrk`
//! (`GET /api/v1/internal/runtimes/{id}` cycling N games, and the monitoring
//! targets route over all of them) against `pgbench` running the gateway's
//! own statements (a custom script: the record and its health snapshot; the
//! monitoring rows statement) with the same number of clients as the
//! gateway's pool has connections, on the same database, alternating.
//!
//! Run with `scripts/bench --only gateway`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use system_tests::bench::{self, Figure};
use system_tests::job_process::JobProcess;
use system_tests::TestEnv;

const TOKEN: &str = "bench-gateway-token-0123456789abcdef01234567";
const CLIENTS: usize = 10;

struct Load {
    rate: f64,
    p99_ms: Option<f64>,
    /// Requests (wrk) or transactions (pgbench) done.
    count: f64,
    /// CPU per request or transaction: the load generator's own; the
    /// gateway's (zero under pgbench); PostgreSQL's (all its processes).
    cpu_client: Duration,
    cpu_gateway: Duration,
    cpu_pg: Duration,
}

/// The processes a run's CPU is counted for: the gateway and PostgreSQL.
struct Counted {
    gateway: u32,
    postgres: Vec<u32>,
}

impl Counted {
    /// Runs `run` (which waits for its load generator) and fills in the CPU
    /// each side spent per unit of its count.
    fn measure(&self, run: impl FnOnce() -> Load) -> Load {
        let (c0, g0, p0) = (
            bench::waited_children_cpu(),
            bench::process_cpu(self.gateway).unwrap_or_default(),
            bench::cpu_of(&self.postgres),
        );
        let mut load = run();
        let n = load.count.max(1.0);
        load.cpu_client = bench::waited_children_cpu().saturating_sub(c0).div_f64(n);
        load.cpu_gateway = bench::process_cpu(self.gateway)
            .unwrap_or_default()
            .saturating_sub(g0)
            .div_f64(n);
        load.cpu_pg = bench::cpu_of(&self.postgres).saturating_sub(p0).div_f64(n);
        load
    }
}

/// wrk's `Requests/sec` and its `--latency` 99% line.
fn wrk(script: &std::path::Path, url: &str, clients: usize, seconds: u64) -> Load {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{clients}"),
            &format!("-d{seconds}s"),
            "--latency",
        ])
        .arg("-s")
        .arg(script)
        .arg(url)
        .stderr(Stdio::inherit())
        .output()
        .expect("run wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("{text}");
    assert!(!text.contains("Non-2xx"), "wrk saw errors: {text}");
    let rate = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("wrk's rate");
    let p99_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| parse_wrk_duration(v.trim()));
    // "  12345 requests in 4.00s, 5.6MB read"
    let count = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or(0.0);
    Load {
        rate,
        p99_ms,
        count,
        cpu_client: Duration::ZERO,
        cpu_gateway: Duration::ZERO,
        cpu_pg: Duration::ZERO,
    }
}

fn parse_wrk_duration(v: &str) -> Option<f64> {
    let (num, factor) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e3)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().ok().map(|n| n * factor)
}

/// pgbench's `tps` and, from its `--log`-free summary, the average latency.
fn pgbench(env: &TestEnv, script: &std::path::Path, clients: usize, seconds: u64) -> Load {
    let url = std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL");
    let out = Command::new("pgbench")
        .args([
            "-n",
            "-M",
            "prepared",
            &format!("-c{clients}"),
            "-j1",
            &format!("-T{seconds}"),
            "-f",
        ])
        .arg(script)
        .arg(&url)
        .env("PGOPTIONS", format!("-c search_path={}", env.schema))
        .stderr(Stdio::inherit())
        .output()
        .expect("run pgbench (apt-get install postgresql-client)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("{text}");
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("pgbench's tps: {text}"));
    let count = text
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    Load {
        rate,
        p99_ms: None,
        count,
        cpu_client: Duration::ZERO,
        cpu_gateway: Duration::ZERO,
        cpu_pg: Duration::ZERO,
    }
}

#[tokio::main]
async fn main() {
    bench::init_logging();
    let games = bench::rounds(10_000, 2_000);
    let seconds = bench::rounds(10, 4) as u64;
    let repetitions = bench::rounds(3, 1);
    let env = TestEnv::with(&[("RTMANAGER_API_TOKENS", TOKEN)]).await;
    // N running records with a health snapshot each, written directly (the
    // gateway only reads them).
    let suffix = format!("-{}", env.id);
    sqlx::query(
        "INSERT INTO runtime_records (game_id, status, current_container_id, current_image_ref, \
         engine_endpoint, state_path, docker_network, started_at, last_op_at) \
         SELECT 'g' || i || $1, 'running', 'c' || i, 'galaxy-test/engine:1.0.0', \
         'http://galaxy-game-g' || i || ':8080', '/var/lib/g' || i, $2, now(), now() \
         FROM generate_series(0, $3 - 1) AS i",
    )
    .bind(&suffix)
    .bind(&env.network)
    .bind(games as i32)
    .execute(env.db().pool())
    .await
    .expect("insert records");
    sqlx::query("ANALYZE runtime_records")
        .execute(env.db().pool())
        .await
        .expect("analyze");

    let addr = format!("127.0.0.1:{}", system_tests::free_port());
    let bin = bench::sibling_binary("rest-gateway");
    let gateway = JobProcess::spawn_binary(
        "rest-gateway",
        &bin,
        &env.vars,
        &[("RTMANAGER_INTERNAL_HTTP_ADDR", addr.clone())],
        &[],
    );
    let gateway = JobProcess::until_healthy(&env, gateway).await;
    let pool = env.config.common.postgres.max_connections as usize;

    let dir = env.state_root.join("gateway-bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let show_lua = dir.join("show.lua");
    std::fs::write(
        &show_lua,
        format!(
            "local i = 0\nwrk.headers[\"Authorization\"] = \"Bearer {TOKEN}\"\n\
             request = function()\n  i = i + 1\n  \
             return wrk.format(\"GET\", \"/api/v1/internal/runtimes/g\" .. (i % {games}) .. \"{suffix}\")\nend\n"
        ),
    )
    .expect("wrk script");
    let targets_lua = dir.join("targets.lua");
    std::fs::write(
        &targets_lua,
        format!(
            "wrk.headers[\"Authorization\"] = \"Bearer {TOKEN}\"\n\
             request = function()\n  return wrk.format(\"GET\", \"/api/v1/internal/monitoring/targets\")\nend\n"
        ),
    )
    .expect("wrk script");
    // The gateway's own statement (shared/src/adapters/postgres): the record
    // with its health snapshot, one round trip; and, for comparison, the two
    // statements the route ran in turn before (record, then snapshot).
    let key = format!("'g' || :k || '{suffix}'");
    let show_sql = dir.join("show.sql");
    std::fs::write(
        &show_sql,
        format!(
            "\\set k random(0, {})\n{};\n",
            games - 1,
            shared::adapters::postgres::reads::RECORD_WITH_HEALTH.replace("$1", &key)
        ),
    )
    .expect("pgbench script");
    let two_sql = dir.join("show-two.sql");
    std::fs::write(
        &two_sql,
        format!(
            "\\set k random(0, {})\n\
             SELECT game_id, status, current_container_id, current_image_ref, engine_endpoint, \
             state_path, docker_network, started_at, stopped_at, removed_at, last_op_at, created_at \
             FROM runtime_records WHERE game_id = {key};\n\
             SELECT status, event_type, container_id, details, occurred_at FROM health_snapshots \
             WHERE game_id = {key};\n",
            games - 1
        ),
    )
    .expect("pgbench script");
    let targets_sql = dir.join("targets.sql");
    let monitoring = shared::adapters::postgres::reads::MONITORING_ROWS
        .replace("$1", "ARRAY['running']")
        .replace("$2", "now() - interval '1 hour'");
    std::fs::write(&targets_sql, format!("{monitoring};\n")).expect("pgbench script");

    let url = format!("http://{addr}");
    let pg_port = bench::url_port(&std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL"))
        .expect("TEST_DATABASE_URL's port");
    let counted = Counted {
        gateway: gateway.pid().expect("the gateway's pid"),
        postgres: bench::postgres_pids(pg_port),
    };
    let (mut show, mut show_peer, mut two_peer, mut tg, mut tg_peer) =
        (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..repetitions {
        show.push(counted.measure(|| wrk(&show_lua, &url, CLIENTS, seconds)));
        show_peer.push(counted.measure(|| pgbench(&env, &show_sql, CLIENTS, seconds)));
        two_peer.push(counted.measure(|| pgbench(&env, &two_sql, CLIENTS, seconds)));
        tg.push(wrk(&targets_lua, &url, 1, seconds));
        tg_peer.push(pgbench(&env, &targets_sql, 1, seconds));
    }
    // One more GET run under perf: where the gateway's and PostgreSQL's CPU goes.
    let mut profiled = counted.postgres.clone();
    profiled.push(counted.gateway);
    let profile = bench::Profile::start(&profiled, dir.join("gateway.perf")).and_then(|p| {
        wrk(&show_lua, &url, CLIENTS, seconds);
        p.finish()
    });
    // One discovery request, timed alone, a few times.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut discovery = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let answer = http
            .get(format!("{url}/api/v1/internal/monitoring/targets"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("targets");
        assert!(answer.status().is_success(), "{}", answer.status());
        let body = answer.text().await.expect("targets body");
        discovery.push(t.elapsed());
        assert!(body.contains(&suffix), "the targets list the games");
    }
    gateway.stop().await;

    let med = |v: &[Load]| {
        let mut r: Vec<f64> = v.iter().map(|l| l.rate).collect();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };
    // The CPU figures of the median-rate run.
    let mid = |v: &[Load]| -> (Duration, Duration, Duration) {
        let m = med(v);
        let l = v.iter().find(|l| l.rate == m).expect("the median run");
        (l.cpu_client, l.cpu_gateway, l.cpu_pg)
    };
    let p99 = |v: &[Load]| {
        let mut r: Vec<f64> = v.iter().filter_map(|l| l.p99_ms).collect();
        r.sort_by(f64::total_cmp);
        r.get(r.len() / 2)
            .map_or("—".to_owned(), |p| format!("{p:.1} ms"))
    };
    let rps = |r: f64| format!("{r:.0} req/s");
    let d = bench::median(&discovery);
    let (wrk_cpu, gw_cpu, pg_cpu_http) = mid(&show);
    let (pgbench_cpu, _, pg_cpu_tx) = mid(&show_peer);
    let us = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    let figures = vec![
        Figure::at_least(
            &format!(
                "GET runtimes/{{id}}, {CLIENTS} clients, rate (p99 {})",
                p99(&show)
            ),
            rps(med(&show)),
            format!("{:.0} tx/s", med(&show_peer)),
            med(&show) / med(&show_peer),
            0.6,
        ),
        Figure::info(
            "GET runtimes/{id} against pgbench running the route's former 2 statements",
            rps(med(&show)),
            format!("{:.0} tx/s", med(&two_peer)),
            med(&show) / med(&two_peer),
        ),
        Figure::info(
            "CPU per GET: the gateway process vs PostgreSQL's per pgbench transaction",
            us(gw_cpu),
            us(pg_cpu_tx),
            ratio(gw_cpu, pg_cpu_tx),
        ),
        Figure::info(
            "CPU per GET: PostgreSQL under the gateway vs under pgbench (per transaction)",
            us(pg_cpu_http),
            us(pg_cpu_tx),
            ratio(pg_cpu_http, pg_cpu_tx),
        ),
        Figure::info(
            "CPU per GET: the load generator, wrk vs pgbench",
            us(wrk_cpu),
            us(pgbench_cpu),
            ratio(wrk_cpu, pgbench_cpu),
        ),
        Figure::at_least(
            &format!(
                "GET monitoring/targets ({games} games), 1 client, rate (p99 {})",
                p99(&tg)
            ),
            rps(med(&tg)),
            format!("{:.0} tx/s", med(&tg_peer)),
            med(&tg) / med(&tg_peer),
            0.6,
        ),
        Figure {
            name: format!("discovery with {games} games, one request, median of 5"),
            ours: bench::ms(d),
            peer: format!("{:.1} ms (1 / pgbench rate)", 1e3 / med(&tg_peer)),
            ratio: d.as_secs_f64() * med(&tg_peer),
            target: "< 50 ms".to_owned(),
            met: Some(d < Duration::from_millis(50)),
        },
    ];
    eprintln!("SCALE gateway_get_per_s {:.0} req/s", med(&show));
    eprintln!(
        "SCALE gateway_cpu_us_per_get {:.1} us",
        gw_cpu.as_secs_f64() * 1e6
    );
    eprintln!("SCALE pg_tx_per_s {:.0} tx/s", med(&show_peer));
    let discovery_key = if games == 10_000 {
        "discovery_ms_10k".to_owned()
    } else {
        // A smaller inventory (--quick): the plain key, the count in the log.
        eprintln!("discovery ran with {games} games");
        "discovery_ms".to_owned()
    };
    eprintln!("SCALE {discovery_key} {:.1} ms", d.as_secs_f64() * 1e3);
    let mut notes = vec![format!(
        "{games} running records (with no health snapshot), the gateway's pool \
         {pool} connections; wrk `-t1 -c{CLIENTS}` for {seconds} s cycling the games, pgbench \
         `-n -M prepared -c{CLIENTS} -j1 -T{seconds}` with the statement the route runs (the \
         record LEFT JOIN its health snapshot, one round trip), and again with the two \
         statements it ran in turn before; the targets route against pgbench running \
         the monitoring rows statement (the route also checks each game's lease in Redis, \
         pipelined, which pgbench does not). Median of {repetitions} alternating runs. \
         CPU per request: user + system time of the gateway process and of every PostgreSQL \
         process (from /proc) and of wrk and pgbench (getrusage of waited children) over the \
         run, divided by the requests or transactions it did. \
         wrk, pgbench, the gateway and PostgreSQL share the 2 cores (not pinned): every \
         microsecond the gateway and wrk spend is one PostgreSQL cannot.{}",
        if games < 10_000 {
            " --quick: fewer games than the 10,000 of the target (full mode runs 10,000)."
        } else {
            ""
        }
    )];
    notes.push(match profile {
        Some(r) => format!(
            "`perf record -e cpu-clock` of the gateway and PostgreSQL during one more GET run: {}",
            r.markdown(10)
        ),
        None => "No profile: `perf record` is missing or failed here.".to_owned(),
    });
    bench::print_section(
        "5. Gateway",
        "The REST gateway under `wrk` against `pgbench` running the gateway's own queries.",
        &figures,
        &notes,
        "scripts/bench --only gateway",
    );
}
