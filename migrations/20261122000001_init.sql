-- rtmanager-rs schema. Tables live in the schema named by the DSN's
-- search_path (the Go service used `rtmanager`, provisioned outside the
-- service); this migration creates no schema.

CREATE TABLE runtime_records (
    game_id              text        PRIMARY KEY,
    status               text        NOT NULL CHECK (status IN ('running', 'stopped', 'removed')),
    current_container_id text,
    current_image_ref    text,
    engine_endpoint      text        NOT NULL,
    state_path           text        NOT NULL,
    docker_network       text        NOT NULL,
    started_at           timestamptz,
    stopped_at           timestamptz,
    removed_at           timestamptz,
    last_op_at           timestamptz NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now()
);

-- Serves the cleanup scan: status = 'stopped' AND last_op_at < now() - retention.
CREATE INDEX runtime_records_status_last_op_idx ON runtime_records (status, last_op_at);

-- The four transitions of the Go service, plus removed -> running, which is
-- the start upsert of a game whose container was removed (not a transition
-- of the status machine, but an UPDATE to PostgreSQL). A same-status update
-- (e.g. last_op_at) is allowed. Anything else is a bug and is refused here,
-- whatever code path attempted it.
CREATE FUNCTION runtime_records_check_transition() RETURNS trigger AS $$
BEGIN
    IF NEW.status = OLD.status
       OR (OLD.status, NEW.status) IN (('running', 'stopped'), ('running', 'removed'),
                                       ('stopped', 'running'), ('stopped', 'removed'),
                                       ('removed', 'running')) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'runtime_records: transition % -> % is not allowed for game %',
        OLD.status, NEW.status, OLD.game_id USING ERRCODE = 'check_violation';
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER runtime_records_transition
    BEFORE UPDATE OF status ON runtime_records
    FOR EACH ROW EXECUTE FUNCTION runtime_records_check_transition();

-- Append-only audit of every lifecycle operation and its outcome.
CREATE TABLE operation_log (
    id            bigserial   PRIMARY KEY,
    game_id       text        NOT NULL,
    op_kind       text        NOT NULL CHECK (op_kind IN ('start', 'stop', 'restart', 'patch',
                                  'cleanup_container', 'reconcile_adopt', 'reconcile_dispose',
                                  'reconcile_observe_exit')),
    op_source     text        NOT NULL CHECK (op_source IN ('lobby_stream', 'gm_rest', 'admin_rest',
                                  'auto_ttl', 'auto_reconcile')),
    source_ref    text        NOT NULL DEFAULT '',
    image_ref     text        NOT NULL DEFAULT '',
    container_id  text        NOT NULL DEFAULT '',
    outcome       text        NOT NULL CHECK (outcome IN ('success', 'failure')),
    error_code    text        NOT NULL DEFAULT '',
    error_message text        NOT NULL DEFAULT '',
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz NOT NULL
);

CREATE INDEX operation_log_game_idx ON operation_log (game_id, id DESC);

CREATE FUNCTION operation_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'operation_log is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER operation_log_no_update
    BEFORE UPDATE ON operation_log
    FOR EACH ROW EXECUTE FUNCTION operation_log_append_only();

-- Latest health observation per game. `status` is `healthy` after
-- container_started or probe_recovered, otherwise the event type.
CREATE TABLE health_snapshots (
    game_id      text        PRIMARY KEY,
    container_id text        NOT NULL,
    status       text        NOT NULL CHECK (status IN ('healthy', 'container_exited', 'container_oom',
                                 'container_disappeared', 'inspect_unhealthy', 'probe_failed')),
    event_type   text        NOT NULL CHECK (event_type IN ('container_started', 'container_exited',
                                 'container_oom', 'container_disappeared', 'inspect_unhealthy',
                                 'probe_failed', 'probe_recovered')),
    details      jsonb       NOT NULL,
    occurred_at  timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Transactional outbox: a stream entry is committed here with the state change
-- it reports, then relayed to Redis in id order and marked delivered.
CREATE TABLE outbox (
    id           bigserial   PRIMARY KEY,
    stream       text        NOT NULL,
    -- The entry's fields as a JSON array of [name, value] pairs, in order.
    fields       jsonb       NOT NULL,
    -- One result per job entry: a second insert with the same key is a no-op.
    dedupe_key   text        UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    attempts     integer     NOT NULL DEFAULT 0,
    last_error   text
);

CREATE INDEX outbox_pending_idx ON outbox (id) WHERE delivered_at IS NULL;

-- Names this outbox in Redis's delivered markers, so two databases (or schemas)
-- relaying into one Redis never mistake each other's row ids.
CREATE TABLE outbox_identity (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    instance_id text    NOT NULL DEFAULT gen_random_uuid()::text
);
INSERT INTO outbox_identity DEFAULT VALUES;
