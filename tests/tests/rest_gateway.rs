//! `rest-gateway` over real HTTP (port 0) against real Redis, PostgreSQL and
//! Docker: lifecycle routes and their codes on real containers, reads and
//! pagination, strict input, bearer auth on every internal route, the token
//! file rules, the disabled mode, probes and metrics.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::Method;
use rest_gateway::auth::Auth;
use serde_json::{json, Value};
use shared::config::{Config, Secret};
use shared::domain::GameId;
use system_tests::{inspect, TestEnv, ENGINE};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "t0ken-a-0123456789abcdef0123456789abcdef";
const TOKENS: (&str, &str) = (
    "RTMANAGER_API_TOKENS",
    "t0ken-a-0123456789abcdef0123456789abcdef,t0ken-b-0123456789abcdef0123456789abcdef",
);

/// A gateway served in-process on a port-0 listener, with its test env.
struct Gateway {
    env: TestEnv,
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// One answer: status, headers and the body as JSON (`Null` when it is not).
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HeaderMap,
    text: String,
    json: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the error envelope with `status` and `code`.
    #[track_caller]
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.json["error"]["code"], code, "{self:?}");
        assert!(
            self.json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{self:?}"
        );
        assert_eq!(
            self.json.as_object().map(|o| o.len()),
            Some(1),
            "only the envelope: {self:?}"
        );
    }
}

/// How a request authenticates.
#[derive(Clone, Copy)]
enum Cred {
    /// `Bearer` [`TOKEN`]
    Token,
    None,
    /// `Bearer` and this token.
    Bearer(&'static str),
    /// This exact `Authorization` value.
    Raw(&'static str),
}

impl Gateway {
    async fn start(overrides: &[(&str, &str)]) -> Self {
        let env = TestEnv::with(overrides).await;
        Self::serve(env, None).await
    }

    /// Serves `env` with `auth` (or the auth its config gives).
    async fn serve(env: TestEnv, auth: Option<Auth>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let (config, infra, token) = (env.config.clone(), env.infra.clone(), shutdown.clone());
        let server = tokio::spawn(async move {
            match auth {
                Some(auth) => {
                    rest_gateway::serve((&config).into(), infra, listener, None, auth, token).await
                }
                None => rest_gateway::run((&config).into(), infra, listener, token).await,
            }
        });
        Self {
            env,
            base,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            shutdown,
            server: Some(server),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        cred: Cred,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Answer {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        match cred {
            Cred::Token => req = req.header("authorization", format!("Bearer {TOKEN}")),
            Cred::Bearer(token) => req = req.header("authorization", format!("Bearer {token}")),
            Cred::Raw(v) => req = req.header("authorization", HeaderValue::from_str(v).unwrap()),
            Cred::None => {}
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let resp = req.send().await.expect("HTTP request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            text,
            json,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, Cred::Token, &[], None).await
    }

    async fn open_get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, Cred::None, &[], None).await
    }

    async fn delete(&self, path: &str) -> Answer {
        self.send(Method::DELETE, path, Cred::Token, &[], None)
            .await
    }

    /// A JSON POST with the token and extra `headers`.
    async fn post(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> Answer {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send(
            Method::POST,
            path,
            Cred::Token,
            &all,
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    /// Cancels the shutdown token; `run` must return `Ok` promptly.
    async fn stop(mut self) {
        self.shutdown.cancel();
        let server = self.server.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .expect("the gateway stops after shutdown")
            .unwrap()
            .expect("run returns Ok");
    }
}

fn rt(game: &GameId, action: &str) -> String {
    format!("/api/v1/internal/runtimes/{game}/{action}")
}

const RECORD_KEYS: [&str; 12] = [
    "created_at_ms",
    "current_container_id",
    "current_image_ref",
    "docker_network",
    "engine_endpoint",
    "game_id",
    "last_op_at_ms",
    "removed_at_ms",
    "started_at_ms",
    "state_path",
    "status",
    "stopped_at_ms",
];

#[track_caller]
fn assert_record(a: &Answer, game: &GameId, status: &str, image: &str) {
    assert_eq!(a.status, 200, "{a:?}");
    let keys: BTreeSet<_> = a.json.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, RECORD_KEYS.iter().map(|k| k.to_string()).collect());
    assert_eq!(a.json["game_id"], game.as_str());
    assert_eq!(a.json["status"], status, "{a:?}");
    assert_eq!(a.json["current_image_ref"], image);
    assert_eq!(a.json["engine_endpoint"], game.engine_endpoint());
    assert!(a.json["last_op_at_ms"].as_i64().unwrap() > 1_600_000_000_000);
}

#[tokio::test]
async fn lifecycle_routes_answer_with_the_record_and_the_documented_codes() {
    let gw = Gateway::start(&[TOKENS, ("RTMANAGER_PATCH_START_GRACE", "300ms")]).await;
    let game = gw.env.game("rest");
    let gm = [("x-galaxy-caller", "gm"), ("x-request-id", "req-start-1")];

    let started = gw
        .post(&rt(&game, "start"), json!({"image_ref": ENGINE}), &gm)
        .await;
    assert_record(&started, &game, "running", ENGINE);
    assert_eq!(started.header("x-request-id"), Some("req-start-1"));
    assert_eq!(started.header("x-rtmanager-error-code"), None);
    let first_container = started.json["current_container_id"].as_str().unwrap();
    assert_eq!(
        inspect(first_container).unwrap()["State"]["Status"],
        "running"
    );

    let again = gw
        .post(&rt(&game, "start"), json!({"image_ref": ENGINE}), &[])
        .await;
    assert_record(&again, &game, "running", ENGINE);
    assert_eq!(again.header("x-rtmanager-error-code"), Some("replay_no_op"));

    gw.post(
        &rt(&game, "start"),
        json!({"image_ref": "galaxy-test/engine:1.0.1"}),
        &[],
    )
    .await
    .assert_error(409, "conflict");

    // The record with its latest health snapshot.
    let shown = gw.get(&format!("/api/v1/internal/runtimes/{game}")).await;
    assert_eq!(shown.status, 200, "{shown:?}");
    assert_eq!(shown.json["record"]["status"], "running");
    assert_eq!(shown.json["health"]["event_type"], "container_started");
    assert_eq!(shown.json["health"]["status"], "healthy");
    assert_eq!(shown.json["health"]["container_id"], first_container);
    assert_eq!(shown.json["health"]["details"]["image_ref"], ENGINE);
    assert!(shown.json["health"]["occurred_at_ms"].is_i64());

    gw.delete(&rt(&game, "container"))
        .await
        .assert_error(409, "conflict");

    for (image, code) in [
        ("galaxy-test/engine:1.1.0", "semver_patch_only"),
        ("galaxy-test/engine:nolabels", "image_ref_not_semver"),
    ] {
        gw.post(&rt(&game, "patch"), json!({"image_ref": image}), &[])
            .await
            .assert_error(422, code);
    }
    let patched = gw
        .post(
            &rt(&game, "patch"),
            json!({"image_ref": "galaxy-test/engine:1.0.1"}),
            &[("x-galaxy-caller", "admin")],
        )
        .await;
    assert_record(&patched, &game, "running", "galaxy-test/engine:1.0.1");

    // Restart takes no body, or `{}`; nothing else.
    gw.post(&rt(&game, "restart"), json!({"force": true}), &[])
        .await
        .assert_error(400, "invalid_request");
    let restarted = gw
        .send(
            Method::POST,
            &rt(&game, "restart"),
            Cred::Token,
            &[("x-galaxy-caller", "somebody")],
            None,
        )
        .await;
    assert_record(&restarted, &game, "running", "galaxy-test/engine:1.0.1");
    assert_ne!(
        restarted.json["current_container_id"],
        patched.json["current_container_id"]
    );

    gw.post(&rt(&game, "stop"), json!({"reason": "bored"}), &[])
        .await
        .assert_error(400, "invalid_request");
    let stopped = gw
        .post(&rt(&game, "stop"), json!({"reason": "cancelled"}), &gm[..1])
        .await;
    assert_record(&stopped, &game, "stopped", "galaxy-test/engine:1.0.1");
    assert!(stopped.json["stopped_at_ms"].is_i64());
    let replay = gw
        .post(&rt(&game, "stop"), json!({"reason": "cancelled"}), &[])
        .await;
    assert_record(&replay, &game, "stopped", "galaxy-test/engine:1.0.1");
    assert_eq!(
        replay.header("x-rtmanager-error-code"),
        Some("replay_no_op")
    );

    let cleaned = gw.delete(&rt(&game, "container")).await;
    assert_record(&cleaned, &game, "removed", "galaxy-test/engine:1.0.1");
    assert!(cleaned.json["removed_at_ms"].is_i64());
    assert!(inspect(&game.container_name()).is_none());
    let cleaned_again = gw.delete(&rt(&game, "container")).await;
    assert_eq!(cleaned_again.status, 200);
    assert_eq!(
        cleaned_again.header("x-rtmanager-error-code"),
        Some("replay_no_op")
    );
    gw.post(&rt(&game, "restart"), json!({}), &[])
        .await
        .assert_error(409, "conflict");

    // The operation log, newest first: sources from X-Galaxy-Caller, and the
    // request id as source_ref.
    let ops = gw.get(&rt(&game, "operations")).await;
    assert_eq!(ops.status, 200, "{ops:?}");
    assert_eq!(ops.json["next_before"], Value::Null);
    let items = ops.json["items"].as_array().unwrap();
    let ids: Vec<i64> = items.iter().map(|o| o["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let oldest = items.last().unwrap();
    assert_eq!(
        (
            &oldest["op_kind"],
            &oldest["op_source"],
            &oldest["source_ref"],
            &oldest["outcome"],
            &oldest["error_code"],
        ),
        (
            &json!("start"),
            &json!("gm_rest"),
            &json!("req-start-1"),
            &json!("success"),
            &json!("")
        )
    );
    // The outer operations (inner stops and starts of patch and restart, and
    // the stops and starts issued directly, left out).
    let summary: Vec<(String, String, String)> = items
        .iter()
        .filter(|o| (o["op_kind"] != "stop" && o["op_kind"] != "start") || *o == oldest)
        .map(|o| {
            (
                o["op_kind"].as_str().unwrap().to_owned(),
                o["op_source"].as_str().unwrap().to_owned(),
                o["error_code"].as_str().unwrap().to_owned(),
            )
        })
        .rev()
        .collect();
    let s = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(
        summary,
        [
            s("start", "gm_rest", ""),
            s("cleanup_container", "admin_rest", "conflict"),
            s("patch", "admin_rest", "semver_patch_only"),
            s("patch", "admin_rest", "image_ref_not_semver"),
            s("patch", "admin_rest", ""),
            s("restart", "admin_rest", ""),
            s("cleanup_container", "admin_rest", ""),
            s("cleanup_container", "admin_rest", "replay_no_op"),
            s("restart", "admin_rest", "conflict"),
        ]
    );
    let stop_sources: Vec<_> = items
        .iter()
        .filter(|o| o["op_kind"] == "stop" && o["error_code"] == "")
        .map(|o| o["op_source"].as_str().unwrap())
        .collect();
    assert!(stop_sources.contains(&"gm_rest"), "{stop_sources:?}");
    // Every answer's X-Request-Id is a source_ref of the log.
    let refs: BTreeSet<_> = items
        .iter()
        .map(|o| o["source_ref"].as_str().unwrap().to_owned())
        .collect();
    for answer in [&cleaned_again, &cleaned, &stopped, &restarted, &patched] {
        let id = answer.header("x-request-id").unwrap();
        assert_eq!(id.len(), 16, "a generated id is 16 hex digits");
        assert!(refs.contains(id), "{id} not among {refs:?}");
    }
    let keys: BTreeSet<_> = oldest.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        [
            "container_id",
            "error_code",
            "error_message",
            "finished_at_ms",
            "id",
            "image_ref",
            "op_kind",
            "op_source",
            "outcome",
            "source_ref",
            "started_at_ms"
        ]
        .iter()
        .map(|k| k.to_string())
        .collect()
    );

    // REST answers directly: nothing on runtime:job_results, while the start's
    // health event did go out through the outbox.
    gw.env.flush_outbox().await;
    assert!(gw
        .env
        .read_stream(&gw.env.config.common.streams.job_results)
        .await
        .is_empty());
    assert!(!gw
        .env
        .read_stream(&gw.env.config.common.streams.health_events)
        .await
        .is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn malformed_requests_are_rejected_in_the_envelope_before_any_work() {
    let gw = Gateway::start(&[TOKENS, ("RTMANAGER_HTTP_BODY_LIMIT", "1024")]).await;
    let game = gw.env.game("bad");
    let start = rt(&game, "start");

    for path in [
        "/api/v1/internal/runtimes/bad..id/start".to_owned(),
        "/api/v1/internal/runtimes/a%20b/start".to_owned(),
        "/api/v1/internal/runtimes/-a/start".to_owned(),
        format!("/api/v1/internal/runtimes/{}/start", "a".repeat(52)),
    ] {
        gw.post(&path, json!({"image_ref": ENGINE}), &[])
            .await
            .assert_error(400, "invalid_request");
    }
    gw.get("/api/v1/internal/runtimes/a%2Fb")
        .await
        .assert_error(400, "invalid_request");
    for body in [
        json!({"image_ref": ENGINE, "extra": 1}),
        json!({}),
        json!({"image_ref": 7}),
        json!([ENGINE]),
    ] {
        gw.post(&start, body, &[])
            .await
            .assert_error(400, "invalid_request");
    }
    for (body, content_type) in [
        ("{\"image_ref\": ", Some("application/json")),
        ("{\"image_ref\": \"x\"}", None),
        ("{\"image_ref\": \"x\"}", Some("text/plain")),
        ("", Some("application/json")),
    ] {
        let headers: Vec<(&str, &str)> = content_type
            .map(|c| ("content-type", c))
            .into_iter()
            .collect();
        gw.send(
            Method::POST,
            &start,
            Cred::Token,
            &headers,
            Some(body.as_bytes().to_vec()),
        )
        .await
        .assert_error(400, "invalid_request");
    }
    gw.post(&start, json!({"image_ref": "x".repeat(4096)}), &[])
        .await
        .assert_error(413, "invalid_request");

    // A streamed (chunked) body without a declared length hits the same limit.
    let chunked = raw_http(
        &gw.base,
        &format!(
            "POST {start} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             800\r\n{}\r\n800\r\n{}\r\n0\r\n\r\n",
            "x".repeat(0x800),
            "x".repeat(0x800)
        ),
    )
    .await;
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");
    assert!(
        chunked.contains("\"code\":\"invalid_request\""),
        "{chunked}"
    );

    // A bad image reference is a business outcome, after validation.
    gw.post(&start, json!({"image_ref": "Not A Ref"}), &[])
        .await
        .assert_error(422, "start_config_invalid");
    // Operations on a game without a record.
    gw.get(&format!("/api/v1/internal/runtimes/{game}"))
        .await
        .assert_error(404, "not_found");
    gw.post(&rt(&game, "restart"), json!({}), &[])
        .await
        .assert_error(404, "not_found");
    gw.delete(&rt(&game, "container"))
        .await
        .assert_error(404, "not_found");
    let tombstone = gw
        .post(&rt(&game, "stop"), json!({"reason": "finished"}), &[])
        .await;
    assert_eq!(tombstone.status, 200);
    assert_eq!(
        tombstone.json,
        json!({"game_id": game.as_str(), "status": "absent"})
    );
    assert_eq!(
        tombstone.header("x-rtmanager-error-code"),
        Some("replay_no_op")
    );

    // Routing errors, in the envelope too.
    gw.get("/api/v1/internal/nothing-here")
        .await
        .assert_error(404, "not_found");
    gw.open_get("/nothing").await.assert_error(404, "not_found");
    gw.get(&start).await.assert_error(405, "invalid_request");
    gw.send(Method::POST, "/healthz", Cred::None, &[], None)
        .await
        .assert_error(405, "invalid_request");

    // Strict query strings.
    for query in [
        "?status=sleeping",
        "?limit=0",
        "?limit=501",
        "?limit=ten",
        "?after=..",
        "?page=2",
    ] {
        gw.get(&format!("/api/v1/internal/runtimes{query}"))
            .await
            .assert_error(400, "invalid_request");
    }
    gw.get(&format!("{}?before=x", rt(&game, "operations")))
        .await
        .assert_error(400, "invalid_request");

    // An unsafe incoming request id is replaced.
    let a = gw
        .send(
            Method::GET,
            "/healthz",
            Cred::None,
            &[("x-request-id", "has space")],
            None,
        )
        .await;
    assert_eq!(a.header("x-request-id").map(str::len), Some(16));
    // Nothing was started by any of it.
    assert!(inspect(&game.container_name()).is_none());
    gw.stop().await;
}

/// Writes `request` on a fresh connection and reads the whole answer.
async fn raw_http(base: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    // The server may answer (and close) before reading the whole body.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Inserts a record directly (the list test needs many, not real containers).
async fn insert_record(env: &TestEnv, game: &GameId, status: &str) {
    sqlx::query(
        "INSERT INTO runtime_records (game_id, status, current_container_id, current_image_ref, \
             engine_endpoint, state_path, docker_network, started_at, last_op_at) \
         VALUES ($1, $2, 'c', 'img:1.0.0', 'http://e:8080', '/s', 'n', now(), now())",
    )
    .bind(game.as_str())
    .bind(status)
    .execute(env.db().pool())
    .await
    .unwrap();
}

#[tokio::test]
async fn lists_filter_by_status_and_paginate_by_cursor() {
    let gw = Gateway::start(&[TOKENS]).await;
    let mut running = Vec::new();
    for i in 0..5 {
        let game = gw.env.game(&format!("list{i}"));
        insert_record(&gw.env, &game, "running").await;
        running.push(game.to_string());
    }
    let stopped = gw.env.game("list-stopped");
    insert_record(&gw.env, &stopped, "stopped").await;

    let all = gw.get("/api/v1/internal/runtimes").await;
    assert_eq!(all.status, 200, "{all:?}");
    assert_eq!(all.json["items"].as_array().unwrap().len(), 6);
    assert_eq!(all.json["next_after"], Value::Null);

    let only = gw.get("/api/v1/internal/runtimes?status=stopped").await;
    let items = only.json["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["game_id"], stopped.as_str());
    assert_eq!(items[0]["stopped_at_ms"], Value::Null);

    let mut seen = Vec::new();
    let mut path = "/api/v1/internal/runtimes?status=running&limit=2".to_owned();
    loop {
        let page = gw.get(&path).await;
        assert_eq!(page.status, 200, "{page:?}");
        let items = page.json["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|r| r["game_id"].as_str().unwrap().to_owned()),
        );
        match page.json["next_after"].as_str() {
            Some(after) => {
                path = format!("/api/v1/internal/runtimes?status=running&limit=2&after={after}")
            }
            None => break,
        }
    }
    running.sort();
    assert_eq!(seen, running, "every running game once, by game id");

    // The operation log pages backwards with `before`.
    let game = gw.env.game("ops");
    for i in 0..5 {
        let id = format!("stop-{i}");
        let a = gw
            .post(
                &rt(&game, "stop"),
                json!({"reason": "timeout"}),
                &[("x-request-id", id.as_str())],
            )
            .await;
        assert_eq!(a.status, 200, "{a:?}");
    }
    let mut refs = Vec::new();
    let mut path = format!("{}?limit=2", rt(&game, "operations"));
    loop {
        let page = gw.get(&path).await;
        assert_eq!(page.status, 200, "{page:?}");
        refs.extend(
            page.json["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["source_ref"].as_str().unwrap().to_owned()),
        );
        match page.json["next_before"].as_i64() {
            Some(before) => path = format!("{}?limit=2&before={before}", rt(&game, "operations")),
            None => break,
        }
    }
    assert_eq!(refs, ["stop-4", "stop-3", "stop-2", "stop-1", "stop-0"]);
    let unknown = gw.get(&rt(&gw.env.game("nobody"), "operations")).await;
    assert_eq!(unknown.json, json!({"items": [], "next_before": null}));
    gw.stop().await;
}

/// Every internal route of the gateway, its own and the discovery/observe
/// ones, plus paths under the prefix that match no route.
fn internal_routes(game: &GameId) -> Vec<(Method, String)> {
    vec![
        (Method::POST, rt(game, "start")),
        (Method::POST, rt(game, "stop")),
        (Method::POST, rt(game, "restart")),
        (Method::POST, rt(game, "patch")),
        (Method::DELETE, rt(game, "container")),
        (Method::GET, "/api/v1/internal/runtimes".into()),
        (Method::GET, format!("/api/v1/internal/runtimes/{game}")),
        (Method::GET, rt(game, "operations")),
        (Method::GET, rt(game, "stats")),
        (Method::GET, rt(game, "logs")),
        (Method::GET, rt(game, "health")),
        (Method::GET, rt(game, "timeline")),
        (Method::GET, "/api/v1/internal/monitoring/targets".into()),
        (Method::GET, "/api/v1/internal/no-such-route".into()),
        (Method::GET, "/api/v1/internal".into()),
    ]
}

#[tokio::test]
async fn every_internal_route_needs_a_valid_bearer_token_and_probes_stay_open() {
    let gw = Gateway::start(&[TOKENS]).await;
    let game = gw.env.game("auth");
    let refused = [
        Cred::None,
        Cred::Raw("Bearer"),
        Cred::Raw("Bearer "),
        Cred::Raw("Basic dDBrZW4tYQ=="),
        Cred::Raw("bearer  t0ken-a-0123456789abcdef0123456789abcdef "),
        Cred::Raw("Bearer t0ken-c-0123456789abcdef0123456789abcdef"),
        Cred::Raw("Bearer t0ken-a-0123456789abcdef0123456789abcde"),
        Cred::Raw("Bearer t0ken-a-0123456789abcdef0123456789abcdeff"),
        Cred::Raw("Bearer t0ken-a-0123456789abcdef0123456789abcdef,t0ken-b-0123456789abcdef0123456789abcdef"),
        Cred::Raw("t0ken-a-0123456789abcdef0123456789abcdef"),
    ];
    for (method, path) in internal_routes(&game) {
        for cred in refused {
            let a = gw
                .send(
                    method.clone(),
                    &path,
                    cred,
                    &[("content-type", "application/json")],
                    Some(b"{\"image_ref\":\"x\"}".to_vec()),
                )
                .await;
            a.assert_error(401, "invalid_request");
            assert_eq!(
                a.header("www-authenticate"),
                Some("Bearer realm=\"rtmanager\""),
                "{method} {path}"
            );
            assert_eq!(a.header("x-request-id").map(str::len), Some(16));
        }
    }
    // Both tokens work, and the scheme is case-insensitive.
    for header in [
        "Bearer t0ken-a-0123456789abcdef0123456789abcdef",
        "bearer t0ken-b-0123456789abcdef0123456789abcdef",
        "BEARER t0ken-a-0123456789abcdef0123456789abcdef",
    ] {
        let a = gw
            .send(
                Method::GET,
                "/api/v1/internal/runtimes",
                Cred::Raw(header),
                &[],
                None,
            )
            .await;
        assert_eq!(a.status, 200, "{header}: {a:?}");
    }
    // Nothing was started by the refused requests.
    assert!(inspect(&game.container_name()).is_none());

    // The probes need no token and say nothing about games.
    let health = gw.open_get("/healthz").await;
    assert_eq!(
        (health.status, health.json.clone()),
        (200, json!({"status": "ok"}))
    );
    let ready = gw.open_get("/readyz").await;
    assert_eq!(ready.status, 200, "{ready:?}");
    assert_eq!(ready.json["status"], "ready");
    let metrics = gw.open_get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = &metrics.text;
    assert!(text.contains("\nrtmanager_api_auth_disabled 0\n"), "{text}");
    assert!(text.contains("\nrtmanager_api_tokens 2\n"), "{text}");
    assert!(
        text.contains(
            "rtmanager_http_requests_total{method=\"GET\",route=\"/api/v1/internal/runtimes\",status=\"200\"} 3"
        ),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"));
    assert_eq!(text.matches("# EOF").count(), 1);
    assert!(!text.contains(game.as_str()));
    assert!(!text.contains("t0ken"));
    gw.stop().await;
}

#[tokio::test]
async fn readyz_is_503_naming_the_failed_check_when_a_migration_is_missing() {
    let gw = Gateway::start(&[TOKENS]).await;
    let ready = gw.open_get("/readyz").await;
    assert_eq!(ready.status, 200, "{ready:?}");
    sqlx::query(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .execute(gw.env.db().pool())
    .await
    .unwrap();
    let ready = gw.open_get("/readyz").await;
    assert_eq!(ready.status, 503, "{ready:?}");
    assert_eq!(
        ready.json,
        json!({"status": "not_ready", "failed": ["migrations"],
               "checks": {"docker": "ok", "migrations": "pending", "postgres": "ok", "redis": "ok"}})
    );
    gw.stop().await;
}

fn without_tokens(config: &Config) -> Config {
    let mut config = config.clone();
    config.gateway.api_tokens = Secret::default();
    config.gateway.api_tokens_file = None;
    config
}

fn tokens_file(dir: &std::path::Path, contents: &str, mode: u32) -> std::path::PathBuf {
    let path = dir.join("api-tokens");
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[tokio::test]
async fn the_gateway_refuses_to_start_without_tokens_or_with_a_world_readable_file() {
    let env = TestEnv::with(&[TOKENS]).await;
    let bare = without_tokens(&env.config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = rest_gateway::run(
        (&bare).into(),
        env.infra.clone(),
        listener,
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("no API token configured"),
        "{err:#}"
    );

    let path = tokens_file(
        &env.state_root,
        "# ops\n\ns3cret-file-token-0123456789abcdef\n",
        0o644,
    );
    let mut config = bare.clone();
    config.gateway.api_tokens_file = Some(path.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = rest_gateway::run(
        (&config).into(),
        env.infra.clone(),
        listener,
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("readable by every user") && msg.contains("0644"),
        "{msg}"
    );
    assert!(!msg.contains("s3cret"), "{msg}");

    // A file with a bad line names the line, not the token.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&path, format!("{FILE_1}\nbad token\n")).unwrap();
    let msg = format!(
        "{:#}",
        Auth::from_config(&config.gateway).err().expect("refused")
    );
    assert!(
        msg.contains("line 2") && !msg.contains("bad token"),
        "{msg}"
    );

    // A file of comments only is no token at all.
    std::fs::write(&path, "# nothing yet\n").unwrap();
    assert!(matches!(
        Auth::from_config(&config.gateway),
        Err(rest_gateway::auth::AuthError::NoTokens)
    ));
}

/// The gateway does not start with a token shorter than 32 characters or
/// with a shipped placeholder, in the file or the variable; the error names
/// the entry (file and line, or position), never the token.
#[tokio::test]
async fn the_gateway_refuses_to_start_with_a_short_or_placeholder_token_naming_the_entry() {
    let env = TestEnv::with(&[TOKENS]).await;
    let bare = without_tokens(&env.config);
    let path = tokens_file(&env.state_root, "", 0o600);
    let placeholder = "CHANGE-ME-game-master-token";
    for (file, variable, names) in [
        (
            format!("# ops\n{FILE_1}\nshort-token-0123456789\n"),
            "",
            format!(
                "RTMANAGER_API_TOKENS_FILE {}: token on line 3 is shorter than 32",
                path.display()
            ),
        ),
        (
            format!("{FILE_1}\n{placeholder}-0123456789abcdef\n"),
            "",
            format!(
                "RTMANAGER_API_TOKENS_FILE {}: token on line 2 is a placeholder",
                path.display()
            ),
        ),
        (
            format!("{FILE_1}\n"),
            "change-me-admin-token-0123456789abcdef",
            "RTMANAGER_API_TOKENS: token number 1 is a placeholder".to_owned(),
        ),
        (
            String::new(),
            "t0ken-a-0123456789abcdef0123456789abcdef,demo-token",
            "RTMANAGER_API_TOKENS: token number 2 is shorter than 32".to_owned(),
        ),
    ] {
        std::fs::write(&path, &file).unwrap();
        let mut config = bare.clone();
        config.gateway.api_tokens_file = (!file.is_empty()).then(|| path.clone());
        config.gateway.api_tokens = Secret::new(variable);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let started = rest_gateway::run(
            (&config).into(),
            env.infra.clone(),
            listener,
            CancellationToken::new(),
        );
        let err = tokio::time::timeout(Duration::from_secs(30), started)
            .await
            .unwrap_or_else(|_| panic!("{names}: the gateway serves instead of refusing to start"))
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains(&names), "{msg}");
        for secret in ["short-token", placeholder, "change-me-admin", "demo-token"] {
            assert!(!msg.contains(secret), "{msg} names {secret}");
        }
        // Nothing was served.
        assert!(std::net::TcpStream::connect(addr).is_err(), "{addr} serves");
    }
}

const FILE_1: &str = "file-token-1-0123456789abcdef0123456789";
const FILE_2: &str = "file-token-2-0123456789abcdef0123456789";
const FILE_3: &str = "file-token-3-0123456789abcdef0123456789";
const ENV_TOKEN: &str = "env-token-0123456789abcdef0123456789abc";

#[tokio::test]
async fn the_tokens_file_is_reloaded_and_a_bad_reload_keeps_the_old_tokens() {
    let mut env = TestEnv::with(&[]).await;
    let path = tokens_file(&env.state_root, &format!("# ops\n\n{FILE_1}\n"), 0o600);
    let mut config = without_tokens(&env.config);
    config.gateway.api_tokens_file = Some(path.clone());
    config.gateway.api_tokens = Secret::new(ENV_TOKEN);
    let auth = Auth::from_config(&config.gateway).expect("a 0600 file is accepted");
    assert_eq!(auth.token_count(), 2);
    env.config = config;
    let gw = Gateway::serve(env, Some(auth.clone())).await;
    let status = |token: &'static str| {
        let gw = &gw;
        async move {
            gw.send(
                Method::GET,
                "/api/v1/internal/runtimes",
                Cred::Bearer(token),
                &[],
                None,
            )
            .await
            .status
        }
    };
    assert_eq!(status(FILE_1).await, 200);
    assert_eq!(status(ENV_TOKEN).await, 200);
    assert_eq!(status(FILE_2).await, 401);

    // What SIGHUP does: the file is rotated, then reloaded.
    std::fs::write(&path, format!("{FILE_2}\n")).unwrap();
    assert_eq!(auth.reload().unwrap(), 2);
    assert_eq!(status(FILE_2).await, 200);
    assert_eq!(status(FILE_1).await, 401);
    assert_eq!(status(ENV_TOKEN).await, 200);

    // A weak token, a world-readable or a vanished file is refused; the
    // old set stays.
    std::fs::write(
        &path,
        format!("{FILE_3}\nCHANGE-ME-admin-token-0123456789abcdef\n"),
    )
    .unwrap();
    let weak = auth.reload().unwrap_err().to_string();
    assert!(
        weak.contains("on line 2 is a placeholder") && !weak.contains("CHANGE-ME-admin"),
        "{weak}"
    );
    std::fs::write(&path, format!("{FILE_3}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o604)).unwrap();
    assert!(auth.reload().is_err());
    std::fs::remove_file(&path).unwrap();
    assert!(auth.reload().is_err());
    assert_eq!(status(FILE_2).await, 200);
    assert_eq!(status(FILE_3).await, 401);
    let metrics = gw.open_get("/metrics").await;
    assert!(
        metrics
            .text
            .contains("\nrtmanager_api_token_reload_failures_total 3\n"),
        "{}",
        metrics.text
    );
    // Served in-process on a plain listener: TLS is off, and says so.
    assert!(
        metrics.text.contains("\nrtmanager_api_tls_disabled 1\n"),
        "{}",
        metrics.text
    );
    gw.stop().await;
}

#[tokio::test]
async fn disabled_auth_needs_no_token_and_is_shown_on_metrics() {
    let gw = Gateway::start(&[("RTMANAGER_API_AUTH", "disabled")]).await;
    for cred in [Cred::None, Cred::Raw("Basic x")] {
        let a = gw
            .send(Method::GET, "/api/v1/internal/runtimes", cred, &[], None)
            .await;
        assert_eq!(a.status, 200, "{a:?}");
    }
    let metrics = gw.open_get("/metrics").await;
    assert!(
        metrics.text.contains("\nrtmanager_api_auth_disabled 1\n"),
        "{}",
        metrics.text
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_request_past_its_timeout_is_503_and_its_operation_still_completes() {
    let gw = Gateway::start(&[TOKENS, ("RTMANAGER_HTTP_REQUEST_TIMEOUT", "50ms")]).await;
    let game = gw.env.game("slow");
    let a = gw
        .post(
            &rt(&game, "start"),
            json!({"image_ref": ENGINE}),
            &[("x-request-id", "slow-start")],
        )
        .await;
    a.assert_error(503, "service_unavailable");
    assert_eq!(a.header("x-request-id"), Some("slow-start"));
    let ops = gw
        .env
        .eventually("the start to finish", Duration::from_secs(30), || async {
            let ops = gw.env.operations(&game).await;
            (!ops.is_empty()).then_some(ops)
        })
        .await;
    assert_eq!(ops[0]["source_ref"], "slow-start");
    assert_eq!(ops[0]["outcome"], "success");
    assert_eq!(
        inspect(&game.container_name()).unwrap()["State"]["Status"],
        "running"
    );
    gw.stop().await;
}

#[tokio::test]
async fn the_openapi_contract_lists_exactly_the_routes_served_and_the_error_codes() {
    let raw = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../contracts/rest-gateway.openapi.yaml"),
    )
    .expect("contracts/rest-gateway.openapi.yaml");
    let doc: Value = serde_yaml_ng::from_str(&raw).expect("the contract is YAML");
    assert_eq!(doc["openapi"], "3.1.0");
    let codes: Vec<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let ours: Vec<&str> = shared::domain::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    assert_eq!(codes, ours);

    let gw = Gateway::start(&[TOKENS]).await;
    let game = gw.env.game("contract");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            documented.insert((method.to_uppercase(), path.clone()));
            let open = op.get("security").is_some_and(|s| s == &json!([]));
            let concrete = path.replace("{game_id}", game.as_str());
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let cred = if open { Cred::None } else { Cred::Token };
            let a = gw.send(method.clone(), &concrete, cred, &[], None).await;
            assert_ne!(a.status, 405, "{method} {path}: {a:?}");
            assert_ne!(a.status, 401, "{method} {path}: {a:?}");
            assert!(
                !(a.status == 404 && a.json["error"]["message"] == "no such route"),
                "{method} {path} is documented but not served"
            );
            if !open {
                let refused = gw
                    .send(method.clone(), &concrete, Cred::None, &[], None)
                    .await;
                assert_eq!(refused.status, 401, "{method} {path} must need a token");
            }
        }
    }
    // Every route served is documented (the probes and the internal routes).
    let template = |p: &str| p.replace(game.as_str(), "{game_id}");
    let mut served: BTreeSet<(String, String)> = internal_routes(&game)
        .into_iter()
        .filter(|(_, p)| p.starts_with("/api/v1/internal/") && !p.contains("no-such-route"))
        .map(|(m, p)| (m.to_string(), template(&p)))
        .collect();
    for probe in ["/healthz", "/readyz", "/metrics"] {
        served.insert(("GET".into(), probe.into()));
    }
    assert_eq!(documented, served);
    gw.stop().await;
}
