//! Bearer-token authentication of `/api/v1/internal/*`, fail-closed.
//!
//! - Tokens come from `RTMANAGER_API_TOKENS_FILE` (one per line; blank lines
//!   and `#` comments ignored; reloaded on SIGHUP) and/or
//!   `RTMANAGER_API_TOKENS` (comma-separated); both sets are accepted.
//! - Every token is at least [`MIN_TOKEN_LEN`] (32) characters and is not a
//!   documented placeholder ([`is_placeholder`]: `CHANGE-ME…`, `REPLACE-ME…`,
//!   case-insensitive, what the shipped manifests carry). A weak token stops
//!   the gateway at start-up, and a reload that brings one is refused like
//!   any bad reload; the error names the entry (file and line, or position
//!   in the variable), never its value.
//! - A tokens file readable by every user (`mode & 0o004`) is refused at
//!   start; on reload the old set is kept and an error logged. The mode is
//!   read from the opened file (`fstat`), so a swap between check and read
//!   cannot slip through. Kubernetes secret volumes default to 0644: mount
//!   them with `defaultMode: 0440` (or 0400).
//! - No token configured: the gateway refuses to start.
//! - `RTMANAGER_API_AUTH=disabled` turns the check off, explicitly: a warning
//!   at start and `rtmanager_api_auth_disabled 1` on `/metrics`. It is the
//!   transitional mode of the cut-over from the Go service, whose callers
//!   send no token.
//! - Header syntax: `Authorization: Bearer <token>`. The scheme is matched
//!   case-insensitively (RFC 9110 §11.1); exactly one space separates it from
//!   the token, which must be an RFC 6750 `b64token`
//!   (`[A-Za-z0-9-._~+/]+=*`). Anything else (`Bearer`, `Basic x`,
//!   `bearer  tok`, `Bearer a b`) is 401. Whitespace around the whole value
//!   is not part of it (RFC 9110 §5.5) and the HTTP parser drops it.
//! - Comparison is constant time over every configured token (no early exit,
//!   lengths compared as data), and tokens are never logged: [`Token`]'s
//!   `Debug` is redacted and errors name line numbers, not contents.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use shared::config::{AuthMode, GatewayConfig};
use subtle::{Choice, ConstantTimeEq};

use crate::error::ApiError;

/// Paths under this prefix need a token; everything else is open.
pub const PROTECTED_PREFIX: &str = "/api/v1/internal";

/// Longest accepted token (and presented credential), in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Shortest accepted token, in characters (bytes: tokens are ASCII): 32
/// characters of a random hex or base64 secret are 128 bits or more.
pub const MIN_TOKEN_LEN: usize = 32;

/// What the shipped manifests and examples put where a token goes, compared
/// case-insensitively with `-`, `_` and `.` ignored: a token that starts
/// with one of these is a placeholder nobody replaced (`CHANGE-ME-admin-token`
/// in `k8s/config.yaml`). The README's "Authentication" lists them.
pub const PLACEHOLDER_PREFIXES: &[&str] = &["changeme", "replaceme"];

/// One configured token; never printed.
#[derive(Clone)]
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token([redacted])")
    }
}

/// Why the token configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("RTMANAGER_API_TOKENS_FILE {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "RTMANAGER_API_TOKENS_FILE {path} is readable by every user (mode {mode:04o}); \
         restrict it (chmod 0600 or 0640, or defaultMode 0440 for a Kubernetes secret)"
    )]
    WorldReadable { path: PathBuf, mode: u32 },
    #[error(
        "{source_name}: token {position} is not a bearer token \
         (allowed: A-Z a-z 0-9 - . _ ~ + / and trailing =, at most {MAX_TOKEN_LEN} bytes)"
    )]
    BadToken {
        source_name: String,
        position: String,
    },
    #[error(
        "{source_name}: token {position} is {weakness}; \
         use a random secret of at least {MIN_TOKEN_LEN} characters (e.g. `openssl rand -hex 32`)"
    )]
    WeakToken {
        source_name: String,
        position: String,
        weakness: Weakness,
    },
    #[error(
        "no API token configured: set RTMANAGER_API_TOKENS_FILE or RTMANAGER_API_TOKENS \
         (or RTMANAGER_API_AUTH=disabled, the transitional mode without authentication)"
    )]
    NoTokens,
}

/// Why a well-formed token is still refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weakness {
    TooShort,
    Placeholder,
}

impl std::fmt::Display for Weakness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::TooShort => "shorter than 32 characters",
            Self::Placeholder => {
                "a placeholder of the shipped examples (CHANGE-ME..., REPLACE-ME...)"
            }
        })
    }
}

/// Whether `token` starts with a [`PLACEHOLDER_PREFIXES`] entry, ignoring
/// case and the separators `-`, `_`, `.`.
pub fn is_placeholder(token: &[u8]) -> bool {
    let letters: Vec<u8> = token
        .iter()
        .filter(|b| !b"-_.".contains(b))
        .map(u8::to_ascii_lowercase)
        .collect();
    PLACEHOLDER_PREFIXES
        .iter()
        .any(|prefix| letters.starts_with(prefix.as_bytes()))
}

/// Why a well-formed token is too weak to accept, if it is.
fn weakness(token: &[u8]) -> Option<Weakness> {
    if token.len() < MIN_TOKEN_LEN {
        Some(Weakness::TooShort)
    } else if is_placeholder(token) {
        Some(Weakness::Placeholder)
    } else {
        None
    }
}

/// A configured token, checked: well-formed, then strong enough; an error
/// names `source_name` and `position`, never the token.
fn configured_token(
    raw: &str,
    source_name: impl Fn() -> String,
    position: String,
) -> Result<Token, AuthError> {
    if !is_b64token(raw.as_bytes()) {
        return Err(AuthError::BadToken {
            source_name: source_name(),
            position,
        });
    }
    if let Some(weakness) = weakness(raw.as_bytes()) {
        return Err(AuthError::WeakToken {
            source_name: source_name(),
            position,
            weakness,
        });
    }
    Ok(Token(raw.as_bytes().to_vec()))
}

/// The token set and the auth mode, shared by every request; cheap to clone.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    disabled: bool,
    file: Option<PathBuf>,
    env_tokens: Vec<Token>,
    tokens: RwLock<Arc<Vec<Token>>>,
    /// `rtmanager_api_auth_disabled`
    pub(crate) disabled_gauge: Gauge,
    /// `rtmanager_api_tokens`
    pub(crate) tokens_gauge: Gauge,
    /// `rtmanager_api_token_reload_failures`
    pub(crate) reload_failures: Counter,
}

/// `[A-Za-z0-9-._~+/]+=*` (RFC 6750 `b64token`), bounded.
fn is_b64token(raw: &[u8]) -> bool {
    let body_len = raw.len() - raw.iter().rev().take_while(|b| **b == b'=').count();
    body_len > 0
        && raw.len() <= MAX_TOKEN_LEN
        && raw[..body_len]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(b))
}

/// Tokens of a file's text: one per line, blank lines and `#` comments skipped.
fn parse_file_tokens(text: &str, path: &Path) -> Result<Vec<Token>, AuthError> {
    let mut tokens = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        tokens.push(configured_token(
            line,
            || format!("RTMANAGER_API_TOKENS_FILE {}", path.display()),
            format!("on line {}", index + 1),
        )?);
    }
    Ok(tokens)
}

fn parse_env_tokens(raw: &str) -> Result<Vec<Token>, AuthError> {
    let mut tokens = Vec::new();
    for (index, part) in raw.split(',').enumerate() {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        tokens.push(configured_token(
            part,
            || "RTMANAGER_API_TOKENS".into(),
            format!("number {}", index + 1),
        )?);
    }
    Ok(tokens)
}

/// Reads the tokens file, refusing it when world-readable.
pub fn read_tokens_file(path: &Path) -> Result<Vec<Token>, AuthError> {
    let read_err = |source| AuthError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mode = file.metadata().map_err(read_err)?.permissions().mode();
    if mode & 0o004 != 0 {
        return Err(AuthError::WorldReadable {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(read_err)?;
    parse_file_tokens(&text, path)
}

impl Auth {
    /// Loads the configured tokens; refuses a world-readable file, a malformed
    /// token and (auth enabled) an empty set.
    pub fn from_config(config: &GatewayConfig) -> Result<Self, AuthError> {
        let disabled = config.auth == AuthMode::Disabled;
        let file = config.api_tokens_file.clone();
        let (env_tokens, file_tokens) = if disabled {
            (Vec::new(), Vec::new())
        } else {
            let env_tokens = parse_env_tokens(config.api_tokens.expose())?;
            let file_tokens = match &file {
                Some(path) => read_tokens_file(path)?,
                None => Vec::new(),
            };
            (env_tokens, file_tokens)
        };
        let all: Vec<Token> = env_tokens.iter().cloned().chain(file_tokens).collect();
        if !disabled && all.is_empty() {
            return Err(AuthError::NoTokens);
        }
        let inner = Inner {
            disabled,
            file: if disabled { None } else { file },
            env_tokens,
            tokens_gauge: Gauge::default(),
            disabled_gauge: Gauge::default(),
            reload_failures: Counter::default(),
            tokens: RwLock::new(Arc::new(all)),
        };
        inner.disabled_gauge.set(i64::from(disabled));
        inner.tokens_gauge.set(inner.current().len() as i64);
        if disabled {
            tracing::warn!(
                "RTMANAGER_API_AUTH=disabled: /api/v1/internal/* accepts requests without a bearer token \
                 (transitional mode for the cut-over from the Go service; configured tokens are ignored)"
            );
        } else {
            tracing::info!(tokens = inner.current().len(), "API bearer tokens loaded");
        }
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    pub fn is_disabled(&self) -> bool {
        self.inner.disabled
    }

    /// How many tokens are accepted now.
    pub fn token_count(&self) -> usize {
        self.inner.current().len()
    }

    /// Re-reads the tokens file (SIGHUP). On any error (a weak token
    /// included), or a file that would leave no token at all, the old set stays and the error is returned
    /// (and counted); the caller logs it.
    pub fn reload(&self) -> Result<usize, AuthError> {
        let result = self.try_reload();
        match &result {
            Ok(count) => {
                self.inner.tokens_gauge.set(*count as i64);
                tracing::info!(tokens = count, "API bearer tokens reloaded");
            }
            Err(e) => {
                self.inner.reload_failures.inc();
                tracing::error!(error = %e, "API token reload failed; the previous tokens stay in force");
            }
        }
        result
    }

    fn try_reload(&self) -> Result<usize, AuthError> {
        let Some(path) = &self.inner.file else {
            return Ok(self.token_count());
        };
        let file_tokens = read_tokens_file(path)?;
        let all: Vec<Token> = self
            .inner
            .env_tokens
            .iter()
            .cloned()
            .chain(file_tokens)
            .collect();
        if all.is_empty() {
            return Err(AuthError::NoTokens);
        }
        let count = all.len();
        *self.inner.tokens.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(all);
        Ok(count)
    }

    /// Whether an `Authorization` header value grants access.
    pub fn check(&self, authorization: Option<&HeaderValue>) -> bool {
        if self.inner.disabled {
            return true;
        }
        let Some(presented) = authorization.and_then(|v| bearer_token(v.as_bytes())) else {
            return false;
        };
        matches_any(presented, &self.inner.current())
    }

    pub(crate) fn gauges(&self) -> (&Gauge, &Gauge, &Counter) {
        (
            &self.inner.disabled_gauge,
            &self.inner.tokens_gauge,
            &self.inner.reload_failures,
        )
    }
}

impl Inner {
    fn current(&self) -> Arc<Vec<Token>> {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, one space).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let token = &value[SCHEME.len()..];
    is_b64token(token).then_some(token)
}

/// Compares `presented` with every token, without early exit: the time taken
/// depends on the configured tokens' lengths and the presented length, not on
/// which token (if any) matched or where they differ.
fn matches_any(presented: &[u8], tokens: &[Token]) -> bool {
    let mut any = Choice::from(0);
    for token in tokens {
        let same_len = (token.0.len() as u64).ct_eq(&(presented.len() as u64));
        let mut same_bytes = Choice::from(1);
        for (i, expected) in token.0.iter().enumerate() {
            // Past the presented length, compare with 0; the length check
            // above already decides the result.
            let got = presented.get(i).copied().unwrap_or(0);
            same_bytes &= got.ct_eq(expected);
        }
        any |= same_len & same_bytes;
    }
    any.into()
}

/// Middleware: `/api/v1/internal/*` (known routes or not) needs a token.
pub async fn require_token(State(auth): State<Auth>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let protected = path == PROTECTED_PREFIX
        || path
            .strip_prefix(PROTECTED_PREFIX)
            .is_some_and(|rest| rest.starts_with('/'));
    if protected && !auth.check(req.headers().get(header::AUTHORIZATION)) {
        return ApiError::unauthorized().into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(raw: &[&str]) -> Vec<Token> {
        raw.iter().map(|t| Token(t.as_bytes().to_vec())).collect()
    }

    #[test]
    fn bearer_syntax_is_strict_but_the_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bEARER abc="), Some(&b"abc="[..]));
        for bad in [
            &b"Bearer"[..],
            b"Bearer ",
            b"Basic abc",
            b"Bearer  abc",
            b"Bearer abc ",
            b"Bearer a c",
            b"Bearer =",
            b"Bearerabc",
        ] {
            assert_eq!(bearer_token(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    const A: &str = "gm-token-aaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const BB: &str = "gm-token-bbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn every_configured_token_matches_and_nothing_else_does() {
        let set = tokens(&[A, BB]);
        assert!(matches_any(A.as_bytes(), &set));
        assert!(matches_any(BB.as_bytes(), &set));
        let (a_plus_one, bb_plus_one) = (format!("{A}a"), format!("{BB}b"));
        let (a_nul, ab) = (format!("{A}\0"), format!("{}b", &A[..A.len() - 1]));
        for bad in [
            &A.as_bytes()[..A.len() - 1],
            ab.as_bytes(),
            a_nul.as_bytes(),
            b"",
            bb_plus_one.as_bytes(),
            a_plus_one.as_bytes(),
        ] {
            assert!(!matches_any(bad, &set));
        }
        assert!(!matches_any(b"x", &[]));
    }

    #[test]
    fn file_tokens_skip_comments_and_blank_lines_and_name_bad_lines_only() {
        let path = Path::new("/t");
        let got = parse_file_tokens(&format!("# c\n\n  {A} \n{BB}\n"), path).unwrap();
        assert_eq!(got.len(), 2);
        let err = parse_file_tokens(&format!("{A}\nse cret-0123456789abcdef0123456789\n"), path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && !err.contains("cret"), "{err}");
        let err = parse_env_tokens(&format!("{A}, b c"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("number 2") && !err.contains("b c"), "{err}");
        assert!(!format!("{:?}", tokens(&["s3cret"])).contains("s3cret"));
    }

    /// Short tokens and the shipped placeholders are refused at the entry
    /// they are in, without their value; 32 characters are enough.
    #[test]
    fn short_and_placeholder_tokens_are_refused_naming_their_entry() {
        let path = Path::new("/run/tokens");
        let short = "0123456789abcdef0123456789abcde"; // 31
        let exact = "0123456789abcdef0123456789abcdef"; // 32
        assert_eq!(
            parse_file_tokens(&format!("{exact}\n"), path)
                .unwrap()
                .len(),
            1
        );
        for (text, line, weakness) in [
            (format!("{A}\n\n{short}\n"), 3, Weakness::TooShort),
            (
                "# tokens\nCHANGE-ME-game-master-token-0123456789\n".to_owned(),
                2,
                Weakness::Placeholder,
            ),
            (format!("change_me_{exact}\n"), 1, Weakness::Placeholder),
            (format!("{A}\nReplaceMe{exact}\n"), 2, Weakness::Placeholder),
            ("t0ken-a\n".to_owned(), 1, Weakness::TooShort),
        ] {
            let err = parse_file_tokens(&text, path).unwrap_err();
            let message = err.to_string();
            assert!(
                matches!(err, AuthError::WeakToken { weakness: w, .. } if w == weakness),
                "{message}"
            );
            assert!(
                message.contains("RTMANAGER_API_TOKENS_FILE /run/tokens")
                    && message.contains(&format!("on line {line}")),
                "{message}"
            );
            let token = text.lines().nth(line - 1).unwrap();
            assert!(!message.contains(token), "{message}");
        }
        let err = parse_env_tokens(&format!("{A},CHANGE-ME-admin-token-0123456789abcdef"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("RTMANAGER_API_TOKENS: token number 2 is a placeholder"),
            "{err}"
        );
        let err = parse_env_tokens("demo-token").unwrap_err().to_string();
        assert!(err.contains("number 1 is shorter than 32"), "{err}");
        // Not a placeholder: the words elsewhere, or another word first.
        for fine in [format!("x-change-me-{exact}"), format!("changes-{exact}")] {
            assert!(!is_placeholder(fine.as_bytes()), "{fine}");
        }
    }
}

/// No token text, whatever it holds, panics a parser or reaches an error
/// message: a rejection names where the bad token is, never what it is.
#[cfg(test)]
mod properties {
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(crate::proptest_config())]

        #[test]
        fn token_files_parse_or_are_refused_without_echoing_them(
            text in prop_oneof![
                any::<String>(),
                "([A-Za-z0-9._~+/=#-]{0,40}[ \t]*\n?){0,8}",
                "([A-Za-z0-9._~+/-]{28,48}=?\n){0,4}",
            ]
        ) {
            match parse_file_tokens(&text, Path::new("/run/tokens")) {
                Ok(tokens) => {
                    for token in &tokens {
                        prop_assert!(is_b64token(&token.0));
                        prop_assert!(token.0.len() >= MIN_TOKEN_LEN && !is_placeholder(&token.0));
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    prop_assert!(message.contains("RTMANAGER_API_TOKENS_FILE"), "{}", message);
                    for line in text.lines().map(str::trim).filter(|l| l.len() >= 4) {
                        prop_assert!(!message.contains(line), "{} echoes {:?}", message, line);
                    }
                }
            }
        }

        #[test]
        fn env_tokens_parse_or_are_refused_without_echoing_them(
            raw in prop_oneof![any::<String>(), "([A-Za-z0-9._~+/-]{28,48}, ?){0,4}"]
        ) {
            match parse_env_tokens(&raw) {
                Ok(tokens) => {
                    for token in &tokens {
                        prop_assert!(is_b64token(&token.0));
                        prop_assert!(token.0.len() >= MIN_TOKEN_LEN && !is_placeholder(&token.0));
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    prop_assert!(message.contains("RTMANAGER_API_TOKENS"), "{}", message);
                    for part in raw.split(',').map(str::trim).filter(|p| p.len() >= 4) {
                        prop_assert!(!message.contains(part), "{} echoes {:?}", message, part);
                    }
                }
            }
        }

        #[test]
        fn authorization_headers_never_panic(value in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Some(token) = bearer_token(&value) {
                prop_assert!(is_b64token(token));
            }
        }
    }
}
