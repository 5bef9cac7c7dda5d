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
    Load { rate, p99_ms }
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
    Load { rate, p99_ms: None }
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
    // The gateway's own statements (shared/src/adapters/postgres): the record,
    // then its health snapshot; and the monitoring rows.
    let show_sql = dir.join("show.sql");
    std::fs::write(
        &show_sql,
        format!(
            "\\set k random(0, {})\n\
             SELECT game_id, status, current_container_id, current_image_ref, engine_endpoint, \
             state_path, docker_network, started_at, stopped_at, removed_at, last_op_at, created_at \
             FROM runtime_records WHERE game_id = 'g' || :k || '{suffix}';\n\
             SELECT status, event_type, container_id, details, occurred_at FROM health_snapshots \
             WHERE game_id = 'g' || :k || '{suffix}';\n",
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
    let (mut show, mut show_peer, mut tg, mut tg_peer) = (vec![], vec![], vec![], vec![]);
    for _ in 0..repetitions {
        show.push(wrk(&show_lua, &url, CLIENTS, seconds));
        show_peer.push(pgbench(&env, &show_sql, CLIENTS, seconds));
        tg.push(wrk(&targets_lua, &url, 1, seconds));
        tg_peer.push(pgbench(&env, &targets_sql, 1, seconds));
    }
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
    let p99 = |v: &[Load]| {
        let mut r: Vec<f64> = v.iter().filter_map(|l| l.p99_ms).collect();
        r.sort_by(f64::total_cmp);
        r.get(r.len() / 2)
            .map_or("—".to_owned(), |p| format!("{p:.1} ms"))
    };
    let rps = |r: f64| format!("{r:.0} req/s");
    let d = bench::median(&discovery);
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
    let notes = vec![format!(
        "{games} running records (with no health snapshot), the gateway's pool \
         {pool} connections; wrk `-t1 -c{CLIENTS}` for {seconds} s cycling the games, pgbench \
         `-n -M prepared -c{CLIENTS} -j1 -T{seconds}` with the same two statements the \
         route runs (record, then health snapshot); the targets route against pgbench running \
         the monitoring rows statement (the route also checks each game's lease in Redis, \
         pipelined, which pgbench does not). Median of {repetitions} alternating runs. \
         wrk, pgbench, the gateway and PostgreSQL share the 2 cores (not pinned).{}",
        if games < 10_000 {
            " --quick: fewer games than the 10,000 of the target."
        } else {
            ""
        }
    )];
    bench::print_section(
        "5. Gateway",
        "The REST gateway under `wrk` against `pgbench` running the gateway's own queries.",
        &figures,
        &notes,
        "scripts/bench --only gateway",
    );
}
