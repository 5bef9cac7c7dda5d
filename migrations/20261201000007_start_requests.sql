-- When the start that made a game's running record was requested (the start
-- job's `requested_at_ms`), so a stop requested *before* it and processed
-- after it (start-job and stop-job are separate processes) does not stop the
-- newer start: the mirror image of `stop_tombstones`. One row per game, the
-- latest; removed with the game's record by the retention prune.
CREATE TABLE start_requests (
    game_id         text   PRIMARY KEY,
    requested_at_ms bigint NOT NULL
);
