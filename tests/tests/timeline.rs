//! `GET /api/v1/internal/runtimes/{game_id}/timeline` over real HTTP (port
//! 0), PostgreSQL, Redis and Docker: a game's operations, health events (with
//! the source that observed each) and requested stops in one order, paged
//! exactly once, with the end of its container's log; a repeated
//! observation is one history row; Docker errors leave the timeline whole;
//! every answer matches the contract.
//!
//! Waits are polls until a deadline (`TestEnv::eventually`), never sleeps.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};
use shared::adapters::docker::DockerEngine;
use shared::bootstrap::Infra;
use shared::domain::{GameId, HealthEvent, HealthSource, OpSource, Outcome};
use shared::operations::StartRequest;
use system_tests::contract::Contract;
use system_tests::{docker, DockerEventsTask, TestEnv, ENGINE};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "timeline-test-token-0123456789abcdef0123";
const START_LINE: &str = "test-engine listening on";
const WAIT: Duration = Duration::from_secs(60);

async fn env() -> TestEnv {
    TestEnv::with(&[("RTMANAGER_API_TOKENS", TOKEN)]).await
}

/// The gateway over `infra`, served in-process until dropped.
struct Gateway {
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    contract: Contract,
}

impl Gateway {
    async fn start(env: &TestEnv) -> Self {
        Self::start_with(env, env.infra.clone()).await
    }

    async fn start_with(env: &TestEnv, infra: Infra) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let (config, stop) = (env.config.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = rest_gateway::run((&config).into(), infra, listener, stop).await {
                panic!("rest-gateway failed: {e:#}");
            }
        });
        Self {
            base,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            shutdown,
            contract: Contract::load("rest-gateway.openapi.yaml"),
        }
    }

    /// Status and JSON body of a GET, with the token or without.
    async fn get_as(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("GET {path}: {status} body is not JSON ({e}): {text}"));
        (status, json)
    }

    /// A timeline answered 200, checked against the contract.
    async fn timeline(&self, game: &GameId, query: &str) -> Value {
        let path = format!("/api/v1/internal/runtimes/{game}/timeline{query}");
        let (status, body) = self.get_as(&path, Some(TOKEN)).await;
        assert_eq!(status, 200, "GET {path}: {body:#}");
        self.contract.assert_json_valid("Timeline", &body);
        body
    }

    /// The error envelope of a GET, checked against the contract.
    async fn error(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let (status, body) = self.get_as(path, token).await;
        self.contract.assert_json_valid("ErrorResponse", &body);
        (status, body["error"]["code"].as_str().unwrap().to_owned())
    }

    /// POSTs a lifecycle route; the answer must be 200.
    async fn post(&self, game: &GameId, action: &str, body: Value, caller: &str) {
        let path = format!("/api/v1/internal/runtimes/{game}/{action}");
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .header("x-galaxy-caller", caller)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        assert_eq!(status, 200, "POST {path}: {text}");
    }

    /// Every entry of the timeline, walking it `limit` at a time; asserts
    /// the page sizes and that the last page says so.
    async fn walk(&self, game: &GameId, limit: usize) -> Vec<Value> {
        let mut all = Vec::new();
        let mut query = format!("?limit={limit}");
        loop {
            let page = self.timeline(game, &query).await;
            let items = page["items"].as_array().unwrap();
            assert!(items.len() <= limit, "{page:#}");
            all.extend(items.iter().cloned());
            match page["next_before"].as_str() {
                Some(before) => {
                    assert_eq!(items.len(), limit, "only a full page has a next one");
                    query = format!("?limit={limit}&before={before}");
                }
                None => return all,
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An entry as (kind, what, source): `what` is the op kind, event type or
/// intent kind.
fn summary(entry: &Value) -> (String, String, String) {
    let what = match entry["kind"].as_str().unwrap() {
        "operation" => &entry["op_kind"],
        "health_event" => &entry["event_type"],
        "intent" => &entry["intent_kind"],
        other => panic!("unknown kind {other}: {entry}"),
    };
    (
        entry["kind"].as_str().unwrap().to_owned(),
        what.as_str().unwrap().to_owned(),
        entry["source"].as_str().unwrap().to_owned(),
    )
}

fn s(kind: &str, what: &str, source: &str) -> (String, String, String) {
    (kind.to_owned(), what.to_owned(), source.to_owned())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The game's current container id, from its record.
async fn current_container(env: &TestEnv, game: &GameId) -> String {
    env.db()
        .get_record(game)
        .await
        .unwrap()
        .and_then(|r| r.current_container_id)
        .expect("a current container")
}

#[tokio::test]
async fn the_timeline_shows_operations_health_events_and_stop_intents_newest_first() {
    let env = env().await;
    let listener = DockerEventsTask::spawn(&env.config, &env.infra);
    let gw = Gateway::start(&env).await;
    let game = env.game("story");
    let outbox = &env.infra.outbox;

    // Started; probed failing (staged as the prober stages it: once per
    // slot); killed, which docker-events reports as an exit.
    gw.post(&game, "start", json!({"image_ref": ENGINE}), "admin")
        .await;
    let first = current_container(&env, &game).await;
    let failed = HealthEvent::probe_failed(&game, &first, now_ms(), 3, 0, "connection refused");
    let key = failed.probe_transition_key(7);
    let staged = outbox
        .publish(&[outbox.health_once(HealthSource::HealthzProber, &failed, &key)])
        .await
        .unwrap();
    assert_eq!(staged, [true]);
    docker(&["kill", &game.container_name()]);
    env.eventually("docker-events to report the exit", WAIT, || async {
        let body = gw.timeline(&game, "").await;
        let items = body["items"].as_array().unwrap().clone();
        items
            .iter()
            .any(|e| e["event_type"] == "container_exited")
            .then_some(())
    })
    .await;

    // Restarted by Game Master (a new container), then stopped.
    gw.post(&game, "restart", json!({}), "gm").await;
    let second = current_container(&env, &game).await;
    assert_ne!(first, second);

    // The end of the running container's log, with Docker's timestamps.
    let logs = env
        .eventually("the engine's start line in the log", WAIT, || async {
            let body = gw.timeline(&game, "?limit=1&logs=20").await;
            assert_eq!(body["logs_error"], Value::Null, "{body:#}");
            let logs = body["logs"].clone();
            let lines = logs["lines"].as_array().unwrap();
            lines
                .iter()
                .any(|l| l.as_str().unwrap().contains(START_LINE))
                .then_some(logs)
        })
        .await;
    assert_eq!(logs["container_id"], second.as_str());
    let lines = logs["lines"].as_array().unwrap();
    assert!(!lines.is_empty() && lines.len() <= 20, "{logs:#}");
    for line in lines {
        let (stamp, _) = line.as_str().unwrap().split_once(' ').unwrap();
        chrono::DateTime::parse_from_rfc3339(stamp)
            .unwrap_or_else(|e| panic!("{line}: no Docker timestamp ({e})"));
    }

    gw.post(&game, "stop", json!({"reason": "finished"}), "admin")
        .await;
    listener.stop().await;

    let body = gw.timeline(&game, "?limit=500").await;
    assert_eq!(body["game_id"], game.as_str());
    assert_eq!(body["record"]["status"], "stopped");
    assert_eq!(
        (&body["logs"], &body["logs_error"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(body["next_before"], Value::Null);
    let items = body["items"].as_array().unwrap().clone();
    let mut story: Vec<_> = items.iter().map(summary).collect();
    story.reverse();
    assert_eq!(
        story,
        [
            s("health_event", "container_started", "start"),
            s("operation", "start", "admin_rest"),
            s("health_event", "probe_failed", "healthz_prober"),
            s("health_event", "container_exited", "docker_events"),
            // The restart's inner stop found the record stopped already.
            s("operation", "stop", "gm_rest"),
            s("health_event", "container_started", "start"),
            s("operation", "start", "gm_rest"),
            s("operation", "restart", "gm_rest"),
            s("intent", "stop", "rtmanager"),
            s("operation", "stop", "admin_rest"),
        ],
        "{body:#}"
    );
    // Newest first, by the time each entry shows.
    let times: Vec<i64> = items.iter().map(|e| e["at_ms"].as_i64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");

    // Each entry is about the container it names, with its details.
    let by = |what: &str| -> Vec<&Value> {
        items
            .iter()
            .filter(|e| e["kind"] != "intent" && summary(e).1 == what)
            .collect::<Vec<_>>()
    };
    let exited = by("container_exited")[0];
    assert_eq!(exited["container_id"], first.as_str());
    assert_eq!(exited["details"], json!({"exit_code": 137, "oom": false}));
    let probe = by("probe_failed")[0];
    assert_eq!(probe["container_id"], first.as_str());
    assert_eq!(probe["at_ms"], failed.occurred_at_ms);
    assert_eq!(probe["details"]["last_error"], "connection refused");
    assert_eq!(by("stop")[0]["container_id"], second.as_str());
    assert_eq!(by("stop")[1]["error_code"], "replay_no_op");
    let intent = &items[1];
    assert_eq!(intent["container_id"], second.as_str());
    let started: Vec<&str> = by("container_started")
        .iter()
        .map(|e| e["container_id"].as_str().unwrap())
        .collect();
    assert_eq!(started, [second.as_str(), first.as_str()]);
    assert_eq!(by("restart")[0]["outcome"], "success");

    // Paged, every entry comes back once, in the same order.
    for limit in [1, 3, 4] {
        assert_eq!(gw.walk(&game, limit).await, items, "limit {limit}");
    }

    // The stopped container's log is still there: what it said before it
    // went is what an operator wants.
    let body = gw.timeline(&game, "?logs=5").await;
    assert_eq!(body["logs"]["container_id"], second.as_str(), "{body:#}");
    assert!(!body["logs"]["lines"].as_array().unwrap().is_empty());
}

/// Rows written straight into the three tables at one instant and around
/// it: the ties are broken by kind and id, and every page boundary (limit
/// 1, 2, 3) lands between them without losing or repeating an entry.
#[tokio::test]
async fn entries_of_one_instant_page_in_a_fixed_order_each_exactly_once() {
    let env = env().await;
    let gw = Gateway::start(&env).await;
    let game = env.game("ties");
    let pool = env.db().pool();
    let at = "2026-11-30 12:00:00.123456+00";
    for (offset, n) in [("0", 3), ("1 second", 1), ("-1 second", 1)] {
        sqlx::query(
            "INSERT INTO operation_log (game_id, op_kind, op_source, source_ref, container_id, \
                 outcome, started_at, finished_at) \
             SELECT $1, 'stop', 'gm_rest', 'op-' || $3 || '-' || g, 'c', 'success', \
                 $2::timestamptz + $3::interval, $2::timestamptz + $3::interval \
             FROM generate_series(1, $4) g",
        )
        .bind(game.as_str())
        .bind(at)
        .bind(offset)
        .bind(n)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO health_event_history (game_id, container_id, event_type, source, \
                 occurred_at, details) \
             SELECT $1, 'c', 'probe_failed', 'healthz_prober', $2::timestamptz + $3::interval, \
                 jsonb_build_object('n', g) \
             FROM generate_series(1, $4) g",
        )
        .bind(game.as_str())
        .bind(at)
        .bind(offset)
        .bind(n)
        .execute(pool)
        .await
        .unwrap();
    }
    for (container, kind) in [("c-a", "stop"), ("c-a", "removal"), ("c-b", "stop")] {
        sqlx::query(
            "INSERT INTO container_intents (container_id, kind, game_id, recorded_at) \
             VALUES ($1, $2, $3, $4::timestamptz)",
        )
        .bind(container)
        .bind(kind)
        .bind(game.as_str())
        .bind(at)
        .execute(pool)
        .await
        .unwrap();
    }

    let all = gw.timeline(&game, "?limit=500").await;
    let items = all["items"].as_array().unwrap().clone();
    // The record is gone (never made): the history still answers.
    assert_eq!(all["record"], Value::Null);
    let order: Vec<String> = items
        .iter()
        .map(|e| match e["kind"].as_str().unwrap() {
            "operation" => e["source_ref"].as_str().unwrap().to_owned(),
            "health_event" => format!("ev-{}-{}", e["at_ms"], e["details"]["n"]),
            _ => format!(
                "{}/{}",
                e["container_id"].as_str().unwrap(),
                e["intent_kind"].as_str().unwrap()
            ),
        })
        .collect();
    let ms = 1_796_040_000_123; // `at` in Unix ms
    let ev = |at: i64, n: i32| format!("ev-{at}-{n}");
    assert_eq!(
        order,
        [
            "op-1 second-1".to_owned(),
            ev(ms + 1000, 1),
            "op-0-3".to_owned(),
            "op-0-2".to_owned(),
            "op-0-1".to_owned(),
            ev(ms, 3),
            ev(ms, 2),
            ev(ms, 1),
            "c-b/stop".to_owned(),
            "c-a/stop".to_owned(),
            "c-a/removal".to_owned(),
            "op--1 second-1".to_owned(),
            ev(ms - 1000, 1),
        ],
        "{all:#}"
    );
    for limit in 1..=4 {
        assert_eq!(gw.walk(&game, limit).await, items, "limit {limit}");
    }
}

/// The staging calls of docker-events (one event per container, by its
/// observation key) and of the prober (one per slot), made twice: one
/// stream entry each, and one history row each.
#[tokio::test]
async fn a_repeated_observation_is_one_history_row_as_it_is_one_stream_entry() {
    let env = env().await;
    let gw = Gateway::start(&env).await;
    let game = env.game("twice");
    let outbox = &env.infra.outbox;
    let exited = HealthEvent::container_exited(&game, "c1", now_ms(), 3, false);
    let failed = HealthEvent::probe_failed(&game, "c1", now_ms(), 3, 503, "");
    let messages = [
        outbox.health_once(
            HealthSource::DockerEvents,
            &exited,
            &exited.observation_key(),
        ),
        outbox.health_once(
            HealthSource::HealthzProber,
            &failed,
            &failed.probe_transition_key(11),
        ),
    ];
    assert_eq!(outbox.publish(&messages).await.unwrap(), [true, true]);
    // A replay (cursor overlap, catch-up, an overlapping prober).
    assert_eq!(outbox.publish(&messages).await.unwrap(), [false, false]);
    let mut tx = outbox.begin().await.unwrap();
    assert!(!tx.stage(&messages[0]).await.unwrap());
    tx.commit().await.unwrap();

    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT event_type, source, dedupe_key FROM health_event_history \
         WHERE game_id = $1 ORDER BY id",
    )
    .bind(game.as_str())
    .fetch_all(env.db().pool())
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            (
                "container_exited".to_owned(),
                "docker_events".to_owned(),
                Some(exited.observation_key())
            ),
            (
                "probe_failed".to_owned(),
                "healthz_prober".to_owned(),
                Some(failed.probe_transition_key(11))
            ),
        ]
    );
    env.flush_outbox().await;
    let stream = env
        .read_stream(&env.config.common.streams.health_events)
        .await;
    assert_eq!(stream.len(), 2);
    let body = gw.timeline(&game, "").await;
    let types: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    let unique: HashSet<&str> = types.iter().copied().collect();
    assert_eq!((types.len(), unique.len()), (2, 2), "{body:#}");
}

#[tokio::test]
async fn log_errors_leave_the_timeline_whole() {
    let env = env().await;
    let svc = system_tests::operations(&env.config, &env.infra).unwrap();
    let game = env.game("nodocker");
    let outcome = svc
        .start(&StartRequest {
            game_id: game.clone(),
            image_ref: ENGINE.to_owned(),
            op_source: OpSource::AdminRest,
            source_ref: "timeline-test".into(),
        })
        .await;
    assert_eq!(outcome.outcome, Outcome::Success, "{outcome:?}");

    // Docker unreachable: a loopback port nothing listens on.
    let mut infra = env.infra.clone();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    infra.engine = std::sync::Arc::new(
        DockerEngine::connect(&format!("tcp://127.0.0.1:{port}")).expect("client"),
    );
    let away = Gateway::start_with(&env, infra).await;
    let body = away.timeline(&game, "?logs=10").await;
    assert_eq!(body["logs"], Value::Null);
    assert_eq!(body["logs_error"]["code"], "docker_unavailable", "{body:#}");
    assert_eq!(body["items"].as_array().unwrap().len(), 2, "{body:#}");
    // Not asked for, no error either.
    let body = away.timeline(&game, "").await;
    assert_eq!(body["logs_error"], Value::Null);

    // The container removed behind rtmanager's back: not found.
    let gw = Gateway::start(&env).await;
    docker(&["rm", "-f", &game.container_name()]);
    let body = gw.timeline(&game, "?logs=10").await;
    assert_eq!(body["logs_error"]["code"], "not_found", "{body:#}");

    // History without a record: 200, no container to read.
    let orphan = env.game("orphan");
    let event = HealthEvent::container_disappeared(&orphan, "gone", now_ms());
    let outbox = &env.infra.outbox;
    outbox
        .publish(&[outbox.health(HealthSource::InspectCron, &event)])
        .await
        .unwrap();
    let body = gw.timeline(&orphan, "?logs=1").await;
    assert_eq!(body["record"], Value::Null);
    assert_eq!(body["items"][0]["source"], "inspect_cron");
    assert_eq!(body["logs_error"]["code"], "not_found", "{body:#}");
}

#[tokio::test]
async fn unknown_games_are_404_bad_parameters_400_and_a_token_is_required() {
    let env = env().await;
    let gw = Gateway::start(&env).await;
    let known = env.game("known");
    let outbox = &env.infra.outbox;
    let event = HealthEvent::container_disappeared(&known, "c", now_ms());
    outbox
        .publish(&[outbox.health(HealthSource::InspectCron, &event)])
        .await
        .unwrap();
    let nobody = env.game("nobody");
    let path =
        |game: &str, query: &str| format!("/api/v1/internal/runtimes/{game}/timeline{query}");

    assert_eq!(
        gw.error(&path(nobody.as_str(), ""), Some(TOKEN)).await,
        (404, "not_found".to_owned())
    );
    // A cursor of a known game's timeline, past its only entry: an empty
    // page for it, still 404 for a game with nothing.
    let page = gw.timeline(&known, "?limit=1").await;
    assert_eq!(page["next_before"], Value::Null);
    let all = gw.timeline(&known, "").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 1);
    let cursor = {
        // Two entries, so the first page of one has a cursor.
        let again = HealthEvent::container_disappeared(&known, "c2", now_ms() + 1);
        outbox
            .publish(&[outbox.health(HealthSource::InspectCron, &again)])
            .await
            .unwrap();
        let page = gw.timeline(&known, "?limit=1").await;
        page["next_before"].as_str().unwrap().to_owned()
    };
    let last = gw
        .timeline(&known, &format!("?limit=1&before={cursor}"))
        .await;
    assert_eq!(last["items"].as_array().unwrap().len(), 1);
    // A well-formed cursor from before any entry (base64url of "1.2.3.",
    // 1 µs after the epoch): an empty last page of a known game.
    let past = gw.timeline(&known, "?before=MS4yLjMu").await;
    assert_eq!(
        (past["items"].clone(), past["next_before"].clone()),
        (json!([]), Value::Null)
    );
    assert_eq!(
        gw.error(
            &path(nobody.as_str(), &format!("?before={cursor}")),
            Some(TOKEN)
        )
        .await,
        (404, "not_found".to_owned())
    );

    for bad in [
        path("bad..id", ""),
        path("a%20b", ""),
        path(known.as_str(), "?limit=0"),
        path(known.as_str(), "?limit=501"),
        path(known.as_str(), "?limit=x"),
        path(known.as_str(), "?logs=501"),
        path(known.as_str(), "?logs=-1"),
        path(known.as_str(), "?before="),
        path(known.as_str(), "?before=not-a-cursor"),
        // base64url of "1.9.3.": rank 9 is no kind.
        path(known.as_str(), "?before=MS45LjMu"),
        path(known.as_str(), "?follow=true"),
    ] {
        assert_eq!(
            gw.error(&bad, Some(TOKEN)).await,
            (400, "invalid_request".to_owned()),
            "{bad}"
        );
    }
    for token in [None, Some("wrong-token")] {
        assert_eq!(
            gw.error(&path(known.as_str(), ""), token).await,
            (401, "invalid_request".to_owned())
        );
    }
}

/// The contract's example answer is itself valid against the contract, and
/// the schema is strict enough to tell (so the checks above mean something).
#[test]
fn the_contracts_timeline_example_matches_its_schema() {
    let contract = Contract::load("rest-gateway.openapi.yaml");
    let example = contract.document()["components"]["schemas"]["Timeline"]["example"].clone();
    assert_eq!(example["items"].as_array().map(Vec::len), Some(3));
    contract.assert_json_valid("Timeline", &example);
    for (pointer, wrong) in [
        ("/items/0/kind", json!("note")),
        ("/items/0/source", json!("docker_events")),
        ("/items/1/source", json!("rtmanager")),
        ("/items/2/extra", json!(1)),
        ("/logs_error", json!({"code": "conflict", "message": "x"})),
        ("/next_before", json!(7)),
    ] {
        let mut bad = example.clone();
        match bad.pointer_mut(pointer) {
            Some(slot) => *slot = wrong,
            None => {
                let (parent, key) = pointer.rsplit_once('/').unwrap();
                bad.pointer_mut(parent).unwrap()[key] = wrong;
            }
        }
        assert!(
            !contract.json_errors("Timeline", &bad).is_empty(),
            "{pointer} should break the schema"
        );
    }
}
