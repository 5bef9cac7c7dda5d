//! The consumer-group commands of the job loop: create the group, read new
//! entries (on a dedicated blocking connection), reclaim stalled ones, keep
//! in-flight ones fresh, ack; and keep the stream and the group bounded: trim
//! entries every group is done with, remove consumers long gone.

use std::collections::HashMap;
use std::time::Duration;

use redis::streams::{
    StreamAutoClaimReply, StreamInfoGroupsReply, StreamPendingReply, StreamReadReply,
};
use redis::Script;

use super::{RedisClient, RedisConnection, RedisError};

/// One stream entry, its values as strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    pub id: String,
    pub fields: HashMap<String, String>,
}

/// Turns a stream entry's values into strings; non-UTF-8 values are lossy.
pub fn entry_fields(map: &HashMap<String, redis::Value>) -> HashMap<String, String> {
    map.iter()
        .map(|(k, v)| {
            let s = match v {
                redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                redis::Value::SimpleString(s) => s.clone(),
                redis::Value::Int(i) => i.to_string(),
                other => format!("{other:?}"),
            };
            (k.clone(), s)
        })
        .collect()
}

/// The group as Redis sees it: what `/readyz` and the lag gauges read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupStatus {
    /// Entries not yet delivered to the group (`XINFO GROUPS` lag); `None`
    /// when Redis cannot tell (after a deletion or a trim it cannot count
    /// past).
    pub lag: Option<u64>,
    /// Entries delivered and not yet acked.
    pub pending: u64,
    /// The time part (ms since the epoch) of the oldest pending entry's id:
    /// when it was appended.
    pub oldest_pending_ms: Option<u64>,
}

/// One consumer (`consumer`) of one group (`group`) on one stream.
#[derive(Clone)]
pub struct ConsumerGroup {
    redis: RedisClient,
    stream: String,
    group: String,
    consumer: String,
}

impl ConsumerGroup {
    pub fn new(redis: RedisClient, stream: &str, group: &str, consumer: &str) -> Self {
        Self {
            redis,
            stream: stream.to_owned(),
            group: group.to_owned(),
            consumer: consumer.to_owned(),
        }
    }

    /// Creates the group at `start_id` (and the stream) unless it exists;
    /// true when it was created now.
    pub async fn ensure(&self, start_id: &str) -> Result<bool, RedisError> {
        let created: Result<String, redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(start_id)
            .arg("MKSTREAM")
            .query_async(&mut self.redis.manager())
            .await;
        match created {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// A reader of new entries, blocking up to `block` per read.
    pub fn reader(&self, block: Duration) -> GroupReader {
        GroupReader {
            group: self.clone(),
            block,
            conn: None,
        }
    }

    /// Claims up to `count` entries pending longer than `min_idle` with any
    /// consumer of the group.
    pub async fn reclaim(
        &self,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<StreamEntry>, RedisError> {
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(min_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.redis.manager())
            .await?;
        Ok(reply
            .claimed
            .into_iter()
            .map(|e| StreamEntry {
                fields: entry_fields(&e.map),
                id: e.id,
            })
            .collect())
    }

    /// Resets the idle time of entries this consumer is working on, so no
    /// other consumer reclaims them.
    pub async fn keep_fresh(&self, ids: &[String]) -> Result<(), RedisError> {
        let _: redis::Value = redis::cmd("XCLAIM")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(0)
            .arg(ids)
            .arg("JUSTID")
            .query_async(&mut self.redis.manager())
            .await?;
        Ok(())
    }

    pub async fn ack(&self, id: &str) -> Result<(), RedisError> {
        let _: i64 = redis::cmd("XACK")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(id)
            .query_async(&mut self.redis.manager())
            .await?;
        Ok(())
    }
}

impl ConsumerGroup {
    /// The group's lag and pending entries; `None` when the group (or its
    /// stream) does not exist.
    pub async fn status(&self) -> Result<Option<GroupStatus>, RedisError> {
        let mut conn = self.redis.manager();
        let groups: Result<StreamInfoGroupsReply, redis::RedisError> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.stream)
            .query_async(&mut conn)
            .await;
        let groups = match groups {
            Ok(groups) => groups,
            // No stream, so no group.
            Err(e) if e.to_string().contains("no such key") => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(group) = groups.groups.into_iter().find(|g| g.name == self.group) else {
            return Ok(None);
        };
        let mut oldest_pending_ms = None;
        if group.pending > 0 {
            let pending: StreamPendingReply = redis::cmd("XPENDING")
                .arg(&self.stream)
                .arg(&self.group)
                .query_async(&mut conn)
                .await?;
            if let StreamPendingReply::Data(data) = pending {
                oldest_pending_ms = parse_id(&data.start_id).map(|(ms, _)| ms);
            }
        }
        Ok(Some(GroupStatus {
            lag: group.lag.map(|l| l as u64),
            pending: group.pending as u64,
            oldest_pending_ms,
        }))
    }

    /// Removes the entries every group of the stream is done with: those
    /// below the lowest id any group still needs (its oldest pending entry,
    /// else its last delivered one, kept so the group's position stays
    /// visible in the stream). Never an unacked or undelivered entry: a
    /// group's needs only move forward between this read and the trim (new
    /// deliveries are above its last delivered id). Returns how many went.
    pub async fn trim_done(&self) -> Result<u64, RedisError> {
        let mut conn = self.redis.manager();
        let groups: StreamInfoGroupsReply = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.stream)
            .query_async(&mut conn)
            .await?;
        let mut floor: Option<(u64, u64)> = None;
        for group in &groups.groups {
            let mut needed = group.last_delivered_id.clone();
            if group.pending > 0 {
                let pending: StreamPendingReply = redis::cmd("XPENDING")
                    .arg(&self.stream)
                    .arg(&group.name)
                    .query_async(&mut conn)
                    .await?;
                if let StreamPendingReply::Data(data) = pending {
                    needed = data.start_id;
                }
            }
            // An id we cannot read: keep everything rather than guess.
            let needed = parse_id(&needed).unwrap_or((0, 0));
            floor = Some(floor.map_or(needed, |f| f.min(needed)));
        }
        let Some((ms, seq)) = floor.filter(|f| *f > (0, 0)) else {
            return Ok(0);
        };
        let trimmed: u64 = redis::cmd("XTRIM")
            .arg(&self.stream)
            .arg("MINID")
            .arg("=")
            .arg(format!("{ms}-{seq}"))
            .query_async(&mut conn)
            .await?;
        Ok(trimmed)
    }

    /// Removes the group's consumers idle at least `idle` with no pending
    /// entries (one is left behind by every pod name that ever ran), never
    /// this one. In one script, so a consumer that takes an entry between the
    /// check and the removal cannot lose it with its pending list.
    pub async fn remove_idle_consumers(&self, idle: Duration) -> Result<Vec<String>, RedisError> {
        let removed: Vec<String> = Script::new(REMOVE_IDLE_CONSUMERS_LUA)
            .key(&self.stream)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(idle.as_millis() as u64)
            .invoke_async(&mut self.redis.manager())
            .await?;
        Ok(removed)
    }
}

const REMOVE_IDLE_CONSUMERS_LUA: &str = r#"
local removed = {}
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['name'] ~= ARGV[2] and tonumber(f['pending']) == 0
      and tonumber(f['idle']) >= tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    removed[#removed + 1] = f['name']
  end
end
return removed"#;

/// `<ms>-<seq>` as Redis orders entry ids.
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Reads new entries for one consumer on a connection of its own.
pub struct GroupReader {
    group: ConsumerGroup,
    block: Duration,
    /// Opened on the first read; dropped after an error, or once the master
    /// it was opened to is no longer the master, and opened again.
    conn: Option<RedisConnection>,
}

impl GroupReader {
    /// Up to `count` entries never delivered to this group; empty after
    /// `block` without any.
    pub async fn read_new(&mut self, count: usize) -> Result<Vec<StreamEntry>, RedisError> {
        let conn = match &mut self.conn {
            Some(conn) if conn.is_current() => conn,
            _ => self
                .conn
                .insert(self.group.redis.blocking(self.block).await?),
        };
        let g = &self.group;
        let reply: Result<Option<StreamReadReply>, _> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&g.group)
            .arg(&g.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(self.block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&g.stream)
            .arg(">")
            .query_async(conn)
            .await;
        let reply = reply.inspect_err(|_| self.conn = None)?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .map(|e| StreamEntry {
                fields: entry_fields(&e.map),
                id: e.id,
            })
            .collect())
    }
}
