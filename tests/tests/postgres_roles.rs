//! The least-privilege deployment of PostgreSQL: `compose/postgres-init.sql`
//! makes the roles and the schema, `rest-gateway migrate` runs the
//! migrations as the owner, and the jobs run as `rtmanagerservice` (DML
//! only) with `RTMANAGER_POSTGRES_MIGRATIONS=off`. On a private PostgreSQL
//! (the roles are the cluster's, so they never touch the shared server) and
//! a private Redis.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use system_tests::job_process::JobProcess;
use system_tests::services::{PrivatePostgres, PrivateRedis};
use system_tests::{free_port, Services, TestEnv, ENGINE};

const TOKEN: &str = "postgres-roles-test-token-0123456789abcdef";

fn init_sql() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../compose/postgres-init.sql")
}

/// `psql` on the private server's `postgres` database as `postgres`.
fn psql(pg: &PrivatePostgres, args: &[&str]) -> String {
    let out = Command::new("psql")
        .arg(format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            pg.port()
        ))
        .args(["-v", "ON_ERROR_STOP=1", "-qAt"])
        .args(args)
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dsn(pg: &PrivatePostgres, role: &str) -> String {
    // No search_path: the init file sets each role's.
    format!(
        "postgres://{role}:unused-with-trust@127.0.0.1:{}/postgres",
        pg.port()
    )
}

async fn run_to_end(
    env: &TestEnv,
    job: &str,
    args: &[&str],
    extra: &[(&str, String)],
) -> (std::process::ExitStatus, String) {
    let mut process = JobProcess::spawn(job, &env.vars, extra, args);
    env.eventually(
        &format!("{job} {args:?} to end"),
        Duration::from_secs(90),
        || {
            let running = process.is_running();
            async move { (!running).then_some(()) }
        },
    )
    .await;
    let output = process.output();
    (process.stop().await, output)
}

async fn results_for(env: &TestEnv, game: &str) -> Vec<HashMap<String, String>> {
    env.read_stream(&env.config.common.streams.job_results)
        .await
        .into_iter()
        .map(|(_, f)| f)
        .filter(|f| f["game_id"] == game)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_run_as_a_dml_only_role_once_the_owner_has_migrated() {
    let pg = PrivatePostgres::start();
    let redis = PrivateRedis::start();
    let services = Services {
        redis_addr: Some(redis.addr()),
        database_url: Some(pg.url()),
        docker_host: None,
    };
    let env = TestEnv::with_services(&services, &[("RTMANAGER_API_TOKENS", TOKEN)]).await;
    psql(
        &pg,
        &[
            "-v",
            "service_password=unused-with-trust",
            "-f",
            init_sql().to_str().unwrap(),
        ],
    );

    // The dedicated step, as the owner.
    let owner = [(
        "RTMANAGER_POSTGRES_PRIMARY_DSN",
        dsn(&pg, "rtmanager_owner"),
    )];
    let (status, output) = run_to_end(&env, "rest-gateway", &["migrate"], &owner).await;
    assert!(status.success(), "rest-gateway migrate: {output}");
    let tables = psql(
        &pg,
        &[
            "-c",
            "SELECT tableowner FROM pg_tables WHERE schemaname = 'rtmanager' GROUP BY 1",
        ],
    );
    assert_eq!(
        tables.trim(),
        "rtmanager_owner",
        "every table is the owner's"
    );

    // `auto` as the DML-only role: refused at start-up, naming the setting.
    let service_dsn = dsn(&pg, "rtmanagerservice");
    let auto = [("RTMANAGER_POSTGRES_PRIMARY_DSN", service_dsn.clone())];
    let (status, output) = run_to_end(&env, "start-job", &[], &auto).await;
    assert!(
        !status.success(),
        "auto as rtmanagerservice started: {output}"
    );
    assert!(
        output.contains("permission denied")
            && output.contains("RTMANAGER_POSTGRES_MIGRATIONS=off")
            && output.contains("rest-gateway migrate"),
        "{output}"
    );

    // `off`: the jobs do their work with DML alone.
    let off = [
        ("RTMANAGER_POSTGRES_PRIMARY_DSN", service_dsn.clone()),
        ("RTMANAGER_POSTGRES_MIGRATIONS", "off".to_owned()),
    ];
    let start = JobProcess::ready(&env, "start-job", &[], &off).await;
    let stop = JobProcess::ready(&env, "stop-job", &[], &off).await;
    let http_addr = format!("127.0.0.1:{}", free_port());
    let mut gateway_vars = off.to_vec();
    gateway_vars.push(("RTMANAGER_INTERNAL_HTTP_ADDR", http_addr.clone()));
    let gateway = JobProcess::ready(&env, "rest-gateway", &[], &gateway_vars).await;

    let game = env.game("dml");
    env.xadd(
        &env.config.start_jobs.stream,
        &[
            ("game_id", game.as_str()),
            ("image_ref", ENGINE),
            ("requested_at_ms", "1775121700000"),
        ],
    )
    .await;
    let started = env
        .eventually("the start result", Duration::from_secs(60), || async {
            results_for(&env, game.as_str()).await.into_iter().next()
        })
        .await;
    assert_eq!(started["outcome"], "success", "{started:?}");

    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let shown = http
        .get(format!(
            "http://{http_addr}/api/v1/internal/runtimes/{game}"
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), 200);
    let body: serde_json::Value = serde_json::from_str(&shown.text().await.unwrap()).unwrap();
    assert_eq!(body["record"]["status"], "running", "{body}");

    env.xadd(
        &env.config.stop_jobs.stream,
        &[
            ("game_id", game.as_str()),
            ("reason", "cancelled"),
            ("requested_at_ms", "1775121700001"),
        ],
    )
    .await;
    let stopped = env
        .eventually("the stop result", Duration::from_secs(60), || async {
            results_for(&env, game.as_str()).await.get(1).cloned()
        })
        .await;
    assert_eq!(stopped["outcome"], "success", "{stopped:?}");
    for process in [start, stop, gateway] {
        let job = process.job.clone();
        let (status, output) = process.stop_with_output().await;
        assert!(status.success(), "{job}: {status:?}\n{output}");
        assert!(!output.contains("permission denied"), "{job}: {output}");
    }

    // `off` against a schema that lacks a migration: refused, naming it.
    let newest = psql(
        &pg,
        &[
            "-c",
            "DELETE FROM rtmanager._sqlx_migrations WHERE version = \
                 (SELECT max(version) FROM rtmanager._sqlx_migrations) RETURNING version",
        ],
    );
    let newest = newest.trim();
    assert!(!newest.is_empty());
    let (status, output) = run_to_end(&env, "stop-job", &[], &off).await;
    assert!(
        !status.success(),
        "off with a migration missing started: {output}"
    );
    assert!(
        output.contains(newest) && output.contains("rest-gateway migrate"),
        "{output}"
    );
}
