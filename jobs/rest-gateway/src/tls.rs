//! HTTPS on the API listener: rustls (its ring provider) over the TCP
//! listener of `RTMANAGER_INTERNAL_HTTP_ADDR`.
//!
//! - `RTMANAGER_INTERNAL_HTTP_TLS_CERT_FILE` (a PEM chain, the server's
//!   certificate first) and `RTMANAGER_INTERNAL_HTTP_TLS_KEY_FILE` (its PEM
//!   private key: PKCS#8, PKCS#1 RSA or SEC1 EC): with both the API speaks
//!   HTTPS only; with neither, plain HTTP as the Go service did, with a
//!   warning at start-up and `rtmanager_api_tls_disabled 1`; one alone stops
//!   the process ([`shared::config::GatewayConfig`]).
//! - Read at start-up: an unreadable file, no certificate, no or an
//!   unsupported key, or a key that does not match the certificate stops the
//!   gateway naming the variable (never the key's contents).
//! - SIGHUP re-reads both ([`ApiTls::reload`]): handshakes from then on get
//!   the new pair, open connections keep theirs. A pair that does not load
//!   keeps the previous one, is logged and counted
//!   (`rtmanager_api_tls_reload_failures_total`).
//! - TLS 1.3 and 1.2, ALPN `http/1.1` (the server speaks HTTP/1 only).
//! - Handshakes run concurrently ([`tls_listener`]), each bounded by
//!   [`HANDSHAKE_TIMEOUT`]; one that fails (a plain-HTTP client, a scanner)
//!   closes that connection only and is logged at debug level.
//!
//! Why this shape: [`TlsListener`] implements axum's `Listener`, so HTTPS is
//! served by the same `axum::serve(..).with_graceful_shutdown(..)` as plain
//! HTTP, with the same drain on shutdown, and tests hand either a port-0
//! listener. The certificate is swapped behind a resolver, so a reload
//! needs no new listener and no new server configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use shared::config::{GatewayConfig, TlsFiles};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// Bound on one TLS handshake; past it the connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const CERT_VAR: &str = "RTMANAGER_INTERNAL_HTTP_TLS_CERT_FILE";
const KEY_VAR: &str = "RTMANAGER_INTERNAL_HTTP_TLS_KEY_FILE";

/// Why the certificate or the key cannot be used. Messages name the
/// variable and the path, never what the key file holds.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{CERT_VAR} {path}: {why}")]
    Cert { path: PathBuf, why: String },
    #[error("{KEY_VAR} {path}: {why}")]
    Key { path: PathBuf, why: String },
    #[error("{KEY_VAR} {key} does not match the certificate of {CERT_VAR} {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS configuration ({CERT_VAR}, {KEY_VAR}): {0}")]
    Config(rustls::Error),
}

/// The API's TLS: the files, the pair in force and the acceptor serving it;
/// cheap to clone.
#[derive(Clone)]
pub struct ApiTls {
    inner: Arc<Inner>,
}

struct Inner {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: Arc<CurrentPair>,
    acceptor: TlsAcceptor,
    /// `rtmanager_api_tls_reload_failures`
    reload_failures: Counter,
}

/// The certificate and key every new handshake gets.
struct CurrentPair(RwLock<Arc<CertifiedKey>>);

impl std::fmt::Debug for CurrentPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CurrentPair([redacted])")
    }
}

impl ResolvesServerCert for CurrentPair {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

impl ApiTls {
    /// The TLS of `config`: `None` (plain HTTP) when no files are set.
    pub fn from_config(config: &GatewayConfig) -> Result<Option<Self>, TlsError> {
        config.tls.as_ref().map(Self::load).transpose()
    }

    /// Reads the pair of `files` and builds the server configuration.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pair = read_pair(files, &provider)?;
        let current = Arc::new(CurrentPair(RwLock::new(Arc::new(pair))));
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tracing::info!(cert = %files.cert.display(), "API TLS certificate loaded");
        Ok(Self {
            inner: Arc::new(Inner {
                files: files.clone(),
                provider,
                current,
                acceptor: TlsAcceptor::from(Arc::new(config)),
                reload_failures: Counter::default(),
            }),
        })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.inner.files
    }

    /// Re-reads both files (SIGHUP). On any error the previous pair stays,
    /// and the error is logged, counted and returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        match read_pair(&self.inner.files, &self.inner.provider) {
            Ok(pair) => {
                *self
                    .inner
                    .current
                    .0
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = Arc::new(pair);
                tracing::info!(cert = %self.inner.files.cert.display(), "API TLS certificate reloaded");
                Ok(())
            }
            Err(e) => {
                self.inner.reload_failures.inc();
                tracing::error!(error = %e, "API TLS reload failed; the previous certificate stays in force");
                Err(e)
            }
        }
    }

    /// `tcp` with TLS on every connection it accepts.
    pub fn listen(&self, tcp: TcpListener) -> TlsListener {
        TlsListener {
            inner: tls_listener::builder(self.inner.acceptor.clone())
                .handshake_timeout(HANDSHAKE_TIMEOUT)
                .listen(tcp),
        }
    }

    pub(crate) fn reload_failures(&self) -> &Counter {
        &self.inner.reload_failures
    }
}

/// The certificate chain and key of `files`, checked to belong together.
fn read_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let cert_err = |why: String| TlsError::Cert {
        path: files.cert.clone(),
        why,
    };
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| cert_err(pem_why(&e, "certificate")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(pem_why(&e, "certificate")))?;
    if chain.is_empty() {
        return Err(cert_err("no PEM certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        why: pem_why(&e, "private key"),
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Key {
            path: files.key.clone(),
            why: format!("not a usable private key ({e})"),
        })?;
    let pair = CertifiedKey::new(chain, signing_key);
    match pair.keys_match() {
        Ok(()) => Ok(pair),
        // ring can tell the public key of every key it loads; "unknown"
        // would mean it could not compare, which is no proof of a mismatch.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(pair),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::Mismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
        }),
        Err(e) => Err(cert_err(format!("not a usable certificate ({e})"))),
    }
}

/// A PEM error in words that never quote the file (a key's line would be
/// its secret).
fn pem_why(e: &pem::Error, what: &str) -> String {
    match e {
        pem::Error::Io(e) => e.to_string(),
        pem::Error::NoItemsFound => format!("no PEM {what} in it"),
        pem::Error::SectionTooLarge => "a PEM section is too large".into(),
        _ => format!("not a well-formed PEM {what}"),
    }
}

/// The API listener with TLS: what `axum::serve` accepts connections from.
pub struct TlsListener {
    inner: tls_listener::TlsListener<TcpListener, TlsAcceptor>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok(connection) => return connection,
                Err(tls_listener::Error::ListenerError(e)) => accept_failed(e).await,
                Err(tls_listener::Error::TlsAcceptError {
                    error, peer_addr, ..
                }) => {
                    tracing::debug!(peer = %peer_addr, error = %error, "TLS handshake failed")
                }
                Err(tls_listener::Error::HandshakeTimeout { peer_addr, .. }) => {
                    tracing::debug!(peer = %peer_addr, "TLS handshake timed out")
                }
                Err(e) => tracing::debug!(error = %e, "TLS accept failed"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// What axum's own TCP listener does with an accept error: a connection
/// that went away is nothing; anything else (out of file descriptors) is
/// logged and waited out for a second.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting an API connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (TlsFiles, rcgen::CertifiedKey<rcgen::KeyPair>) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, made.cert.pem()).unwrap();
        std::fs::write(&files.key, made.signing_key.serialize_pem()).unwrap();
        (files, made)
    }

    /// A directory of the test's own, removed when dropped (a failing test
    /// too: `scripts/test` checks that nothing is left in /tmp).
    struct TestDir(PathBuf);

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    impl std::ops::Deref for TestDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    fn dir(test: &str) -> TestDir {
        let dir = std::env::temp_dir().join(format!("rtm-tls-unit-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TestDir(dir)
    }

    fn message(files: &TlsFiles) -> String {
        ApiTls::load(files).err().expect("refused").to_string()
    }

    #[test]
    fn a_matching_pair_loads_and_every_bad_file_is_refused_naming_its_variable() {
        let dir = dir("load");
        let (good, _) = write_pair(&dir, "a");
        let (other, _) = write_pair(&dir, "b");
        assert!(ApiTls::load(&good).is_ok());

        let missing = TlsFiles {
            cert: dir.join("nothing.crt"),
            key: good.key.clone(),
        };
        let msg = message(&missing);
        assert!(
            msg.starts_with(CERT_VAR) && msg.contains("nothing.crt"),
            "{msg}"
        );

        let swapped = TlsFiles {
            cert: good.key.clone(),
            key: good.cert.clone(),
        };
        let msg = message(&swapped);
        assert!(
            msg.starts_with(CERT_VAR) && msg.contains("no PEM certificate"),
            "{msg}"
        );

        let key_is_a_cert = TlsFiles {
            cert: good.cert.clone(),
            key: good.cert.clone(),
        };
        let msg = message(&key_is_a_cert);
        assert!(
            msg.starts_with(KEY_VAR) && msg.contains("no PEM private key"),
            "{msg}"
        );

        let mismatched = TlsFiles {
            cert: good.cert.clone(),
            key: other.key.clone(),
        };
        let msg = message(&mismatched);
        assert!(msg.contains("does not match"), "{msg}");
        assert!(msg.contains(KEY_VAR) && msg.contains(CERT_VAR), "{msg}");

        let garbage = dir.join("garbage.key");
        std::fs::write(
            &garbage,
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let msg = message(&TlsFiles {
            cert: good.cert.clone(),
            key: garbage,
        });
        assert!(msg.starts_with(KEY_VAR), "{msg}");
        assert!(!msg.contains("c2VjcmV0"), "{msg}");
    }

    #[test]
    fn a_bad_reload_keeps_the_pair_in_force_and_is_counted() {
        let dir = dir("reload");
        let (files, first) = write_pair(&dir, "live");
        let tls = ApiTls::load(&files).unwrap();
        let served = |tls: &ApiTls| {
            tls.inner.current.0.read().unwrap().cert[0]
                .as_ref()
                .to_vec()
        };
        assert_eq!(served(&tls), first.cert.der().as_ref());

        std::fs::write(&files.key, "not a key\n").unwrap();
        assert!(tls.reload().is_err());
        assert_eq!(served(&tls), first.cert.der().as_ref());
        assert_eq!(tls.reload_failures().get(), 1);

        let (_, second) = write_pair(&dir, "live");
        tls.reload().unwrap();
        assert_eq!(served(&tls), second.cert.der().as_ref());
        assert_eq!(tls.reload_failures().get(), 1);
    }
}
