-- The outbox relay's guarantees (README, "The outbox"):
--
-- Order. Each game's rows reach Redis in the order their units of work
-- committed. `outbox.id` is taken when a row is staged, before the commit, so
-- id order is not commit order. `game_seq` is: the unit of work assigns it
-- from `outbox_game_seq` just before it commits, holding the game's counter
-- row locked until the commit, so a second unit of work for the same game
-- gets the next number only once the first has committed.
--
-- Parking. A row Redis keeps refusing (e.g. its stream key holds a string) is
-- parked: `parked_at` set, `last_error` saying why. It and the later rows of
-- its game wait; other games flow. An operator redrives it after the fix
-- (`rest-gateway redrive-outbox`), which clears `parked_at`.
--
-- Dedupe keys. They move to `outbox_keys`, which the delivered-row prune never
-- touches, so a job entry redelivered after its result row was pruned is still
-- answered once.

CREATE TABLE outbox_game_seq (
    game_id  text   PRIMARY KEY,
    -- The last `outbox.game_seq` handed out for the game.
    last_seq bigint NOT NULL
);

ALTER TABLE outbox
    ADD COLUMN game_id   text,
    ADD COLUMN game_seq  bigint,
    -- Refusals since the row was staged or redriven (Redis answered its XADD
    -- with an error); the row parks after a few. `attempts` counts all failures.
    ADD COLUMN refusals  integer NOT NULL DEFAULT 0,
    ADD COLUMN parked_at timestamptz;

-- The relay's pending scan, per game in order; the parked games it skips.
CREATE INDEX outbox_pending_game_idx ON outbox (game_id, game_seq) WHERE delivered_at IS NULL;
CREATE INDEX outbox_parked_idx ON outbox (game_id) WHERE parked_at IS NOT NULL AND delivered_at IS NULL;

CREATE TABLE outbox_keys (
    dedupe_key text        PRIMARY KEY,
    staged_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO outbox_keys (dedupe_key, staged_at)
    SELECT dedupe_key, created_at FROM outbox WHERE dedupe_key IS NOT NULL;
