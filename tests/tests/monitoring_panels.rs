//! Every panel of `monitoring/grafana/dashboards` and every series an alert
//! of `monitoring/prometheus/rules` reads has data in a real Prometheus
//! (Debian's `prometheus`) that scrapes the real processes through a
//! scripted run.
//!
//! The Prometheus runs `monitoring/prometheus/prometheus.yml` itself: only
//! where each job finds its targets is changed (the processes' metrics
//! addresses, the gateway's HTTP SD, the file_sd file of a real
//! `sync-file-sd`), and the intervals shortened. A game container's Alloy is
//! stood in for by a Prometheus in agent mode that scrapes a node exporter
//! under the game's labels and remote-writes to the first one, the
//! canonical metrics path of seed 003. The monitoring host's node exporter
//! reads the sync's textfile.
//!
//! The run: starts (one of them failing, its admin intent refused by Redis
//! until parked), a malformed entry, a probe failure and recovery, a killed
//! engine, a clean exit inspect-cron settles, cleanup passes, a stop, a consumer group Redis lost,
//! REST calls, a failing discovery request, a file_sd sync. Then each panel's query (the per-game one for
//! a game still running) and each alert's selectors are asked of
//! Prometheus' HTTP API, and the test fails naming every one that returns
//! nothing, with the metrics missing behind it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use serde_yaml_ng::Value as Yaml;
use system_tests::job_process::JobProcess;
use system_tests::monitoring::{self, Selector};
use system_tests::{docker, free_port, TestEnv, ENGINE};

mod production;
use production::{
    now_ms, set_engine_health, start_fields, stop_fields, wait_event, wait_results, FAST_PROBES,
};

const TOKEN: &str = "monitoring-panels-token-0123456789abcdef";

/// The seven processes and how they run here: the cron jobs with
/// `--every`, so that they serve /metrics.
const JOBS: &[(&str, &[&str])] = &[
    ("start-job", &[]),
    ("stop-job", &[]),
    ("docker-events", &[]),
    ("healthz-prober", &[]),
    ("rest-gateway", &[]),
    ("inspect-cron", &["--every", "1s"]),
    ("cleanup-cron", &["--every", "1s"]),
];

fn which(tool: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(tool))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!("{tool} is not installed: run scripts/install-test-tools (Debian's prometheus and prometheus-node-exporter)")
        })
}

/// A server process of the monitoring side, killed (by its pid) on drop.
struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(name: &'static str, program: &Path, args: &[String], dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Self { name, child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `url` to answer 2xx.
async fn wait_http(daemon: &Daemon, url: &str) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{} did not answer {url}:\n{}",
            daemon.name,
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Where the test's Prometheus finds what the shipped config discovers.
struct Targets<'a> {
    processes: BTreeMap<&'a str, String>,
    prometheus: String,
    node: String,
    discovery_url: String,
    token_file: PathBuf,
    file_sd: PathBuf,
    rules: PathBuf,
    /// A loopback port nothing listens on (see `game-engines`).
    closed: String,
}

fn seq(items: Vec<Yaml>) -> Yaml {
    Yaml::Sequence(items)
}

fn map(pairs: Vec<(&str, Yaml)>) -> Yaml {
    Yaml::Mapping(pairs.into_iter().map(|(k, v)| (Yaml::from(k), v)).collect())
}

fn static_target(addr: &str) -> Yaml {
    seq(vec![map(vec![("targets", seq(vec![Yaml::from(addr)]))])])
}

/// `monitoring/prometheus/prometheus.yml` pointed at the test's processes:
/// each job keeps its name, labels and relabeling; only its service
/// discovery and the intervals change. A job the test does not know fails
/// the test, so the config and this test stay in step.
fn test_config(targets: &Targets) -> String {
    let path = monitoring::dir().join("prometheus/prometheus.yml");
    let mut config: Yaml =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).expect("prometheus.yml");
    config["global"]["scrape_interval"] = Yaml::from("1s");
    config["global"]["scrape_timeout"] = Yaml::from("1s");
    config["global"]["evaluation_interval"] = Yaml::from("1s");
    config["rule_files"] = seq(vec![Yaml::from(
        targets.rules.join("*.rules.yml").to_str().unwrap(),
    )]);
    let mut seen = BTreeSet::new();
    for job in config["scrape_configs"]
        .as_sequence_mut()
        .expect("scrape_configs")
    {
        let name = job["job_name"].as_str().expect("job_name").to_owned();
        let job = job.as_mapping_mut().unwrap();
        match name.as_str() {
            "prometheus" => {
                job.insert("static_configs".into(), static_target(&targets.prometheus));
            }
            "node" => {
                job.insert("static_configs".into(), static_target(&targets.node));
            }
            "game-engines" => {
                let file_sd = job.get_mut("file_sd_configs").expect("file_sd_configs");
                file_sd[0]["files"] = seq(vec![Yaml::from(targets.file_sd.to_str().unwrap())]);
                file_sd[0]["refresh_interval"] = Yaml::from("1s");
                let http_sd = job.get_mut("http_sd_configs").expect("http_sd_configs");
                http_sd[0]["url"] = Yaml::from(targets.discovery_url.as_str());
                http_sd[0]["refresh_interval"] = Yaml::from("1s");
                // The test's gateway serves plain HTTP (no certificate).
                http_sd[0].as_mapping_mut().unwrap().remove("tls_config");
                http_sd[0]["authorization"]["credentials_file"] =
                    Yaml::from(targets.token_file.to_str().unwrap());
                // The engines' names resolve only in Docker's DNS: their
                // scrapes go to a closed loopback port instead, so no
                // lookup leaves the machine. `up` is 0 either way (the test
                // engine serves no /metrics); the series is what counts.
                job.insert(
                    "relabel_configs".into(),
                    seq(vec![map(vec![
                        ("target_label", Yaml::from("__address__")),
                        ("replacement", Yaml::from(targets.closed.as_str())),
                    ])]),
                );
            }
            process => {
                let addr = targets.processes.get(process).unwrap_or_else(|| {
                    panic!("prometheus.yml has a job {process:?} this test does not know")
                });
                assert!(
                    job.remove("dns_sd_configs").is_some(),
                    "{process}: discovered by DNS in the shipped config"
                );
                job.insert("static_configs".into(), static_target(addr));
            }
        }
        seen.insert(name);
    }
    let mut expected: BTreeSet<String> = targets.processes.keys().map(|s| s.to_string()).collect();
    expected.extend(["prometheus", "node", "game-engines"].map(String::from));
    assert_eq!(seen, expected, "the jobs of prometheus.yml");
    serde_yaml_ng::to_string(&config).unwrap()
}

/// Prometheus' HTTP API.
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// An instant query's result vector, or the error Prometheus gave.
    async fn query(&self, query: &str) -> Result<Vec<Value>, String> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.base),
            &[("query", query)],
        )
        .map_err(|e| e.to_string())?;
        let resp = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        let body: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        match &body["data"]["result"] {
            Value::Array(items) => Ok(items.clone()),
            // A scalar (`time() - ...` folded) is data.
            other if !other.is_null() => Ok(vec![other.clone()]),
            _ => Ok(Vec::new()),
        }
    }

    async fn has_data(&self, query: &str) -> bool {
        self.query(query).await.is_ok_and(|r| !r.is_empty())
    }

    /// Polls until `query` has data; false after `deadline`.
    async fn wait_data(&self, query: &str, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        while tokio::time::Instant::now() < until {
            if self.has_data(query).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        false
    }
}

/// The selectors of `expr` with no series in Prometheus.
async fn missing(api: &Api, expr: &str, game: &str) -> Vec<String> {
    let mut gone = Vec::new();
    let mut asked = BTreeSet::new();
    for Selector { metric, matchers } in monitoring::selectors(expr) {
        let matchers = matchers
            .replace("$game_id", game)
            .replace("${game_id}", game);
        let query = format!("{metric}{matchers}");
        if asked.insert(query.clone()) && !api.has_data(&query).await {
            gone.push(query);
        }
    }
    gone
}

/// The number of lines of `process`'s output containing `text`.
fn lines_with(process: &JobProcess, text: &str) -> usize {
    process
        .output()
        .lines()
        .filter(|l| l.contains(text))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_panel_and_every_alerted_series_has_data_after_a_scripted_run() {
    let prometheus_bin = which("prometheus");
    let node_exporter_bin = which("prometheus-node-exporter");
    let mut overrides: Vec<(&str, &str)> = vec![
        ("RTMANAGER_API_TOKENS", TOKEN),
        // cleanup-cron removes a container as soon as its game stopped.
        ("RTMANAGER_CONTAINER_RETENTION_DAYS", "0"),
        ("RTMANAGER_RECONCILE_INTERVAL", "1s"),
    ];
    overrides.extend(FAST_PROBES.iter().copied());
    let env = TestEnv::with(&overrides).await;
    let dir = env.state_root.join("monitoring");
    std::fs::create_dir_all(dir.join("textfile")).unwrap();

    // The processes.
    let api_addr = format!("127.0.0.1:{}", free_port());
    let mut jobs = BTreeMap::new();
    for (job, args) in JOBS {
        let extra = vec![
            ("RTMANAGER_CONSUMER_NAME", format!("{job}-{}", env.id)),
            ("RTMANAGER_INTERNAL_HTTP_ADDR", api_addr.clone()),
        ];
        jobs.insert(*job, JobProcess::ready(&env, job, args, &extra).await);
    }

    // The monitoring side: the host's node exporter, Prometheus, and the
    // stand-in for the kept game's container Alloy.
    let kept = env.game("kept");
    let node_addr = format!("127.0.0.1:{}", free_port());
    let node = Daemon::spawn(
        "node-exporter",
        &node_exporter_bin,
        &[
            format!("--web.listen-address={node_addr}"),
            "--collector.disable-defaults".into(),
            "--collector.uname".into(),
            "--collector.cpu".into(),
            "--collector.meminfo".into(),
            "--collector.textfile".into(),
            format!(
                "--collector.textfile.directory={}",
                dir.join("textfile").display()
            ),
        ],
        &dir,
    );
    wait_http(&node, &format!("http://{node_addr}/metrics")).await;

    let prometheus_addr = format!("127.0.0.1:{}", free_port());
    let token_file = dir.join("api-token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let file_sd = dir.join("rtmanager-engines.json");
    let config = test_config(&Targets {
        processes: jobs
            .iter()
            .map(|(job, p)| (*job, p.metrics_addr.clone()))
            .collect(),
        prometheus: prometheus_addr.clone(),
        node: node_addr.clone(),
        discovery_url: format!("http://{api_addr}/api/v1/internal/monitoring/targets"),
        token_file,
        file_sd: file_sd.clone(),
        rules: monitoring::dir().join("prometheus/rules"),
        closed: format!("127.0.0.1:{}", free_port()),
    });
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let prometheus = Daemon::spawn(
        "prometheus",
        &prometheus_bin,
        &[
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address={prometheus_addr}"),
            "--web.enable-remote-write-receiver".into(),
        ],
        &dir,
    );
    wait_http(&prometheus, &format!("http://{prometheus_addr}/-/ready")).await;

    let agent_addr = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        dir.join("agent.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: game-container\n    static_configs:\n      - targets: ['{node_addr}']\n        \
             labels: {{vmid: '{kept}', instance: 'galaxy-game-{kept}', container_type: game-engine}}\n\
             remote_write:\n  - url: http://{prometheus_addr}/api/v1/write\n"
        ),
    )
    .unwrap();
    let agent = Daemon::spawn(
        "agent",
        &prometheus_bin,
        &[
            "--enable-feature=agent".into(),
            format!("--config.file={}", dir.join("agent.yml").display()),
            format!("--storage.agent.path={}", dir.join("agent-data").display()),
            format!("--web.listen-address={agent_addr}"),
        ],
        &dir,
    );
    wait_http(&agent, &format!("http://{agent_addr}/-/ready")).await;

    // The scripted run.
    let since = now_ms();
    let start_stream = env.config.start_jobs.stream.clone();
    env.xadd(&start_stream, &start_fields(&kept)).await;
    assert_eq!(
        wait_results(&env, &kept, since, 1).await[0]["outcome"],
        "success"
    );
    // Discovered, running, and no container Alloy writes its series.
    let quiet = env.game("quiet");
    env.xadd(&start_stream, &start_fields(&quiet)).await;
    wait_results(&env, &quiet, since, 1).await;
    let dies = env.game("dies");
    env.xadd(&start_stream, &start_fields(&dies)).await;
    wait_results(&env, &dies, since, 1).await;

    // A failing start (nothing serves that registry): its admin intent meets
    // a stream key Redis refuses (a string), three times, and is parked.
    let intents = env.config.common.streams.notification_intents.clone();
    let _: () = redis::cmd("SET")
        .arg(&intents)
        .arg("not a stream")
        .query_async(&mut env.redis().manager())
        .await
        .unwrap();
    let broken = env.game("broken");
    env.xadd(
        &start_stream,
        &[
            ("game_id", broken.as_str()),
            ("image_ref", "127.0.0.1:9/galaxy/missing:1.0.0"),
        ],
    )
    .await;
    env.eventually("a parked outbox row", Duration::from_secs(90), || async {
        let parked: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL")
                .fetch_one(env.db().pool())
                .await
                .unwrap();
        (parked > 0).then_some(())
    })
    .await;
    // A malformed entry (no game id): dead-lettered.
    env.xadd(&start_stream, &[("image_ref", ENGINE)]).await;
    let dead = format!("{start_stream}:dead");
    env.eventually("a dead letter", Duration::from_secs(60), || async {
        (!env.read_stream(&dead).await.is_empty()).then_some(())
    })
    .await;

    // A probe failing, then recovering.
    set_engine_health(&env, &kept, "fail").await;
    wait_event(&env, &kept, since, "probe_failed").await;
    set_engine_health(&env, &kept, "ok").await;
    wait_event(&env, &kept, since, "probe_recovered").await;

    // A death, then an inspect pass after it.
    let passes = lines_with(&jobs["inspect-cron"], "inspect pass done");
    docker(&["kill", &dies.container_name()]);
    wait_event(&env, &dies, since, "container_exited").await;
    env.eventually(
        "an inspect pass after the death",
        Duration::from_secs(60),
        || {
            let now = lines_with(&jobs["inspect-cron"], "inspect pass done");
            async move { (now > passes).then_some(()) }
        },
    )
    .await;

    // A clean exit, which only inspect-cron's reconcile reports.
    let exits = env.game("exits");
    env.xadd(&start_stream, &start_fields(&exits)).await;
    wait_results(&env, &exits, since, 1).await;
    engine_control(&env, &exits, "exit=0").await;
    wait_event(&env, &exits, since, "inspect_unhealthy").await;

    // A stop, then the cleanup of the stopped containers.
    let stopped = env.game("stopped");
    env.xadd(&start_stream, &start_fields(&stopped)).await;
    wait_results(&env, &stopped, since, 1).await;
    env.xadd(&env.config.stop_jobs.stream, &stop_fields(&stopped))
        .await;
    wait_results(&env, &stopped, since, 2).await;
    env.eventually(
        "cleanup-cron to remove the stopped containers",
        Duration::from_secs(60),
        || async {
            [&stopped, &dies, &exits]
                .iter()
                .all(|g| system_tests::inspect(&g.container_name()).is_none())
                .then_some(())
        },
    )
    .await;

    // Redis loses the start jobs' group: start-job recreates it.
    let _: () = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(&start_stream)
        .arg(&env.config.start_jobs.group)
        .query_async(&mut env.redis().manager())
        .await
        .unwrap();
    let regroup = now_ms();
    env.xadd(&start_stream, &start_fields(&kept)).await;
    wait_results(&env, &kept, regroup, 1).await;

    // REST calls: a read, discovery, one without a token.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for (path, token, status) in [
        (
            format!("/api/v1/internal/runtimes/{kept}"),
            Some(TOKEN),
            200,
        ),
        (
            "/api/v1/internal/monitoring/targets".to_owned(),
            Some(TOKEN),
            200,
        ),
        ("/api/v1/internal/monitoring/targets".to_owned(), None, 401),
    ] {
        let mut req = http.get(format!("http://{api_addr}{path}"));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        assert_eq!(
            req.send().await.unwrap().status().as_u16(),
            status,
            "{path}"
        );
    }

    // Discovery failing (a table gone for one request, as an outage of
    // PostgreSQL would): a 5xx on the discovery route.
    let failing = |from: &'static str, to: &'static str| {
        let pool = env.db().pool().clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER TABLE {from} RENAME TO {to}"
            )))
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    failing("health_snapshots", "health_snapshots_gone").await;
    let discovery = http
        .get(format!(
            "http://{api_addr}/api/v1/internal/monitoring/targets"
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .status();
    failing("health_snapshots_gone", "health_snapshots").await;
    assert!(discovery.is_server_error(), "{discovery}");

    // The file_sd sync, with its textfile for the host's node exporter.
    let mut problems = Vec::new();
    let textfile = dir.join("textfile/rtmanager_file_sd.prom");
    let out = file_sd.to_str().unwrap().to_owned();
    let synced = sync_file_sd(
        &env,
        &[
            "sync-file-sd",
            "--out",
            &out,
            "--textfile",
            textfile.to_str().unwrap(),
        ],
    )
    .await;
    if let Err(output) = synced {
        problems.push(format!(
            "rest-gateway sync-file-sd --textfile failed:\n{output}"
        ));
        // The file_sd file still, for the engines' targets.
        sync_file_sd(&env, &["sync-file-sd", "--out", &out])
            .await
            .expect("rest-gateway sync-file-sd");
    }

    // Prometheus has what the run left: two scrapes of every process after
    // it, the kept game discovered and its container's series written.
    let api = Api {
        base: format!("http://{prometheus_addr}"),
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    };
    let done = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for (job, _) in JOBS
        .iter()
        .copied()
        .chain([("prometheus", &[][..]), ("node", &[][..])])
    {
        let scraped = format!("timestamp(up{{job=\"{job}\"}}) > {:.3}", done + 2.0);
        if !api.wait_data(&scraped, Duration::from_secs(60)).await {
            problems.push(format!(
                "{job} is not scraped: {}",
                target_errors(&api, job).await
            ));
        }
    }
    for (what, query) in [
        (
            "the kept game discovered",
            format!("up{{job=\"game-engines\", game_id=\"{kept}\"}}"),
        ),
        (
            "the kept game's remote-written series",
            format!("node_uname_info{{vmid=\"{kept}\"}}"),
        ),
    ] {
        if !api.wait_data(&query, Duration::from_secs(60)).await {
            problems.push(format!(
                "no {what} ({query}):\n{}\n{}",
                agent.log(),
                prometheus.log()
            ));
        }
    }

    // Every panel's query, and the series every alert reads.
    let mut empty_panels = Vec::new();
    for query in monitoring::panel_queries() {
        let expr = query.substituted("1m", kept.as_str());
        match api.query(&expr).await {
            Ok(result) if !result.is_empty() => {}
            Ok(_) => empty_panels.push(format!(
                "panel {}: no data; no series of {:?}\n    {expr}",
                query.name(),
                missing(&api, &query.expr, kept.as_str()).await
            )),
            Err(error) => {
                empty_panels.push(format!("panel {}: error {error}\n    {expr}", query.name()))
            }
        }
    }
    let mut empty_alerts = Vec::new();
    for rule in monitoring::alert_rules() {
        let gone = missing(&api, &rule.expr, kept.as_str()).await;
        if !gone.is_empty() {
            empty_alerts.push(format!("alert {}: no series of {gone:?}", rule.name));
        }
    }
    let queries = monitoring::panel_queries().len();
    println!(
        "{} of {queries} panel queries and {} alerts without data",
        empty_panels.len(),
        empty_alerts.len()
    );
    problems.extend(empty_panels);
    problems.extend(empty_alerts);
    drop(agent);
    drop(prometheus);
    drop(node);
    for (_, job) in jobs {
        let (status, output) = job.stop_with_output().await;
        assert!(status.success(), "{status:?}\n{output}");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `POST /control?<query>` to a running engine, on its address in the
/// test network.
async fn engine_control(env: &TestEnv, game: &shared::domain::GameId, query: &str) {
    let container = system_tests::inspect(&game.container_name()).expect("engine container");
    let ip = container["NetworkSettings"]["Networks"][&env.network]["IPAddress"]
        .as_str()
        .expect("engine IP on the test network")
        .to_owned();
    let (status, body) = production::http(
        &format!("{ip}:8080"),
        "POST",
        &format!("/control?{query}"),
        "",
    )
    .await
    .expect("engine control route");
    assert_eq!(status, 200, "{query}: {body}");
}

/// `rest-gateway <args>` to its end; its output when it fails.
async fn sync_file_sd(env: &TestEnv, args: &[&str]) -> Result<(), String> {
    let mut process = JobProcess::spawn("rest-gateway", &env.vars, &[], args);
    env.eventually(
        "rest-gateway sync-file-sd to end",
        Duration::from_secs(60),
        || {
            let running = process.is_running();
            async move { (!running).then_some(()) }
        },
    )
    .await;
    let output = process.output();
    let status = process.stop().await;
    if status.success() {
        Ok(())
    } else {
        Err(output)
    }
}

/// Prometheus' scrape errors of `job`'s targets.
async fn target_errors(api: &Api, job: &str) -> String {
    let Ok(resp) = api
        .http
        .get(format!("{}/api/v1/targets", api.base))
        .send()
        .await
    else {
        return "targets unavailable".into();
    };
    let bytes = resp.bytes().await.unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    body["data"]["activeTargets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["scrapePool"] == job)
        .map(|t| format!("{} {} {}", t["scrapeUrl"], t["health"], t["lastError"]))
        .collect::<Vec<_>>()
        .join("; ")
}
