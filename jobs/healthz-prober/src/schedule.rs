//! When and by whom a game is probed: its shard and its wall-clock slots.
//!
//! # Shards
//! A game belongs to shard `fnv1a64(game_id) % RTMANAGER_SHARD_COUNT`
//! ([`shard_of`]). FNV-1a 64 is written out here and pinned by a unit test,
//! so the assignment never changes across Rust versions or platforms (std's
//! `DefaultHasher` may): every prober version that ever runs side by side
//! must agree on who owns a game.
//!
//! # Slots
//! A game's probes happen at wall-clock slots `k * interval + offset(game)`,
//! where the offset is a stable hash of the game id ([`slot_offset`]): probes
//! are spread evenly over the interval, and every prober (after a restart, or
//! two overlapping during a reshard) probes a game at the same instants. A
//! slot is named by its time (milliseconds since the epoch, [`next_slot`]),
//! which every prober computes alike and which keeps growing when the
//! interval is reconfigured; the streak script relies on that to ignore a
//! second observation of the same slot.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shared::domain::GameId;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bit, over the bytes. Written out (not std's `DefaultHasher`,
/// whose output may change between Rust releases) because shard assignment
/// must agree between every prober version that ever runs side by side.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(FNV_PRIME)
    })
}

/// The shard of a game: `fnv1a64(game_id) % shard_count`.
pub fn shard_of(game_id: &GameId, shard_count: u32) -> u32 {
    (fnv1a64(game_id.as_str().as_bytes()) % u64::from(shard_count.max(1))) as u32
}

/// SplitMix64's finalizer: decorrelates the slot offset from the shard (both
/// come from the same FNV hash; without it, with 2 shards all of one shard's
/// offsets would share a parity).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Where in each interval a game is probed: a stable, evenly spread offset in
/// `[0, interval)`, identical in every prober, in milliseconds.
pub fn slot_offset(game_id: &GameId, interval: Duration) -> u64 {
    mix(fnv1a64(game_id.as_str().as_bytes())) % interval_ms(interval)
}

/// The interval in milliseconds, at least 1 (it divides).
pub(crate) fn interval_ms(interval: Duration) -> u64 {
    (interval.as_millis() as u64).max(1)
}

/// The wall clock in milliseconds since the epoch, the unit slots are named in.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The time (ms since the epoch) of the first slot strictly after `now_ms`.
pub fn next_slot(now_ms: u64, interval: Duration, offset_ms: u64) -> u64 {
    let interval = interval_ms(interval);
    (now_ms.saturating_sub(offset_ms) / interval + 1) * interval + offset_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn game(id: &str) -> GameId {
        GameId::parse(id).unwrap()
    }

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        // From the FNV reference test suite (isthe.com/chongo/tech/comp/fnv).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn shard_assignment_is_pinned() {
        // Changing any of these reshuffles every game between probers.
        let pinned: Vec<u32> = ["g1", "game-42", "abc_DEF-9", "Z"]
            .iter()
            .map(|id| shard_of(&game(id), 7))
            .collect();
        assert_eq!(pinned, PINNED_SHARDS);
        assert_eq!(shard_of(&game("anything"), 1), 0);
    }

    const PINNED_SHARDS: [u32; 4] = [0, 6, 5, 0];

    #[test]
    fn slot_offsets_are_pinned_spread_and_within_the_interval() {
        let interval = Duration::from_secs(15);
        assert_eq!(slot_offset(&game("g1"), interval), PINNED_OFFSET_G1);
        let mut buckets = [0u32; 10];
        for i in 0..10_000 {
            let offset = slot_offset(&game(&format!("game-{i}")), interval);
            assert!(offset < 15_000);
            buckets[(offset / 1_500) as usize] += 1;
        }
        // Evenly spread: each tenth of the interval holds about 1000 games.
        assert!(
            buckets.iter().all(|b| (850..1150).contains(b)),
            "{buckets:?}"
        );
    }

    const PINNED_OFFSET_G1: u64 = 12_330;

    #[test]
    fn slots_are_aligned_to_the_wall_clock() {
        let interval = Duration::from_millis(1000);
        assert_eq!(next_slot(10_250, interval, 300), 10_300);
        assert_eq!(next_slot(10_300, interval, 300), 11_300);
        assert_eq!(next_slot(10_299, interval, 300), 10_300);
    }
}
