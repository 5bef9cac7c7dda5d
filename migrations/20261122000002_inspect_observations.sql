-- inspect-cron's memory between passes, one row per engine container.
--
-- `restart_count` is the Docker RestartCount last accounted for: a larger one
-- in a later pass is a restart to report. The `published_*` columns hold the
-- last `inspect_unhealthy` observation published for the container (NULL
-- after a healthy pass). The row is compare-and-set in the same transaction
-- that stages the event in the outbox, so one observation is published at
-- most once, whatever runs concurrently. Rows of containers that are gone
-- are pruned by the passes.
CREATE TABLE inspect_observations (
    container_id            text        PRIMARY KEY,
    game_id                 text        NOT NULL,
    restart_count           bigint      NOT NULL,
    published_state         text,
    published_health        text,
    published_restart_count bigint,
    observed_at             timestamptz NOT NULL DEFAULT now(),
    CHECK ((published_state IS NULL) = (published_health IS NULL)
       AND (published_state IS NULL) = (published_restart_count IS NULL))
);
