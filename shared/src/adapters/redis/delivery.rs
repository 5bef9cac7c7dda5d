//! The relay's delivery of one outbox row: `XADD` at most once per row, the
//! delivered marker only after the `XADD` succeeded.

use std::time::Duration;

use redis::Script;

use super::{RedisClient, RedisError};

/// Checks the marker, `XADD`s, then sets the marker, in one script. A relay
/// that crashes after the script but before marking the row delivered in
/// PostgreSQL finds the marker and never publishes the row twice. A refused
/// `XADD` (e.g. `WRONGTYPE`) raises, which aborts the script before it wrote
/// anything: no marker, so the row is tried again and not lost.
///
/// Trimming (opt-in, after the entry is written): once the stream holds more
/// than `ARGV[2]` entries, `MAXLEN ~` that many, or, with a minimum age,
/// `MINID ~` the older of the cap's first kept entry and the age's cutoff
/// (`ARGV[3]`, a stream id in ms): never below the cap, and no entry younger
/// than the minimum age is ever trimmed.
const DELIVER_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local args = {}
for i = 4, #ARGV do args[#args + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[2], '*', unpack(args))
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
local maxlen = tonumber(ARGV[2])
local len = maxlen > 0 and redis.call('XLEN', KEYS[2]) or 0
if len > maxlen then
  if ARGV[3] == '0' then
    redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', maxlen)
  else
    -- Down to the cap, never below it and never an entry younger than the
    -- minimum age: up to the first entry the cap keeps or the age's cutoff,
    -- whichever is older. At most 1000 entries a call, so a stream far over
    -- a newly set cap is trimmed over several appends, not in one long call.
    local excess = math.min(len - maxlen, 1000)
    local kept = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', excess + 1)
    local first = kept[#kept][1]
    local cut = ARGV[3]
    if tonumber(string.match(first, '^(%d+)')) < tonumber(cut) then
      cut = first
    end
    redis.call('XTRIM', KEYS[2], 'MINID', '~', cut)
  end
end
return id"#;

/// The marker of row `row_id` of outbox `outbox`, delivered to `stream`:
/// `rtmanager:outbox_delivered:{<stream>}:<outbox>:<row>`, in the stream's
/// Cluster slot, as the script writes both.
pub fn delivered_marker(outbox: &str, row_id: i64, stream: &str) -> String {
    super::slots::key_in_slot_of(
        stream,
        "rtmanager:outbox_delivered:",
        &format!(":{outbox}:{row_id}"),
    )
}

/// How long a delivered marker stays in Redis; far beyond any crash-restart gap.
const DELIVERED_MARKER_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Error replies that say Redis as a whole cannot take writes for now (it is
/// loading, failing over, out of memory, misconfigured): no row is at fault,
/// so the relay waits instead of parking rows.
const REDIS_WIDE: &[&str] = &[
    "LOADING",
    "BUSY",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MASTERDOWN",
    "READONLY",
    "OOM",
    "NOREPLICAS",
    "MISCONF",
    "NOAUTH",
    "NOPERM",
    "MOVED",
    "ASK",
    "NOSCRIPT",
];

/// Opt-in trimming of the streams the relay writes (`RTMANAGER_STREAM_MAXLEN`,
/// `RTMANAGER_STREAM_MIN_AGE`).
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamTrim {
    /// 0: never trim.
    pub maxlen: u64,
    /// Zero: trim to `maxlen` by count alone.
    pub min_age: Duration,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    /// Redis is away or takes no writes for now: every row would fail.
    #[error(transparent)]
    Unavailable(#[from] RedisError),
    /// Redis answered this row's `XADD` with an error (e.g. `WRONGTYPE`: the
    /// stream key holds another type) that waiting alone will not fix.
    #[error("redis refused the entry: {0}")]
    Refused(String),
}

impl From<redis::RedisError> for DeliveryError {
    fn from(e: redis::RedisError) -> Self {
        match e.code() {
            Some(code) if !REDIS_WIDE.contains(&code) => Self::Refused(e.to_string()),
            _ => Self::Unavailable(e.into()),
        }
    }
}

impl RedisClient {
    /// Appends row `row_id` of outbox `outbox` to `stream`, unless it was
    /// appended before.
    pub async fn deliver(
        &self,
        outbox: &str,
        row_id: i64,
        stream: &str,
        fields: &[(String, String)],
        trim: StreamTrim,
    ) -> Result<(), DeliveryError> {
        let min_id = if trim.min_age.is_zero() {
            0
        } else {
            // The relay's clock stands in for Redis's: a skew between them
            // shifts the minimum age by as much.
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64;
            now_ms
                .saturating_sub(trim.min_age.as_millis() as u64)
                .max(1)
        };
        let script = Script::new(DELIVER_LUA);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(delivered_marker(outbox, row_id, stream))
            .key(stream)
            .arg(DELIVERED_MARKER_TTL.as_secs())
            .arg(trim.maxlen)
            .arg(min_id);
        for (k, v) in fields {
            invocation.arg(k).arg(v);
        }
        invocation
            .invoke_async::<redis::Value>(&mut self.manager())
            .await?;
        Ok(())
    }
}
