-- Durable job history (issue 22): one row per execution attempt, from every source.
-- Written in batches by mindora-history's writer, read by the console. Partitioned by day on
-- ended_at so retention is a DROP of whole partitions, never a DELETE scan.
-- In public, once per database: every schema (tests isolate by schema) finds the operator class.
CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;

CREATE TABLE IF NOT EXISTS mindora_job_attempts (
    ended_at      timestamptz NOT NULL,
    job_id        text        NOT NULL,
    -- redis | amqp | memory
    source        text        NOT NULL,
    queue         text        NOT NULL,
    function      text        NOT NULL,
    -- 1 for the first attempt
    attempt       integer     NOT NULL,
    -- finished | retried | failed | stopped | given_back | dropped
    --   failed: out of the game for good (rq failed registry / AMQP DLQ)
    --   retried: failed, another attempt is scheduled at retry_at
    --   given_back: the shutdown grace ran out, back to its queue, no attempt spent
    --   dropped: the execution lost its job (fencing), nothing was written to Redis
    status        text        NOT NULL,
    worker        text        NOT NULL,
    enqueued_at   timestamptz,
    started_at    timestamptz NOT NULL,
    -- started_at - enqueued_at, when known
    wait_ms       bigint,
    run_ms        bigint      NOT NULL,
    error_type    text,
    -- bounded (2048 chars) by the writer
    error_message text,
    -- bounded (512 chars) by the writer: repr of args and kwargs
    args_summary  text,
    retry_at      timestamptz,
    -- 32 lowercase hex digits, when tracing is on and the attempt was sampled
    trace_id      text
) PARTITION BY RANGE (ended_at);

CREATE TABLE IF NOT EXISTS mindora_job_attempts_default
    PARTITION OF mindora_job_attempts DEFAULT;

CREATE INDEX IF NOT EXISTS mindora_job_attempts_job ON mindora_job_attempts (job_id, attempt);
CREATE INDEX IF NOT EXISTS mindora_job_attempts_ended ON mindora_job_attempts (ended_at DESC);
CREATE INDEX IF NOT EXISTS mindora_job_attempts_function ON mindora_job_attempts (function, ended_at DESC);
CREATE INDEX IF NOT EXISTS mindora_job_attempts_queue ON mindora_job_attempts (queue, ended_at DESC);
CREATE INDEX IF NOT EXISTS mindora_job_attempts_status ON mindora_job_attempts (status, ended_at DESC);
CREATE INDEX IF NOT EXISTS mindora_job_attempts_worker ON mindora_job_attempts (worker, ended_at DESC);
CREATE INDEX IF NOT EXISTS mindora_job_attempts_error_trgm
    ON mindora_job_attempts USING gin (error_message public.gin_trgm_ops);

-- What each writer could not write: the console says so ("history is missing N rows").
CREATE TABLE IF NOT EXISTS mindora_history_writers (
    worker      text        PRIMARY KEY,
    written     bigint      NOT NULL DEFAULT 0,
    dropped     bigint      NOT NULL DEFAULT 0,
    last_drop_at timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Every console action: who, what, on how many jobs.
CREATE TABLE IF NOT EXISTS mindora_console_actions (
    id        bigserial   PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    username  text        NOT NULL,
    role      text        NOT NULL,
    -- requeue | cancel | delete | bulk_requeue | bulk_cancel | bulk_delete | suspend | resume
    -- | pause_queue | resume_queue | dlq_requeue
    action    text        NOT NULL,
    -- a job id, a queue, or the filter of a bulk action (as its query string)
    target    text        NOT NULL,
    jobs      integer     NOT NULL,
    detail    jsonb
);
CREATE INDEX IF NOT EXISTS mindora_console_actions_at ON mindora_console_actions (at DESC);
