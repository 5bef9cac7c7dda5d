//! Answering one entry: once (by its result's key), only when its game is
//! free if it was reclaimed (or read just after its group was recreated),
//! then acked with its offset kept.

use std::collections::HashMap;

use crate::adapters::postgres::StoreError;
use crate::domain::OutboxMessage;
use crate::telemetry::steps;

use super::{JobDisposition, JobHandler, StreamConsumer};

impl<H: JobHandler> StreamConsumer<H> {
    /// Answers one entry; with step lines wanted ([`steps`]), logs how long
    /// each of its steps took.
    pub(super) async fn process(
        &self,
        id: &str,
        fields: &HashMap<String, String>,
        reclaimed: bool,
    ) {
        let ((), timed) = steps::timed(self.answer_entry(id, fields, reclaimed)).await;
        if let Some(timed) = timed {
            tracing::debug!(
                target: steps::TARGET,
                stream = %self.settings.stream,
                entry_id = id,
                game_id = fields.get("game_id").map_or("", String::as_str),
                began_at_us = timed.began_at_us,
                total_us = timed.total().as_micros() as u64,
                steps_us = %timed.render(),
                "job steps"
            );
        }
    }

    async fn answer_entry(&self, id: &str, fields: &HashMap<String, String>, reclaimed: bool) {
        let job_key = format!("{}:{}", self.settings.stream, id);
        self.metrics
            .jobs_consumed
            .get_or_create(&self.labels())
            .inc();
        let dead_key = format!("dead:{job_key}");
        let answered = [format!("result:{job_key}"), dead_key.clone()];
        let earlier = self.outbox.has_any_key(&answered).await;
        steps::mark("answered_check");
        match earlier {
            Ok(false) => {}
            Ok(true) => {
                // Already answered before a crash or a lost ack: just ack.
                self.ack(id).await;
                return;
            }
            Err(e) => {
                tracing::warn!(entry_id = id, error = %e, "cannot check for an earlier result; leaving the entry pending");
                return;
            }
        }
        if self.is_past_horizon(id) {
            tracing::warn!(entry_id = id, "job entry older than the dedupe key retention sent to the dead-letter stream, unanswered");
            self.metrics
                .jobs_dead_lettered
                .get_or_create(&self.labels())
                .inc();
            let reason = format!(
                "older than RTMANAGER_DEDUPE_KEY_RETENTION ({}): it may have been answered already",
                humantime::format_duration(self.settings.answer_horizon)
            );
            let message = self.dead_letter(id, fields, &reason, dead_key);
            match self.outbox.publish(&[message]).await {
                Ok(_) => self.ack(id).await,
                Err(e) => {
                    tracing::error!(entry_id = id, error = %e, "dead-lettering an expired entry failed; it stays pending")
                }
            }
            return;
        }
        // A reclaimed entry, or a new one just after the group was lost or
        // made, may still be worked on by its first reader.
        if reclaimed || self.group_is_new() {
            if let Some(game_id) = self.handler.game_id(fields) {
                match self.leases.is_held(&game_id).await {
                    Ok(false) => {}
                    Ok(true) => {
                        tracing::info!(entry_id = id, game_id = %game_id, reclaimed, "entry's game is busy and it may still be worked on; leaving it pending");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(entry_id = id, error = %e, "lease check failed; leaving the entry pending");
                        return;
                    }
                }
            }
        }
        let disposition = self.handler.handle(id, fields).await;
        crate::failpoints::crash_point("job-before-result");
        let messages = match disposition {
            JobDisposition::RunAgain { reason } => {
                tracing::warn!(entry_id = id, reason = %reason, "PostgreSQL was away; the entry stays pending and runs again");
                return;
            }
            JobDisposition::Done(result) => {
                vec![self.outbox.job_result(&result, &job_key)]
            }
            JobDisposition::Malformed { reason, result } => {
                tracing::warn!(entry_id = id, reason = %reason, "malformed job entry sent to the dead-letter stream");
                self.metrics
                    .jobs_dead_lettered
                    .get_or_create(&self.labels())
                    .inc();
                let mut messages = vec![self.dead_letter(id, fields, &reason, dead_key)];
                messages.extend(result.map(|r| self.outbox.job_result(&r, &job_key)));
                messages
            }
        };
        let recorded = self.record_answer(id, &messages).await;
        steps::mark("result");
        if recorded {
            self.ack(id).await;
            steps::mark("ack");
        }
    }

    /// Records the answer of an entry that has run, retrying while
    /// PostgreSQL is away: leaving the entry pending would run the operation
    /// a second time (a second operation-log row, a second side effect)
    /// just to answer it. The shutdown drain's abort or a crash ends the
    /// wait, and the entry stays pending and runs again, as after any crash.
    async fn record_answer(&self, id: &str, messages: &[OutboxMessage]) -> bool {
        let recorded = crate::retry::while_transient(
            || self.outbox.publish(messages),
            |e| matches!(e, StoreError::Unavailable(_)),
            |e| tracing::warn!(entry_id = id, error = %e, "recording the job result failed; retrying"),
        )
        .await;
        if let Err(e) = &recorded {
            tracing::error!(entry_id = id, error = %e, "recording the job result failed; the entry stays pending and will be retried");
        }
        recorded.is_ok()
    }

    fn dead_letter(
        &self,
        id: &str,
        fields: &HashMap<String, String>,
        reason: &str,
        dedupe_key: String,
    ) -> OutboxMessage {
        let original: serde_json::Map<String, serde_json::Value> = fields
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        OutboxMessage {
            stream: self.settings.dead_letter_stream.clone(),
            fields: vec![
                ("source_stream".into(), self.settings.stream.clone()),
                ("source_id".into(), id.to_owned()),
                ("reason".into(), reason.to_owned()),
                (
                    "fields".into(),
                    serde_json::Value::Object(original).to_string(),
                ),
                (
                    "dead_at_ms".into(),
                    chrono::Utc::now().timestamp_millis().to_string(),
                ),
            ],
            dedupe_key: Some(dedupe_key),
            health: None,
            game_id: None,
        }
    }

    /// Acks an entry whose result is recorded, and keeps its id as the
    /// group's offset. In a lost group (`NOGROUP`) the entry is answered all
    /// the same: the offset is kept first, so the group is recreated after it.
    pub(super) async fn ack(&self, id: &str) {
        let acked = self.group.ack(id).await;
        if let Err(e) = &acked {
            if !e.is_no_group() {
                // The result is recorded; a later reclaim finds it and acks.
                tracing::warn!(entry_id = id, error = %e, "ack failed");
                return;
            }
        }
        let (stream, group) = (&self.settings.stream, &self.settings.group);
        if let Err(e) = self.db.save_stream_offset(stream, group, id).await {
            // Only a recreation after a Redis loss reads it, and starting
            // that from an older entry just finds more answered ones.
            tracing::warn!(entry_id = id, error = %e, "keeping the acked offset failed");
        }
        if let Err(e) = acked {
            self.recover(&e).await;
        }
    }

    /// The entry's id is the time Redis wrote it (`<ms>-<seq>`); one older
    /// than the horizon may have been answered under a key since pruned.
    fn is_past_horizon(&self, id: &str) -> bool {
        let Some(written_ms) = id.split('-').next().and_then(|ms| ms.parse::<i64>().ok()) else {
            return false;
        };
        let horizon_ms =
            i64::try_from(self.settings.answer_horizon.as_millis()).unwrap_or(i64::MAX);
        chrono::Utc::now()
            .timestamp_millis()
            .saturating_sub(written_ms)
            > horizon_ms
    }
}
