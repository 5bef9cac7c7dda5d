//! Docker image references, validated as Docker itself would.
//!
//! The grammar is Docker's (`distribution/reference`: `name[:tag][@digest]`,
//! with the name an optional registry host and path components), checked by
//! hand in [`grammar`]. It used to be `oci-spec`'s `Reference`, whose one
//! regex (the whole grammar, with a Unicode `\w` repeated 128 times for the
//! tag) took tens of milliseconds and megabytes to compile on a process's
//! first start; a test keeps `oci-spec` as the oracle. Like `oci-spec`, the
//! grammar lets upper-case repository paths through that the Docker daemon
//! rejects (an upper-case first component reads as a registry host), so the
//! lower-case rule is checked here as well.

use std::fmt;

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
        let parsed = grammar::parse(raw).map_err(|e| ImageRefError::Invalid {
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
            // Neither a tag nor a digest: `latest`, as Docker reads it.
            tag: match (parsed.tag, parsed.digest) {
                (Some(tag), _) => Some(tag.to_owned()),
                (None, None) => Some("latest".to_owned()),
                (None, Some(_)) => None,
            },
            pinned: tagged || parsed.digest.is_some(),
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

/// Docker's reference grammar (`distribution/reference`, as `oci-spec`'s
/// regex spells it), checked without a regex:
///
/// ```text
/// reference  := name [ ":" tag ] [ "@" digest ]
/// name       := [ domain "/" ] path ( "/" path )*
/// domain     := host-part ( "." host-part )* [ ":" [0-9]+ ]
/// host-part  := [a-zA-Z0-9] | [a-zA-Z0-9] [a-zA-Z0-9-]* [a-zA-Z0-9]
/// path       := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
/// tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
/// digest     := alg ( [-_+.] alg )* ":" [0-9a-fA-F]{32,}
/// alg        := [A-Za-z] [A-Za-z0-9]*
/// ```
///
/// The tag's `\w` is ASCII, as in Go's regexp (Docker); `oci-spec`'s Rust
/// regex read it as Unicode. Then the repository (the name after its
/// registry, with `library/` for a one-component Docker Hub name) is at most
/// 255 characters, and a `sha256`/`sha384`/`sha512` digest has 64/96/128 hex
/// digits (no other algorithm).
mod grammar {
    /// The parts of a valid reference, borrowed from it.
    pub struct Parsed<'a> {
        pub tag: Option<&'a str>,
        pub digest: Option<&'a str>,
    }

    /// The reasons, worded as `oci-spec` words them.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    pub enum ParseError {
        #[error("invalid reference format")]
        InvalidFormat,
        #[error("repository name must not be more than 255 characters")]
        NameTooLong,
        #[error("invalid checksum digest length")]
        DigestInvalidLength,
        #[error("unsupported digest algorithm")]
        DigestUnsupported,
    }

    pub fn parse(raw: &str) -> Result<Parsed<'_>, ParseError> {
        let (rest, digest) = match raw.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (raw, None),
        };
        // A `:` after the last `/` starts the tag (a port's `:` comes
        // before a `/`).
        let (name, tag) = match rest.rfind(':') {
            Some(colon) if !rest[colon..].contains('/') => {
                (&rest[..colon], Some(&rest[colon + 1..]))
            }
            _ => (rest, None),
        };
        if !is_name(name)
            || tag.is_some_and(|t| !is_tag(t))
            || digest.is_some_and(|d| !is_digest(d))
        {
            return Err(ParseError::InvalidFormat);
        }
        if repository_len(name) > 255 {
            return Err(ParseError::NameTooLong);
        }
        if let Some(digest) = digest {
            let (algorithm, hex) = digest.split_once(':').unwrap_or((digest, ""));
            let want = match algorithm {
                "sha256" => 64,
                "sha384" => 96,
                "sha512" => 128,
                _ => return Err(ParseError::DigestUnsupported),
            };
            if hex.len() != want {
                return Err(ParseError::DigestInvalidLength);
            }
        }
        Ok(Parsed { tag, digest })
    }

    fn is_name(name: &str) -> bool {
        let mut parts = name.split('/');
        let Some(first) = parts.next() else {
            return false;
        };
        let rest: Vec<&str> = parts.collect();
        if rest.iter().any(|p| !is_path(p)) {
            return false;
        }
        is_path(first) || (!rest.is_empty() && is_domain(first))
    }

    fn is_path(part: &str) -> bool {
        let b = part.as_bytes();
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            let sep_start = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &part[sep_start..i];
            let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|c| c == b'-');
            if !ok {
                return false;
            }
        }
        true
    }

    fn is_domain(domain: &str) -> bool {
        let (host, port) = match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        };
        if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit())) {
            return false;
        }
        host.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        })
    }

    fn is_tag(tag: &str) -> bool {
        let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        let b = tag.as_bytes();
        !b.is_empty()
            && b.len() <= 128
            && word(b[0])
            && b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
    }

    fn is_digest(digest: &str) -> bool {
        let Some((algorithm, hex)) = digest.split_once(':') else {
            return false;
        };
        let component_ok = |c: &str| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphabetic()
                && b.iter().all(|c| c.is_ascii_alphanumeric())
        };
        algorithm.split(['-', '_', '+', '.']).all(component_ok)
            && hex.len() >= 32
            && hex.bytes().all(|c| c.is_ascii_hexdigit())
    }

    /// The repository's length as Docker counts it: the name without its
    /// registry host (`docker.io/` and `library/` count as Docker Hub's).
    fn repository_len(name: &str) -> usize {
        let (domain, remainder) = match name.split_once('/') {
            Some((left, right)) if left.contains(['.', ':']) || left == "localhost" => {
                (left, right)
            }
            _ => ("docker.io", name),
        };
        let hub = domain == "docker.io" || domain == "index.docker.io";
        if hub && !remainder.contains('/') {
            "library/".len() + remainder.len()
        } else {
            remainder.len()
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `oci-spec`'s verdict and parts, with its tag default undone.
    fn oracle(raw: &str) -> Option<(Option<String>, Option<String>)> {
        let parsed: oci_spec::distribution::Reference = raw.parse().ok()?;
        let digest = parsed.digest().map(str::to_owned);
        let explicit_tag = raw.split('@').next().and_then(|n| {
            let colon = n.rfind(':')?;
            (!n[colon..].contains('/')).then(|| n[colon + 1..].to_owned())
        });
        Some((explicit_tag, digest))
    }

    fn ours(raw: &str) -> Option<(Option<String>, Option<String>)> {
        let parsed = grammar::parse(raw).ok()?;
        Some((
            parsed.tag.map(str::to_owned),
            parsed.digest.map(str::to_owned),
        ))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// The hand-checked grammar agrees with `oci-spec`'s regex on ASCII
        /// references (where their `\w` agree), valid ones and not.
        #[test]
        fn the_grammar_agrees_with_oci_spec(raw in "[a-cA-C0-9._:/@+-]{1,24}") {
            prop_assert_eq!(ours(&raw), oracle(&raw), "{}", raw);
        }

        #[test]
        fn the_grammar_agrees_with_oci_spec_on_likely_references(
            host in "(localhost|[a-z0-9][a-z0-9.-]{0,8}[a-z0-9]|[A-Z][a-z]{0,3}\\.io)(:[0-9]{1,5})?",
            path in "[a-z0-9]{1,4}([._-]{1,2}[a-z0-9]{1,4}){0,2}(/[a-z0-9]{1,4}([_-][a-z0-9]{1,3})?){0,2}",
            tag in "(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,10})?",
            digest in "(@(sha256|sha512|md5|sha256\\+b64):[0-9a-f]{30,130})?",
            with_host in any::<bool>(),
        ) {
            let raw = if with_host { format!("{host}/{path}{tag}{digest}") } else { format!("{path}{tag}{digest}") };
            prop_assert_eq!(ours(&raw), oracle(&raw), "{}", raw);
        }
    }

    #[test]
    fn the_grammar_agrees_with_oci_spec_on_edge_cases() {
        let long_path = "a".repeat(248);
        let long_tag = "t".repeat(128);
        let sha = "0".repeat(64);
        for raw in [
            long_path.clone(),
            format!("{long_path}b"),
            format!("x/{long_path}bcdefg"),
            format!("game:{long_tag}"),
            format!("game:{long_tag}u"),
            format!("game@sha256:{sha}"),
            format!("game@sha256:{sha}0"),
            format!("game@sha384:{}", "a".repeat(96)),
            format!("game@foo:{sha}"),
            format!("game:1@sha256:{sha}"),
            format!("game@sha256:{sha}@sha256:{sha}"),
            "docker.io/game".into(),
            "index.docker.io/game".into(),
            "localhost/game".into(),
            "localhost:5000".into(),
            "a__b".into(),
            "a___b".into(),
            "a--b".into(),
            "a.-b".into(),
            "-a".into(),
            "a-".into(),
            "Host-1.Example:80/a/b:c".into(),
            "host-.example/a".into(),
            ":tag".into(),
            "/a".into(),
            "a/".into(),
            "a//b".into(),
            "a:b:c".into(),
            "a/b:c/d".into(),
        ] {
            assert_eq!(ours(&raw), oracle(&raw), "{raw}");
        }
    }

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
