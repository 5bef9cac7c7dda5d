//! What "nothing lost" costs (issue 14, item 6): health events through the
//! PostgreSQL outbox (snapshot + outbox row in one transaction, synchronous
//! commit, then relay delivery to Redis) against a bare `XADD` of the same
//! fields, in the same run, on the same servers: sequentially from one
//! client, and from 16 concurrent writers (one game each; the pool has 16
//! connections, the bare side 16 Redis connections). Bare and outbox runs
//! alternate, medians reported.
//!
//! Run with `scripts/bench --only outbox`.

use std::time::{Duration, Instant};

use shared::domain::{GameId, HealthDetails, HealthEvent, HealthSource};
use system_tests::bench::{self, Figure};
use system_tests::TestEnv;

const WRITERS: usize = 16;

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

/// The same events through the outbox: (committed, committed + delivered).
async fn outbox(env: &TestEnv, games: &[GameId], per_writer: i64) -> (Duration, Duration) {
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
    let committed = started.elapsed();
    env.flush_outbox().await;
    (committed, started.elapsed())
}

#[tokio::main]
async fn main() {
    bench::init_logging();
    let events: i64 = bench::rounds(2000, 800) as i64;
    let repetitions = bench::rounds(3, 1);
    let env = TestEnv::with(&[("RTMANAGER_POSTGRES_MAX_CONNECTIONS", "16")]).await;
    let one = vec![env.game("bench")];
    let many: Vec<GameId> = (0..WRITERS).map(|i| env.game(&format!("w{i}"))).collect();
    let per = |d: Duration| d / events as u32;
    let mut figures = Vec::new();
    for (label, games) in [("sequential, 1 writer", &one), ("16 writers", &many)] {
        let per_writer = events / games.len() as i64;
        let (mut raw, mut committed, mut delivered) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..repetitions {
            raw.push(bare(&env, games, per_writer).await);
            let (c, d) = outbox(&env, games, per_writer).await;
            committed.push(c);
            delivered.push(d);
        }
        let (raw, committed, delivered) = (
            bench::median(&raw),
            bench::median(&committed),
            bench::median(&delivered),
        );
        eprintln!("{label}: bare {raw:?} committed {committed:?} delivered {delivered:?}");
        let ratio = delivered.as_secs_f64() / raw.as_secs_f64();
        let name = format!("{label}: outbox commit + relay delivery vs bare XADD, per event");
        figures.push(if games.len() == WRITERS {
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
            &format!("{label}: outbox commit only vs bare XADD, per event"),
            bench::us(per(committed)),
            bench::us(per(raw)),
            committed.as_secs_f64() / raw.as_secs_f64(),
        ));
    }
    let notes = vec![format!(
        "{events} events per run, median of {repetitions} alternating runs per side. The \
             time per event is the run's wall time / events (for 16 writers: the aggregate \
             throughput). The outbox commits each event in its own transaction with \
             synchronous commit (the server default here) and delivers with one relay after \
             the writers are done; the bare side is one `XADD` per event on `<health \
             stream>:raw`. Not done: a profile of where the outbox time goes (`perf`, \
             callgrind)."
    )];
    bench::print_section(
        "6. Outbox",
        "Health events through the PostgreSQL outbox and relay against a bare `XADD`.",
        &figures,
        &notes,
        "scripts/bench --only outbox",
    );
}
