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
use crate::domain::{GameId, HealthEvent};

/// `rtmanager:probe:{<lease key>}`: the observation script reads the lease
/// too, so the streak carries the lease key as its hash tag.
pub fn streak_key(game_id: &GameId) -> String {
    super::slots::key_in_slot_of(&lease_key(game_id), "rtmanager:probe:", "")
}

/// Applies one observation to a game's streak and decides, atomically, what
/// to publish. KEYS: streak hash, game lease. ARGV: container id, `ok` or
/// `fail`, threshold, slot, TTL seconds, then the seed: the container of a
/// published `probe_failed` (`''` when none) and its count; then what a
/// `probe_failed` would carry: the observation time (ms), the last status
/// and error; then `ask` or `seed`. The seed stands in for a missing hash
/// (Redis lost it, or it expired, or the game is new): without it a lost
/// streak would forget its published `probe_failed`, so a recovery would go
/// unreported and a still failing engine reported twice. With `ask` a
/// missing hash is not touched and the verdict is `missing`: the caller
/// reads the seed from PostgreSQL, as committed now (by whichever prober),
/// and observes again with `seed`. So PostgreSQL is read once per lost or
/// new streak, never per probe. An existing hash is never overridden by the
/// seed, being at least as new. Returns `{verdict, count, pending}` where verdict is
/// `ok`, `recovered` (count = the failures right before), `counted`,
/// `failed` (count = the streak), `skipped` (lease held: a failure during an
/// operation is not counted), `duplicate` (this slot, or a later one, was
/// already observed: by another prober or before a restart), `pending` or
/// `missing`.
///
/// A `recovered` or `failed` is stored with the streak as its `pending`
/// transition (JSON: the event's fields and the slot), in the same script,
/// and stays there until [`SETTLE_LUA`] clears it after the event's commit.
/// While one is pending, an observation is not applied: the script answers
/// `pending` with it, so that the caller commits it first (again, if it was:
/// the commit is idempotent by the slot) and observes again. So a prober that
/// dies between this script and its commit loses nothing: whoever observes
/// the game next commits the transition.
const OBSERVE_LUA: &str = r#"
local s = redis.call('HMGET', KEYS[1], 'container_id', 'consecutive_failures',
  'failed_published', 'failed_container', 'last_slot', 'pending')
local cid = s[1] or ''
local fails = tonumber(s[2]) or 0
local published = s[3] == '1'
local failed_for = s[4] or ''
local slot = tonumber(ARGV[4])
if s[5] and tonumber(s[5]) >= slot then
  return {'duplicate', fails, ''}
end
if s[6] then
  return {'pending', fails, s[6]}
end
local seeded = false
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[11] == 'ask' then
    return {'missing', 0, ''}
  end
  if ARGV[6] ~= '' then
    seeded = true
    cid = ARGV[6]
    fails = tonumber(ARGV[7]) or 0
    published = true
    failed_for = ARGV[6]
  end
end
local function pending(event_type, count)
  local p = cjson.encode({event_type = event_type, container_id = ARGV[1],
    count = tostring(count), slot = ARGV[4], at_ms = ARGV[8],
    last_status = ARGV[9], last_error = ARGV[10]})
  redis.call('HSET', KEYS[1], 'pending', p)
  return p
end
if ARGV[2] == 'ok' then
  local p = ''
  if published then
    p = pending('probe_recovered', fails)
    redis.call('HSET', KEYS[1], 'container_id', ARGV[1], 'consecutive_failures', 0,
      'failed_published', 0, 'failed_container', '', 'last_slot', ARGV[4])
  else
    redis.call('HSET', KEYS[1], 'container_id', ARGV[1], 'consecutive_failures', 0,
      'last_slot', ARGV[4])
  end
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return {p == '' and 'ok' or 'recovered', fails, p}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'skipped', fails, ''}
end
if cid ~= ARGV[1] then fails = 0 end
fails = fails + 1
local p = ''
if fails >= tonumber(ARGV[3]) and not (published and failed_for == ARGV[1]) then
  p = pending('probe_failed', fails)
  redis.call('HSET', KEYS[1], 'failed_published', 1, 'failed_container', ARGV[1])
elseif seeded then
  redis.call('HSET', KEYS[1], 'failed_published', 1, 'failed_container', failed_for)
end
redis.call('HSET', KEYS[1], 'container_id', ARGV[1], 'consecutive_failures', fails,
  'last_slot', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {p == '' and 'counted' or 'failed', fails, p}"#;

/// Clears the pending transition once its event is committed, only if it is
/// still the one committed (ARGV: its stored form).
const SETTLE_LUA: &str = r#"
if redis.call('HGET', KEYS[1], 'pending') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'pending')
return 1"#;

/// The streak hash as stored (for operators and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Streak {
    pub container_id: String,
    pub consecutive_failures: i64,
    pub failed_published: bool,
    pub failed_container: String,
    pub last_slot: Option<u64>,
    /// A decided transition whose event is not known to be committed.
    pub pending: Option<PendingTransition>,
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
    /// Not applied: an earlier transition is pending; commit it, then
    /// observe again.
    Pending,
    /// Not applied: Redis has no streak for the game; observe again with
    /// the seed PostgreSQL committed ([`StreakSeed::Committed`]).
    Missing,
}

/// What a missing streak starts from (see `OBSERVE_LUA`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreakSeed<'a> {
    /// Not read yet: a missing streak answers [`StreakVerdict::Missing`].
    Ask,
    /// As PostgreSQL committed it: the container and count of an open
    /// `probe_failed`, or none.
    Committed(Option<(&'a str, i64)>),
}

/// What a probe observed, as [`RedisClient::observe_streak`] takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreakObservation<'a> {
    pub container_id: &'a str,
    pub healthy: bool,
    /// For the `probe_failed` it may decide.
    pub last_status: i64,
    pub last_error: &'a str,
    /// When it was observed (Unix ms): the event's time.
    pub at_ms: i64,
}

/// A transition the streak decided, stored with it until its event is
/// committed ([`RedisClient::settle_streak`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTransition {
    /// The stored form, compared when settling.
    stored: String,
    /// The slot that decided it: the event's dedupe key
    /// ([`HealthEvent::probe_transition_key`]).
    pub slot: u64,
    pub event: HealthEvent,
}

/// The stored form, as `OBSERVE_LUA` writes it (numbers as strings: Lua's
/// JSON would round them).
#[derive(Debug, serde::Deserialize)]
struct StoredTransition {
    event_type: String,
    container_id: String,
    count: String,
    slot: String,
    at_ms: String,
    last_status: String,
    last_error: String,
}

impl PendingTransition {
    fn decode(game_id: &GameId, stored: String) -> Result<Self, RedisError> {
        let bad =
            |what: &str| RedisError::new(format!("pending probe transition {what}: {stored}"));
        let t: StoredTransition = serde_json::from_str(&stored).map_err(|_| bad("unreadable"))?;
        let number = |v: &str| v.parse::<i64>().map_err(|_| bad("with a bad number"));
        let (count, at_ms) = (number(&t.count)?, number(&t.at_ms)?);
        let event = match t.event_type.as_str() {
            "probe_failed" => HealthEvent::probe_failed(
                game_id,
                &t.container_id,
                at_ms,
                count,
                number(&t.last_status)?,
                &t.last_error,
            ),
            "probe_recovered" => {
                HealthEvent::probe_recovered(game_id, &t.container_id, at_ms, count)
            }
            _ => return Err(bad("of an unknown type")),
        };
        let slot = t.slot.parse().map_err(|_| bad("with a bad slot"))?;
        Ok(Self {
            stored,
            slot,
            event,
        })
    }
}

impl RedisClient {
    /// Applies one probe observation in `slot` to the game's streak.
    /// `seed` is the streak when Redis has none (see `OBSERVE_LUA`). With
    /// `Recovered` and `Failed` comes the transition just stored as
    /// pending, with `Pending` the one found pending.
    pub async fn observe_streak(
        &self,
        game_id: &GameId,
        observation: &StreakObservation<'_>,
        threshold: u32,
        slot: u64,
        ttl: Duration,
        seed: StreakSeed<'_>,
    ) -> Result<(StreakVerdict, Option<PendingTransition>), RedisError> {
        let (ask, seed) = match seed {
            StreakSeed::Ask => ("ask", None),
            StreakSeed::Committed(seed) => ("seed", seed),
        };
        let (verdict, count, pending): (String, i64, String) = Script::new(OBSERVE_LUA)
            .key(streak_key(game_id))
            .key(lease_key(game_id))
            .arg(observation.container_id)
            .arg(if observation.healthy { "ok" } else { "fail" })
            .arg(threshold)
            .arg(slot)
            .arg(ttl.as_secs())
            .arg(seed.map_or("", |(container, _)| container))
            .arg(seed.map_or(0, |(_, count)| count))
            .arg(observation.at_ms)
            .arg(observation.last_status)
            .arg(observation.last_error)
            .arg(ask)
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
            "pending" => StreakVerdict::Pending,
            "missing" => StreakVerdict::Missing,
            other => {
                return Err(RedisError::new(format!(
                    "unexpected streak verdict {other:?}"
                )))
            }
        };
        let pending = match pending.is_empty() {
            true => None,
            false => Some(PendingTransition::decode(game_id, pending)?),
        };
        Ok((verdict, pending))
    }

    /// Clears `pending` once its event is committed, unless another
    /// transition replaced it meanwhile. Returns whether it was cleared.
    pub async fn settle_streak(
        &self,
        game_id: &GameId,
        pending: &PendingTransition,
    ) -> Result<bool, RedisError> {
        let settled: i64 = Script::new(SETTLE_LUA)
            .key(streak_key(game_id))
            .arg(&pending.stored)
            .invoke_async(&mut self.manager())
            .await?;
        Ok(settled == 1)
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
            pending: match map.get("pending") {
                Some(stored) => Some(PendingTransition::decode(game_id, stored.clone())?),
                None => None,
            },
        }))
    }
}
