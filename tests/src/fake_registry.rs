//! A FAKE image registry (no registry image can be pulled here, so none can
//! run): just enough of the distribution API on 127.0.0.1 for the real
//! Docker daemon to pull from it and fail the way a real registry makes
//! it fail. Docker treats 127.0.0.0/8 registries as insecure, so it falls
//! back to plain HTTP after its TLS attempt, which this server closes.
//!
//! Two failures, because dockerd reports them differently:
//! - [`Failure::ManifestUnknown`]: the manifest is refused, before dockerd
//!   has written anything, so the pull request itself answers an HTTP error;
//! - [`Failure::ConfigBlobMissing`]: the manifest is served, dockerd starts
//!   its progress stream ("Pulling from …"), then the image config blob is
//!   missing, so the error arrives *inside* the stream (bollard's
//!   `DockerStreamError`).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How the fake registry fails a pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    ManifestUnknown,
    ConfigBlobMissing,
}

/// The fake registry, served until dropped.
pub struct FakeRegistry {
    port: u16,
    stop: Arc<AtomicBool>,
}

const CONFIG_DIGEST: &str =
    "sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945";
const LAYER_DIGEST: &str =
    "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

impl FakeRegistry {
    pub fn start(failure: Failure) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake registry");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    return;
                }
                if let Ok(stream) = stream {
                    std::thread::spawn(move || serve(stream, failure));
                }
            }
        });
        Self { port, stop }
    }

    /// `127.0.0.1:<port>/<repository>:<tag>`, an image ref naming this registry.
    pub fn image(&self, repository: &str, tag: &str) -> String {
        format!("127.0.0.1:{}/{repository}:{tag}", self.port)
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(stream: TcpStream, failure: Failure) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut request_line = String::new();
    // A TLS ClientHello is not a request line: reading it as UTF-8 fails
    // or it does not parse, and closing the connection sends dockerd to HTTP.
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return;
    };
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => return,
            Ok(_) if header == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let (status, content_type, body) = answer(path, failure);
    let mut stream = stream;
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nDocker-Distribution-API-Version: registry/2.0\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    if method != "HEAD" {
        let _ = stream.write_all(body.as_bytes());
    }
}

fn answer(path: &str, failure: Failure) -> (&'static str, &'static str, String) {
    const JSON: &str = "application/json";
    let error = |code: &str, message: &str| {
        format!(r#"{{"errors":[{{"code":"{code}","message":"{message}","detail":null}}]}}"#)
    };
    if path == "/v2/" {
        return ("200 OK", JSON, "{}".into());
    }
    if path.contains("/manifests/") {
        return match failure {
            Failure::ManifestUnknown => (
                "404 Not Found",
                JSON,
                error("MANIFEST_UNKNOWN", "manifest unknown"),
            ),
            Failure::ConfigBlobMissing => (
                "200 OK",
                "application/vnd.docker.distribution.manifest.v2+json",
                manifest(),
            ),
        };
    }
    if path.contains("/blobs/") {
        return (
            "404 Not Found",
            JSON,
            error("BLOB_UNKNOWN", "blob unknown to registry"),
        );
    }
    (
        "404 Not Found",
        JSON,
        error("NAME_UNKNOWN", "repository name not known to registry"),
    )
}

fn manifest() -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":1469,"digest":"{CONFIG_DIGEST}"}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":32,"digest":"{LAYER_DIGEST}"}}]}}"#
    )
}
