-- Issue 24: chunks carry their heading path and page, and the run that wrote them, so
-- process_document can write its chunk rows batch by batch (upserting by index) and then remove
-- the rows of other runs, as it does in Elasticsearch and Qdrant.
ALTER TABLE chunks
    ADD COLUMN heading_path text[] NOT NULL DEFAULT '{}',
    ADD COLUMN page         integer,
    ADD COLUMN run_id       uuid;
