//! What the outage tests share: a run of many games driven through the job
//! streams as the Lobby drives it, the job binaries run as production runs
//! them ([`processes`]), and the end-to-end accounting of what was
//! committed and what reached Redis ([`accounting`]).

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use shared::domain::GameId;
use system_tests::{TestEnv, ENGINE};

mod accounting;
mod processes;

pub use accounting::*;
pub use processes::*;

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
/// answered. Every entry appended is kept.
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
    pub async fn start(&mut self, game: &GameId) {
        let stream = self.env.config.start_jobs.stream.clone();
        let entry = self
            .append(
                &stream,
                game,
                &[("game_id", game.as_str()), ("image_ref", ENGINE)],
            )
            .await;
        self.starts.push(entry);
    }

    /// Appends a stop job for `game` now.
    pub async fn stop(&mut self, game: &GameId) {
        let stream = self.env.config.stop_jobs.stream.clone();
        let at = chrono::Utc::now().timestamp_millis().to_string();
        let fields = [
            ("game_id", game.as_str()),
            ("reason", "cancelled"),
            ("requested_at_ms", at.as_str()),
        ];
        let entry = self.append(&stream, game, &fields).await;
        self.stops.push(entry);
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
            .filter(|s| answered.contains(&s.result_key()))
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
                .filter(|e| !answered.contains(&e.result_key()))
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

    /// Every entry but the `lost` ones has its result committed (one: the
    /// key is unique) and was run once (one operation-log row, whatever its
    /// outcome); a lost one has neither.
    pub async fn assert_answered_once(&self, lost: &[Entry]) {
        let answered = answered_keys(self.env).await;
        let ops = operations_per_entry(self.env).await;
        for entry in self.entries() {
            let is_lost = lost.iter().any(|l| l.is(entry));
            let results = usize::from(answered.contains(&entry.result_key()));
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

/// The committed job results' dedupe keys (`result:{stream}:{entry}`,
/// unique in the outbox); empty while PostgreSQL is away.
async fn answered_keys(env: &TestEnv) -> HashSet<String> {
    sqlx::query_scalar("SELECT dedupe_key FROM outbox WHERE dedupe_key LIKE 'result:%'")
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
