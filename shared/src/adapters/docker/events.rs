//! The daemon's event stream, subscribed so that the caller knows when the
//! subscription is open.
//!
//! bollard's `events` is lazy: nothing is sent until the stream is first
//! polled, and a poll cannot tell "not answered yet" from "no event yet".
//! docker-events opens its subscription *before* its catch-up, so that what
//! happens during a long catch-up is delivered live rather than left to the
//! daemon's replay buffer (its last 256 events of every kind). So this one
//! request is made here, on its own HTTP/1 connection, and [`subscribe`]
//! returns once the daemon has answered it. The daemon flushes its answer
//! just before it registers the subscriber; an event in between is still in
//! its buffer and replayed by `since`, which the caller sets in the past.
//!
//! The body is newline-delimited JSON, one event per line, decoded with
//! bollard's model; the query is built from bollard's options, as bollard
//! would send it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptionsBuilder;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::domain::labels::{LABEL_OWNER, LABEL_OWNER_VALUE};
use crate::domain::EventAction;
use crate::ports::{EngineError, EngineEvent, EngineEvents};

/// Where the daemon listens, as `RTMANAGER_DOCKER_HOST` says.
#[derive(Debug, Clone)]
pub(super) enum Endpoint {
    Unix(PathBuf),
    /// `host:port`, plain HTTP.
    Tcp(String),
}

impl Endpoint {
    /// `unix:///path`, a bare path, `tcp://host:port` or `http://host:port`.
    pub(super) fn parse(host: &str) -> Self {
        match host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
        {
            Some(addr) => Self::Tcp(addr.trim_end_matches('/').to_owned()),
            None => Self::Unix(host.strip_prefix("unix://").unwrap_or(host).into()),
        }
    }
}

/// Subscribes to the container events of rtmanager's containers, from
/// `since_nano` (inclusive) when given; returns once the daemon answered.
pub(super) async fn subscribe(
    endpoint: &Endpoint,
    since_nano: Option<i64>,
    timeout: Duration,
) -> Result<EngineEvents, EngineError> {
    let path = format!("/events?{}", query(since_nano)?);
    let answered = tokio::time::timeout(timeout, async {
        match endpoint {
            Endpoint::Unix(socket) => {
                let io = tokio::net::UnixStream::connect(socket)
                    .await
                    .map_err(|e| unreachable(&socket.display().to_string(), e))?;
                send(io, "localhost", &path).await
            }
            Endpoint::Tcp(addr) => {
                let io = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| unreachable(addr, e))?;
                send(io, addr, &path).await
            }
        }
    })
    .await
    .map_err(|_| {
        EngineError::Unavailable(format!(
            "events: the daemon did not answer within {}s",
            timeout.as_secs()
        ))
    })?;
    let (response, connection) = answered?;
    let status = response.status();
    if !status.is_success() {
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        return Err(daemon_error(status.as_u16(), &body));
    }
    Ok(Box::pin(lines(response.into_body(), connection)))
}

/// The query bollard would send: owner-labelled containers only.
fn query(since_nano: Option<i64>) -> Result<String, EngineError> {
    let filters = HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        (
            "label".to_owned(),
            vec![format!("{LABEL_OWNER}={LABEL_OWNER_VALUE}")],
        ),
    ]);
    let mut builder = EventsOptionsBuilder::default().filters(&filters);
    if let Some(nano) = since_nano {
        // The daemon takes `seconds.nanoseconds`.
        builder = builder.since(&format!(
            "{}.{:09}",
            nano.div_euclid(1_000_000_000),
            nano.rem_euclid(1_000_000_000)
        ));
    }
    serde_urlencoded::to_string(builder.build())
        .map_err(|e| EngineError::Rejected(format!("events query: {e}")))
}

/// Aborts the connection task when the stream is dropped: the subscription
/// ends with its reader.
struct Connection(tokio::task::JoinHandle<()>);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn send<T>(
    io: T,
    host: &str,
    path: &str,
) -> Result<(hyper::Response<Incoming>, Connection), EngineError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| unreachable(host, e))?;
    let connection = Connection(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| EngineError::Rejected(format!("events request: {e}")))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(host, e))?;
    Ok((response, connection))
}

fn unreachable(host: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Unavailable(format!("events from {host}: {e}"))
}

/// A daemon's error answer, as [`super::map_error`] maps bollard's.
fn daemon_error(status: u16, body: &str) -> EngineError {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned());
    match status {
        404 => EngineError::NotFound(message),
        409 => EngineError::Conflict(message),
        _ => EngineError::Rejected(format!("events: {status}: {message}")),
    }
}

/// What the line decoder holds between two events.
struct Lines {
    body: Incoming,
    buffer: Vec<u8>,
    ended: bool,
    _connection: Connection,
}

/// One event per line; the stream ends with the body (the daemon went away).
fn lines(
    body: Incoming,
    connection: Connection,
) -> impl futures_util::Stream<Item = Result<EngineEvent, EngineError>> + Send {
    let state = Lines {
        body,
        buffer: Vec::new(),
        ended: false,
        _connection: connection,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(end) = state.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = state.buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some((decode(&line), state));
            }
            if state.ended {
                return None;
            }
            match state.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        state.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    state.ended = true;
                    state.buffer.clear();
                    return Some((Err(unreachable("the daemon", e)), state));
                }
                None => {
                    // A last line without its newline is still an event.
                    state.ended = true;
                    state.buffer.push(b'\n');
                }
            }
        }
    })
}

fn decode(line: &[u8]) -> Result<EngineEvent, EngineError> {
    let message: EventMessage = serde_json::from_slice(line)
        .map_err(|e| EngineError::Rejected(format!("event JSON: {e}")))?;
    Ok(engine_event(message))
}

/// Our event from the daemon's.
fn engine_event(message: EventMessage) -> EngineEvent {
    let actor = message.actor.unwrap_or_default();
    let labels = actor.attributes.unwrap_or_default();
    EngineEvent {
        action: EventAction::parse(&message.action.unwrap_or_default()),
        container_id: actor.id.unwrap_or_default(),
        exit_code: labels.get("exitCode").and_then(|c| c.parse().ok()),
        labels,
        time_nano: message
            .time_nano
            .or(message.time.map(|t| t * 1_000_000_000))
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_read_like_bollard_reads_them() {
        assert!(
            matches!(Endpoint::parse("unix:///var/run/docker.sock"), Endpoint::Unix(p) if p.as_os_str() == "/var/run/docker.sock")
        );
        assert!(
            matches!(Endpoint::parse("/run/d.sock"), Endpoint::Unix(p) if p.as_os_str() == "/run/d.sock")
        );
        assert!(
            matches!(Endpoint::parse("tcp://10.0.0.1:2375"), Endpoint::Tcp(a) if a == "10.0.0.1:2375")
        );
        assert!(
            matches!(Endpoint::parse("http://dind:2375/"), Endpoint::Tcp(a) if a == "dind:2375")
        );
    }

    #[test]
    fn the_query_filters_owner_labelled_containers_since_the_cursor() {
        let q = query(Some(1_700_000_000_000_000_123)).unwrap();
        assert!(q.contains("since=1700000000.000000123"), "{q}");
        let filters: String =
            serde_urlencoded::from_str::<HashMap<String, String>>(&q).unwrap()["filters"].clone();
        let filters: HashMap<String, Vec<String>> = serde_json::from_str(&filters).unwrap();
        assert_eq!(filters["type"], ["container"]);
        assert_eq!(
            filters["label"],
            [format!("{LABEL_OWNER}={LABEL_OWNER_VALUE}")]
        );
    }

    #[test]
    fn a_daemon_event_line_decodes_with_its_labels_and_exit_code() {
        let line = br#"{"Type":"container","Action":"die","Actor":{"ID":"abc","Attributes":{"exitCode":"137","com.galaxy.game_id":"g1"}},"time":1700000000,"timeNano":1700000000000000123}"#;
        let event = decode(line).unwrap();
        assert_eq!(event.action, EventAction::Die);
        assert_eq!(event.container_id, "abc");
        assert_eq!(event.exit_code, Some(137));
        assert_eq!(event.labels["com.galaxy.game_id"], "g1");
        assert_eq!(event.time_nano, 1_700_000_000_000_000_123);
    }
}
