//! The relay's delivery of one outbox row: `XADD` at most once per row.

use std::time::Duration;

use redis::Script;

use super::{RedisClient, RedisError};

/// The marker and the `XADD` in one script, so a relay that crashes after the
/// `XADD` but before marking the row delivered in PostgreSQL never publishes
/// it twice.
const DELIVER_LUA: &str = r#"
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  local args = {}
  for i = 2, #ARGV do args[#args + 1] = ARGV[i] end
  return redis.call('XADD', KEYS[2], '*', unpack(args))
end
return false"#;

/// How long a delivered marker stays in Redis; far beyond any crash-restart gap.
const DELIVERED_MARKER_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

impl RedisClient {
    /// Appends row `row_id` of outbox `outbox` to `stream`, unless it was
    /// appended before.
    pub async fn deliver(
        &self,
        outbox: &str,
        row_id: i64,
        stream: &str,
        fields: &[(String, String)],
    ) -> Result<(), RedisError> {
        let script = Script::new(DELIVER_LUA);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(format!("rtmanager:outbox_delivered:{outbox}:{row_id}"))
            .key(stream)
            .arg(DELIVERED_MARKER_TTL.as_secs());
        for (k, v) in fields {
            invocation.arg(k).arg(v);
        }
        invocation
            .invoke_async::<redis::Value>(&mut self.manager())
            .await?;
        Ok(())
    }
}
