//! Event pipeline (issue 14, item 2): a Docker `die` of a managed container
//! to its `container_exited` on the health events stream, with its health
//! snapshot committed in PostgreSQL, through the release `docker-events`
//! process, against what it cannot do without: Docker's own delivery of the
//! same `die` (a bare bollard subscription in this process, filtered to
//! `die`) and a bare write (one `XADD` of the same fields + one upsert of a
//! snapshot-like row in a scratch table, sequential, synchronous commit),
//! measured in the same rounds. Then N containers dying at once: the time
//! from the kills to the last `container_exited`, and the CPU per event of
//! the `docker-events` process against a bare loop (bollard `die`
//! subscription + `XADD` + upsert per event, on a thread of its own) over a
//! second batch of N deaths.
//!
//! Run with `scripts/bench --only events`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, EventMessage, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, EventsOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use shared::domain::{GameId, HealthEvent, OpSource, Outcome, SnapshotStatus};
use shared::operations::{Operations, StartRequest};
use system_tests::bench::{self, Figure};
use system_tests::job_process::JobProcess;
use system_tests::{TestEnv, ENGINE};

/// The bare batch's containers carry these labels (and not rtmanager's, so
/// `docker-events` is not even sent their events).
const BARE_BATCH_LABEL: &str = "rtm.bench.events";
const BARE_GAME_LABEL: &str = "rtm.bench.game";
/// Starts (and creates) at once while the batches are made.
const START_CONCURRENCY: usize = 8;
/// Kills in flight at once when a batch dies.
const KILL_CONCURRENCY: usize = 32;
/// Timed bare writes per latency round.
const BARE_WRITES_PER_ROUND: usize = 3;

/// The scratch table: `health_snapshots`' columns, checks and keys.
const SCRATCH_TABLE: &str = "CREATE TABLE bench_snapshots (LIKE health_snapshots INCLUDING ALL)";
/// `UnitOfWork::upsert_snapshot`'s statement, on the scratch table.
const BARE_UPSERT: &str = "INSERT INTO bench_snapshots \
     (game_id, container_id, status, event_type, details, occurred_at) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (game_id) DO UPDATE SET container_id = EXCLUDED.container_id, \
         status = EXCLUDED.status, event_type = EXCLUDED.event_type, \
         details = EXCLUDED.details, occurred_at = EXCLUDED.occurred_at, updated_at = now() \
     WHERE bench_snapshots.occurred_at < EXCLUDED.occurred_at";

async fn redis_connection() -> MultiplexedConnection {
    let addr = std::env::var("TEST_REDIS_ADDR").expect("TEST_REDIS_ADDR");
    redis::Client::open(format!("redis://{addr}"))
        .expect("redis client")
        // The default 500 ms answer timeout is short on a loaded machine.
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("redis connection")
}

/// The daemon's container `die` events, optionally of one label only.
fn die_events(
    docker: &Docker,
    label: Option<String>,
) -> impl futures_util::Stream<Item = Result<EventMessage, bollard::errors::Error>> {
    let mut filters = HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        ("event".to_owned(), vec!["die".to_owned()]),
    ]);
    if let Some(label) = label {
        filters.insert("label".to_owned(), vec![label]);
    }
    docker.events(Some(
        EventsOptionsBuilder::default().filters(&filters).build(),
    ))
}

/// When this process received each container's `die`.
type Deliveries = Arc<Mutex<HashMap<String, Instant>>>;

/// Docker's own delivery: a bare subscription, receipt times by container.
fn watch_deaths(docker: &Docker) -> (Deliveries, tokio::task::JoinHandle<()>) {
    let deliveries = Deliveries::default();
    let mut events = Box::pin(die_events(docker, None));
    let seen = deliveries.clone();
    let task = tokio::spawn(async move {
        while let Some(Ok(event)) = events.next().await {
            let at = Instant::now();
            if let Some(id) = event.actor.and_then(|a| a.id) {
                seen.lock().expect("deliveries").insert(id, at);
            }
        }
    });
    (deliveries, task)
}

async fn delivered(deliveries: &Deliveries, container: &str) -> Instant {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(at) = deliveries.lock().expect("deliveries").get(container) {
            return *at;
        }
        assert!(Instant::now() < until, "no die of {container} from Docker");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads the health events stream on from where it was opened.
struct HealthStream {
    conn: MultiplexedConnection,
    stream: String,
    cursor: String,
}

impl HealthStream {
    /// From the stream's last entry now.
    async fn open(stream: &str) -> Self {
        let mut conn = redis_connection().await;
        let last: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await
            .expect("XREVRANGE health events");
        let cursor = last
            .ids
            .first()
            .map_or_else(|| "0-0".to_owned(), |e| e.id.clone());
        Self {
            conn,
            stream: stream.to_owned(),
            cursor,
        }
    }

    /// Reads until every game of `games` has its `container_exited`; returns
    /// when the read that brought the last one returned.
    async fn exits_of(&mut self, games: &HashSet<String>, within: Duration) -> Instant {
        let mut left = games.clone();
        let until = Instant::now() + within;
        loop {
            assert!(
                Instant::now() < until,
                "{} of {} container_exited not on the stream within {within:?}",
                left.len(),
                games.len()
            );
            let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1000)
                .arg("BLOCK")
                .arg(200)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(&self.cursor)
                .query_async(&mut self.conn)
                .await
                .expect("XREAD health events");
            let at = Instant::now();
            for key in reply.map(|r| r.keys).unwrap_or_default() {
                for entry in key.ids {
                    self.cursor = entry.id.clone();
                    let fields = shared::adapters::redis::entry_fields(&entry.map);
                    if fields.get("event_type").map(String::as_str) == Some("container_exited") {
                        if let Some(game) = fields.get("game_id") {
                            left.remove(game);
                        }
                    }
                }
            }
            if left.is_empty() {
                return at;
            }
        }
    }
}

/// The bare write: one `XADD` and one upsert (its own transaction,
/// synchronous commit), one after the other.
struct BareWriter {
    redis: MultiplexedConnection,
    pool: sqlx::PgPool,
    stream: String,
}

impl BareWriter {
    async fn connect(dsn: &str, stream: &str) -> Self {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(dsn)
            .await
            .expect("bare PostgreSQL connection");
        Self {
            redis: redis_connection().await,
            pool,
            stream: stream.to_owned(),
        }
    }

    async fn write(&mut self, event: &HealthEvent) {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.stream).arg("*");
        for (k, v) in event.stream_fields() {
            cmd.arg(k).arg(v);
        }
        let _: String = cmd.query_async(&mut self.redis).await.expect("bare XADD");
        let event_type = event.event_type();
        sqlx::query(BARE_UPSERT)
            .bind(event.game_id.as_str())
            .bind(&event.container_id)
            .bind(SnapshotStatus::of(event_type).as_str())
            .bind(event_type.as_str())
            .bind(sqlx::types::Json(event.details.to_json()))
            .bind(
                chrono::DateTime::from_timestamp_millis(event.occurred_at_ms).expect("event time"),
            )
            .execute(&self.pool)
            .await
            .expect("bare upsert");
    }
}

/// A start through the real start service; the container id.
async fn start(service: &Operations, game: &GameId) -> String {
    let outcome = service
        .start(&StartRequest {
            game_id: game.clone(),
            image_ref: ENGINE.to_owned(),
            op_source: OpSource::AdminRest,
            source_ref: "bench".into(),
        })
        .await;
    assert_eq!(outcome.outcome, Outcome::Success, "start of {game}");
    outcome
        .record
        .and_then(|r| r.current_container_id)
        .expect("container id")
}

async fn kill(docker: &Docker, container: &str) {
    docker
        .kill_container(container, None)
        .await
        .unwrap_or_else(|e| panic!("kill {container}: {e}"));
}

/// Kills every container of `containers` at once (`KILL_CONCURRENCY` calls in flight).
async fn kill_all(docker: &Docker, containers: &[String]) {
    futures_util::stream::iter(containers)
        .for_each_concurrent(KILL_CONCURRENCY, |c| kill(docker, c))
        .await;
}

/// A bare-batch container: the engine on `--network none`, not rtmanager's.
async fn create_bare(docker: &Docker, env: &TestEnv, game: &GameId) -> String {
    let body = ContainerCreateBody {
        image: Some(ENGINE.to_owned()),
        labels: Some(HashMap::from([
            (BARE_BATCH_LABEL.to_owned(), env.id.clone()),
            (BARE_GAME_LABEL.to_owned(), game.to_string()),
        ])),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    };
    // `-{env id}` at the end of the name: the env removes it when it drops.
    let name = format!("rtm-bench-{game}");
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            body,
        )
        .await
        .expect("bare create");
    docker
        .start_container(&created.id, None)
        .await
        .expect("bare start");
    created.id
}

/// The bare loop's work for one `die`: the event it makes, written.
async fn write_die(writer: &mut BareWriter, event: EventMessage) {
    let actor = event.actor.expect("event actor");
    let attributes = actor.attributes.unwrap_or_default();
    let game = GameId::parse(&attributes[BARE_GAME_LABEL]).expect("game label");
    let exit_code: i64 = attributes
        .get("exitCode")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let at_ms = event.time_nano.unwrap_or(0).div_euclid(1_000_000);
    let health = HealthEvent::container_exited(
        &game,
        &actor.id.unwrap_or_default(),
        at_ms,
        exit_code,
        false,
    );
    writer.write(&health).await;
}

/// What the bare loop measured over its batch.
struct BareBatch {
    cpu: Duration,
    done: Instant,
}

/// The bare loop on a thread of its own (a current-thread runtime, so the
/// thread's CPU time is all of its work): subscribes to the `die` events of
/// the batch labelled `batch`, handles one warm-up death (then says it is
/// ready), then `n` deaths: each an `XADD` + upsert. Its CPU is counted from
/// after the warm-up to the `n`th write.
fn spawn_bare_loop(
    dsn: String,
    stream: String,
    batch: String,
    n: usize,
) -> (
    tokio::sync::oneshot::Receiver<()>,
    std::thread::JoinHandle<BareBatch>,
) {
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("bare loop runtime");
        runtime.block_on(async move {
            let docker = Docker::connect_with_local_defaults().expect("docker");
            let mut writer = BareWriter::connect(&dsn, &stream).await;
            let mut events = Box::pin(die_events(
                &docker,
                Some(format!("{BARE_BATCH_LABEL}={batch}")),
            ));
            let warm = events.next().await.expect("die events").expect("die event");
            write_die(&mut writer, warm).await;
            let _ = ready_tx.send(());
            let cpu = bench::thread_cpu();
            for _ in 0..n {
                let event = events.next().await.expect("die events").expect("die event");
                write_die(&mut writer, event).await;
            }
            BareBatch {
                cpu: bench::thread_cpu() - cpu,
                done: Instant::now(),
            }
        })
    });
    (ready, thread)
}

async fn xact_commits(env: &TestEnv) -> i64 {
    // The statistics of a backend reach the view within a second of its
    // transactions; the caller waits before reading.
    sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(env.db().pool())
    .await
    .expect("pg_stat_database")
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

#[tokio::main]
async fn main() {
    bench::init_logging();
    let rounds = bench::rounds(20, 5);
    let batch = bench::rounds(500, 100);
    let env = TestEnv::new().await;
    let docker = Docker::connect_with_local_defaults().expect("docker");
    let service = system_tests::operations(&env.config, &env.infra).expect("start service");
    sqlx::query(SCRATCH_TABLE)
        .execute(env.db().pool())
        .await
        .expect("scratch table");
    let synchronous_commit: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(env.db().pool())
        .await
        .expect("synchronous_commit");
    let health_stream = env.config.common.streams.health_events.clone();
    let bare_stream = format!("{health_stream}:bare");

    let events_bin = bench::sibling_binary("docker-events");
    let job = JobProcess::spawn_binary("docker-events", &events_bin, &env.vars, &[], &[]);
    let job = JobProcess::until_healthy(&env, job).await;
    let pid = job.pid().expect("docker-events pid");
    let (deliveries, watcher) = watch_deaths(&docker);
    let mut health = HealthStream::open(&health_stream).await;
    let mut writer = BareWriter::connect(&env.dsn, &bare_stream).await;
    let bare_game = env.game("bare");
    let mut bare_at_ms = 1_000;
    let mut bare_event = || {
        bare_at_ms += 1;
        HealthEvent::container_exited(&bare_game, "bare", bare_at_ms, 137, false)
    };

    // Latency: round 0 is the warm-up (docker-events following, the
    // subscription here open, the connections made), not counted.
    let (mut ours, mut docker_delivery, mut bare_write) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..=rounds {
        let game = env.game(&format!("l{i}"));
        let container = start(&service, &game).await;
        env.flush_outbox().await;
        // Let docker-events handle the start's own events first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let killed_at = Instant::now();
        kill(&docker, &container).await;
        let on_stream = health
            .exits_of(&HashSet::from([game.to_string()]), Duration::from_secs(60))
            .await;
        let from_docker = delivered(&deliveries, &container).await;
        let snapshot = env.snapshot(&game).await.expect("snapshot row");
        assert_eq!(
            (snapshot.1.as_str(), snapshot.2.as_str()),
            ("container_exited", container.as_str()),
            "the snapshot of {game} is its exit"
        );
        let mut writes = Vec::new();
        for _ in 0..BARE_WRITES_PER_ROUND {
            let event = bare_event();
            let t = Instant::now();
            writer.write(&event).await;
            writes.push(t.elapsed());
        }
        if i == 0 {
            continue;
        }
        ours.push(on_stream - killed_at);
        docker_delivery.push(from_docker - killed_at);
        eprintln!(
            "round {i}: ours {:?}, Docker's delivery {:?}, bare writes {writes:?}",
            on_stream - killed_at,
            from_docker - killed_at
        );
        bare_write.extend(writes);
    }
    watcher.abort();

    // Throughput, ours: `batch` managed containers started through the
    // start service, then killed at once.
    let started_at = Instant::now();
    let games: Vec<GameId> = (0..batch).map(|i| env.game(&format!("t{i}"))).collect();
    let containers: Vec<String> = futures_util::stream::iter(&games)
        .map(|game| start(&service, game))
        .buffered(START_CONCURRENCY)
        .collect()
        .await;
    eprintln!(
        "{batch} managed containers started in {:?}",
        started_at.elapsed()
    );
    env.flush_outbox().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_window = Duration::from_secs(3);
    let idle_before = bench::process_cpu(pid).expect("docker-events CPU");
    tokio::time::sleep(idle_window).await;
    let idle_cpu = bench::process_cpu(pid).expect("docker-events CPU") - idle_before;
    let commits_before = xact_commits(&env).await;
    let cpu_before = bench::process_cpu(pid).expect("docker-events CPU");
    let killed_at = Instant::now();
    kill_all(&docker, &containers).await;
    let kills_took = killed_at.elapsed();
    let names: HashSet<String> = games.iter().map(GameId::to_string).collect();
    let last = health.exits_of(&names, Duration::from_secs(300)).await;
    let cpu_ours = bench::process_cpu(pid).expect("docker-events CPU") - cpu_before;
    let wall_ours = last - killed_at;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let commits = xact_commits(&env).await - commits_before;
    let committed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM health_snapshots WHERE event_type = 'container_exited' \
         AND game_id = ANY($1)",
    )
    .bind(games.iter().map(GameId::to_string).collect::<Vec<_>>())
    .fetch_one(env.db().pool())
    .await
    .expect("snapshots");
    assert_eq!(
        committed, batch as i64,
        "every exit's snapshot is committed"
    );
    eprintln!(
        "ours: {batch} deaths on the stream in {wall_ours:?} (kills {kills_took:?}), \
         docker-events CPU {cpu_ours:?}, {commits} PostgreSQL commits"
    );
    let output = job.output();
    job.stop().await;

    // Throughput, bare: a second batch of the same engine, not rtmanager's,
    // killed at once, handled by the bare loop.
    let started_at = Instant::now();
    let bare_games: Vec<GameId> = (0..=batch).map(|i| env.game(&format!("b{i}"))).collect();
    let bare_containers: Vec<String> = futures_util::stream::iter(&bare_games)
        .map(|game| create_bare(&docker, &env, game))
        .buffered(START_CONCURRENCY)
        .collect()
        .await;
    eprintln!(
        "{} bare containers started in {:?}",
        batch + 1,
        started_at.elapsed()
    );
    // The snapshot-like rows exist, as ours do (each game has its
    // `container_started` snapshot): the timed upserts update.
    let mut seed = Vec::new();
    for game in &bare_games {
        seed.push(HealthEvent::container_started(game, "seed", 1, ENGINE));
    }
    for event in &seed {
        writer.write(event).await;
    }
    let (ready, bare_thread) =
        spawn_bare_loop(env.dsn.clone(), bare_stream.clone(), env.id.clone(), batch);
    let (warm, bare_containers) = bare_containers.split_first().expect("warm-up container");
    // The bare loop's subscription is open once it has the warm-up's death.
    kill(&docker, warm).await;
    ready.await.expect("bare loop ready");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed_at = Instant::now();
    kill_all(&docker, bare_containers).await;
    let bare = tokio::task::spawn_blocking(move || bare_thread.join().expect("bare loop"))
        .await
        .expect("bare loop thread");
    let wall_bare = bare.done - killed_at;
    eprintln!(
        "bare: {batch} deaths written in {wall_bare:?}, bare loop CPU {:?}",
        bare.cpu
    );

    let (m_ours, m_docker, m_bare) = (
        bench::median(&ours),
        bench::median(&docker_delivery),
        bench::median(&bare_write),
    );
    let (p_ours, p_docker, p_bare) = (
        bench::quantile(&ours, 0.99),
        bench::quantile(&docker_delivery, 0.99),
        bench::quantile(&bare_write, 0.99),
    );
    let beyond = |ours: Duration, docker: Duration| ours.saturating_sub(docker);
    let per_event = |d: Duration| d / batch as u32;
    let rate = |d: Duration| batch as f64 / d.as_secs_f64();
    let figures = vec![
        Figure::at_most(
            "die → `container_exited` on the stream, snapshot committed, median: \
             (ours − Docker's delivery) / bare write",
            format!(
                "{} ({} beyond Docker's delivery)",
                bench::ms(m_ours),
                bench::ms(beyond(m_ours, m_docker))
            ),
            format!(
                "{} Docker's delivery + {} bare write",
                bench::ms(m_docker),
                bench::ms(m_bare)
            ),
            ratio(beyond(m_ours, m_docker), m_bare),
            1.5,
        ),
        Figure::info(
            "the same, p99",
            format!(
                "{} ({} beyond Docker's delivery)",
                bench::ms(p_ours),
                bench::ms(beyond(p_ours, p_docker))
            ),
            format!(
                "{} Docker's delivery + {} bare write",
                bench::ms(p_docker),
                bench::ms(p_bare)
            ),
            ratio(beyond(p_ours, p_docker), p_bare),
        ),
        Figure::at_most(
            &format!("{batch} deaths at once: CPU per event"),
            bench::us(per_event(cpu_ours)),
            bench::us(per_event(bare.cpu)),
            ratio(cpu_ours, bare.cpu),
            2.0,
        ),
        Figure::info(
            &format!("{batch} deaths at once: events/s, kills to the last on the stream"),
            format!("{:.0} events/s", rate(wall_ours)),
            format!("{:.0} events/s", rate(wall_bare)),
            rate(wall_ours) / rate(wall_bare),
        ),
    ];
    eprintln!("SCALE events_per_s {:.1} events/s", rate(wall_ours));
    eprintln!(
        "SCALE events_cpu_us_per_event {:.1} us",
        per_event(cpu_ours).as_secs_f64() * 1e6
    );
    eprintln!(
        "SCALE event_latency_ms_median {:.1} ms",
        m_ours.as_secs_f64() * 1e3
    );
    eprintln!(
        "SCALE event_latency_ms_p99 {:.1} ms",
        p_ours.as_secs_f64() * 1e3
    );
    eprintln!(
        "SCALE docker_event_delivery_ms_median {:.1} ms",
        m_docker.as_secs_f64() * 1e3
    );
    eprintln!(
        "SCALE bare_event_write_ms_median {:.2} ms",
        m_bare.as_secs_f64() * 1e3
    );
    let warnings = output
        .lines()
        .filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\""))
        .count();
    let notes = vec![
        format!(
            "Latency: {rounds} rounds after one warm-up. Each round starts a game through the \
             real start service (on the env's network), waits 300 ms, then kills its \
             container (bollard `kill`, SIGKILL: exit 137, how a game dies). Ours: from the \
             kill call to the read that brings its `container_exited` on `{health}` \
             (`XREAD BLOCK` on a connection of its own), through the release `docker-events` \
             process; the game's `health_snapshots` row is then checked to be that exit \
             (it commits in the transaction that stages the event, before the relay's \
             `XADD`). Peer, in the same round: Docker's delivery of the same `die` to a bare \
             bollard subscription in this process (`type=container`, `event=die`), from the \
             same kill call; then {BARE_WRITES_PER_ROUND} bare writes, each an `XADD` of the \
             same fields + an `INSERT … ON CONFLICT DO UPDATE` of a snapshot row (the \
             statement of `health_snapshots`, on a scratch copy of the table), one after the \
             other, synchronous commit (`synchronous_commit={synchronous_commit}`). The \
             ratio is (ours − Docker's delivery) / bare write: how many bare writes our \
             work beyond Docker's delivery costs.",
            health = health_stream
        ),
        format!(
            "Throughput: {batch} managed containers started through the start service \
             ({START_CONCURRENCY} at once), then killed at once ({KILL_CONCURRENCY} kill calls \
             in flight, all sent in {}); ours is the time from the first kill to the read \
             that brought the last `container_exited` (all {batch} snapshots then checked \
             committed), and the `docker-events` process's CPU (utime + stime, \
             `/proc/<pid>/stat`) over the same window. It made {commits} PostgreSQL commits \
             in the window ({:.1} per event; `pg_stat_database`, its relay's included), and \
             logged {warnings} warnings. Its CPU while idle before the batch: {} over {}. \
             Peer: a second batch of {batch} containers of the same engine (`--network \
             none`, labelled for this benchmark, so `docker-events` is not sent their \
             events), killed the same way, handled by a bare loop on a thread of its own \
             (current-thread runtime; its CPU from `CLOCK_THREAD_CPUTIME_ID`): the bollard \
             `die` subscription, then per event an `XADD` + the upsert above, sequential. \
             Ours ran first, then the bare batch. Not counted on either side: the Docker \
             daemon, PostgreSQL and Redis servers' CPU. 2 cores, nothing pinned: Docker, \
             the servers, `docker-events` and this process share them.",
            bench::ms(kills_took),
            commits as f64 / batch as f64,
            bench::ms(idle_cpu),
            bench::ms(idle_window),
        ),
    ];
    bench::print_section(
        "2. Event pipeline",
        "A Docker `die` of a managed container to its `container_exited` on the health \
         events stream with its snapshot committed, through `docker-events`, against Docker's \
         own delivery of the `die` plus a bare `XADD` + upsert; and many deaths at once.",
        &figures,
        &notes,
        "scripts/bench --only events",
    );
}
