//! Nothing is lost or reordered while Redis is away, and the processes fail
//! fast and clearly on bad settings.

use std::process::{Command, Stdio};
use std::time::Duration;

use shared::adapters::redis::RedisClient;
use shared::config::Secret;
use shared::domain::{HealthDetails, HealthEvent, HealthSource};
use shared::outbox::Outbox;
use system_tests::job_process::KillOnDrop;
use system_tests::services::PrivateRedis;
use system_tests::TestEnv;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn events_emitted_while_redis_is_down_arrive_in_order_after_it_returns() {
    let env = TestEnv::new().await;
    let mut private = PrivateRedis::start();
    let redis = RedisClient::connect(&private.addr(), &Secret::default())
        .await
        .unwrap();
    let publisher = Outbox::new(
        env.db().clone(),
        env.config.common.streams.clone(),
        env.infra.metrics.clone(),
    );
    let stop = CancellationToken::new();
    let relay = tokio::spawn(publisher.relay(redis.clone()).run(stop.clone()));

    let game = env.game("outage");
    let event = |i: i64| HealthEvent {
        game_id: game.clone(),
        container_id: "c".into(),
        occurred_at_ms: 1_000 + i,
        details: HealthDetails::ProbeFailed {
            consecutive_failures: i,
            last_status: 500,
            last_error: format!("failure {i}"),
        },
    };
    publisher
        .publish(&[publisher.health(HealthSource::HealthzProber, &event(1))])
        .await
        .unwrap();
    let stream = env.config.common.streams.health_events.clone();
    let conn = redis.manager();
    env.eventually("the first event in redis", Duration::from_secs(10), || {
        let (mut conn, stream) = (conn.clone(), stream.clone());
        async move {
            let len: i64 = redis::cmd("XLEN")
                .arg(&stream)
                .query_async(&mut conn)
                .await
                .ok()?;
            (len == 1).then_some(())
        }
    })
    .await;
    private.stop();
    for i in 2..=6 {
        // Emission only needs PostgreSQL: it succeeds while Redis is away.
        publisher
            .publish(&[publisher.health(HealthSource::HealthzProber, &event(i))])
            .await
            .expect("emit while redis is down");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    private.start_again();

    let mut conn = redis.manager();
    let delivered = env
        .eventually("the backlog", Duration::from_secs(30), || {
            let (mut conn, stream) = (conn.clone(), stream.clone());
            async move {
                let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                    .arg(&stream)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                (reply.ids.len() >= 5).then_some(reply.ids)
            }
        })
        .await;
    // Entry 1 went to the first server instance, which kept nothing.
    let failures: Vec<String> = delivered
        .iter()
        .map(|e| shared::adapters::redis::entry_fields(&e.map)["details"].clone())
        .map(|d| {
            serde_json::from_str::<serde_json::Value>(&d).unwrap()["consecutive_failures"]
                .to_string()
        })
        .collect();
    assert_eq!(
        failures,
        ["2", "3", "4", "5", "6"],
        "in order, none lost, none twice"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(reply.ids.len(), 5, "no duplicates after more relay passes");
    let undelivered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE delivered_at IS NULL")
            .fetch_one(env.db().pool())
            .await
            .unwrap();
    assert_eq!(undelivered, 0);
    stop.cancel();
    relay.await.unwrap();
}

fn start_job_binary() -> std::path::PathBuf {
    system_tests::job_binary("start-job")
}

#[tokio::test]
async fn the_binary_refuses_bad_settings_naming_the_variable() {
    let env = TestEnv::new().await;
    for (var, value, expect) in [
        (
            "RTMANAGER_REDIS_MASTER_ADDR",
            None,
            "RTMANAGER_REDIS_MASTER_ADDR",
        ),
        (
            "RTMANAGER_START_JOBS_CONCURRENCY",
            Some("many"),
            "RTMANAGER_START_JOBS_CONCURRENCY",
        ),
        (
            "RTMANAGER_DOCKER_NETWORK",
            Some("no-such-network-rtm"),
            "RTMANAGER_DOCKER_NETWORK",
        ),
        (
            "RTMANAGER_POSTGRES_PRIMARY_DSN",
            Some("postgres://nobody:secret-pw@127.0.0.1:1/x"),
            "RTMANAGER_POSTGRES_PRIMARY_DSN",
        ),
    ] {
        let mut cmd = Command::new(start_job_binary());
        cmd.env_clear().envs(env.vars.clone());
        match value {
            Some(v) => cmd.env(var, v),
            None => cmd.env_remove(var),
        };
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{var}: exit status {:?}", out.status);
        assert!(stderr.contains(expect), "{var}: {stderr}");
        assert!(
            !stderr.contains("secret-pw"),
            "the password never reaches the output: {stderr}"
        );
    }
}

#[tokio::test]
async fn the_binary_exits_zero_on_sigterm() {
    let env = TestEnv::new().await;
    let mut child = KillOnDrop::spawn(
        Command::new(start_job_binary())
            .env_clear()
            .envs(env.vars.clone())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        "start-job",
    );
    // Wait for its consumer group: the process is up and consuming.
    let mut conn = env.redis().manager();
    env.eventually("the consumer group", Duration::from_secs(30), || {
        let mut conn = conn.clone();
        let stream = env.config.start_jobs.stream.clone();
        async move {
            let groups: redis::Value = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&stream)
                .query_async(&mut conn)
                .await
                .ok()?;
            matches!(groups, redis::Value::Array(ref g) if !g.is_empty()).then_some(())
        }
    })
    .await;
    let _: redis::Value = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn a_go_style_dsn_keeps_the_tables_in_its_search_path_schema() {
    let env = TestEnv::new().await;
    let schema = format!("go_{}", env.id);
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(env.db().pool())
        .await
        .unwrap();
    let base = std::env::var("TEST_DATABASE_URL").unwrap();
    let dsn = format!("{base}?search_path={schema}&sslmode=disable");
    let db = shared::adapters::postgres::Database::connect(&dsn, 1)
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let table: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT to_regclass('{schema}.runtime_records')::text"
    )))
    .fetch_one(env.db().pool())
    .await
    .unwrap();
    assert!(table.is_some(), "migrations ran in {schema}");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(env.db().pool())
        .await
        .unwrap();
}
