//! Certificates a test makes for itself: a CA, and a server certificate it
//! signed for `localhost` and `127.0.0.1`, as PEM files in a fresh directory
//! removed on drop (made by [`crate::https::TestCa`], rcgen). Servers started
//! with them:
//! [`PrivatePostgres::with_tls`](crate::services::PrivatePostgres::with_tls),
//! [`PrivateRedis::with_tls`](crate::services::PrivateRedis::with_tls).

use std::path::{Path, PathBuf};

use crate::https::ServerPair;

pub struct TestCa {
    dir: PathBuf,
    server: ServerPair,
}

impl TestCa {
    /// A CA named `name` and a server certificate it signed.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rtm-ca-{}", crate::random_suffix()));
        std::fs::create_dir_all(&dir).expect("certificate directory");
        let ca = crate::https::TestCa::new(name);
        std::fs::write(dir.join("ca.crt"), ca.pem()).expect("write the CA certificate");
        let server = ca.issue(&dir, "server");
        Self { dir, server }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The CA's certificate (PEM): what a client trusts.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.server.cert.clone()
    }
    pub fn server_key(&self) -> PathBuf {
        self.server.key.clone()
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
