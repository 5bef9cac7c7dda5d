-- Every health event of a game, for its timeline (README, "REST API"). The
-- outbox rows that carried them are pruned after RTMANAGER_OUTBOX_RETENTION
-- and `health_snapshots` keeps only the latest, so before this table an
-- operator could not see what happened to a game a week ago.
--
-- A row is written by the one staging verb (`UnitOfWork::stage`), in the
-- transaction that stages the event in the outbox, and only when the outbox
-- takes the event: a repeated observation (a dedupe key staged before, or an
-- inspect-cron compare-and-set that fails) adds no second row. `dedupe_key`
-- is the outbox's key, kept for the reader (NULL for events staged without
-- one: `container_started`, `inspect_unhealthy`).
--
-- No backfill: the outbox rows carry no source, so the history starts with
-- this migration.
CREATE TABLE health_event_history (
    id           bigserial   PRIMARY KEY,
    game_id      text        NOT NULL,
    container_id text        NOT NULL,
    event_type   text        NOT NULL CHECK (event_type IN ('container_started', 'container_exited',
                                 'container_oom', 'container_disappeared', 'inspect_unhealthy',
                                 'probe_failed', 'probe_recovered')),
    -- Which process observed it (`HealthSource`).
    source       text        NOT NULL CHECK (source IN ('start', 'docker_events', 'inspect_cron',
                                 'healthz_prober')),
    occurred_at  timestamptz NOT NULL,
    details      jsonb       NOT NULL,
    dedupe_key   text,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);

-- The timeline: one game's events by time, newest first, from a cursor.
CREATE INDEX health_event_history_game_idx ON health_event_history (game_id, occurred_at, id);

-- cleanup-cron's prune by RTMANAGER_OPERATION_LOG_RETENTION: occurred_at < cut-off.
CREATE INDEX health_event_history_occurred_idx ON health_event_history (occurred_at);

-- The timeline's requested stops and removals of one game (the table's key
-- is the container).
CREATE INDEX container_intents_game_idx ON container_intents (game_id, recorded_at);
