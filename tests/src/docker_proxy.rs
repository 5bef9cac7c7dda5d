//! Unix-socket proxies in front of a Docker daemon.
//!
//! - [`StopReplyCutter`] forwards every request and answer, except that it
//!   cuts the connection of a container stop as soon as the daemon answers
//!   it: the stop happened, and its caller never hears so. That is what a
//!   client sees when the daemon goes away in the middle of a request, made
//!   exact.
//! - [`DockerSocketProxy`] forwards everything until the test takes the
//!   daemon away, and back: Docker unreachable for the processes behind it,
//!   while the machine's daemon serves every other test.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

/// Forwards to a daemon's socket; cuts the replies to `POST …/stop`.
pub struct StopReplyCutter {
    dir: PathBuf,
    accept: JoinHandle<()>,
}

impl StopReplyCutter {
    /// A proxy of the daemon listening on `upstream` (a socket path).
    pub fn start(upstream: &Path) -> Self {
        let dir = std::env::temp_dir().join(format!("rtm-proxy-{}", crate::random_suffix()));
        std::fs::create_dir_all(&dir).expect("proxy directory");
        let listener = UnixListener::bind(dir.join("docker.sock")).expect("proxy socket");
        let upstream = upstream.to_owned();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(daemon) = UnixStream::connect(&upstream).await {
                        relay(client, daemon).await;
                    }
                });
            }
        });
        Self { dir, accept }
    }

    /// The proxy's address, as `RTMANAGER_DOCKER_HOST` takes it.
    pub fn host(&self) -> String {
        format!("unix://{}/docker.sock", self.dir.display())
    }
}

impl Drop for StopReplyCutter {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Copies both ways until either side closes; once a stop request went up
/// (HTTP/1.1: one request at a time on a connection), the first bytes of
/// the answer close both sides instead of going down.
async fn relay(client: UnixStream, daemon: UnixStream) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut daemon_read, mut daemon_write) = daemon.into_split();
    let stop_sent = Arc::new(AtomicBool::new(false));
    let up = {
        let stop_sent = stop_sent.clone();
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match client_read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if is_stop_request(&buf[..n]) {
                    stop_sent.store(true, Ordering::SeqCst);
                }
                if daemon_write.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match daemon_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if stop_sent.load(Ordering::SeqCst) {
                return;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// `POST /…/containers/{id}/stop…` at the start of a request head.
fn is_stop_request(bytes: &[u8]) -> bool {
    let head = String::from_utf8_lossy(bytes);
    head.lines().next().is_some_and(|line| {
        let mut parts = line.split(' ');
        parts.next() == Some("POST")
            && parts
                .next()
                .is_some_and(|path| path.split('?').next().is_some_and(|p| p.ends_with("/stop")))
    })
}

/// A unix-socket proxy in front of a Docker daemon that a test can take
/// away and bring back: [`Self::cut`] closes every connection and refuses
/// new ones (the socket stays, nobody listens: what a stopped daemon
/// leaves), [`Self::restore`] listens again on the same path. The daemon
/// itself, shared with other tests, is never touched.
pub struct DockerSocketProxy {
    dir: PathBuf,
    upstream: PathBuf,
    /// The accept loop; its connections die with it.
    accept: Option<JoinHandle<()>>,
}

impl DockerSocketProxy {
    /// A proxy of the daemon listening on `upstream` (a socket path).
    pub fn start(upstream: &Path) -> Self {
        let dir = std::env::temp_dir().join(format!("rtm-dproxy-{}", crate::random_suffix()));
        std::fs::create_dir_all(&dir).expect("proxy directory");
        let mut proxy = Self {
            dir,
            upstream: upstream.to_owned(),
            accept: None,
        };
        proxy.restore();
        proxy
    }

    /// The proxy's address, as `RTMANAGER_DOCKER_HOST` takes it.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// The daemon is away: open connections are closed, new ones refused.
    pub fn cut(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
    }

    /// The daemon is back, on the same socket path.
    pub fn restore(&mut self) {
        assert!(self.accept.is_none(), "the proxy is already serving");
        let _ = std::fs::remove_file(self.socket());
        let listener = UnixListener::bind(self.socket()).expect("proxy socket");
        let upstream = self.upstream.clone();
        self.accept = Some(tokio::spawn(async move {
            // Aborting this task drops the set, which aborts every relay.
            let mut relays = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                relays.spawn(async move {
                    if let Ok(mut daemon) = UnixStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut daemon).await;
                    }
                });
                while relays.try_join_next().is_some() {}
            }
        }));
    }
}

impl Drop for DockerSocketProxy {
    fn drop(&mut self) {
        self.cut();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
