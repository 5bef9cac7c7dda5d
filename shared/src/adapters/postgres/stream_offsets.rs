//! `stream_offsets` (migrations/20261201000001_stream_offsets.sql): the last
//! entry each job consumer group acknowledged, so a group Redis lost is
//! recreated just after it instead of at its first-creation start id.

use super::{Database, StoreError};

/// `<ms>-<seq>` as the two numbers Redis orders entry ids by.
fn split_entry_id(id: &str) -> Result<(i64, i64), StoreError> {
    let corrupt = || StoreError::Corrupt(format!("not a stream entry id: {id:?}"));
    let (ms, seq) = id.split_once('-').ok_or_else(corrupt)?;
    Ok((
        ms.parse().map_err(|_| corrupt())?,
        seq.parse().map_err(|_| corrupt())?,
    ))
}

impl Database {
    /// The last entry id `group` acknowledged on `stream`; `None` when it
    /// never acknowledged one.
    pub async fn stream_offset(
        &self,
        stream: &str,
        group: &str,
    ) -> Result<Option<String>, StoreError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT acked_ms, acked_seq FROM stream_offsets \
             WHERE stream = $1 AND consumer_group = $2",
        )
        .bind(stream)
        .bind(group)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(ms, seq)| format!("{ms}-{seq}")))
    }

    /// Records that `group` acknowledged `entry_id` on `stream`. Only moves
    /// forward: acks of concurrent entries land in any order, and an older
    /// one must not pull the offset back (the group would then be recreated
    /// before entries already answered, which is harmless but wasteful).
    pub async fn save_stream_offset(
        &self,
        stream: &str,
        group: &str,
        entry_id: &str,
    ) -> Result<(), StoreError> {
        let (ms, seq) = split_entry_id(entry_id)?;
        sqlx::query(
            "INSERT INTO stream_offsets (stream, consumer_group, acked_ms, acked_seq) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (stream, consumer_group) DO UPDATE \
                 SET acked_ms = EXCLUDED.acked_ms, acked_seq = EXCLUDED.acked_seq, \
                     updated_at = now() \
                 WHERE (stream_offsets.acked_ms, stream_offsets.acked_seq) \
                     < (EXCLUDED.acked_ms, EXCLUDED.acked_seq)",
        )
        .bind(stream)
        .bind(group)
        .bind(ms)
        .bind(seq)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::split_entry_id;

    #[test]
    fn entry_ids_split_into_numbers() {
        assert_eq!(
            split_entry_id("1775121700000-3").unwrap(),
            (1775121700000, 3)
        );
        assert!(split_entry_id("1775121700000").is_err());
        assert!(split_entry_id("a-b").is_err());
    }
}
