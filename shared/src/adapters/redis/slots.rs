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
