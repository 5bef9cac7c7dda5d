//! `test-engine`: a tiny fake game engine for the system tests.
//!
//! It is built as a static binary and packaged `FROM scratch` (see
//! `scripts/build-test-images`), so it uses std only (plus libc for signals).
//!
//! HTTP (minimal HTTP/1.1, one thread per connection, every answer carries
//! `Content-Length` and `Connection: close`), on `0.0.0.0:$ENGINE_PORT`
//! (default 8080):
//! - `GET /healthz` counts one hit, then answers by the health mode:
//!   `ok` -> 200 `{"status":"ok"}`, `fail` -> 500, `timeout` -> 200 after a
//!   30 s sleep (a hung engine). The count includes Docker HEALTHCHECK probes
//!   made by `test-engine healthcheck`.
//! - `GET /hits` -> 200, body the decimal number of `/healthz` hits so far.
//! - `POST /control?exit=N` -> exits with code N; `POST /control?oom=1` ->
//!   allocates until OOM-killed (for containers started without test env).
//! - `POST /control?health=ok|fail|timeout` -> 200 and sets the mode; any
//!   other value -> 400.
//! - anything else -> 404.
//!
//! Environment:
//! - `ENGINE_PORT`: listen port (default 8080).
//! - `ENGINE_HEALTH`: initial health mode, `ok` (default), `fail`, `timeout`.
//! - `ENGINE_EXIT_CODE=N`: exit with code N after `ENGINE_EXIT_AFTER_MS`
//!   milliseconds (default 0).
//! - `ENGINE_OOM=1`: allocate and touch 8 MiB chunks forever, until the kernel
//!   OOM-kills the process.
//! - `STORAGE_PATH`, `GAME_STATE_PATH`: only echoed in the start-up line.
//!
//! SIGTERM and SIGINT exit with code 0 at once (needed as PID 1).
//!
//! `test-engine healthcheck` probes `GET /healthz` on 127.0.0.1 and exits 0
//! on a 200 within 2 s, else 1 (scratch images have no shell or curl).

mod signals;

use std::env;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::thread;
use std::time::{Duration, Instant};

static HITS: AtomicU64 = AtomicU64::new(0);
static HEALTH: AtomicU8 = AtomicU8::new(MODE_OK);

const MODE_OK: u8 = 0;
const MODE_FAIL: u8 = 1;
const MODE_TIMEOUT: u8 = 2;
const CHUNK: usize = 8 << 20;

fn parse_mode(value: &str) -> Option<u8> {
    match value {
        "ok" => Some(MODE_OK),
        "fail" => Some(MODE_FAIL),
        "timeout" => Some(MODE_TIMEOUT),
        _ => None,
    }
}

fn port() -> u16 {
    env::var("ENGINE_PORT")
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(8080)
}

fn main() -> ExitCode {
    if env::args().nth(1).as_deref() == Some("healthcheck") {
        return if healthcheck() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    signals::install();
    if let Ok(value) = env::var("ENGINE_HEALTH") {
        match parse_mode(value.trim()) {
            Some(mode) => HEALTH.store(mode, Ordering::Relaxed),
            None => eprintln!("test-engine: unknown ENGINE_HEALTH={value:?}, using ok"),
        }
    }
    if let Some(code) = env::var("ENGINE_EXIT_CODE")
        .ok()
        .and_then(|c| c.trim().parse::<i32>().ok())
    {
        let after_ms = env::var("ENGINE_EXIT_AFTER_MS")
            .ok()
            .and_then(|ms| ms.trim().parse().ok())
            .unwrap_or(0);
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(after_ms));
            std::process::exit(code);
        });
    }
    if env::var("ENGINE_OOM").as_deref() == Ok("1") {
        thread::spawn(eat_memory);
    }

    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port()));
    let listener = match TcpListener::bind(addr) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("test-engine: cannot listen on {addr}: {err}");
            return ExitCode::from(2);
        }
    };
    let show = |name: &str| env::var(name).unwrap_or_else(|_| "<unset>".into());
    println!(
        "test-engine listening on {addr} STORAGE_PATH={} GAME_STATE_PATH={}",
        show("STORAGE_PATH"),
        show("GAME_STATE_PATH")
    );
    for stream in listener.incoming().flatten() {
        thread::spawn(move || handle(stream));
    }
    ExitCode::SUCCESS
}

/// Allocates and writes non-zero bytes (so every page is really backed)
/// until the kernel OOM-kills the process.
fn eat_memory() {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(std::hint::black_box(vec![0xA5u8; CHUNK]));
        std::hint::black_box(&hoard);
        thread::sleep(Duration::from_millis(5));
    }
}

fn handle(stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    // Headers: only Content-Length matters (to drain a request body).
    let mut body_len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                body_len = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let _ = std::io::copy(
        &mut reader.take(body_len.min(1 << 16) as u64),
        &mut std::io::sink(),
    );

    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (status, body) = route(method, path, query);
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    let kind = if body.starts_with('{') {
        "application/json"
    } else {
        "text/plain"
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = &stream;
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
}

fn route(method: &str, path: &str, query: &str) -> (u16, String) {
    match (method, path) {
        ("GET", "/healthz") => {
            HITS.fetch_add(1, Ordering::Relaxed);
            match HEALTH.load(Ordering::Relaxed) {
                MODE_FAIL => (500, "{\"status\":\"fail\"}".into()),
                mode => {
                    if mode == MODE_TIMEOUT {
                        thread::sleep(Duration::from_secs(30));
                    }
                    (200, "{\"status\":\"ok\"}".into())
                }
            }
        }
        ("GET", "/hits") => (200, HITS.load(Ordering::Relaxed).to_string()),
        ("POST", "/control") => {
            let param = |name: &str| {
                query
                    .split('&')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| value.to_owned())
            };
            // Containers started by rtmanager get no test env, so tests steer
            // them here: exit with a code, or eat memory until the OOM killer.
            if let Some(code) = param("exit").and_then(|c| c.parse::<i32>().ok()) {
                thread::spawn(move || {
                    thread::sleep(Duration::from_millis(100));
                    std::process::exit(code);
                });
                return (200, "exiting".into());
            }
            if param("oom").as_deref() == Some("1") {
                thread::spawn(eat_memory);
                return (200, "eating memory".into());
            }
            let mode = param("health").and_then(|value| parse_mode(&value));
            match mode {
                Some(mode) => {
                    HEALTH.store(mode, Ordering::Relaxed);
                    (200, "ok".into())
                }
                None => (400, "health must be ok, fail or timeout".into()),
            }
        }
        _ => (404, "not found".into()),
    }
}

/// Docker HEALTHCHECK probe: true on a 200 from `/healthz` within 2 s.
/// Prints the outcome, which Docker keeps in `State.Health.Log`.
fn healthcheck() -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    let probe = || -> std::io::Result<String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port()));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        let left = deadline.saturating_duration_since(Instant::now());
        let left = left.max(Duration::from_millis(1));
        stream.set_read_timeout(Some(left))?;
        stream.set_write_timeout(Some(left))?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
        let mut status_line = String::new();
        BufReader::new(stream).read_line(&mut status_line)?;
        Ok(status_line.trim_end().to_owned())
    };
    match probe() {
        Ok(status_line) => {
            println!("{status_line}");
            status_line.split_whitespace().nth(1) == Some("200") && Instant::now() <= deadline
        }
        Err(err) => {
            println!("healthz probe failed: {err}");
            false
        }
    }
}
