//! What "nothing lost" costs (issue 14, item 6): health events through the
//! PostgreSQL outbox (snapshot, history and outbox row in one transaction,
//! then relay delivery to Redis) against a bare `XADD` of the same fields, in
//! the same run, on the same Redis: sequentially from one client, and from 16
//! concurrent writers (one game each; the pool has 16 connections, the bare
//! side 16 Redis connections). Bare and outbox runs alternate, medians
//! reported.
//!
//! Two PostgreSQL servers: a private cluster with PostgreSQL's default
//! durability (`fsync` on, `synchronous_commit` on: the target's "same
//! durability"), and the test server of `scripts/lib.sh` (`fsync=off`,
//! `synchronous_commit=off`), which shows what the round trips and CPU cost
//! without the WAL flush. On the durable cluster one more 16-writer run is
//! instrumented: `pg_stat_statements`, `pg_stat_wal` and WAL position deltas,
//! the CPU of every PostgreSQL process and of this one, a sampling of the
//! backends' wait states, and a `perf` profile when `perf` works.
//!
//! Run with `scripts/bench --only outbox`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::domain::{GameId, HealthDetails, HealthEvent, HealthSource};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use system_tests::bench::{self, Figure};
use system_tests::services::PrivatePostgres;
use system_tests::{Services, TestEnv};

const WRITERS: usize = 16;
const STATS_APP: &str = "bench-outbox-stats";

fn event(game: &GameId, i: i64) -> HealthEvent {
    HealthEvent {
        game_id: game.clone(),
        container_id: "c".into(),
        occurred_at_ms: 1_000 + i,
        details: HealthDetails::ProbeFailed {
            consecutive_failures: i,
            last_status: 500,
            last_error: "status 500".into(),
        },
    }
}

/// `writers` tasks, `per_writer` bare XADDs each, on their own connections.
async fn bare(env: &TestEnv, games: &[GameId], per_writer: i64) -> Duration {
    let raw_stream = format!("{}:raw", env.config.common.streams.health_events);
    let addr = std::env::var("TEST_REDIS_ADDR").expect("TEST_REDIS_ADDR");
    let mut conns = Vec::new();
    for _ in games {
        let client = redis::Client::open(format!("redis://{addr}")).expect("redis client");
        conns.push(
            client
                .get_multiplexed_async_connection()
                .await
                .expect("redis connection"),
        );
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (game, mut conn) in games.iter().cloned().zip(conns) {
        let raw_stream = raw_stream.clone();
        tasks.spawn(async move {
            for i in 0..per_writer {
                let mut cmd = redis::cmd("XADD");
                cmd.arg(&raw_stream).arg("*");
                for (k, v) in event(&game, i).stream_fields() {
                    cmd.arg(k).arg(v);
                }
                let _: String = cmd.query_async(&mut conn).await.expect("XADD");
            }
        });
    }
    tasks.join_all().await;
    started.elapsed()
}

/// The writers' side only: every event committed, none delivered.
async fn commit_only(env: &TestEnv, games: &[GameId], per_writer: i64) -> Duration {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for game in games {
        let (game, outbox) = (game.clone(), env.infra.outbox.clone());
        tasks.spawn(async move {
            for i in 0..per_writer {
                outbox
                    .publish(&[outbox.health(HealthSource::HealthzProber, &event(&game, i))])
                    .await
                    .expect("emit");
            }
        });
    }
    tasks.join_all().await;
    started.elapsed()
}

/// The same events through the outbox: (committed, committed + delivered).
async fn outbox(env: &TestEnv, games: &[GameId], per_writer: i64) -> (Duration, Duration) {
    let started = Instant::now();
    let committed = commit_only(env, games, per_writer).await;
    env.flush_outbox().await;
    (committed, started.elapsed())
}

/// Medians of `repetitions` alternating runs: (bare, committed, delivered).
async fn alternate(
    env: &TestEnv,
    games: &[GameId],
    per_writer: i64,
    repetitions: usize,
) -> (Duration, Duration, Duration) {
    let (mut raw, mut committed, mut delivered) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repetitions {
        raw.push(bare(env, games, per_writer).await);
        let (c, d) = outbox(env, games, per_writer).await;
        committed.push(c);
        delivered.push(d);
    }
    (
        bench::median(&raw),
        bench::median(&committed),
        bench::median(&delivered),
    )
}

/// `pg_stat_statements`' calls per statement (ours only), most called first.
async fn statements(stats: &PgPool) -> Vec<(String, i64)> {
    let rows = sqlx::query(
        "SELECT query, calls FROM pg_stat_statements \
         WHERE query NOT LIKE '%pg_stat%' AND query NOT LIKE '%pg_current_wal%' \
         ORDER BY calls DESC, query",
    )
    .fetch_all(stats)
    .await
    .expect("read pg_stat_statements");
    rows.iter()
        .map(|r| (r.get::<String, _>("query"), r.get::<i64, _>("calls")))
        .collect()
}

async fn reset_statements(stats: &PgPool) {
    sqlx::query("SELECT pg_stat_statements_reset()")
        .execute(stats)
        .await
        .expect("reset pg_stat_statements");
}

/// (WAL bytes so far, WAL writes, WAL fsyncs, commits in this database).
async fn wal(stats: &PgPool) -> (f64, f64, f64, f64) {
    let row = sqlx::query(
        "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::float8 AS bytes, \
           wal_write::float8 AS writes, wal_sync::float8 AS syncs, \
           (SELECT xact_commit::float8 FROM pg_stat_database WHERE datname = current_database()) AS commits \
         FROM pg_stat_wal",
    )
    .fetch_one(stats)
    .await
    .expect("read pg_stat_wal");
    (
        row.get("bytes"),
        row.get("writes"),
        row.get("syncs"),
        row.get("commits"),
    )
}

/// A statement's text, short enough for a table cell.
fn short(query: &str) -> String {
    let one_line = query.split_whitespace().collect::<Vec<_>>().join(" ");
    let cut: String = one_line.chars().take(60).collect();
    if cut.len() < one_line.len() {
        format!("`{cut}…`")
    } else {
        format!("`{cut}`")
    }
}

/// Samples the client backends' states every 5 ms until `stop`: how often
/// each `state / wait event` was seen.
async fn sample_waits(stats: PgPool, stop: Arc<AtomicBool>) -> HashMap<String, u64> {
    let mut seen = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT coalesce(state, '?') || ', ' || \
               coalesce(wait_event_type || ':' || wait_event, 'running (on CPU or runnable)') \
             FROM pg_stat_activity WHERE backend_type = 'client backend' \
               AND datname = current_database() AND application_name <> $1",
        )
        .bind(STATS_APP)
        .fetch_all(&stats)
        .await
        .expect("sample pg_stat_activity");
        for r in rows {
            *seen.entry(r).or_insert(0) += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    seen
}

/// One instrumented 16-writer run on the durable cluster: the table of where
/// an event's time goes, and the profile's lines.
async fn breakdown(env: &TestEnv, pg: &PrivatePostgres, games: &[GameId], events: i64) -> String {
    let options: PgConnectOptions = pg.url().parse().expect("cluster url");
    let stats = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.application_name(STATS_APP))
        .await
        .expect("connect the stats pool");
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&stats)
        .await
        .expect("create pg_stat_statements");
    let per_writer = events / games.len() as i64;
    let n = (per_writer * games.len() as i64) as f64;

    // The bare side's CPU, Redis server counted.
    let redis = bench::redis_server_pid();
    let me = std::process::id();
    let (r0, m0) = (
        redis.and_then(bench::process_cpu).unwrap_or_default(),
        bench::process_cpu(me).unwrap_or_default(),
    );
    let bare_wall = bare(env, games, per_writer).await;
    let bare_cpu = redis.and_then(bench::process_cpu).unwrap_or_default() - r0
        + (bench::process_cpu(me).unwrap_or_default() - m0);

    // Backends flush their WAL and commit counters once idle for a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    reset_statements(&stats).await;
    let wal0 = wal(&stats).await;
    let pids = bench::postgres_pids(pg.port());
    let (pg0, me0) = (
        bench::cpu_of(&pids),
        bench::process_cpu(me).unwrap_or_default(),
    );
    let mut profiled = pids.clone();
    profiled.push(me);
    let profile = bench::Profile::start(&profiled, env.state_root.join("outbox.perf"));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_waits(stats.clone(), stop.clone()));
    let (pg0, me0) = if profile.is_some() {
        (
            bench::cpu_of(&pids),
            bench::process_cpu(me).unwrap_or_default(),
        )
    } else {
        (pg0, me0)
    };
    let wall = commit_only(env, games, per_writer).await;
    let (pg_cpu, me_cpu) = (
        bench::cpu_of(&pids).saturating_sub(pg0),
        bench::process_cpu(me).unwrap_or_default() - me0,
    );
    stop.store(true, Ordering::Relaxed);
    let waits = sampler.await.expect("sampler");
    let report = profile.and_then(bench::Profile::finish);
    let writer_statements = statements(&stats).await;
    reset_statements(&stats).await;
    env.flush_outbox().await;
    let relay_statements = statements(&stats).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let wal1 = wal(&stats).await;
    stats.close().await;

    let per = |x: f64| x / n;
    let us = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6 / n);
    let total_statements: i64 = writer_statements.iter().map(|(_, c)| c).sum();
    let relay_total: i64 = relay_statements.iter().map(|(_, c)| c).sum();
    let commits: i64 = writer_statements
        .iter()
        .filter(|(q, _)| q.trim().eq_ignore_ascii_case("commit"))
        .map(|(_, c)| c)
        .sum();
    let listed: Vec<String> = writer_statements
        .iter()
        .map(|(q, c)| format!("{:.2} {}", *c as f64 / n, short(q)))
        .collect();
    let mut rows = vec![
        (
            "events (16 writers, one game each, durable cluster)".to_owned(),
            format!("{n}"),
        ),
        ("wall time per event (aggregate)".into(), us(wall)),
        (
            "statements per event, writers (`pg_stat_statements`)".into(),
            format!("{:.2}: {}", per(total_statements as f64), listed.join(", ")),
        ),
        (
            "pool acquires per event (each a protocol-level ping, sqlx's `test_before_acquire`; not a statement)"
                .into(),
            "1 (one per `publish`)".into(),
        ),
        (
            "round trips per event (statements + pings)".into(),
            format!("{:.2}", per(total_statements as f64) + 1.0),
        ),
        (
            "commits per event (writers' `COMMIT`; all of the database's, relay included)".into(),
            format!("{:.2}; {:.2}", per(commits as f64), per(wal1.3 - wal0.3)),
        ),
        (
            "WAL per event (bytes; writes; fsyncs), relay included".into(),
            format!(
                "{:.0} B; {:.2}; {:.2}",
                per(wal1.0 - wal0.0),
                per(wal1.1 - wal0.1),
                per(wal1.2 - wal0.2)
            ),
        ),
        (
            "relay statements per event (delivery after the writers)".into(),
            format!("{:.3}", per(relay_total as f64)),
        ),
        (
            "CPU per event: PostgreSQL (all its processes); this process (writers, sqlx, tokio)"
                .into(),
            format!("{}; {}", us(pg_cpu), us(me_cpu)),
        ),
        (
            "CPU used / CPU available (2 cores × wall)".into(),
            format!(
                "{:.0}%",
                100.0 * (pg_cpu + me_cpu).as_secs_f64()
                    / (wall.as_secs_f64() * bench_cores() as f64)
            ),
        ),
        (
            "bare `XADD`, same events: wall per event; CPU per event (Redis server + this process)"
                .into(),
            format!("{}; {}", us(bare_wall), us(bare_cpu)),
        ),
    ];
    let samples: u64 = waits.values().sum();
    let mut waits: Vec<(String, u64)> = waits.into_iter().collect();
    waits.sort_by_key(|w| std::cmp::Reverse(w.1));
    let shares: Vec<String> = waits
        .iter()
        .take(7)
        .map(|(k, c)| format!("{:.0}% {k}", 100.0 * *c as f64 / samples.max(1) as f64))
        .collect();
    rows.push((
        format!("backend states, sampled every 5 ms ({samples} backend samples)"),
        shares.join("; "),
    ));
    let mut table = String::from(
        "Where an event's time goes (the instrumented run):\n\n| | per event |\n|---|---|\n",
    );
    for (k, v) in rows {
        table.push_str(&format!("| {k} | {v} |\n"));
    }
    table.push('\n');
    match report {
        Some(r) => table.push_str(&format!(
            "`perf record -e cpu-clock` of PostgreSQL's processes and this one during that run. {}",
            r.markdown(10)
        )),
        None => table.push_str("No profile: `perf record` is missing or failed here."),
    }
    table
}

fn bench_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

struct Server<'a> {
    label: &'static str,
    env: &'a TestEnv,
}

#[tokio::main]
async fn main() {
    bench::init_logging();
    let events: i64 = bench::rounds(2000, 800) as i64;
    let repetitions = bench::rounds(3, 1);
    let pool = ("RTMANAGER_POSTGRES_MAX_CONNECTIONS", "16");
    // Declared first, dropped last: after the env that uses it.
    let durable_pg = PrivatePostgres::durable();
    let durable = TestEnv::with_services(
        &Services {
            database_url: Some(durable_pg.url()),
            ..Services::default()
        },
        &[pool],
    )
    .await;
    let test_server = TestEnv::with(&[pool]).await;
    let servers = [
        Server {
            label: "durable",
            env: &durable,
        },
        Server {
            label: "test server, fsync off",
            env: &test_server,
        },
    ];
    let per = |d: Duration| d / events as u32;
    let mut figures = Vec::new();
    let mut durable_16 = None;
    for server in &servers {
        let env = server.env;
        let one = vec![env.game("bench")];
        let many: Vec<GameId> = (0..WRITERS).map(|i| env.game(&format!("w{i}"))).collect();
        for (label, games) in [("1 writer", &one), ("16 writers", &many)] {
            let per_writer = events / games.len() as i64;
            let (raw, committed, delivered) = alternate(env, games, per_writer, repetitions).await;
            eprintln!(
                "{} {label}: bare {raw:?} committed {committed:?} delivered {delivered:?}",
                server.label
            );
            let ratio = delivered.as_secs_f64() / raw.as_secs_f64();
            let name = format!(
                "{}, {label}: outbox commit + relay delivery vs bare XADD, per event",
                server.label
            );
            let target = games.len() == WRITERS && server.label == "durable";
            if target {
                durable_16 = Some(delivered);
            }
            figures.push(if target {
                Figure::at_most(
                    &name,
                    bench::us(per(delivered)),
                    bench::us(per(raw)),
                    ratio,
                    3.0,
                )
            } else {
                Figure::info(&name, bench::us(per(delivered)), bench::us(per(raw)), ratio)
            });
            figures.push(Figure::info(
                &format!(
                    "{}, {label}: outbox commit only vs bare XADD, per event",
                    server.label
                ),
                bench::us(per(committed)),
                bench::us(per(raw)),
                committed.as_secs_f64() / raw.as_secs_f64(),
            ));
        }
    }
    let many: Vec<GameId> = (0..WRITERS)
        .map(|i| durable.game(&format!("w{i}")))
        .collect();
    let table = breakdown(&durable, &durable_pg, &many, events).await;
    if let Some(d) = durable_16 {
        eprintln!(
            "SCALE outbox_events_per_s_16 {:.0} events/s",
            events as f64 / d.as_secs_f64()
        );
    }
    eprintln!("SCALE outbox_pg_conns {WRITERS} conns");
    let notes = vec![
        format!(
            "{events} events per run, median of {repetitions} alternating runs per side. The \
             time per event is the run's wall time / events (for 16 writers: the aggregate \
             throughput). The outbox commits each event in its own transaction (`publish`: \
             the event's outbox row, its game's snapshot and history row, and its place in \
             the game's order) and delivers with one relay after the writers are done; the \
             bare side is one `XADD` per event on `<health stream>:raw`, on a Redis without \
             persistence. \"durable\" is a private PostgreSQL cluster with the server \
             defaults (`fsync` on, `synchronous_commit` on), the target's durability; \"test \
             server\" is `scripts/lib.sh`'s (`fsync=off`, `synchronous_commit=off`), the one \
             this benchmark used before, which pays the round trips and the CPU but no WAL \
             flush. Everything shares the 2 cores (not pinned)."
        ),
        table,
    ];
    bench::print_section(
        "6. Outbox",
        "Health events through the PostgreSQL outbox and relay against a bare `XADD`.",
        &figures,
        &notes,
        "scripts/bench --only outbox",
    );
    drop(test_server);
    drop(durable);
    drop(durable_pg);
}
