//! Cluster slots. On a Cluster every key of one script must hash to one
//! slot. The wire names stay as they are (the streams, the Go service's
//! lease key), so a key of our own that a script uses together with one of
//! them carries that key's hash tag: the delivered marker the stream's, the
//! probe streak the game lease's. The same keys work on a single master.

/// The part of `key` Redis hashes to pick its slot: the text between the
/// first `{` and the first `}` after it when that is not empty, else the
/// whole key.
pub fn hashed_part(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        if let Some(len) = key[open + 1..].find('}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// `<prefix>{<hashed part of anchor>}<suffix>`: a key in `anchor`'s slot.
/// (Impossible only for an anchor with a `}` and no hash tag of its own; the
/// key is then built the same way and lands elsewhere.)
pub fn key_in_slot_of(anchor: &str, prefix: &str, suffix: &str) -> String {
    format!("{prefix}{{{}}}{suffix}", hashed_part(anchor))
}

/// Whether the delivered marker of `stream` can share its Cluster slot:
/// not when the part Redis hashes contains a `}` (a name with a `}` and no
/// hash tag of its own), since the marker's tag would end early.
pub fn can_share_a_slot(stream: &str) -> bool {
    !hashed_part(stream).contains('}')
}

/// On a Cluster, the first of `streams` (variable, name) whose delivery
/// cannot be made slot-safe, as a start-up error naming its variable.
pub fn refuse_cluster_unsafe<'a>(
    streams: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), String> {
    for (var, name) in streams {
        if !can_share_a_slot(name) {
            return Err(format!(
                "{var} = {name:?}: on a Redis Cluster a stream name with a `}}` needs a hash tag \
                 of its own (e.g. {{tag}}name), or its delivery marker lands in another slot; \
                 rename the stream or use a single master"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hashed_part_follows_the_cluster_rule() {
        assert_eq!(hashed_part("runtime:job_results"), "runtime:job_results");
        assert_eq!(hashed_part("{user1000}.following"), "user1000");
        assert_eq!(hashed_part("foo{}{bar}"), "foo{}{bar}");
        assert_eq!(hashed_part("foo{{bar}}zap"), "{bar");
        assert_eq!(hashed_part("foo{bar}{zap}"), "bar");
        assert_eq!(hashed_part("no}open{"), "no}open{");
    }

    #[test]
    fn only_a_name_whose_hashed_part_has_a_brace_is_refused() {
        for ok in ["runtime:job_results", "{t}x}y", "a{b}c:dead", "a{b"] {
            assert!(can_share_a_slot(ok), "{ok}");
            let marker = key_in_slot_of(ok, "m:", ":1");
            assert_eq!(hashed_part(&marker), hashed_part(ok), "{ok}");
        }
        for bad in ["a}b", "a{}b}", "runtime:x}:dead"] {
            assert!(!can_share_a_slot(bad), "{bad}");
            let marker = key_in_slot_of(bad, "m:", ":1");
            assert_ne!(hashed_part(&marker), hashed_part(bad), "{bad}");
        }
        let err = refuse_cluster_unsafe([
            ("RTMANAGER_JOB_RESULTS_STREAM", "ok"),
            ("RTMANAGER_HEALTH_EVENTS_STREAM", "h}x"),
        ])
        .unwrap_err();
        assert!(
            err.starts_with("RTMANAGER_HEALTH_EVENTS_STREAM = \"h}x\""),
            "{err}"
        );
    }

    #[test]
    fn a_key_in_the_slot_of_another_hashes_as_it() {
        for anchor in [
            "runtime:health_events",
            "t1a2b:runtime:start_jobs:dead",
            "rtmanager:game_lease:Z2FtZS0x",
            "{tenant}:runtime:job_results",
            "a{b}c",
        ] {
            let key = key_in_slot_of(anchor, "rtmanager:x:", ":1");
            assert_eq!(hashed_part(&key), hashed_part(anchor), "{anchor} -> {key}");
            assert!(key.starts_with("rtmanager:x:{") && key.ends_with("}:1"));
        }
    }
}
