-- A stop for a game with no record leaves a tombstone: start and stop jobs run
-- in separate processes and can be processed out of order, so a start that was
-- requested before the stop must not bring the game up afterwards.
CREATE TABLE stop_tombstones (
    game_id         text        PRIMARY KEY,
    requested_at_ms bigint      NOT NULL,
    reason          text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
