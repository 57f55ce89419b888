-- Applied once per app, inside that app's schema (search_path is set by the migrator), so every
-- table below exists once per app: logical isolation between tenants.

CREATE TABLE documents (
    id           uuid PRIMARY KEY,
    bucket       text NOT NULL,
    key          text NOT NULL,
    user_id      text,
    sha256       text,
    size_bytes   bigint,
    kind         text,
    mime         text,
    pages        integer,
    chunks       integer,
    status       text NOT NULL,
    error        text,
    error_kind   text,
    timings      jsonb NOT NULL DEFAULT '{}'::jsonb,
    summary      text,
    keywords     jsonb,
    metadata     jsonb NOT NULL DEFAULT '{}'::jsonb,
    last_run_id  uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX documents_location ON documents (bucket, key);
CREATE INDEX documents_status ON documents (status, updated_at);

-- One row per job that touched a document (process_document or a single stage).
CREATE TABLE processing_runs (
    id           uuid PRIMARY KEY,
    document_id  uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    job_id       text NOT NULL,
    queue        text NOT NULL,
    source       text NOT NULL,
    function     text NOT NULL,
    status       text NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    timings      jsonb NOT NULL DEFAULT '{}'::jsonb,
    result       jsonb,
    error        text,
    error_kind   text
);
CREATE INDEX processing_runs_document ON processing_runs (document_id, started_at);

-- Every status change of a document, in order.
CREATE TABLE audit_log (
    id           bigserial PRIMARY KEY,
    document_id  uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    run_id       uuid,
    from_status  text,
    to_status    text NOT NULL,
    detail       jsonb NOT NULL DEFAULT '{}'::jsonb,
    at           timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX audit_log_document ON audit_log (document_id, id);

-- Intermediates for chained stage jobs (pipelines.extract -> chunk -> embed -> index).
CREATE TABLE document_texts (
    document_id  uuid PRIMARY KEY REFERENCES documents (id) ON DELETE CASCADE,
    kind         text NOT NULL,
    mime         text NOT NULL,
    pages        integer NOT NULL,
    text         text NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE chunks (
    document_id  uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    chunk_index  integer NOT NULL,
    chunk_id     uuid NOT NULL,
    text         text NOT NULL,
    char_start   integer NOT NULL,
    char_end     integer NOT NULL,
    embedding    real[],
    PRIMARY KEY (document_id, chunk_index)
);
