//! The harness itself: a dropped [`TestEnv`] leaves nothing behind, not even
//! what a failing test would leave mid-way (a game under an id the env never
//! handed out, a lease its holder never released, a transaction still open
//! on the schema).

use shared::adapters::redis::{lease_key, streaks::streak_key};
use shared::domain::{GameId, OpSource, Outcome};
use shared::operations::StartRequest;
use system_tests::{docker, TestEnv, ENGINE};

#[tokio::test]
async fn a_dropped_env_leaves_no_container_network_schema_key_or_directory() {
    let env = TestEnv::new().await;
    let operations = system_tests::operations(&env.config, &env.infra).unwrap();
    let game = env.game("harness");
    // What the gateway's fuzzer does: an id made up, ending in the env's id.
    let made_up = GameId::parse(&format!("made-up-{}", env.id)).unwrap();
    for g in [&game, &made_up] {
        let started = operations
            .start(&StartRequest {
                game_id: g.clone(),
                image_ref: ENGINE.to_owned(),
                op_source: OpSource::AdminRest,
                source_ref: "harness".into(),
            })
            .await;
        assert_eq!(started.outcome, Outcome::Success, "{started:?}");
    }
    env.xadd(&env.config.start_jobs.stream, &[("k", "v")]).await;
    env.flush_outbox().await;
    let instance: String = sqlx::query_scalar("SELECT instance_id FROM outbox_identity")
        .fetch_one(env.db().pool())
        .await
        .unwrap();
    // A crashed holder's lease and streak, and docker-events' cursor.
    let mut redis = env.redis().manager();
    let left_keys = [
        lease_key(&game),
        streak_key(&made_up),
        format!("rtmanager:docker_events:cursor:{instance}:daemon"),
    ];
    for key in &left_keys {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("1")
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    // A session in a transaction on the schema: it holds a lock the drop of
    // the schema waits for, and nothing will end it but the env.
    let mut open = env.db().pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE runtime_records IN ACCESS SHARE MODE")
        .execute(&mut *open)
        .await
        .unwrap();
    let (id, schema, network, state_root) = (
        env.id.clone(),
        env.schema.clone(),
        env.network.clone(),
        env.state_root.clone(),
    );
    let streams_prefix = format!("t{id}:");
    assert!(
        !docker(&["ps", "-aq", "--filter", &format!("name=-{id}$")]).is_empty(),
        "the games' containers exist before the drop"
    );

    drop(env);
    drop(open);

    assert_eq!(
        docker(&["ps", "-aq", "--filter", &format!("name=-{id}$")]),
        "",
        "containers of the env's games"
    );
    assert_eq!(
        docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("name=^{network}$")
        ]),
        "",
        "the env's network"
    );
    let url = std::env::var("TEST_DATABASE_URL").unwrap();
    let admin = shared::adapters::postgres::Database::connect(&url, 1)
        .await
        .unwrap();
    let schemas: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname = $1")
        .bind(&schema)
        .fetch_one(admin.pool())
        .await
        .unwrap();
    assert_eq!(schemas, 0, "schema {schema}");
    let client = redis::Client::open(format!(
        "redis://{}",
        std::env::var("TEST_REDIS_ADDR").unwrap()
    ))
    .unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let left: Vec<&String> = keys
        .iter()
        .filter(|k| k.contains(&streams_prefix) || k.contains(&instance) || left_keys.contains(k))
        .collect();
    assert!(left.is_empty(), "keys of the env: {left:?}");
    assert!(!state_root.exists(), "{}", state_root.display());
}
