//! PostgreSQL and Redis over TLS, on Debian's servers with a CA the test
//! makes: a job binary connects with `sslmode=verify-full` and
//! `RTMANAGER_REDIS_TLS` and answers a start job; one that trusts another
//! CA is refused at start-up, the error naming the variable.

use std::time::Duration;

use system_tests::job_process::JobProcess;
use system_tests::services::{PrivatePostgres, PrivateRedis};
use system_tests::tls::TestCa;
use system_tests::{Services, TestEnv, ENGINE};

async fn run_to_end(
    env: &TestEnv,
    job: &str,
    extra: &[(&str, String)],
) -> (std::process::ExitStatus, String) {
    let mut process = JobProcess::spawn(job, &env.vars, extra, &[]);
    env.eventually(&format!("{job} to end"), Duration::from_secs(90), || {
        let running = process.is_running();
        async move { (!running).then_some(()) }
    })
    .await;
    let output = process.output();
    (process.stop().await, output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_talks_tls_to_postgres_and_redis_and_refuses_an_unknown_ca() {
    let ca = TestCa::new("rtm-test-ca");
    let pg = PrivatePostgres::with_tls(&ca);
    let redis = PrivateRedis::with_tls(&ca);
    let root = ca.ca_cert().display().to_string();
    let services = Services {
        redis_addr: Some(redis.addr()),
        database_url: Some(format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={root}",
            pg.port()
        )),
        docker_host: None,
    };
    let env = TestEnv::with_services(
        &services,
        &[
            ("RTMANAGER_REDIS_TLS", "true"),
            ("RTMANAGER_REDIS_TLS_CA_FILE", root.as_str()),
        ],
    )
    .await;

    let start = JobProcess::ready(&env, "start-job", &[], &[]).await;
    let game = env.game("tls");
    env.xadd(
        &env.config.start_jobs.stream,
        &[
            ("game_id", game.as_str()),
            ("image_ref", ENGINE),
            ("requested_at_ms", "1775121700000"),
        ],
    )
    .await;
    let result = env
        .eventually("the start result", Duration::from_secs(60), || async {
            env.read_stream(&env.config.common.streams.job_results)
                .await
                .into_iter()
                .map(|(_, f)| f)
                .find(|f| f["game_id"] == game.as_str())
        })
        .await;
    assert_eq!(result["outcome"], "success", "{result:?}");
    // Every connection of the job is encrypted, as PostgreSQL sees it.
    let ssl: Vec<bool> = sqlx::query_scalar(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.backend_type = 'client backend'",
    )
    .fetch_all(env.db().pool())
    .await
    .unwrap();
    assert!(!ssl.is_empty() && ssl.iter().all(|s| *s), "{ssl:?}");
    let (status, output) = start.stop_with_output().await;
    assert!(status.success(), "{output}");

    // A client trusting another CA is refused, and told which setting.
    let other = TestCa::new("some-other-ca");
    let other_root = other.ca_cert().display().to_string();
    let (status, output) = run_to_end(
        &env,
        "start-job",
        &[("RTMANAGER_REDIS_TLS_CA_FILE", other_root.clone())],
    )
    .await;
    assert!(!status.success(), "{output}");
    assert!(output.contains("RTMANAGER_REDIS_TLS_CA_FILE"), "{output}");
    let dsn = env.dsn.replace(&root, &other_root);
    assert_ne!(dsn, env.dsn);
    let (status, output) = run_to_end(
        &env,
        "start-job",
        &[("RTMANAGER_POSTGRES_PRIMARY_DSN", dsn)],
    )
    .await;
    assert!(!status.success(), "{output}");
    assert!(
        output.contains("RTMANAGER_POSTGRES_PRIMARY_DSN"),
        "{output}"
    );
    // Plain TCP to a TLS-only Redis is refused too.
    let (status, output) = run_to_end(
        &env,
        "start-job",
        &[
            ("RTMANAGER_REDIS_TLS", "false".to_owned()),
            ("RTMANAGER_REDIS_TLS_CA_FILE", String::new()),
        ],
    )
    .await;
    assert!(!status.success(), "{output}");
    assert!(output.contains("RTMANAGER_REDIS_MASTER_ADDR"), "{output}");
}
