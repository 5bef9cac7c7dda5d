//! The Redis section: where the master is (its address, any node of a
//! Cluster, or the sentinels that name it), and who we are to it.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Secret, Section};

/// Where Redis is and who we are to it. Exactly one way to the master: its
/// address (`RTMANAGER_REDIS_MASTER_ADDR`, also any node of a Cluster, which
/// the adapter recognises) or the sentinels that monitor it.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `host:port` of the master, or of one node of a Cluster; empty when
    /// [`RedisConfig::sentinel`] finds the master.
    pub addr: String,
    pub sentinel: Option<SentinelConfig>,
    /// The ACL user (`RTMANAGER_REDIS_USERNAME`); empty: the default user.
    pub username: Secret,
    pub password: Secret,
    /// TTL of the per-game lease (`RTMANAGER_GAME_LEASE_TTL_SECONDS`).
    pub lease_ttl: Duration,
    /// TLS to the master, the Cluster nodes and the sentinels
    /// (`RTMANAGER_REDIS_TLS`); `None`: plain TCP, as the Go service.
    pub tls: Option<RedisTls>,
}

/// How Redis connections are secured when `RTMANAGER_REDIS_TLS=true`.
#[derive(Clone)]
pub struct RedisTls {
    /// `RTMANAGER_REDIS_TLS_CA_FILE`, as given (for messages).
    pub ca_file: Option<String>,
    /// The PEM of the CA(s) to trust, read at start-up from `ca_file`. `None`:
    /// the Mozilla roots compiled in (webpki-roots), since the scratch image
    /// has no system store.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// The sentinels that name the master (`RTMANAGER_REDIS_SENTINEL_*`).
#[derive(Debug, Clone)]
pub struct SentinelConfig {
    /// `host:port` of each sentinel, in the order they are asked.
    pub addrs: Vec<String>,
    /// The monitored master's name (`sentinel monitor <name> ...`).
    pub master: String,
    /// The sentinels' own password (their `requirepass`); empty: none.
    pub password: Secret,
}

#[derive(Deserialize)]
pub struct RedisEnv {
    #[serde(default)]
    redis_master_addr: String,
    #[serde(default)]
    redis_sentinel_addrs: String,
    #[serde(default)]
    redis_sentinel_master: String,
    #[serde(default)]
    redis_sentinel_password: Secret,
    #[serde(default)]
    redis_sentinel_password_file: String,
    #[serde(default)]
    redis_username: Secret,
    #[serde(default)]
    redis_password: Secret,
    #[serde(default)]
    redis_password_file: String,
    #[serde(default = "default_game_lease_ttl_seconds")]
    game_lease_ttl_seconds: u64,
    #[serde(default)]
    redis_tls: bool,
    #[serde(default)]
    redis_tls_ca_file: String,
}

impl Section for RedisConfig {
    type Raw = RedisEnv;
    fn from_raw(mut raw: RedisEnv) -> Result<Self, ConfigError> {
        raw.redis_password = secret_or_file(
            &raw.redis_password,
            "REDIS_PASSWORD",
            &raw.redis_password_file,
            "REDIS_PASSWORD_FILE",
        )?;
        raw.redis_sentinel_password = secret_or_file(
            &raw.redis_sentinel_password,
            "REDIS_SENTINEL_PASSWORD",
            &raw.redis_sentinel_password_file,
            "REDIS_SENTINEL_PASSWORD_FILE",
        )?;
        let tls = tls_config(&raw)?;
        let sentinel = sentinel_config(&raw)?;
        match (&sentinel, raw.redis_master_addr.is_empty()) {
            (None, true) => {
                return Err(ConfigError::var(
                    "REDIS_MASTER_ADDR",
                    "is required (or find the master through Sentinel: \
                     RTMANAGER_REDIS_SENTINEL_ADDRS with RTMANAGER_REDIS_SENTINEL_MASTER)",
                ))
            }
            (Some(_), false) => {
                return Err(ConfigError::var(
                    "REDIS_MASTER_ADDR",
                    "must be empty with RTMANAGER_REDIS_SENTINEL_ADDRS: the sentinels name \
                     the master; set one or the other",
                ))
            }
            (None, false) if split_host_port(&raw.redis_master_addr).is_none() => {
                return Err(ConfigError::var(
                    "REDIS_MASTER_ADDR",
                    format!("{:?}: expected host:port", raw.redis_master_addr),
                ))
            }
            _ => {}
        }
        if !raw.redis_username.expose().is_empty() && raw.redis_password.expose().is_empty() {
            // Without a password no AUTH is sent, and the process would run
            // as the default user instead of the one named.
            return Err(ConfigError::var(
                "REDIS_USERNAME",
                "needs RTMANAGER_REDIS_PASSWORD (the ACL user's password)",
            ));
        }
        super::ranges::check(&[("GAME_LEASE_TTL_SECONDS", raw.game_lease_ttl_seconds.into())])?;
        Ok(Self {
            addr: raw.redis_master_addr,
            sentinel,
            username: raw.redis_username,
            password: raw.redis_password,
            lease_ttl: Duration::from_secs(raw.game_lease_ttl_seconds),
            tls,
        })
    }
}

/// A secret given as itself (`var`) or as a file holding it (`file_var`,
/// the way compose and Kubernetes mount secrets); the file's trailing line
/// break is not part of it. Both set is refused: which one wins would be a
/// guess. An error names the variable and the path, never the content.
fn secret_or_file(
    value: &Secret,
    var: &str,
    path: &str,
    file_var: &str,
) -> Result<Secret, ConfigError> {
    let path = path.trim();
    if path.is_empty() {
        return Ok(value.clone());
    }
    if !value.expose().is_empty() {
        return Err(ConfigError::var(
            file_var,
            format!(
                "and {}{var} are both set: set one or the other",
                super::PREFIX
            ),
        ));
    }
    let content = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::var(file_var, format!("cannot read {path:?}: {e}")))?;
    let secret = content.strip_suffix('\n').unwrap_or(&content);
    let secret = secret.strip_suffix('\r').unwrap_or(secret);
    if secret.is_empty() {
        return Err(ConfigError::var(file_var, format!("{path:?} is empty")));
    }
    Ok(Secret::new(secret))
}

/// `RTMANAGER_REDIS_TLS` and its CA file, read now so a missing or unreadable
/// file stops the process at start-up, naming the variable.
fn tls_config(raw: &RedisEnv) -> Result<Option<RedisTls>, ConfigError> {
    let path = raw.redis_tls_ca_file.trim();
    if !raw.redis_tls {
        if !path.is_empty() {
            return Err(ConfigError::var(
                "REDIS_TLS_CA_FILE",
                "only applies with RTMANAGER_REDIS_TLS=true",
            ));
        }
        return Ok(None);
    }
    if path.is_empty() {
        return Ok(Some(RedisTls {
            ca_file: None,
            ca_pem: None,
        }));
    }
    let pem = std::fs::read(path)
        .map_err(|e| ConfigError::var("REDIS_TLS_CA_FILE", format!("cannot read {path:?}: {e}")))?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(ConfigError::var(
            "REDIS_TLS_CA_FILE",
            format!("{path:?} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        ));
    }
    Ok(Some(RedisTls {
        ca_file: Some(path.to_owned()),
        ca_pem: Some(pem),
    }))
}

/// The sentinel settings: both names or neither, each address `host:port`.
fn sentinel_config(raw: &RedisEnv) -> Result<Option<SentinelConfig>, ConfigError> {
    let addrs: Vec<String> = raw
        .redis_sentinel_addrs
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    let master = raw.redis_sentinel_master.trim();
    match (addrs.is_empty(), master.is_empty()) {
        (true, true) => {
            if !raw.redis_sentinel_password.expose().is_empty() {
                return Err(ConfigError::var(
                    "REDIS_SENTINEL_PASSWORD",
                    "only applies with RTMANAGER_REDIS_SENTINEL_ADDRS",
                ));
            }
            return Ok(None);
        }
        (false, true) => {
            return Err(ConfigError::var(
                "REDIS_SENTINEL_MASTER",
                "is required with RTMANAGER_REDIS_SENTINEL_ADDRS (the monitored master's name)",
            ))
        }
        (true, false) => {
            return Err(ConfigError::var(
                "REDIS_SENTINEL_ADDRS",
                "is required with RTMANAGER_REDIS_SENTINEL_MASTER (comma-separated host:port)",
            ))
        }
        (false, false) => {}
    }
    if let Some(bad) = addrs.iter().find(|a| split_host_port(a).is_none()) {
        return Err(ConfigError::var(
            "REDIS_SENTINEL_ADDRS",
            format!("{bad:?}: expected comma-separated host:port"),
        ));
    }
    Ok(Some(SentinelConfig {
        addrs,
        master: master.to_owned(),
        password: raw.redis_sentinel_password.clone(),
    }))
}

/// `host:port` or `[v6]:port`.
pub fn split_host_port(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host.to_owned(), port.parse().ok()?))
}

fn default_game_lease_ttl_seconds() -> u64 {
    60
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    fn redis(vars: &[(&str, &str)]) -> Result<RedisConfig, String> {
        Env::from_vars(
            vars.iter()
                .map(|(k, v)| (format!("RTMANAGER_{k}"), v.to_string())),
        )
        .section::<RedisConfig>()
        .map_err(|e| e.to_string())
    }

    #[test]
    fn the_master_address_alone_is_the_go_setting() {
        let c = redis(&[("REDIS_MASTER_ADDR", "redis:6379")]).unwrap();
        assert_eq!(c.addr, "redis:6379");
        assert!(c.sentinel.is_none());
    }

    #[test]
    fn sentinels_replace_the_master_address() {
        let c = redis(&[
            ("REDIS_SENTINEL_ADDRS", "s1:26379, s2:26379,[::1]:26380"),
            ("REDIS_SENTINEL_MASTER", "galaxy"),
        ])
        .unwrap();
        let sentinel = c.sentinel.unwrap();
        assert_eq!(sentinel.addrs, ["s1:26379", "s2:26379", "[::1]:26380"]);
        assert_eq!(sentinel.master, "galaxy");
        assert_eq!(c.addr, "");
    }

    #[test]
    fn bad_combinations_name_the_variables() {
        for (vars, named) in [
            (&[][..], &["REDIS_MASTER_ADDR", "REDIS_SENTINEL_ADDRS"][..]),
            (
                &[("REDIS_SENTINEL_ADDRS", "s1:26379")][..],
                &["REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_ADDRS"][..],
            ),
            (
                &[("REDIS_SENTINEL_MASTER", "galaxy")][..],
                &["REDIS_SENTINEL_ADDRS", "REDIS_SENTINEL_MASTER"][..],
            ),
            (
                &[
                    ("REDIS_MASTER_ADDR", "redis:6379"),
                    ("REDIS_SENTINEL_ADDRS", "s1:26379"),
                    ("REDIS_SENTINEL_MASTER", "galaxy"),
                ][..],
                &["REDIS_MASTER_ADDR", "REDIS_SENTINEL_ADDRS"][..],
            ),
            (
                &[
                    ("REDIS_SENTINEL_ADDRS", "s1"),
                    ("REDIS_SENTINEL_MASTER", "galaxy"),
                ][..],
                &["REDIS_SENTINEL_ADDRS"][..],
            ),
            (
                &[("REDIS_MASTER_ADDR", "redis")][..],
                &["REDIS_MASTER_ADDR"][..],
            ),
            (
                &[
                    ("REDIS_MASTER_ADDR", "redis:6379"),
                    ("REDIS_USERNAME", "rtm"),
                ][..],
                &["REDIS_USERNAME", "REDIS_PASSWORD"][..],
            ),
            (
                &[
                    ("REDIS_MASTER_ADDR", "redis:6379"),
                    ("REDIS_SENTINEL_PASSWORD", "pw"),
                ][..],
                &["REDIS_SENTINEL_PASSWORD", "REDIS_SENTINEL_ADDRS"][..],
            ),
        ] {
            let err = redis(vars).unwrap_err();
            for name in named {
                assert!(
                    err.contains(&format!("RTMANAGER_{name}")),
                    "{vars:?}: {err}"
                );
            }
        }
    }

    #[test]
    fn the_username_and_passwords_never_print() {
        let c = redis(&[
            ("REDIS_SENTINEL_ADDRS", "s1:26379"),
            ("REDIS_SENTINEL_MASTER", "galaxy"),
            ("REDIS_SENTINEL_PASSWORD", "sentinel-pw"),
            ("REDIS_USERNAME", "rtm-user-name"),
            ("REDIS_PASSWORD", "redis-pw"),
        ])
        .unwrap();
        let printed = format!("{c:?}");
        for secret in ["sentinel-pw", "rtm-user-name", "redis-pw"] {
            assert!(!printed.contains(secret), "{printed}");
        }
    }

    #[test]
    fn passwords_come_from_files_without_their_line_break() {
        let dir = std::env::temp_dir().join(format!("rtm-pwfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (pw, spw) = (dir.join("redis"), dir.join("sentinel"));
        std::fs::write(&pw, "file-secret-1\n").unwrap();
        std::fs::write(&spw, "file-secret-2").unwrap();
        let c = redis(&[
            ("REDIS_SENTINEL_ADDRS", "s1:26379"),
            ("REDIS_SENTINEL_MASTER", "galaxy"),
            ("REDIS_PASSWORD_FILE", pw.to_str().unwrap()),
            ("REDIS_SENTINEL_PASSWORD_FILE", spw.to_str().unwrap()),
        ])
        .unwrap();
        assert_eq!(c.password.expose(), "file-secret-1");
        assert_eq!(
            c.sentinel.as_ref().unwrap().password.expose(),
            "file-secret-2"
        );
        assert!(!format!("{c:?}").contains("file-secret"));

        let both = redis(&[
            ("REDIS_MASTER_ADDR", "redis:6379"),
            ("REDIS_PASSWORD", "pw"),
            ("REDIS_PASSWORD_FILE", pw.to_str().unwrap()),
        ])
        .unwrap_err();
        assert!(
            both.contains("RTMANAGER_REDIS_PASSWORD_FILE")
                && both.contains("RTMANAGER_REDIS_PASSWORD "),
            "{both}"
        );
        let missing = dir.join("absent");
        let unreadable = redis(&[
            ("REDIS_MASTER_ADDR", "redis:6379"),
            ("REDIS_PASSWORD_FILE", missing.to_str().unwrap()),
        ])
        .unwrap_err();
        assert!(
            unreadable.contains("RTMANAGER_REDIS_PASSWORD_FILE")
                && unreadable.contains(missing.to_str().unwrap()),
            "{unreadable}"
        );
        // An ACL user with its password in a file is complete.
        assert!(redis(&[
            ("REDIS_MASTER_ADDR", "redis:6379"),
            ("REDIS_USERNAME", "rtm"),
            ("REDIS_PASSWORD_FILE", pw.to_str().unwrap()),
        ])
        .is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tls_reads_its_ca_file_at_start_up() {
        let plain = redis(&[("REDIS_MASTER_ADDR", "redis:6379")]).unwrap();
        assert!(plain.tls.is_none());
        let roots = redis(&[("REDIS_MASTER_ADDR", "redis:6379"), ("REDIS_TLS", "true")]).unwrap();
        assert!(roots.tls.unwrap().ca_pem.is_none());
        for (vars, named) in [
            (
                &[
                    ("REDIS_MASTER_ADDR", "redis:6379"),
                    ("REDIS_TLS_CA_FILE", "/x"),
                ][..],
                "RTMANAGER_REDIS_TLS_CA_FILE",
            ),
            (
                &[
                    ("REDIS_MASTER_ADDR", "redis:6379"),
                    ("REDIS_TLS", "true"),
                    ("REDIS_TLS_CA_FILE", "/nonexistent/ca.pem"),
                ][..],
                "RTMANAGER_REDIS_TLS_CA_FILE",
            ),
            (
                &[("REDIS_MASTER_ADDR", "redis:6379"), ("REDIS_TLS", "yes")][..],
                "RTMANAGER_REDIS_TLS",
            ),
        ] {
            let err = redis(vars).unwrap_err();
            assert!(err.contains(named), "{vars:?}: {err}");
        }
    }

    #[test]
    fn addresses_are_host_and_port() {
        assert_eq!(split_host_port("redis:6379"), Some(("redis".into(), 6379)));
        assert_eq!(split_host_port("[::1]:6380"), Some(("::1".into(), 6380)));
        assert_eq!(split_host_port("redis"), None);
        assert_eq!(split_host_port(":6379"), None);
        assert_eq!(split_host_port("h:port"), None);
    }
}
