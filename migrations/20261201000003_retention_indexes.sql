-- Indexes for retention (cleanup-cron's pruning) and for discovery's cost.

-- Discovery's "latest recent failure" per game: with the failures of a game
-- in finished_at order, `finished_at >= $since ORDER BY finished_at DESC, id
-- DESC LIMIT 1` is one index probe, however long the game's log. (Its
-- "latest operation" is served by operation_log_game_idx, (game_id, id DESC).)
CREATE INDEX operation_log_game_failure_idx ON operation_log (game_id, finished_at DESC, id DESC)
    WHERE outcome = 'failure';

-- The operation-log pruning walks old rows in (finished_at, id) order from a
-- cursor, so each batch reads only the rows it deletes or keeps.
CREATE INDEX operation_log_finished_idx ON operation_log (finished_at, id);

-- The removed-record pruning: removed_at < cut-off among removed records.
CREATE INDEX runtime_records_removed_idx ON runtime_records (removed_at)
    WHERE status = 'removed';

-- The tombstone pruning: created_at < cut-off.
CREATE INDEX stop_tombstones_created_idx ON stop_tombstones (created_at);
