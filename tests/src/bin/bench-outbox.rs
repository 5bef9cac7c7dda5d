//! What "nothing lost" costs: health events through the PostgreSQL outbox and
//! relay, against a bare `XADD` of the same fields, in the same run, on the
//! same servers. Run with `scripts/bench` (it starts the services).

use std::time::Instant;

use shared::domain::{HealthDetails, HealthEvent, HealthSource};
use system_tests::TestEnv;

const EVENTS: i64 = 2000;

#[tokio::main]
async fn main() {
    let env = TestEnv::new().await;
    let game = env.game("bench");
    let event = |i: i64| HealthEvent {
        game_id: game.clone(),
        container_id: "c".into(),
        occurred_at_ms: 1_000 + i,
        details: HealthDetails::ProbeFailed {
            consecutive_failures: i,
            last_status: 500,
            last_error: "status 500".into(),
        },
    };

    let raw_stream = format!("{}:raw", env.config.common.streams.health_events);
    let mut conn = env.redis().manager();
    let started = Instant::now();
    for i in 0..EVENTS {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&raw_stream).arg("*");
        for (k, v) in event(i).stream_fields() {
            cmd.arg(k).arg(v);
        }
        let _: String = cmd.query_async(&mut conn).await.expect("XADD");
    }
    let raw = started.elapsed();

    let started = Instant::now();
    for i in 0..EVENTS {
        let outbox = &env.infra.outbox;
        outbox
            .publish(&[outbox.health(HealthSource::HealthzProber, &event(i))])
            .await
            .expect("emit");
    }
    let committed = started.elapsed();
    env.flush_outbox().await;
    let outbox = started.elapsed();

    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / EVENTS as f64;
    println!("events: {EVENTS}, sequential, one client");
    println!("bare XADD:                      {:8.1} us/event", per(raw));
    println!(
        "outbox commit (snapshot+row):   {:8.1} us/event",
        per(committed)
    );
    println!(
        "outbox commit + relay delivery: {:8.1} us/event",
        per(outbox)
    );
    println!(
        "ratio outbox/bare:              {:8.2}x",
        outbox.as_secs_f64() / raw.as_secs_f64()
    );
}
