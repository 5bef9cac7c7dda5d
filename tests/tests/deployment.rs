//! The deployment test (`scripts/test --long`): the job services of
//! `compose/docker-compose.yml`, as the file defines them (users, dropped
//! capabilities, read-only roots, networks, secrets, health checks, the
//! `migrate` step), built from the static release binaries on scratch and
//! started with `docker-compose up --no-deps`. An override file only points
//! them at this test's Redis and PostgreSQL (through forwarders on the test
//! network's gateway address: both listen on loopback), at the test's
//! streams and network, and makes the periods short. Then:
//!
//! - `migrate` exits 0, and every job's `/job healthcheck` turns it healthy;
//! - a start job on the stream becomes a running game that the composed
//!   prober probes by name on the engines' network;
//! - the gateway answers over TLS (a certificate the test makes) with a
//!   token, 401 without;
//! - `docker-compose down` stops every process with exit 0 (SIGTERM within
//!   the grace period, not a SIGKILL).
//!
//! Not exercised: the bundled `redis` and `postgres` services (no registry
//! here to pull their images), and the PostgreSQL roles (the test's server
//! has its superuser only; `migrate` and the jobs both use it).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use system_tests::services::PrivateRedis;
use system_tests::{docker, inspect, Services, TestEnv, ENGINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const JOBS: &[&str] = &[
    "start-job",
    "stop-job",
    "docker-events",
    "inspect-cron",
    "cleanup-cron",
    "healthz-prober",
    "rest-gateway",
];
const TOKEN: &str = "a3f1c9e07b5d42e8961f0c2d4b6a8e1f3c5d7e9f0a2b4c6d";
const REDIS_PASSWORD: &str = "deployment-test-redis-password";
const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Forwards TCP from the test network's gateway address to a loopback
/// service, until dropped.
struct Forward {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Forward {
    async fn start(listen: IpAddr, upstream: String) -> Self {
        let listener = TcpListener::bind((listen, 0))
            .await
            .expect("bind forwarder");
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The compose project of one run: its files, and what `down` leaves
/// (the images it built) removed on drop.
struct Project {
    name: String,
    dir: PathBuf,
    vars: Vec<(String, String)>,
    images: Vec<String>,
}

impl Project {
    fn compose(&self, args: &[&str]) -> Output {
        let base = repo().join("compose/docker-compose.yml");
        Command::new("docker-compose")
            .args(["-p", &self.name, "-f", base.to_str().unwrap()])
            .args(["-f", self.dir.join("override.yml").to_str().unwrap()])
            .args(args)
            .envs(self.vars.iter().cloned())
            .output()
            .expect("docker-compose (scripts/install-test-tools installs it)")
    }

    fn compose_ok(&self, args: &[&str]) -> String {
        let out = self.compose(args);
        assert!(
            out.status.success(),
            "docker-compose {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn containers(&self, service: &str) -> Vec<String> {
        self.compose_ok(&["ps", "-q", service])
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect()
    }

    fn logs(&self) -> String {
        String::from_utf8_lossy(&self.compose(&["logs", "--no-color", "--tail", "40"]).stdout)
            .into_owned()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "-t", "5", "--remove-orphans"]);
        for image in &self.images {
            let _ = Command::new("docker").args(["rmi", "-f", image]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn release_binary(job: &str) -> PathBuf {
    let bin = repo().join("target").join(TARGET).join("release").join(job);
    assert!(
        bin.exists(),
        "{} is missing: build the static binaries (scripts/test --long does): \
         RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target {TARGET} -p {job} ...",
        bin.display()
    );
    bin
}

fn private_file(path: &Path, text: &str, mode: u32, uid: Option<u32>) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    if let Some(uid) = uid {
        std::os::unix::fs::chown(path, Some(uid), Some(0)).unwrap();
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `curl` over TLS against the gateway, trusting the test's certificate:
/// the HTTP status, 0 when no answer came.
fn curl(cert: &Path, url: &str, token: Option<&str>) -> u16 {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "5",
        "--cacert",
    ])
    .arg(cert)
    .arg(url);
    if let Some(token) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let out = cmd.output().expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

async fn engine_hits(ip: &str) -> Option<u64> {
    let mut stream = TcpStream::connect((ip, 8080)).await.ok()?;
    stream
        .write_all(b"GET /hits HTTP/1.1\r\nHost: engine\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.ok()?;
    let text = String::from_utf8_lossy(&raw);
    text.split_once("\r\n\r\n")?.1.trim().parse().ok()
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: builds the job images and runs the composed jobs (scripts/test --long)"]
async fn the_composed_jobs_run_a_probed_game_serve_tls_with_tokens_and_stop_cleanly() {
    for job in JOBS {
        release_binary(job);
    }
    let redis = PrivateRedis::start();
    redis.cli(&["CONFIG", "SET", "requirepass", REDIS_PASSWORD]);
    let env = TestEnv::with_services(
        &Services {
            redis_addr: Some(redis.addr()),
            ..Services::default()
        },
        &[
            ("RTMANAGER_REDIS_PASSWORD", REDIS_PASSWORD),
            ("RTMANAGER_PROBE_INTERVAL", "1s"),
            ("RTMANAGER_PROBE_INITIAL_GRACE", "0s"),
            ("RTMANAGER_PROBE_REFRESH_INTERVAL", "1s"),
        ],
    )
    .await;

    // What the containers reach: the test's PostgreSQL and Redis through
    // the test network's gateway address.
    let gateway: IpAddr = docker(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
        &env.network,
    ])
    .parse()
    .expect("gateway address");
    let pg_upstream = {
        let rest = env.dsn.split_once("://").unwrap().1;
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        rest.split(['/', '?']).next().unwrap().to_owned()
    };
    let pg = Forward::start(gateway, pg_upstream.clone()).await;
    let rd = Forward::start(gateway, redis.addr()).await;
    let dsn = env.dsn.replacen(&pg_upstream, &pg.addr.to_string(), 1);

    // The build context, the secrets and the override.
    let dir = std::env::temp_dir().join(format!("rtm-deploy-{}", env.id));
    let bin = dir.join("bin");
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::copy(repo().join("compose/Dockerfile"), dir.join("Dockerfile")).unwrap();
    for job in JOBS {
        std::fs::copy(release_binary(job), bin.join(job)).unwrap();
    }
    let (crt, key) = (
        secrets.join("rest-gateway.crt"),
        secrets.join("rest-gateway.key"),
    );
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=rest-gateway",
        ])
        .args([
            "-addext",
            "subjectAltName=DNS:rest-gateway,DNS:localhost,IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    // As the compose header says: the jobs' non-root user reads the Redis
    // password, root (without DAC_OVERRIDE) through group 0.
    private_file(
        &secrets.join("redis-password"),
        REDIS_PASSWORD,
        0o440,
        Some(65532),
    );
    private_file(
        &secrets.join("api-tokens"),
        &format!("{TOKEN}\n"),
        0o400,
        None,
    );
    private_file(&key, &std::fs::read_to_string(&key).unwrap(), 0o400, None);

    let tag = format!("deploy-{}", env.id);
    let images: Vec<String> = JOBS
        .iter()
        .map(|j| format!("rtm-test/rtmanager/{j}:{tag}"))
        .collect();
    let api_port = system_tests::free_port();
    // The env's own settings (its streams, state root, ...) for every job,
    // with the addresses the containers reach.
    let skip = [
        "RTMANAGER_POSTGRES_PRIMARY_DSN",
        "RTMANAGER_REDIS_MASTER_ADDR",
        "RTMANAGER_REDIS_PASSWORD",
        "RTMANAGER_DOCKER_HOST",
        "RTMANAGER_METRICS_ADDR",
        "RTMANAGER_DOCKER_NETWORK",
        "RTMANAGER_GAME_STATE_ROOT",
        "RTMANAGER_PROBE_ADDRESS_MODE",
        "RTMANAGER_SHARD_COUNT",
        "RTMANAGER_CONSUMER_NAME",
        "RTMANAGER_POSTGRES_MIGRATIONS",
    ];
    let mut job_env = String::new();
    for (k, v) in &env.vars {
        let gateway_own =
            k.starts_with("RTMANAGER_API_") || k.starts_with("RTMANAGER_INTERNAL_HTTP_");
        if k.starts_with("RTMANAGER_") && !skip.contains(&k.as_str()) && !gateway_own {
            job_env.push_str(&format!("      {k}: {}\n", yaml_str(v)));
        }
    }
    job_env.push_str(&format!(
        "      RTMANAGER_POSTGRES_PRIMARY_DSN: {}\n",
        yaml_str(&dsn)
    ));
    job_env.push_str(&format!(
        "      RTMANAGER_REDIS_MASTER_ADDR: {}\n",
        yaml_str(&rd.addr.to_string())
    ));
    job_env.push_str("      RTMANAGER_SHUTDOWN_TIMEOUT: \"5s\"\n");
    let mut override_yml = String::from("services:\n");
    override_yml.push_str(&format!(
        "  migrate:\n    build: {{ context: {ctx} , dockerfile: {df} }}\n    environment:\n      RTMANAGER_POSTGRES_PRIMARY_DSN: {dsn}\n",
        ctx = yaml_str(bin.to_str().unwrap()),
        df = yaml_str(dir.join("Dockerfile").to_str().unwrap()),
        dsn = yaml_str(&dsn),
    ));
    for job in JOBS {
        override_yml.push_str(&format!(
            "  {job}:\n    build: {{ context: {ctx} , dockerfile: {df} }}\n    deploy: {{ replicas: 1 }}\n    healthcheck: {{ interval: 2s, start_period: 60s }}\n    environment:\n{job_env}",
            ctx = yaml_str(bin.to_str().unwrap()),
            df = yaml_str(dir.join("Dockerfile").to_str().unwrap()),
        ));
    }
    std::fs::write(dir.join("override.yml"), override_yml).unwrap();
    let docker_gid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/var/run/docker.sock")
            .expect("the Docker socket")
            .gid()
    };
    let vars: Vec<(String, String)> = [
        ("REGISTRY", "rtm-test".to_owned()),
        ("RTMANAGER_VERSION", tag.clone()),
        ("POSTGRES_PASSWORD", "unused".to_owned()),
        ("POSTGRES_OWNER_PASSWORD", "unused".to_owned()),
        ("POSTGRES_SERVICE_PASSWORD", "unused".to_owned()),
        ("DOCKER_GID", docker_gid.to_string()),
        (
            "GAME_STATE_ROOT",
            env.state_root.to_string_lossy().into_owned(),
        ),
        ("GALAXY_NET", env.network.clone()),
        ("RTMANAGER_API_NET", format!("rtm-test-api-{}", env.id)),
        ("RTMANAGER_API_PORT", api_port.to_string()),
        (
            "REDIS_PASSWORD_FILE",
            secrets
                .join("redis-password")
                .to_string_lossy()
                .into_owned(),
        ),
        (
            "API_TOKENS_FILE",
            secrets.join("api-tokens").to_string_lossy().into_owned(),
        ),
        ("GATEWAY_TLS_CERT_FILE", crt.to_string_lossy().into_owned()),
        ("GATEWAY_TLS_KEY_FILE", key.to_string_lossy().into_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let project = Project {
        name: format!("rtm-deploy-{}", env.id),
        dir,
        vars,
        images,
    };

    let mut build: Vec<&str> = vec!["build", "-q"];
    build.extend(JOBS);
    project.compose_ok(&build);
    project.compose_ok(&["up", "-d", "--no-deps", "migrate"]);
    let migrate = project.containers("migrate");
    assert_eq!(migrate.len(), 1);
    let code = docker(&["wait", &migrate[0]]);
    assert_eq!(code.trim(), "0", "migrate: {}", project.logs());

    let mut up = vec!["up", "-d", "--no-deps"];
    up.extend(JOBS);
    project.compose_ok(&up);
    let containers: Vec<(String, String)> = JOBS
        .iter()
        .flat_map(|job| {
            project
                .containers(job)
                .into_iter()
                .map(move |c| (job.to_string(), c))
        })
        .collect();
    assert_eq!(containers.len(), JOBS.len(), "one container per job");
    for (job, id) in &containers {
        env.eventually(
            &format!("{job} healthy by /job healthcheck"),
            Duration::from_secs(90),
            || async {
                let state = inspect(id)?;
                assert_eq!(
                    state["State"]["Running"],
                    true,
                    "{job} stopped:\n{}",
                    project.logs()
                );
                (state["State"]["Health"]["Status"] == "healthy").then_some(())
            },
        )
        .await;
    }

    // Lobby's start job: a running game, probed by the composed prober by
    // its name on the engines' network.
    let game = env.game("composed");
    env.xadd(
        &env.config.start_jobs.stream,
        &[
            ("game_id", game.as_str()),
            ("image_ref", ENGINE),
            ("requested_at_ms", "1775121700001"),
        ],
    )
    .await;
    let record = env
        .eventually("the game running", Duration::from_secs(60), || async {
            let record = env.db().get_record(&game).await.ok()??;
            (record.status.as_str() == "running").then_some(record)
        })
        .await;
    assert_eq!(
        record.engine_endpoint,
        format!("http://galaxy-game-{game}:8080")
    );
    let engine = inspect(&game.container_name()).expect("the engine container");
    let ip = engine["NetworkSettings"]["Networks"][&env.network]["IPAddress"]
        .as_str()
        .expect("the engine on the engines' network")
        .to_owned();
    env.eventually(
        "probes from the composed prober",
        Duration::from_secs(30),
        || async { (engine_hits(&ip).await? >= 2).then_some(()) },
    )
    .await;

    // The gateway: TLS only, a token required.
    let url = format!("https://127.0.0.1:{api_port}/api/v1/internal/runtimes/{game}");
    assert_eq!(curl(&crt, &url, Some(TOKEN)), 200, "{}", project.logs());
    assert_eq!(curl(&crt, &url, None), 401);
    assert_eq!(
        curl(&crt, &url, Some("0000000000000000000000000000000000000000")),
        401
    );
    assert_eq!(
        curl(&crt, &url.replace("https://", "http://"), Some(TOKEN)),
        0,
        "plain HTTP is not served"
    );

    // SIGTERM to every process (what `down` does first; `stop` keeps the
    // containers so their exit status can be read): each one done within
    // the grace period, exit 0, not the 137 of a SIGKILL. Then `down`.
    project.compose_ok(&["stop", "-t", "45"]);
    for (job, id) in &containers {
        let state = inspect(id).expect("a stopped container");
        assert_eq!(
            state["State"]["ExitCode"],
            0,
            "{job}: exit status\n{}",
            project.logs()
        );
        assert_eq!(state["State"]["OOMKilled"], false, "{job}");
    }
    project.compose_ok(&["down", "-t", "45"]);
    for (job, id) in &containers {
        assert!(inspect(id).is_none(), "{job}: left after down");
    }
    drop(redis);
}
