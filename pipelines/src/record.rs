//! Record stage: PostgreSQL through sqlx, one schema per app.
//!
//! Each job's writes (document row, run row, audit entries, intermediates) go into one
//! transaction, so a crash never leaves a run half-recorded.

use std::collections::HashSet;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::Row;
use uuid::Uuid;

use crate::config::PipelineConfig;
use crate::error::PipelineError;
use crate::model::{Analysis, App, Chunk, DocumentRef, ExtractedText};
use crate::telemetry;
use crate::JobInfo;

/// Fields of the document row a run learned; `None` keeps what is stored.
#[derive(Debug, Clone, Default)]
pub struct DocumentFields {
    /// Hex SHA-256 of the object.
    pub sha256: Option<String>,
    /// Object size in bytes.
    pub size_bytes: Option<i64>,
    /// Detected kind and MIME type.
    pub kind: Option<(String, String)>,
    /// Pages/sheets.
    pub pages: Option<i32>,
    /// Chunks indexed.
    pub chunks: Option<i32>,
    /// Summary and keywords.
    pub analysis: Option<Analysis>,
    /// Caller metadata.
    pub metadata: Option<Value>,
}

/// Everything one job writes, applied atomically by [`RecordStore::record`].
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// Id of this run (also the `run_id` of indexed chunks).
    pub run_id: Uuid,
    /// The job.
    pub job: JobInfo,
    /// rq function name.
    pub function: String,
    /// The document.
    pub document: DocumentRef,
    /// When the run began.
    pub started_at: DateTime<Utc>,
    /// Status changes in order, with details (stage counts, timings).
    pub transitions: Vec<(String, Value)>,
    /// Milliseconds per stage.
    pub timings: Map<String, Value>,
    /// Result returned to rq, or `(kind, message)` of the failure.
    pub outcome: Result<Value, (String, String)>,
    /// Document fields learned.
    pub fields: DocumentFields,
    /// Extracted text to store for chained stages.
    pub text: Option<ExtractedText>,
    /// Chunks to store (replacing the document's previous chunks).
    pub chunks: Option<Vec<Chunk>>,
    /// Embeddings of the stored chunks, by chunk index.
    pub embeddings: Option<Vec<Vec<f32>>>,
}

/// A stored chunk with its embedding when the embed stage has run.
pub type StoredChunk = (Chunk, Option<Vec<f32>>);

/// Persistence of documents, runs, audit log and stage intermediates.
#[async_trait]
pub trait RecordStore: Send + Sync {
    /// Creates the app's schema and applies pending migrations.
    async fn migrate(&self, app: &App) -> Result<(), PipelineError>;
    /// Writes one run in one transaction.
    async fn record(&self, app: &App, run: &RunRecord) -> Result<(), PipelineError>;
    /// Extracted text stored by `pipelines.extract`.
    async fn load_text(
        &self,
        app: &App,
        document_id: Uuid,
    ) -> Result<Option<ExtractedText>, PipelineError>;
    /// Chunks stored by `pipelines.chunk` (with embeddings from `pipelines.embed`).
    async fn load_chunks(
        &self,
        app: &App,
        document_id: Uuid,
    ) -> Result<Vec<StoredChunk>, PipelineError>;
    /// The document row as JSON (status, counts, summary…), if any.
    async fn load_document(
        &self,
        app: &App,
        document_id: Uuid,
    ) -> Result<Option<Value>, PipelineError>;
}

/// [`RecordStore`] on PostgreSQL.
pub struct PgRecordStore {
    pool: PgPool,
    options: PgConnectOptions,
    migrated: Mutex<HashSet<String>>,
}

impl PgRecordStore {
    /// A lazily connecting pool: nothing is contacted until the first query.
    pub fn from_config(config: &PipelineConfig) -> Result<Self, PipelineError> {
        let Some(url) = &config.database_url else {
            return Err(PipelineError::NotConfigured {
                what: "PostgreSQL",
                var: "MINDORA_DATABASE_URL",
            });
        };
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e| PipelineError::Config(format!("MINDORA_DATABASE_URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(config.database_max_connections.max(1))
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_lazy_with(options.clone());
        Ok(PgRecordStore {
            pool,
            options,
            migrated: Mutex::new(HashSet::new()),
        })
    }

    /// CLIENT span of one call: `db.namespace` is `database|schema` as the PostgreSQL
    /// conventions say, `db.query.summary` names the statements the call runs.
    fn span(&self, app: &App, operation: &str, table: &str, summary: &str) -> tracing::Span {
        let span = telemetry::db("postgresql", operation, table, self.options.get_host());
        let database = self.options.get_database().unwrap_or("postgres");
        span.record(
            "db.namespace",
            format!("{database}|{}", app.schema()).as_str(),
        );
        span.record("db.query.summary", summary);
        span
    }

    /// The pool (tests read the tables through it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn ensure_migrated(&self, app: &App) -> Result<(), PipelineError> {
        if self
            .migrated
            .lock()
            .map(|m| m.contains(app.as_str()))
            .unwrap_or(false)
        {
            return Ok(());
        }
        self.migrate(app).await
    }

    async fn begin(
        &self,
        app: &App,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, PipelineError> {
        self.ensure_migrated(app).await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SET LOCAL search_path TO \"{}\"",
            app.schema()
        )))
        .execute(&mut *tx)
        .await?;
        Ok(tx)
    }
}

#[async_trait]
impl RecordStore for PgRecordStore {
    async fn migrate(&self, app: &App) -> Result<(), PipelineError> {
        let span = self.span(app, "migrate", "_sqlx_migrations", "migrate");
        telemetry::in_client(span, self.migrate_schema(app)).await
    }

    async fn record(&self, app: &App, run: &RunRecord) -> Result<(), PipelineError> {
        let span = self.span(
            app,
            "INSERT",
            "documents",
            "INSERT documents processing_runs audit_log document_texts chunks",
        );
        telemetry::in_client(span, self.write_run(app, run)).await
    }

    async fn load_text(
        &self,
        app: &App,
        document_id: Uuid,
    ) -> Result<Option<ExtractedText>, PipelineError> {
        let span = self.span(app, "SELECT", "document_texts", "SELECT document_texts");
        telemetry::in_client(span, self.select_text(app, document_id)).await
    }

    async fn load_chunks(
        &self,
        app: &App,
        document_id: Uuid,
    ) -> Result<Vec<StoredChunk>, PipelineError> {
        let span = self.span(app, "SELECT", "chunks", "SELECT chunks");
        telemetry::in_client(span, self.select_chunks(app, document_id)).await
    }

    async fn load_document(
        &self,
        app: &App,
        document_id: Uuid,
    ) -> Result<Option<Value>, PipelineError> {
        let span = self.span(app, "SELECT", "documents", "SELECT documents");
        telemetry::in_client(span, self.select_document(app, document_id)).await
    }
}

/// The calls of [`RecordStore`], each run inside its client span.
impl PgRecordStore {
    async fn migrate_schema(&self, app: &App) -> Result<(), PipelineError> {
        let schema = app.schema();
        // A private one-connection pool whose sessions have the app's search_path, so the
        // migrations' unqualified names land in the app's schema.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(
                self.options
                    .clone()
                    .options([("search_path", schema.as_str())]),
            )
            .await?;
        let mut migrator = sqlx::migrate!("./migrations");
        // Where the schema was provisioned (the compose stack creates `mindora_{app}` owned
        // by the app's role, the worker being a member), use it: `CREATE SCHEMA IF NOT
        // EXISTS` needs CREATE on the database even when the schema exists, which a
        // least-privilege worker role does not have.
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(&schema)
                .fetch_one(&pool)
                .await?;
        if !exists {
            migrator.create_schema(schema.clone());
        }
        migrator.dangerous_set_table_name(format!("\"{schema}\"._sqlx_migrations"));
        let result = migrator.run(&pool).await;
        pool.close().await;
        result?;
        if let Ok(mut m) = self.migrated.lock() {
            m.insert(app.as_str().to_string());
        }
        Ok(())
    }

    async fn write_run(&self, app: &App, run: &RunRecord) -> Result<(), PipelineError> {
        let mut tx = self.begin(app).await?;
        let d = &run.document;
        let previous: Option<String> =
            sqlx::query_scalar("SELECT status FROM documents WHERE id = $1 FOR UPDATE")
                .bind(d.document_id)
                .fetch_optional(&mut *tx)
                .await?;
        // A run without status changes (e.g. notify) leaves status and error as they were.
        let final_status = run.transitions.last().map(|(s, _)| s.clone());
        let (error, error_kind) = match &run.outcome {
            Ok(_) => (None, None),
            Err((kind, msg)) => (Some(msg.clone()), Some(kind.clone())),
        };
        let f = &run.fields;
        sqlx::query(
            "INSERT INTO documents (id, bucket, key, user_id, sha256, size_bytes, kind, mime, pages, chunks,
                                    status, error, error_kind, timings, summary, keywords, metadata, last_run_id)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,COALESCE($11,'received'),$12,$13,$14,$15,$16,COALESCE($17,'{}'::jsonb),$18)
             ON CONFLICT (id) DO UPDATE SET
                bucket = EXCLUDED.bucket, key = EXCLUDED.key,
                user_id = COALESCE(EXCLUDED.user_id, documents.user_id),
                sha256 = COALESCE(EXCLUDED.sha256, documents.sha256),
                size_bytes = COALESCE(EXCLUDED.size_bytes, documents.size_bytes),
                kind = COALESCE(EXCLUDED.kind, documents.kind),
                mime = COALESCE(EXCLUDED.mime, documents.mime),
                pages = COALESCE(EXCLUDED.pages, documents.pages),
                chunks = COALESCE(EXCLUDED.chunks, documents.chunks),
                status = COALESCE($11, documents.status),
                error = CASE WHEN $11 IS NULL THEN documents.error ELSE EXCLUDED.error END,
                error_kind = CASE WHEN $11 IS NULL THEN documents.error_kind ELSE EXCLUDED.error_kind END,
                timings = documents.timings || EXCLUDED.timings,
                summary = COALESCE(EXCLUDED.summary, documents.summary),
                keywords = COALESCE(EXCLUDED.keywords, documents.keywords),
                metadata = COALESCE($17, documents.metadata),
                last_run_id = EXCLUDED.last_run_id,
                updated_at = now()",
        )
        .bind(d.document_id)
        .bind(&d.bucket)
        .bind(&d.key)
        .bind(&d.user_id)
        .bind(&f.sha256)
        .bind(f.size_bytes)
        .bind(f.kind.as_ref().map(|k| k.0.clone()))
        .bind(f.kind.as_ref().map(|k| k.1.clone()))
        .bind(f.pages)
        .bind(f.chunks)
        .bind(&final_status)
        .bind(&error)
        .bind(&error_kind)
        .bind(Json(Value::Object(run.timings.clone())))
        .bind(f.analysis.as_ref().map(|a| a.summary.clone()))
        .bind(f.analysis.as_ref().map(|a| Json(a.keywords.clone())))
        .bind(f.metadata.clone().map(Json))
        .bind(run.run_id)
        .execute(&mut *tx)
        .await?;

        let finished = Utc::now();
        sqlx::query(
            "INSERT INTO processing_runs (id, document_id, job_id, queue, source, function, status,
                                          started_at, finished_at, timings, result, error, error_kind)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(run.run_id)
        .bind(d.document_id)
        .bind(&run.job.id)
        .bind(&run.job.queue)
        .bind(&run.job.source)
        .bind(&run.function)
        .bind(if run.outcome.is_ok() { "succeeded" } else { "failed" })
        .bind(run.started_at)
        .bind(finished)
        .bind(Json(Value::Object(run.timings.clone())))
        .bind(run.outcome.as_ref().ok().cloned().map(Json))
        .bind(&error)
        .bind(&error_kind)
        .execute(&mut *tx)
        .await?;

        let mut from = previous;
        for (to, detail) in &run.transitions {
            sqlx::query(
                "INSERT INTO audit_log (document_id, run_id, from_status, to_status, detail)
                 VALUES ($1,$2,$3,$4,$5)",
            )
            .bind(d.document_id)
            .bind(run.run_id)
            .bind(&from)
            .bind(to)
            .bind(Json(detail.clone()))
            .execute(&mut *tx)
            .await?;
            from = Some(to.clone());
        }

        if let Some(t) = &run.text {
            sqlx::query(
                "INSERT INTO document_texts (document_id, kind, mime, pages, text) VALUES ($1,$2,$3,$4,$5)
                 ON CONFLICT (document_id) DO UPDATE SET kind = EXCLUDED.kind, mime = EXCLUDED.mime,
                     pages = EXCLUDED.pages, text = EXCLUDED.text, updated_at = now()",
            )
            .bind(d.document_id)
            .bind(&t.kind)
            .bind(&t.mime)
            .bind(t.pages as i32)
            .bind(&t.text)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(chunks) = &run.chunks {
            sqlx::query("DELETE FROM chunks WHERE document_id = $1")
                .bind(d.document_id)
                .execute(&mut *tx)
                .await?;
            for c in chunks {
                sqlx::query(
                    "INSERT INTO chunks (document_id, chunk_index, chunk_id, text, char_start, char_end)
                     VALUES ($1,$2,$3,$4,$5,$6)",
                )
                .bind(d.document_id)
                .bind(c.index as i32)
                .bind(c.id)
                .bind(&c.text)
                .bind(c.char_start as i32)
                .bind(c.char_end as i32)
                .execute(&mut *tx)
                .await?;
            }
        }
        if let Some(vectors) = &run.embeddings {
            for (i, v) in vectors.iter().enumerate() {
                sqlx::query(
                    "UPDATE chunks SET embedding = $3 WHERE document_id = $1 AND chunk_index = $2",
                )
                .bind(d.document_id)
                .bind(i as i32)
                .bind(v)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn select_text(
        &self,
        app: &App,
        document_id: Uuid,
    ) -> Result<Option<ExtractedText>, PipelineError> {
        let mut tx = self.begin(app).await?;
        let row = sqlx::query(
            "SELECT kind, mime, pages, text FROM document_texts WHERE document_id = $1",
        )
        .bind(document_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.map(|r| ExtractedText {
            kind: r.get("kind"),
            mime: r.get("mime"),
            pages: r.get::<i32, _>("pages").max(0) as u32,
            text: r.get("text"),
            ..ExtractedText::default()
        }))
    }

    async fn select_chunks(
        &self,
        app: &App,
        document_id: Uuid,
    ) -> Result<Vec<StoredChunk>, PipelineError> {
        let mut tx = self.begin(app).await?;
        let rows = sqlx::query(
            "SELECT chunk_index, chunk_id, text, char_start, char_end, embedding FROM chunks
             WHERE document_id = $1 ORDER BY chunk_index",
        )
        .bind(document_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    Chunk {
                        index: r.get::<i32, _>("chunk_index").max(0) as usize,
                        id: r.get("chunk_id"),
                        text: r.get("text"),
                        char_start: r.get::<i32, _>("char_start").max(0) as usize,
                        char_end: r.get::<i32, _>("char_end").max(0) as usize,
                        heading_path: Vec::new(),
                        page: None,
                    },
                    r.get::<Option<Vec<f32>>, _>("embedding"),
                )
            })
            .collect())
    }

    async fn select_document(
        &self,
        app: &App,
        document_id: Uuid,
    ) -> Result<Option<Value>, PipelineError> {
        let mut tx = self.begin(app).await?;
        let row: Option<Json<Value>> =
            sqlx::query_scalar("SELECT to_jsonb(d) - 'timings' FROM documents d WHERE id = $1")
                .bind(document_id)
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(row.map(|j| j.0))
    }
}
