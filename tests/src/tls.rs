//! Certificates a test makes for itself (Debian's `openssl` CLI): a CA, and
//! a server certificate it signed for `localhost` and `127.0.0.1`, in a
//! fresh directory removed on drop. Servers started with them:
//! [`PrivatePostgres::with_tls`](crate::services::PrivatePostgres::with_tls),
//! [`PrivateRedis::with_tls`](crate::services::PrivateRedis::with_tls).

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TestCa {
    dir: PathBuf,
}

impl TestCa {
    /// A CA named `name` and a server certificate it signed.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rtm-ca-{}", crate::random_suffix()));
        std::fs::create_dir_all(&dir).expect("certificate directory");
        let ca = Self { dir };
        ca.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            &format!("/CN={name}"),
        ]);
        ca.openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            ca.dir.join("san.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .expect("extensions file");
        ca.openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ]);
        ca
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("openssl (Debian's openssl package)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The CA's certificate (PEM): what a client trusts.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
