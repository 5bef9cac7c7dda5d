//! No process ever logs a secret it was given, and every line it logs is a
//! JSON object that names its job.
//!
//! A full system run at debug level, where every secret is real and in use:
//! PostgreSQL and Redis of the test's own that require a password (SCRAM
//! for PostgreSQL, an ACL user for Redis), API tokens from the variable and
//! from a file. The run goes through the paths that talk about connections
//! and credentials: every job's start-up, each source's events, REST calls
//! with good and bad tokens, PostgreSQL stopped and started again, every
//! Redis connection cut, the one-shot runs, start-ups refused for a wrong
//! password, and SIGTERM. Then every byte of every process's stdout and
//! stderr is searched for each secret.

use std::time::Duration;

use system_tests::job_process::JobProcess;
use system_tests::redis_topologies::RedisNode;
use system_tests::services::PrivatePostgres;
use system_tests::{docker, random_suffix, Services, TestEnv};

mod production;
use production::{
    now_ms, set_engine_health, start_fields, stop_fields, wait_event, wait_results, FAST_PROBES,
};

/// The seven processes, as the tests spawn them.
const JOBS: &[(&str, &[&str])] = &[
    ("start-job", &[]),
    ("stop-job", &[]),
    ("docker-events", &[]),
    ("healthz-prober", &[]),
    ("rest-gateway", &[]),
    ("inspect-cron", &["--every", "1s"]),
    ("cleanup-cron", &["--every", "1s"]),
];

/// The crates whose lines are ours (a tracing target is the module path).
const OUR_CRATES: &[&str] = &[
    "shared",
    "start_job",
    "stop_job",
    "docker_events",
    "inspect_cron",
    "healthz_prober",
    "cleanup_cron",
    "rest_gateway",
];

/// A named secret and its value (distinctive, so a hit is never chance).
struct Secret {
    what: &'static str,
    value: String,
}

fn secret(what: &'static str) -> Secret {
    Secret {
        what,
        // Three suffixes: an API token needs 32 characters or more.
        value: format!(
            "{}{}{}{}",
            what.replace(' ', ""),
            random_suffix(),
            random_suffix(),
            random_suffix()
        ),
    }
}

/// Where a process's output broke a rule.
fn find_secrets(job: &str, output: &str, secrets: &[Secret]) -> Vec<String> {
    let mut found = Vec::new();
    for s in secrets {
        for line in output.lines().filter(|l| l.contains(&s.value)) {
            found.push(format!("{job} logs the {}: {line}", s.what));
        }
    }
    found
}

/// Every line a JSON object with the stable fields: `job` (this process),
/// `level`, `timestamp`, a message; an operation's line names its game,
/// kind, error code and source (the entry or request id); the gateway's
/// request line its request id.
fn check_lines(job: &str, output: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(serde_json::Value::Object(obj)) = serde_json::from_str::<serde_json::Value>(line)
        else {
            problems.push(format!("{job}: not a JSON object: {line}"));
            continue;
        };
        if obj.get("job").and_then(|j| j.as_str()) != Some(job) {
            problems.push(format!("{job}: no job {job:?} at the top: {line}"));
        }
        for key in ["level", "timestamp"] {
            if !obj.get(key).is_some_and(|v| v.is_string()) {
                problems.push(format!("{job}: no {key}: {line}"));
            }
        }
        let fields = &obj["fields"];
        // Libraries' lines (sqlx's statements at debug) may have no message.
        let target = obj.get("target").and_then(|t| t.as_str()).unwrap_or("");
        let ours = OUR_CRATES
            .iter()
            .any(|c| target == *c || target.starts_with(&format!("{c}::")));
        if ours && !fields["message"].is_string() {
            problems.push(format!("{job}: no message: {line}"));
        }
        if fields.get("op_kind").is_some() {
            for key in ["game_id", "error_code", "source_ref"] {
                if fields.get(key).is_none() {
                    problems.push(format!("{job}: an operation line without {key}: {line}"));
                }
            }
        }
        if fields["message"] == "request" && !fields["request_id"].is_string() {
            problems.push(format!("{job}: a request line without request_id: {line}"));
        }
    }
    problems
}

/// One HTTP request to the gateway's API with `token` (if any); the status.
async fn call(base: &str, method: reqwest::Method, path: &str, token: Option<&str>) -> u16 {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut req = http.request(method, format!("{base}{path}"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if path.ends_with("/restart") {
        req = req.header("content-type", "application/json").body("{}");
    }
    req.send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .status()
        .as_u16()
}

/// Runs a process that must end by itself; returns its status and output.
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

/// How many lines of level WARN or ERROR the processes logged so far.
fn warnings(jobs: &[JobProcess]) -> usize {
    jobs.iter()
        .map(|j| {
            j.output()
                .lines()
                .filter(|l| l.contains(r#""level":"WARN""#) || l.contains(r#""level":"ERROR""#))
                .count()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_process_logs_a_secret_and_every_line_is_json_naming_its_job() {
    let pg_password = secret("postgres password");
    let redis_default = secret("redis default password");
    let redis_user = secret("redis user");
    let redis_password = secret("redis password");
    let env_token = secret("api token variable");
    let file_token = secret("api token file");
    let pg = PrivatePostgres::with_password(&pg_password.value);
    let redis = RedisNode::server(Some(&redis_default.value), &[]);
    let created = redis.cli(&[
        "ACL",
        "SETUSER",
        &redis_user.value,
        "on",
        &format!(">{}", redis_password.value),
        "~*",
        "&*",
        "+@all",
    ]);
    assert_eq!(created, "OK");
    let tokens_dir = std::env::temp_dir().join(format!("rtm-tokens-{}", random_suffix()));
    std::fs::create_dir_all(&tokens_dir).unwrap();
    let tokens_file = tokens_dir.join("api-tokens");
    std::fs::write(&tokens_file, format!("{}\n", file_token.value)).unwrap();
    std::fs::set_permissions(
        &tokens_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let api_addr = format!("127.0.0.1:{}", system_tests::free_port());
    let mut overrides: Vec<(&str, &str)> = vec![
        ("RTMANAGER_REDIS_USERNAME", &redis_user.value),
        ("RTMANAGER_REDIS_PASSWORD", &redis_password.value),
        ("RTMANAGER_API_TOKENS", &env_token.value),
        ("RTMANAGER_API_TOKENS_FILE", tokens_file.to_str().unwrap()),
        ("RTMANAGER_INTERNAL_HTTP_ADDR", &api_addr),
        // Every line the code and its libraries have, connection chatter
        // included.
        ("RTMANAGER_LOG_LEVEL", "debug"),
        ("RTMANAGER_CONTAINER_RETENTION_DAYS", "0"),
    ];
    overrides.extend(FAST_PROBES.iter().copied());
    let services = Services {
        redis_addr: Some(redis.addr()),
        database_url: Some(pg.url()),
        docker_host: None,
    };
    let env = TestEnv::with_services(&services, &overrides).await;

    let mut jobs = Vec::new();
    for (job, args) in JOBS {
        let name = vec![("RTMANAGER_CONSUMER_NAME", format!("{job}-{}", env.id))];
        jobs.push(JobProcess::ready(&env, job, args, &name).await);
    }
    let api = format!("http://{api_addr}");

    // The core path, each source, and the REST API with every kind of token.
    let since = now_ms();
    let game = env.game("secret");
    env.xadd(&env.config.start_jobs.stream, &start_fields(&game))
        .await;
    assert_eq!(
        wait_results(&env, &game, since, 1).await[0]["outcome"],
        "success"
    );
    set_engine_health(&env, &game, "fail").await;
    wait_event(&env, &game, since, "probe_failed").await;
    set_engine_health(&env, &game, "ok").await;
    wait_event(&env, &game, since, "probe_recovered").await;
    let record = format!("/api/v1/internal/runtimes/{game}");
    let get = reqwest::Method::GET;
    assert_eq!(
        call(&api, get.clone(), &record, Some(&env_token.value)).await,
        200
    );
    let targets = "/api/v1/internal/monitoring/targets";
    assert_eq!(
        call(&api, get.clone(), targets, Some(&file_token.value)).await,
        200
    );
    let wrong_token = secret("presented wrong token");
    assert_eq!(
        call(&api, get.clone(), targets, Some(&wrong_token.value)).await,
        401
    );
    assert_eq!(call(&api, get.clone(), &record, None).await, 401);
    let restart = format!("{record}/restart");
    let restarted = now_ms();
    assert_eq!(
        call(
            &api,
            reqwest::Method::POST,
            &restart,
            Some(&env_token.value)
        )
        .await,
        200
    );
    wait_event(&env, &game, restarted, "container_started").await;
    let killed = env.game("killed");
    env.xadd(&env.config.start_jobs.stream, &start_fields(&killed))
        .await;
    wait_results(&env, &killed, since, 1).await;
    docker(&["kill", &killed.container_name()]);
    wait_event(&env, &killed, since, "container_exited").await;
    env.xadd(&env.config.stop_jobs.stream, &stop_fields(&game))
        .await;
    wait_results(&env, &game, since, 2).await;

    // PostgreSQL away: every process's reconnect path, with the DSN in hand.
    let before = warnings(&jobs);
    pg.stop();
    env.eventually(
        "a process to log PostgreSQL going away",
        Duration::from_secs(60),
        || {
            let now = warnings(&jobs);
            async move { (now > before).then_some(()) }
        },
    )
    .await;
    pg.start_again();
    let after_pg = env.game("afterpg");
    let since = now_ms();
    env.xadd(&env.config.start_jobs.stream, &start_fields(&after_pg))
        .await;
    wait_results(&env, &after_pg, since, 1).await;

    // Every Redis connection cut: each process authenticates again.
    let killed_clients = redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    assert!(
        killed_clients.parse::<u32>().is_ok_and(|n| n > 0),
        "{killed_clients}"
    );
    // The test's own connections were cut too: back once a PING answers.
    env.eventually(
        "the test's Redis connection back",
        Duration::from_secs(30),
        || async {
            let pong: Result<String, _> = redis::cmd("PING")
                .query_async(&mut env.redis().manager())
                .await;
            pong.ok()
        },
    )
    .await;
    let after_redis = env.game("afterredis");
    let since = now_ms();
    env.xadd(&env.config.start_jobs.stream, &start_fields(&after_redis))
        .await;
    wait_results(&env, &after_redis, since, 1).await;

    // The one-shot runs.
    let mut one_shots = Vec::new();
    let file_sd = env.state_root.join("file_sd.json");
    for (job, args) in [
        ("inspect-cron", vec![]),
        ("cleanup-cron", vec![]),
        (
            "rest-gateway",
            vec!["sync-file-sd", "--out", file_sd.to_str().unwrap()],
        ),
        ("rest-gateway", vec!["redrive-outbox", "--all"]),
    ] {
        let (status, output) = run_to_end(&env, job, &args, &[]).await;
        assert!(status.success(), "{job} {args:?}: {status:?}\n{output}");
        one_shots.push((job, args.contains(&"redrive-outbox"), output));
    }

    // Start-ups refused for a wrong password: an error on stderr (plain
    // text, the one exception to JSON), which must name neither password.
    let wrong_redis = secret("wrong redis password");
    let wrong_pg = secret("wrong postgres password");
    let bad_dsn = env.dsn.replace(&pg_password.value, &wrong_pg.value);
    assert_ne!(bad_dsn, env.dsn, "the DSN carries the password");
    let mut refused = Vec::new();
    for extra in [
        vec![("RTMANAGER_REDIS_PASSWORD", wrong_redis.value.clone())],
        vec![("RTMANAGER_POSTGRES_PRIMARY_DSN", bad_dsn)],
    ] {
        let (status, output) = run_to_end(&env, "start-job", &[], &extra).await;
        assert!(!status.success(), "a wrong password is refused:\n{output}");
        assert!(output.contains("Error: "), "{output}");
        refused.push(output);
    }

    let mut outputs = Vec::new();
    for job in jobs {
        let name = job.job.clone();
        let (status, output) = job.stop_with_output().await;
        assert!(
            status.success(),
            "{name} exits cleanly: {status:?}\n{output}"
        );
        outputs.push((name, output));
    }
    drop(env);
    let _ = std::fs::remove_dir_all(&tokens_dir);

    let secrets = [
        pg_password,
        redis_default,
        redis_user,
        redis_password,
        env_token,
        file_token,
        wrong_token,
        wrong_redis,
        wrong_pg,
    ];
    let mut problems = Vec::new();
    for (job, output) in &outputs {
        problems.extend(find_secrets(job, output, &secrets));
        problems.extend(check_lines(job, output));
    }
    for (job, redrive, output) in &one_shots {
        problems.extend(find_secrets(job, output, &secrets));
        // `redrive-outbox` prints its answer for the operator on stdout.
        if !redrive {
            problems.extend(check_lines(job, output));
        }
    }
    for output in &refused {
        problems.extend(find_secrets("start-job (refused)", output, &secrets));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The run really went through what the search is about.
    let all: String = outputs.iter().map(|(_, o)| o.as_str()).collect();
    for expected in [
        r#""message":"operation done""#,
        r#""message":"request""#,
        r#""level":"DEBUG""#,
    ] {
        assert!(all.contains(expected), "no {expected} line in the run");
    }
}
