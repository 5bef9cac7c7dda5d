//! Docker image references, validated as Docker itself would.
//!
//! `oci-spec` parses and normalizes like Docker's `ParseNormalizedNamed`, but
//! accepts upper-case repository paths that the Docker daemon rejects, so the
//! lower-case rule is checked here as well.

use std::fmt;
use std::str::FromStr;

use oci_spec::distribution::Reference;

/// A syntactically valid Docker image reference, kept as the producer wrote it
/// (the stored and compared value), with its tag available for semver checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    raw: String,
    tag: Option<String>,
    /// The reference names a tag or a digest itself (`tag` is `latest`
    /// also when it names neither).
    pinned: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    #[error("image_ref must not be empty")]
    Empty,
    #[error("image_ref {0:?}: repository name must be lowercase")]
    Uppercase(String),
    #[error("image_ref {raw:?} is not a valid Docker reference: {reason}")]
    Invalid { raw: String, reason: String },
}

impl ImageRef {
    pub fn parse(raw: &str) -> Result<Self, ImageRefError> {
        if raw.trim().is_empty() {
            return Err(ImageRefError::Empty);
        }
        if raw.trim() != raw {
            return Err(ImageRefError::Invalid {
                raw: raw.to_owned(),
                reason: "surrounding whitespace".into(),
            });
        }
        let parsed = Reference::from_str(raw).map_err(|e| ImageRefError::Invalid {
            raw: raw.to_owned(),
            reason: e.to_string(),
        })?;
        if !repository_path_is_lowercase(raw) {
            return Err(ImageRefError::Uppercase(raw.to_owned()));
        }
        let name = raw.split('@').next().unwrap_or(raw);
        let tagged = name
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'));
        Ok(Self {
            raw: raw.to_owned(),
            tag: parsed.tag().map(str::to_owned),
            pinned: tagged || parsed.digest().is_some(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The reference the Docker calls use: as written, with `:latest` when it
    /// names neither a tag nor a digest, as the Docker CLI does. The API pulls
    /// *every* tag of a repository for a pull without one. The stored ref,
    /// the label and the events keep the reference as written.
    pub fn for_docker(&self) -> String {
        if self.pinned {
            self.raw.clone()
        } else {
            format!("{}:latest", self.raw)
        }
    }
}

/// Docker's `splitDockerDomain`: the first path component is a registry host
/// when it has a `.` or `:`, is `localhost`, or has upper-case letters; the
/// rest must be lower case.
fn repository_path_is_lowercase(raw: &str) -> bool {
    let name = raw.split('@').next().unwrap_or(raw);
    let name = match name.rfind(':') {
        Some(colon) if !name[colon..].contains('/') => &name[..colon],
        _ => name,
    };
    let remainder = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            rest
        }
        _ => name,
    };
    remainder.to_lowercase() == remainder
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_calls_name_latest_when_the_ref_names_no_tag_or_digest() {
        let digest =
            "galaxy/game@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        for (raw, docker) in [
            ("galaxy/game", "galaxy/game:latest"),
            ("localhost:5000/game", "localhost:5000/game:latest"),
            (
                "registry.example.com:5000/galaxy/game",
                "registry.example.com:5000/galaxy/game:latest",
            ),
            ("galaxy/game:1.4.7", "galaxy/game:1.4.7"),
            ("localhost:5000/game:2", "localhost:5000/game:2"),
            (digest, digest),
        ] {
            let image = ImageRef::parse(raw).unwrap();
            assert_eq!(image.for_docker(), docker, "{raw}");
            assert_eq!(image.as_str(), raw, "kept as written");
        }
    }

    #[test]
    fn accepts_what_docker_accepts() {
        for ok in [
            "galaxy/game:1.4.7",
            "registry.example.com/galaxy/game:1.4.7",
            "localhost:5000/game",
            "Registry.Example.com/galaxy/game:1",
            "busybox",
            "game@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert!(ImageRef::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            ImageRef::parse("galaxy/game:1.4.7").unwrap().tag(),
            Some("1.4.7")
        );
    }

    #[test]
    fn rejects_what_docker_rejects() {
        assert_eq!(ImageRef::parse(""), Err(ImageRefError::Empty));
        assert!(ImageRef::parse("Galaxy/Game:1").is_err());
        assert!(ImageRef::parse("galaxy/GAME:1").is_err());
        // Docker's own rule, whatever the parser lets through.
        assert!(!repository_path_is_lowercase("galaxy/GAME:1"));
        assert!(!repository_path_is_lowercase(
            "Registry.io:5000/Galaxy/game@sha256:ab"
        ));
        assert!(repository_path_is_lowercase(
            "Registry.io:5000/galaxy/game:TAG"
        ));
        assert!(repository_path_is_lowercase("localhost/galaxy"));
        for bad in [
            "no spaces:1",
            "a::b",
            "game:",
            "UPPER",
            " galaxy/game:1",
            "x:1.0 ",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?}");
        }
    }
}
