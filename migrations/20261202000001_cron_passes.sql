-- One row per pass of inspect-cron, cleanup-cron and `rest-gateway
-- sync-file-sd`, one-shot or `--every` (README, "Metrics and health"). A
-- one-shot run serves no /metrics, so the gateway's /metrics reads the
-- newest pass of each job back from here (rtmanager_cron_last_*{job}), and
-- an overdue or failing pass can alert.
--
-- Bounded: each insert deletes the job's rows beyond its newest 1000,
-- except its newest success (shared/src/adapters/postgres/cron_passes.rs).
CREATE TABLE cron_passes (
    id          bigserial   PRIMARY KEY,
    job         text        NOT NULL
        CHECK (job IN ('inspect-cron', 'cleanup-cron', 'sync-file-sd')),
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    outcome     text        NOT NULL CHECK (outcome IN ('success', 'failure')),
    -- What the pass counted, e.g. {"inspected": 3, "adopted": 0}.
    counts      jsonb       NOT NULL DEFAULT '{}',
    error       text        NOT NULL DEFAULT ''
);

-- The newest pass of a job, and its newest success; the prune's cut-off.
CREATE INDEX cron_passes_job_idx ON cron_passes (job, id DESC);
CREATE INDEX cron_passes_job_success_idx ON cron_passes (job, id DESC) WHERE outcome = 'success';
