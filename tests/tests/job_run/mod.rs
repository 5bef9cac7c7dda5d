//! What the outage tests share: the job binaries run as production runs
//! them, a run of many games driven through the job streams as the Lobby
//! drives it, and the end-to-end accounting of what was committed and what
//! reached Redis.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shared::domain::labels::LABEL_GAME_ID;
use shared::domain::{GameId, RuntimeStatus};
use system_tests::{TestEnv, ENGINE};

/// How soon after a dependency is back every process must be doing its work
/// again (its retries are capped at 5 s; the rest is slack for a loaded
/// machine).
pub const RECOVERY: Duration = Duration::from_secs(30);
/// How long the whole run may take to be answered once the outage is over.
const SETTLE: Duration = Duration::from_secs(120);
/// Between two start jobs of the run.
const PACE: Duration = Duration::from_millis(150);

/// Fast probing, at the engines' bridge addresses (the test runs on the
/// Docker host).
pub const FAST_PROBES: &[(&str, &str)] = &[
    ("RTMANAGER_PROBE_INTERVAL", "300ms"),
    ("RTMANAGER_PROBE_TIMEOUT", "200ms"),
    ("RTMANAGER_PROBE_FAILURES_THRESHOLD", "3"),
    ("RTMANAGER_PROBE_INITIAL_GRACE", "0s"),
    ("RTMANAGER_PROBE_REFRESH_INTERVAL", "200ms"),
    ("RTMANAGER_PROBE_ADDRESS_MODE", "container_ip"),
];

/// Long-running job binaries, each a child process with the env's settings
/// and its log in the env's state root.
pub struct Processes {
    children: Vec<(String, Child, PathBuf)>,
}

impl Processes {
    pub fn spawn(env: &TestEnv, jobs: &[&str]) -> Self {
        let children = jobs
            .iter()
            .map(|job| {
                let log_path = env.state_root.join(format!("{job}.log"));
                let log = std::fs::File::create(&log_path).expect("job log");
                let child = Command::new(system_tests::job_binary(job))
                    .env_clear()
                    .envs(env.vars.clone())
                    .stdout(Stdio::from(log.try_clone().expect("log handle")))
                    .stderr(Stdio::from(log))
                    .spawn()
                    .unwrap_or_else(|e| panic!("spawn {job}: {e}"));
                ((*job).to_owned(), child, log_path)
            })
            .collect();
        Self { children }
    }

    /// None has exited: an outage is ridden out, never a reason to quit.
    pub fn assert_running(&mut self) {
        for (job, child, log) in &mut self.children {
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("{job} exited ({status}); its log:\n{}", tail(log));
            }
        }
    }

    /// SIGTERM to each, and each exits 0 (after its relay's last pass).
    pub async fn stop(mut self) {
        for (job, mut child, log) in std::mem::take(&mut self.children) {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let status = tokio::task::spawn_blocking(move || child.wait())
                .await
                .expect("wait task")
                .expect("wait");
            assert!(
                status.success(),
                "{job}: {status}; its log:\n{}",
                tail(&log)
            );
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn tail(log: &PathBuf) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// One job entry the run appended.
#[derive(Debug, Clone)]
pub struct Entry {
    pub stream: String,
    pub id: String,
    pub game: GameId,
}

impl Entry {
    /// The outbox key of its one result (`stream_consumer`'s job key).
    fn result_key(&self) -> String {
        format!("result:{}:{}", self.stream, self.id)
    }

    fn is(&self, other: &Entry) -> bool {
        self.stream == other.stream && self.id == other.id
    }
}

/// Games started and then stopped through the job streams, the way the
/// Lobby does it: a start job per game, and its stop job once the start is
/// answered. Every entry appended is kept, with when.
pub struct JobRun<'a> {
    env: &'a TestEnv,
    games: Vec<GameId>,
    started: usize,
    starts: Vec<Entry>,
    stops: Vec<Entry>,
}

impl<'a> JobRun<'a> {
    pub fn new(env: &'a TestEnv, name: &str, games: usize) -> Self {
        Self {
            env,
            games: (0..games)
                .map(|i| env.game(&format!("{name}{i}")))
                .collect(),
            started: 0,
            starts: Vec::new(),
            stops: Vec::new(),
        }
    }

    /// Every game a job was appended for, once each.
    pub fn games(&self) -> Vec<GameId> {
        let mut games: Vec<GameId> = self.entries().map(|e| e.game.clone()).collect();
        games.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        games.dedup();
        games
    }

    /// Every entry appended so far.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.starts.iter().chain(&self.stops)
    }

    /// Appends the start jobs of the next `n` games of the run, one every
    /// [`PACE`], and the stop job of every game whose start is answered.
    pub async fn play(&mut self, n: usize) {
        for _ in 0..n {
            let game = self.games[self.started].clone();
            self.started += 1;
            self.start(&game).await;
            tokio::time::sleep(PACE).await;
            self.stop_answered().await;
        }
    }

    /// Appends a start job for `game` now.
    pub async fn start(&mut self, game: &GameId) -> Entry {
        let stream = self.env.config.start_jobs.stream.clone();
        let entry = self
            .append(
                &stream,
                game,
                &[("game_id", game.as_str()), ("image_ref", ENGINE)],
            )
            .await;
        self.starts.push(entry.clone());
        entry
    }

    /// Appends a stop job for `game` now.
    pub async fn stop(&mut self, game: &GameId) -> Entry {
        let stream = self.env.config.stop_jobs.stream.clone();
        let at = chrono::Utc::now().timestamp_millis().to_string();
        let fields = [
            ("game_id", game.as_str()),
            ("reason", "cancelled"),
            ("requested_at_ms", at.as_str()),
        ];
        let entry = self.append(&stream, game, &fields).await;
        self.stops.push(entry.clone());
        entry
    }

    async fn append(&self, stream: &str, game: &GameId, fields: &[(&str, &str)]) -> Entry {
        let id = self.env.xadd(stream, fields).await;
        Entry {
            stream: stream.to_owned(),
            id,
            game: game.clone(),
        }
    }

    /// Stop jobs for the run's games whose start is answered and that have
    /// none yet.
    async fn stop_answered(&mut self) {
        let answered = answered_keys(self.env).await;
        let due: Vec<GameId> = self
            .starts
            .iter()
            .filter(|s| self.games.contains(&s.game))
            .filter(|s| answered.contains_key(&s.result_key()))
            .filter(|s| !self.stops.iter().any(|t| t.game == s.game))
            .map(|s| s.game.clone())
            .collect();
        for game in due {
            self.stop(&game).await;
        }
    }

    /// Plays the rest of the run, then waits until every entry but the
    /// `lost` ones is answered and every answered start of the run has its
    /// stop appended and answered.
    pub async fn finish(&mut self, lost: &[Entry]) {
        let rest = self.games.len() - self.started;
        self.play(rest).await;
        let deadline = Instant::now() + SETTLE;
        loop {
            self.stop_answered().await;
            let answered = answered_keys(self.env).await;
            let waiting: Vec<&Entry> = self
                .entries()
                .filter(|e| !lost.iter().any(|l| l.is(e)))
                .filter(|e| !answered.contains_key(&e.result_key()))
                .collect();
            if waiting.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "entries still unanswered after {SETTLE:?}: {waiting:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The entries appended but never read by their consumer group: those
    /// after the group's last delivered id (`last_delivered` by stream).
    pub fn never_read(&self, last_delivered: &HashMap<String, String>) -> Vec<Entry> {
        self.entries()
            .filter(|e| {
                let last = last_delivered.get(&e.stream).map_or("0-0", String::as_str);
                entry_id_order(&e.id) > entry_id_order(last)
            })
            .cloned()
            .collect()
    }

    /// Every entry has one result in the outbox (its unique key) or is in
    /// `lost`, and every entry was run at most once (one operation-log row
    /// per entry, whatever its outcome; none for a lost one).
    pub async fn assert_answered_once(&self, lost: &[Entry]) {
        let answered = answered_keys(self.env).await;
        let ops = operations_per_entry(self.env).await;
        for entry in self.entries() {
            let is_lost = lost.iter().any(|l| l.is(entry));
            let results = usize::from(answered.contains_key(&entry.result_key()));
            let key = (entry.game.to_string(), entry.id.clone());
            let runs = ops.get(&key).copied().unwrap_or(0);
            if is_lost {
                assert_eq!((results, runs), (0, 0), "lost {entry:?}");
            } else {
                assert_eq!(results, 1, "one result for {entry:?}");
                assert_eq!(runs, 1, "run once: {entry:?}");
            }
        }
    }
}

/// A stream entry id (`ms-seq`) as a number pair, in stream order.
fn entry_id_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// The committed job results' dedupe keys (`result:{stream}:{entry}`), each
/// with its row count; empty while PostgreSQL is away.
async fn answered_keys(env: &TestEnv) -> HashMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>(
        "SELECT dedupe_key, count(*) FROM outbox WHERE dedupe_key LIKE 'result:%' GROUP BY 1",
    )
    .fetch_all(env.db().pool())
    .await
    .unwrap_or_default()
    .into_iter()
    .collect()
}

/// Operation-log rows per job entry, by game and entry id (`source_ref`;
/// the start and stop streams may hand out the same id).
async fn operations_per_entry(env: &TestEnv) -> HashMap<(String, String), usize> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT game_id, source_ref, count(*) FROM operation_log WHERE op_source = 'lobby_stream' GROUP BY 1, 2",
    )
    .fetch_all(env.db().pool())
    .await
    .expect("operation_log");
    rows.into_iter()
        .map(|(g, r, n)| ((g, r), n as usize))
        .collect()
}

/// A stream entry's fields, ordered, so equal entries compare equal.
pub type Fields = BTreeMap<String, String>;

async fn xrange(env: &TestEnv, stream: &str) -> Option<Vec<Fields>> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut env.redis().manager())
        .await
        .ok()?;
    Some(
        reply
            .ids
            .iter()
            .map(|e| {
                shared::adapters::redis::entry_fields(&e.map)
                    .into_iter()
                    .collect()
            })
            .collect(),
    )
}

/// Waits until the test's own Redis connection works again: its first
/// command after a restart fails while it reconnects, and the run's appends
/// must not (a failed `XADD` might or might not have been applied).
pub async fn reconnect(env: &TestEnv) {
    env.eventually("the test's Redis connection", RECOVERY, || async {
        redis::cmd("PING")
            .query_async::<String>(&mut env.redis().manager())
            .await
            .ok()
    })
    .await;
}

/// What reached Redis on the results and health streams (over one or more
/// Redis lifetimes).
#[derive(Debug, Default)]
pub struct Delivered {
    pub results: Vec<Fields>,
    pub health: Vec<Fields>,
}

impl Delivered {
    /// The two streams as they are now.
    pub async fn read(env: &TestEnv) -> Self {
        env.eventually("the results and health streams", RECOVERY, || {
            Self::try_read(env)
        })
        .await
    }

    /// [`Self::read`], or `None` when Redis does not answer (the test's own
    /// connection fails once after a restart, while it reconnects).
    pub async fn try_read(env: &TestEnv) -> Option<Self> {
        let streams = &env.config.common.streams;
        Some(Self {
            results: xrange(env, &streams.job_results).await?,
            health: xrange(env, &streams.health_events).await?,
        })
    }

    pub fn extend(&mut self, other: Self) {
        self.results.extend(other.results);
        self.health.extend(other.health);
    }

    /// Health events per (game, event type).
    pub fn health_counts(&self) -> BTreeMap<(String, String), usize> {
        let mut counts = BTreeMap::new();
        for f in &self.health {
            *counts
                .entry((f["game_id"].clone(), f["event_type"].clone()))
                .or_default() += 1;
        }
        counts
    }
}

/// Nothing committed is lost or doubled: the outbox has no pending or parked
/// row, and its rows of the results and health streams are exactly what
/// `delivered` holds, each once.
pub async fn assert_outbox_delivered_once(env: &TestEnv, delivered: &Delivered) {
    let (pending, parked): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE delivered_at IS NULL), count(*) FILTER (WHERE parked_at IS NOT NULL) FROM outbox",
    )
    .fetch_one(env.db().pool())
    .await
    .expect("outbox counts");
    assert_eq!((pending, parked), (0, 0), "outbox rows pending, parked");
    let streams = &env.config.common.streams;
    for (stream, entries) in [
        (&streams.job_results, &delivered.results),
        (&streams.health_events, &delivered.health),
    ] {
        let rows: Vec<(sqlx::types::Json<Vec<(String, String)>>,)> =
            sqlx::query_as("SELECT fields FROM outbox WHERE stream = $1")
                .bind(stream)
                .fetch_all(env.db().pool())
                .await
                .expect("outbox rows");
        let mut committed: Vec<Fields> = rows
            .into_iter()
            .map(|(f,)| f.0.into_iter().collect())
            .collect();
        let mut seen = entries.clone();
        committed.sort();
        seen.sort();
        assert_eq!(seen, committed, "{stream}: on Redis vs committed");
    }
}

/// The health events of the run are exactly `container_started` once per
/// successful start (per the operation log), plus `extra` once each, plus
/// `maybe` at most once each; nothing else.
pub async fn assert_health_events(
    env: &TestEnv,
    delivered: &Delivered,
    extra: &[(&GameId, &str)],
    maybe: &[(&GameId, &str)],
) {
    let starts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT game_id, count(*) FROM operation_log WHERE op_kind = 'start' AND outcome = 'success' AND error_code = '' GROUP BY 1",
    )
    .fetch_all(env.db().pool())
    .await
    .expect("operation_log");
    let mut expected: BTreeMap<(String, String), usize> = starts
        .into_iter()
        .map(|(g, n)| ((g, "container_started".to_owned()), n as usize))
        .collect();
    for (game, event_type) in extra {
        *expected
            .entry((game.to_string(), (*event_type).to_owned()))
            .or_default() += 1;
    }
    let mut counts = delivered.health_counts();
    for (game, event_type) in maybe {
        let key = (game.to_string(), (*event_type).to_owned());
        let seen = counts.remove(&key).unwrap_or(0);
        assert!(seen <= 1, "{key:?} at most once: {seen}");
    }
    assert_eq!(counts, expected, "health events per game");
    assert!(
        expected.values().all(|&n| n == 1),
        "each game started once: {expected:?}"
    );
}

/// Docker agrees with the records: a game without a record has no
/// container; a running (stopped) record has exactly one container, its
/// current one, running (not running: exited, or never started).
pub async fn assert_docker_agrees(env: &TestEnv, games: &[GameId]) {
    for game in games {
        let listed = env.docker(&[
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            &format!("label={LABEL_GAME_ID}={game}"),
            "--format",
            "{{.ID}} {{.State}}",
        ]);
        let containers: Vec<(&str, &str)> =
            listed.lines().filter_map(|l| l.split_once(' ')).collect();
        let record = env.db().get_record(game).await.expect("record read");
        match record {
            None => assert_eq!(containers, [], "{game} has no record"),
            Some(r) => {
                let current = r.current_container_id.as_deref().unwrap_or("-");
                let ids: Vec<&str> = containers.iter().map(|(id, _)| *id).collect();
                assert_eq!(ids, [current], "{game}: one container, the current one");
                let running = containers[0].1 == "running";
                match r.status {
                    RuntimeStatus::Running => assert!(running, "{game}: {containers:?}"),
                    RuntimeStatus::Stopped => assert!(!running, "{game}: {containers:?}"),
                    RuntimeStatus::Removed => panic!("{game} removed: nothing here removes"),
                }
            }
        }
    }
}

/// One pass of the `inspect-cron` binary (inspect and reconcile), which
/// exits 0.
pub async fn inspect_pass(env: &TestEnv) {
    let mut cmd = Command::new(system_tests::job_binary("inspect-cron"));
    cmd.env_clear().envs(env.vars.clone());
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("inspect-cron task")
        .expect("inspect-cron");
    assert!(
        out.status.success(),
        "inspect-cron: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `POST /control?{query}` to the engine of `game` at its bridge address.
pub fn engine_control(env: &TestEnv, game: &GameId, query: &str) {
    let ip = env.docker(&[
        "inspect",
        "-f",
        &format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            env.network
        ),
        &game.container_name(),
    ]);
    let mut stream = TcpStream::connect((ip.as_str(), 8080))
        .unwrap_or_else(|e| panic!("engine of {game} at {ip}:8080: {e}"));
    write!(
        stream,
        "POST /control?{query} HTTP/1.1\r\nHost: engine\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("control request");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "control {query}: {response}"
    );
}

/// Waits, up to `deadline` from `since`, until `game` has a health event of
/// `event_type` on the stream.
pub async fn await_event(
    env: &TestEnv,
    game: &GameId,
    event_type: &str,
    since: Instant,
    deadline: Duration,
) {
    let left = deadline.saturating_sub(since.elapsed());
    env.eventually(&format!("{event_type} of {game}"), left, || async {
        Delivered::try_read(env)
            .await?
            .health_counts()
            .contains_key(&(game.to_string(), event_type.to_owned()))
            .then_some(())
    })
    .await;
}

/// Waits, up to `deadline` from `since`, until `game` has `results` results
/// on the results stream.
pub async fn await_results(
    env: &TestEnv,
    game: &GameId,
    results: usize,
    since: Instant,
    deadline: Duration,
) {
    let left = deadline.saturating_sub(since.elapsed());
    env.eventually(&format!("{results} result(s) for {game}"), left, || async {
        let n = Delivered::try_read(env)
            .await?
            .results
            .iter()
            .filter(|f| f["game_id"] == game.as_str())
            .count();
        (n >= results).then_some(())
    })
    .await;
}
