-- Dedupe keys are pruned after RTMANAGER_DEDUPE_KEY_RETENTION (README,
-- "The outbox"); the relays' hourly prune scans by age.
CREATE INDEX outbox_keys_staged_at_idx ON outbox_keys (staged_at);
