//! The game identifier, validated once at the edge.
//!
//! The Go service joined the raw id into a host path, a container name and a
//! Redis key. We only accept ids that are safe in all three places:
//! `^[A-Za-z0-9][A-Za-z0-9_-]{0,50}$`. Fifty-one characters keep
//! `galaxy-game-{id}` within the 63 characters of a DNS label.

use std::fmt;

use base64::Engine as _;

/// Longest accepted id: `galaxy-game-` (12) + 51 = 63, a valid hostname label.
pub const GAME_ID_MAX_LEN: usize = 51;

/// A platform game id that is safe to use in paths, names, keys and queries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct GameId(String);

/// Why a string is not a [`GameId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GameIdError {
    #[error("game_id must not be empty")]
    Empty,
    #[error("game_id is longer than {GAME_ID_MAX_LEN} characters")]
    TooLong,
    #[error("game_id must start with an ASCII letter or digit and contain only ASCII letters, digits, '_' and '-'")]
    BadCharacter,
}

impl GameId {
    /// Validates `raw` against `^[A-Za-z0-9][A-Za-z0-9_-]{0,50}$`.
    pub fn parse(raw: &str) -> Result<Self, GameIdError> {
        let bytes = raw.as_bytes();
        let Some(first) = bytes.first() else {
            return Err(GameIdError::Empty);
        };
        if raw.len() > GAME_ID_MAX_LEN {
            return Err(GameIdError::TooLong);
        }
        if !first.is_ascii_alphanumeric() {
            return Err(GameIdError::BadCharacter);
        }
        if !bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
        {
            return Err(GameIdError::BadCharacter);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `galaxy-game-{id}`: the container name, which is also its hostname.
    pub fn container_name(&self) -> String {
        format!("galaxy-game-{}", self.0)
    }

    /// The engine endpoint Game Master uses, resolved by Docker DNS.
    pub fn engine_endpoint(&self) -> String {
        format!("http://galaxy-game-{}:8080", self.0)
    }

    /// Unpadded base64url of the id, as the Go service keyed its leases.
    pub fn key_segment(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0.as_bytes())
    }
}

impl fmt::Display for GameId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for GameId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_platform_ids_and_the_longest_hostname_safe_id() {
        for ok in ["game-123", "A", "0_a-b", &"a".repeat(51)] {
            assert!(GameId::parse(ok).is_ok(), "{ok}");
        }
        let id = GameId::parse(&"a".repeat(51)).unwrap();
        assert_eq!(id.container_name().len(), 63);
    }

    #[test]
    fn rejects_paths_spaces_unicode_and_overlong_ids() {
        assert_eq!(GameId::parse(""), Err(GameIdError::Empty));
        assert_eq!(GameId::parse(&"a".repeat(52)), Err(GameIdError::TooLong));
        for bad in ["../x", "a/b", "a b", " a", "-a", "_a", "gäme", "a.b", "a\n"] {
            assert_eq!(
                GameId::parse(bad),
                Err(GameIdError::BadCharacter),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn lease_key_segment_is_unpadded_base64url() {
        assert_eq!(GameId::parse("game-1").unwrap().key_segment(), "Z2FtZS0x");
    }
}
