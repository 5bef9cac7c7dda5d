-- Stops and removals rtmanager makes itself (README, "Stop"). An operation
-- records one, committed under the game's fencing token, *before* it stops
-- or removes the container; every health source reads it before reporting
-- an exit, a disappearance or a failed probe. Kept in Redis before, where a
-- data loss, or a process dying between the stop and the record's update,
-- let a requested stop be reported as a crash. The record's status
-- vocabulary (running/stopped/removed) stays the Go service's.
CREATE TABLE container_intents (
    container_id text        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('stop', 'removal')),
    game_id      text        NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (container_id, kind)
);
-- cleanup-cron prunes them with the stop tombstones.
CREATE INDEX container_intents_recorded_at_idx ON container_intents (recorded_at);
