-- The last entry each job consumer group acknowledged, per stream: where the
-- group is recreated when Redis loses it (a FLUSHALL, a failover to an empty
-- replica). An entry id is `<ms>-<seq>`; the two parts are kept as numbers so
-- that "later" compares as Redis compares (as text, "9-0" > "10-0").
CREATE TABLE stream_offsets (
    stream         text        NOT NULL,
    consumer_group text        NOT NULL,
    acked_ms       bigint      NOT NULL,
    acked_seq      bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, consumer_group)
);
