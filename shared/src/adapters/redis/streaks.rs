//! The prober's failure streaks: one hash per game,
//! `rtmanager:probe:{rtmanager:game_lease:<base64url(game_id)>}` (in the game
//! lease's Cluster slot, which the script reads too), updated by one script per
//! observation so that shards, restarts and slot duplicates decide each
//! transition exactly once.

use std::collections::HashMap;
use std::time::Duration;

use redis::Script;

use super::leases::lease_key;
use super::{RedisClient, RedisError};
use crate::domain::GameId;

/// `rtmanager:probe:{<lease key>}`: the observation script reads the lease
/// too, so the streak carries the lease key as its hash tag.
pub fn streak_key(game_id: &GameId) -> String {
    super::slots::key_in_slot_of(&lease_key(game_id), "rtmanager:probe:", "")
}

/// Applies one observation to a game's streak and decides, atomically, what
/// to publish. KEYS: streak hash, game lease. ARGV: container id, `ok` or
/// `fail`, threshold, slot, TTL seconds, then the seed: the container of a
/// published `probe_failed` (`''` when none) and its count. The seed stands
/// in for a missing hash (Redis lost it, or it expired): without it a lost
/// streak would forget its published `probe_failed`, so a recovery would go
/// unreported and a still failing engine reported twice. An existing hash is
/// never overridden by it, being at least as new. Returns `{verdict, count,
/// pre-image...}` where verdict is `ok`, `recovered` (count = the failures
/// right before), `counted`, `failed` (count = the streak), `skipped` (lease
/// held: a failure during an operation is not counted) or `duplicate` (this
/// slot, or a later one, was already observed: by another prober or before a
/// restart). The
/// pre-image (the replaced fields, `''` when absent) lets [`UNDO_LUA`]
/// restore them when the event cannot be committed ([`RedisClient::undo_streak`]).
const OBSERVE_LUA: &str = r#"
local s = redis.call('HMGET', KEYS[1], 'container_id', 'consecutive_failures',
  'failed_published', 'failed_container', 'last_slot')
local cid = s[1] or ''
local fails = tonumber(s[2]) or 0
local published = s[3] == '1'
local failed_for = s[4] or ''
local slot = tonumber(ARGV[4])
local pre = {cid, tostring(s[2] or ''), tostring(s[3] or ''), failed_for, tostring(s[5] or '')}
if s[5] and tonumber(s[5]) >= slot then
  return {'duplicate', fails, unpack(pre)}
end
local seeded = false
if ARGV[6] ~= '' and redis.call('EXISTS', KEYS[1]) == 0 then
  seeded = true
  cid = ARGV[6]
  fails = tonumber(ARGV[7]) or 0
  published = true
  failed_for = ARGV[6]
end
local verdict
if ARGV[2] == 'ok' then
  if published then
    verdict = 'recovered'
    redis.call('HSET', KEYS[1], 'container_id', ARGV[1], 'consecutive_failures', 0,
      'failed_published', 0, 'failed_container', '', 'last_slot', ARGV[4])
  else
    verdict = 'ok'
    redis.call('HSET', KEYS[1], 'container_id', ARGV[1], 'consecutive_failures', 0,
      'last_slot', ARGV[4])
  end
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return {verdict, fails, unpack(pre)}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'skipped', fails, unpack(pre)}
end
if cid ~= ARGV[1] then fails = 0 end
fails = fails + 1
verdict = 'counted'
if fails >= tonumber(ARGV[3]) and not (published and failed_for == ARGV[1]) then
  verdict = 'failed'
  redis.call('HSET', KEYS[1], 'failed_published', 1, 'failed_container', ARGV[1])
elseif seeded then
  redis.call('HSET', KEYS[1], 'failed_published', 1, 'failed_container', failed_for)
end
redis.call('HSET', KEYS[1], 'container_id', ARGV[1], 'consecutive_failures', fails,
  'last_slot', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {verdict, fails, unpack(pre)}"#;

/// Restores an observation's pre-image, only while nothing has observed the
/// game since (`last_slot` is still the observation's slot). ARGV: slot,
/// then the pre-image; an empty pre-image `last_slot` means there was no
/// state, so the key is deleted.
const UNDO_LUA: &str = r#"
if redis.call('HGET', KEYS[1], 'last_slot') ~= ARGV[1] then return 0 end
if ARGV[6] == '' then redis.call('DEL', KEYS[1]) return 1 end
redis.call('HSET', KEYS[1], 'container_id', ARGV[2], 'consecutive_failures', ARGV[3],
  'failed_published', ARGV[4], 'failed_container', ARGV[5], 'last_slot', ARGV[6])
return 1"#;

/// The streak hash as stored (for operators and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Streak {
    pub container_id: String,
    pub consecutive_failures: i64,
    pub failed_published: bool,
    pub failed_container: String,
    pub last_slot: Option<u64>,
}

/// What one observation did to the streak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreakVerdict {
    /// Healthy, nothing to publish.
    Healthy,
    /// Healthy after a published failure: publish `probe_recovered`.
    Recovered { prior_failure_count: i64 },
    /// Failing, below the threshold (or already published for this container).
    Counted { consecutive_failures: i64 },
    /// The threshold was crossed: publish `probe_failed`.
    Failed { consecutive_failures: i64 },
    /// A failure while the game's lease is held (an operation is under way).
    Skipped,
    /// This slot, or a later one, was already observed.
    Duplicate,
}

/// The streak fields an observation replaced, to give a transition back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreakPreImage {
    container_id: String,
    consecutive_failures: String,
    failed_published: String,
    failed_container: String,
    last_slot: String,
}

impl RedisClient {
    /// Applies one probe result (`healthy` or not) of `container_id` in
    /// `slot` to the game's streak. `seed`, the `(container, count)` of a
    /// published `probe_failed` as PostgreSQL committed it, is the streak
    /// when Redis has none (see `OBSERVE_LUA`).
    #[allow(clippy::too_many_arguments)]
    pub async fn observe_streak(
        &self,
        game_id: &GameId,
        container_id: &str,
        healthy: bool,
        threshold: u32,
        slot: u64,
        ttl: Duration,
        seed: Option<(&str, i64)>,
    ) -> Result<(StreakVerdict, StreakPreImage), RedisError> {
        let (verdict, count, container, fails, published, failed_for, last_slot): (
            String,
            i64,
            String,
            String,
            String,
            String,
            String,
        ) = Script::new(OBSERVE_LUA)
            .key(streak_key(game_id))
            .key(lease_key(game_id))
            .arg(container_id)
            .arg(if healthy { "ok" } else { "fail" })
            .arg(threshold)
            .arg(slot)
            .arg(ttl.as_secs())
            .arg(seed.map_or("", |(container, _)| container))
            .arg(seed.map_or(0, |(_, count)| count))
            .invoke_async(&mut self.manager())
            .await?;
        let verdict = match verdict.as_str() {
            "ok" => StreakVerdict::Healthy,
            "recovered" => StreakVerdict::Recovered {
                prior_failure_count: count,
            },
            "counted" => StreakVerdict::Counted {
                consecutive_failures: count,
            },
            "failed" => StreakVerdict::Failed {
                consecutive_failures: count,
            },
            "skipped" => StreakVerdict::Skipped,
            "duplicate" => StreakVerdict::Duplicate,
            other => {
                return Err(RedisError::new(format!(
                    "unexpected streak verdict {other:?}"
                )))
            }
        };
        let pre = StreakPreImage {
            container_id: container,
            consecutive_failures: fails,
            failed_published: published,
            failed_container: failed_for,
            last_slot,
        };
        Ok((verdict, pre))
    }

    /// Gives the observation of `slot` back (restores `pre`), unless the game
    /// was observed since. Returns whether it was given back.
    pub async fn undo_streak(
        &self,
        game_id: &GameId,
        slot: u64,
        pre: &StreakPreImage,
    ) -> Result<bool, RedisError> {
        let undone: i64 = Script::new(UNDO_LUA)
            .key(streak_key(game_id))
            .arg(slot)
            .arg(&pre.container_id)
            .arg(&pre.consecutive_failures)
            .arg(&pre.failed_published)
            .arg(&pre.failed_container)
            .arg(&pre.last_slot)
            .invoke_async(&mut self.manager())
            .await?;
        Ok(undone == 1)
    }

    /// Reads a game's streak; `None` when there is none.
    pub async fn read_streak(&self, game_id: &GameId) -> Result<Option<Streak>, RedisError> {
        let mut conn = self.manager();
        let map: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(streak_key(game_id))
            .query_async(&mut conn)
            .await?;
        if map.is_empty() {
            return Ok(None);
        }
        let get = |k: &str| map.get(k).cloned().unwrap_or_default();
        Ok(Some(Streak {
            container_id: get("container_id"),
            consecutive_failures: get("consecutive_failures").parse().unwrap_or(0),
            failed_published: get("failed_published") == "1",
            failed_container: get("failed_container"),
            last_slot: get("last_slot").parse().ok(),
        }))
    }
}
