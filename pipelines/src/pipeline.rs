//! Orchestration: argument parsing, `process_document`, and the per-stage functions that chain
//! through intermediates stored in PostgreSQL.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::error::PipelineError;
use crate::index_fulltext::IndexReport;
use crate::model::{App, Chunk, ChunkMeta, DocumentRef, ExtractedText, FetchedObject};
use crate::record::{DocumentFields, RecordStore, RunRecord};
use crate::{JobInfo, PipelineConfig, ProgressSink, Stages};

pub(crate) struct Inner {
    pub config: PipelineConfig,
    pub stages: Stages,
    pub app_options: crate::app_options::AppOptionsTable,
}

/// Parsed job arguments common to every function.
struct Args {
    app: App,
    doc: DocumentRef,
    options: Map<String, Value>,
    /// The app's defaults when the job started (set by the worker, e.g. from Consul).
    defaults: Option<std::sync::Arc<crate::AppOptions>>,
}

const POSITIONAL: &[&str] = &["app", "bucket", "key", "document_id", "user_id", "options"];

fn parse_args(args: &[Value], kwargs: &Map<String, Value>) -> Result<Args, PipelineError> {
    let mut all = Map::new();
    for (name, v) in POSITIONAL.iter().zip(args) {
        all.insert((*name).to_string(), v.clone());
    }
    if args.len() > POSITIONAL.len() {
        return Err(PipelineError::InvalidArgument(format!(
            "at most {} positional arguments ({}), got {}",
            POSITIONAL.len(),
            POSITIONAL.join(", "),
            args.len()
        )));
    }
    for (k, v) in kwargs {
        if !POSITIONAL.contains(&k.as_str()) {
            return Err(PipelineError::InvalidArgument(format!(
                "unknown argument {k:?}; expected {}",
                POSITIONAL.join(", ")
            )));
        }
        all.insert(k.clone(), v.clone());
    }
    let text = |k: &str| -> Result<Option<String>, PipelineError> {
        match all.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) if k.ends_with("_id") => Ok(Some(n.to_string())),
            Some(other) => Err(PipelineError::InvalidArgument(format!(
                "{k} must be a string, got {other}"
            ))),
        }
    };
    let required = |k: &str| -> Result<String, PipelineError> {
        text(k)?.ok_or_else(|| PipelineError::InvalidArgument(format!("missing argument {k:?}")))
    };
    let app = App::parse(&required("app")?)?;
    let doc = DocumentRef::new(
        &app,
        &required("bucket")?,
        &required("key")?,
        text("document_id")?.as_deref(),
        text("user_id")?,
    )?;
    let options = match all.get("options") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            return Err(PipelineError::InvalidArgument(format!(
                "options must be a dict, got {other}"
            )))
        }
    };
    for k in options.keys() {
        if !matches!(
            k.as_str(),
            "metadata"
                | "analyze"
                | "notify"
                | "index_fulltext"
                | "index_vectors"
                | "password"
                | "ocr"
        ) {
            return Err(PipelineError::InvalidArgument(format!(
                "unknown option {k:?}; expected metadata, analyze, notify, index_fulltext, index_vectors, password, ocr"
            )));
        }
    }
    match options.get("ocr") {
        None | Some(Value::Null | Value::Bool(_)) => {}
        Some(Value::String(s))
            if s.is_empty() || s == "off" || crate::extract::ocr::valid_languages(s) => {}
        Some(other) => {
            return Err(PipelineError::InvalidArgument(format!(
                "options.ocr must be true, false or Tesseract languages like \"chi_sim+eng\", got {other}"
            )))
        }
    }
    if !matches!(
        options.get("password"),
        None | Some(Value::Null | Value::String(_))
    ) {
        return Err(PipelineError::InvalidArgument(
            "options.password must be a string".into(),
        ));
    }
    Ok(Args {
        app,
        doc,
        options,
        defaults: None,
    })
}

/// Accumulates the job's meta and pushes it to the sink at each change.
struct Progress<'a> {
    sink: &'a dyn ProgressSink,
    meta: std::sync::Mutex<Map<String, Value>>,
}

impl<'a> Progress<'a> {
    fn new(sink: &'a dyn ProgressSink, function: &str, doc: &DocumentRef) -> Self {
        let mut meta = Map::new();
        meta.insert("pipeline".into(), json!(function));
        meta.insert("document_id".into(), json!(doc.document_id.to_string()));
        Progress {
            sink,
            meta: std::sync::Mutex::new(meta),
        }
    }

    fn set(&self, pairs: &[(&str, Value)]) {
        let snapshot = match self.meta.lock() {
            Ok(mut m) => {
                for (k, v) in pairs {
                    m.insert((*k).to_string(), v.clone());
                }
                m.insert("updated_at".into(), json!(Utc::now().to_rfc3339()));
                m.clone()
            }
            Err(_) => return,
        };
        self.sink.report(snapshot);
    }

    fn stage(&self, stage: &str) {
        self.set(&[("stage", json!(stage))]);
    }
}

/// Times stages and records status transitions as they happen.
struct RunLog {
    run_id: Uuid,
    started_at: chrono::DateTime<Utc>,
    transitions: Vec<(String, Value)>,
    timings: Map<String, Value>,
    fields: DocumentFields,
    /// Intermediates for chained stages, written in the run's transaction.
    text: Option<ExtractedText>,
    chunks: Option<Vec<Chunk>>,
    vectors: Option<Vec<Vec<f32>>>,
}

impl RunLog {
    fn new() -> Self {
        RunLog {
            run_id: Uuid::new_v4(),
            started_at: Utc::now(),
            transitions: Vec::new(),
            timings: Map::new(),
            fields: DocumentFields::default(),
            text: None,
            chunks: None,
            vectors: None,
        }
    }

    fn done(&mut self, stage: &str, status: &str, started: Instant, detail: Value) {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        self.timings
            .insert(stage.to_string(), json!((ms * 10.0).round() / 10.0));
        let mut detail = match detail {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        detail.insert("ms".into(), json!((ms * 10.0).round() / 10.0));
        self.transitions
            .push((status.to_string(), Value::Object(detail)));
    }
}

fn need<'a, T: ?Sized>(
    stage: &'a Option<Arc<T>>,
    what: &'static str,
    var: &'static str,
) -> Result<&'a Arc<T>, PipelineError> {
    stage
        .as_ref()
        .ok_or(PipelineError::NotConfigured { what, var })
}

/// Adds what extraction wants the caller to know: which PDF pages had text, and warnings
/// (damaged file repaired, pages that are images only).
fn extract_notes(m: &mut Map<String, Value>, text: &ExtractedText) {
    if let Some(p) = &text.pages_with_text {
        m.insert("pages_with_text".into(), json!(p));
    }
    if let Some(p) = &text.pages_ocr {
        m.insert("pages_ocr".into(), json!(p));
        m.insert("ocr_confidence".into(), json!(text.ocr_confidence));
    }
    if !text.warnings.is_empty() {
        m.insert("warnings".into(), json!(text.warnings));
    }
}

fn option_on(options: &Map<String, Value>, key: &str) -> bool {
    options.get(key).and_then(Value::as_bool).unwrap_or(true)
}

impl Inner {
    pub async fn call(
        &self,
        function: &str,
        job: &JobInfo,
        args: &[Value],
        kwargs: &Map<String, Value>,
        progress: &dyn ProgressSink,
    ) -> Result<Value, PipelineError> {
        let name = function.strip_prefix("pipelines.").unwrap_or(function);
        if !crate::FUNCTIONS.contains(&format!("pipelines.{name}").as_str()) {
            return Err(PipelineError::UnknownFunction(function.to_string()));
        }
        let mut a = parse_args(args, kwargs)?;
        a.defaults = self.app_options.get(a.app.as_str());
        if let Some(d) = &a.defaults {
            d.fill(&mut a.options);
        }
        let progress = Progress::new(progress, function, &a.doc);
        let mut log = RunLog::new();
        let result = match name {
            "process_document" => self.process_document(&a, &progress, &mut log).await,
            "fetch" => self.stage_fetch(&a, &progress, &mut log).await,
            "extract" => self.stage_extract(&a, &progress, &mut log).await,
            "chunk" => self.stage_chunk(&a, &progress, &mut log).await,
            "embed" => self.stage_embed(&a, &progress, &mut log).await,
            "index" => self.stage_index(&a, &progress, &mut log).await,
            "analyze" => self.stage_analyze(&a, &progress, &mut log).await,
            "record" => self.stage_record(&a, &progress, &mut log).await,
            _ => self.stage_notify(&a, &progress, &mut log, job).await,
        };
        match result {
            Ok(mut value) => {
                if let Value::Object(m) = &mut value {
                    m.insert("run_id".into(), json!(log.run_id.to_string()));
                    m.insert("timings_ms".into(), Value::Object(log.timings.clone()));
                }
                if let Some(records) = &self.stages.records {
                    progress.stage("record");
                    let started = Instant::now();
                    records
                        .record(
                            &a.app,
                            &self.run_record(job, function, &a, &mut log, Ok(value.clone())),
                        )
                        .await?;
                    log.timings
                        .insert("record".into(), json!(started.elapsed().as_millis() as u64));
                    if let Value::Object(m) = &mut value {
                        m.insert("timings_ms".into(), Value::Object(log.timings.clone()));
                    }
                } else if name != "process_document" {
                    return Err(PipelineError::NotConfigured {
                        what: "PostgreSQL (chained stages store their output there)",
                        var: "MINDORA_DATABASE_URL",
                    });
                }
                if name == "process_document" && option_on(&a.options, "notify") {
                    if let Some(notifier) = &self.stages.notifier {
                        progress.stage("notify");
                        let msg = notification(&a, job, "document.processed", &value, None);
                        let report = notifier.notify(&a.app, &msg).await?;
                        if let Value::Object(m) = &mut value {
                            m.insert("notified".into(), json!(report));
                        }
                    }
                }
                progress.set(&[("stage", json!("done")), ("status", json!("done"))]);
                Ok(value)
            }
            Err(e) => {
                tracing::warn!(function, app = a.app.as_str(), key = %a.doc.key, error = %e, "pipeline failed");
                log.transitions.push((
                    "failed".into(),
                    json!({"error": e.to_string(), "kind": e.kind(), "retryable": e.is_retryable()}),
                ));
                if matches!(
                    e,
                    PipelineError::Service {
                        service: "PostgreSQL",
                        ..
                    }
                ) {
                    // Recording the failure would hit the same error.
                } else if let Some(records) = &self.stages.records {
                    let run = self.run_record(
                        job,
                        function,
                        &a,
                        &mut log,
                        Err((e.kind().into(), e.to_string())),
                    );
                    if let Err(re) = records.record(&a.app, &run).await {
                        tracing::warn!(error = %re, "could not record the failure");
                    }
                }
                if name == "process_document" && option_on(&a.options, "notify") {
                    if let Some(notifier) = &self.stages.notifier {
                        let msg = notification(&a, job, "document.failed", &Value::Null, Some(&e));
                        if let Err(ne) = notifier.notify(&a.app, &msg).await {
                            tracing::warn!(error = %ne, "could not send the failure notification");
                        }
                    }
                }
                progress.set(&[
                    ("stage", json!("failed")),
                    ("status", json!("failed")),
                    ("error", json!(e.to_string())),
                ]);
                Err(e)
            }
        }
    }

    fn run_record(
        &self,
        job: &JobInfo,
        function: &str,
        a: &Args,
        log: &mut RunLog,
        outcome: Result<Value, (String, String)>,
    ) -> RunRecord {
        RunRecord {
            run_id: log.run_id,
            job: job.clone(),
            function: function.to_string(),
            document: a.doc.clone(),
            started_at: log.started_at,
            transitions: std::mem::take(&mut log.transitions),
            timings: log.timings.clone(),
            outcome,
            fields: std::mem::take(&mut log.fields),
            text: log.text.take(),
            chunks: log.chunks.take(),
            embeddings: log.vectors.take(),
        }
    }

    fn max_bytes(&self) -> u64 {
        self.config.max_object_bytes
    }

    async fn fetch(
        &self,
        a: &Args,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<FetchedObject, PipelineError> {
        let source = need(
            &self.stages.source,
            "S3",
            "MINDORA_S3_ACCESS_KEY and MINDORA_S3_SECRET_KEY (and MINDORA_S3_ENDPOINT for MinIO)",
        )?;
        progress.stage("fetch");
        let t = Instant::now();
        let obj = source
            .fetch(&a.doc.bucket, &a.doc.key, self.max_bytes())
            .await?;
        log.fields.sha256 = Some(obj.sha256.clone());
        log.fields.size_bytes = Some(obj.bytes.len() as i64);
        log.done(
            "fetch",
            "fetched",
            t,
            json!({"size_bytes": obj.bytes.len(), "sha256": obj.sha256}),
        );
        progress.set(&[("size_bytes", json!(obj.bytes.len()))]);
        Ok(obj)
    }

    async fn extract(
        &self,
        a: &Args,
        obj: FetchedObject,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<ExtractedText, PipelineError> {
        progress.stage("extract");
        let t = Instant::now();
        let extractor = self.stages.extractor.clone();
        let file = a.doc.file_name().to_string();
        let name = file.clone();
        let options = crate::extract::ExtractOptions {
            password: a
                .options
                .get("password")
                .and_then(Value::as_str)
                .map(str::to_string),
            time_limit: std::time::Duration::from_secs(self.config.extract_timeout_secs),
            ocr: self.config.ocr_options(a.options.get("ocr")),
        };
        let text = tokio::task::spawn_blocking(move || {
            extractor.extract_with(&name, &obj.bytes, &options)
        })
        .await
        .map_err(|e| PipelineError::Extract {
            file: file.clone(),
            problem: crate::ExtractProblem::Corrupt {
                format: "document",
                detail: format!("extractor crashed: {e}"),
            },
        })?
        .map_err(|problem| PipelineError::Extract { file, problem })?;
        log.fields.kind = Some((text.kind.clone(), text.mime.clone()));
        log.fields.pages = Some(text.pages as i32);
        log.done(
            "extract",
            "extracted",
            t,
            json!({"kind": text.kind, "pages": text.pages, "chars": text.text.chars().count(),
                   "pages_with_text": text.pages_with_text, "pages_ocr": text.pages_ocr,
                   "ocr_confidence": text.ocr_confidence, "warnings": text.warnings}),
        );
        let mut meta = vec![("pages", json!(text.pages)), ("kind", json!(text.kind))];
        if let Some(p) = &text.pages_with_text {
            meta.push(("pages_with_text", json!(p)));
        }
        if let Some(p) = &text.pages_ocr {
            meta.push(("pages_ocr", json!(p)));
            meta.push(("ocr_confidence", json!(text.ocr_confidence)));
        }
        if !text.warnings.is_empty() {
            meta.push(("warnings", json!(text.warnings)));
        }
        progress.set(&meta);
        Ok(text)
    }

    fn chunk(&self, a: &Args, text: &str, progress: &Progress<'_>, log: &mut RunLog) -> Vec<Chunk> {
        progress.stage("chunk");
        let t = Instant::now();
        let custom = a
            .defaults
            .as_ref()
            .filter(|d| d.chunk_size.is_some() || d.chunk_overlap.is_some());
        let chunks = match custom {
            // The app's own chunk budget replaces the worker-wide chunker for this job.
            Some(d) => crate::chunk::Chunker::chunk(
                &crate::chunk::TextChunker::new(
                    d.chunk_size.unwrap_or(self.config.chunk_size),
                    d.chunk_overlap.unwrap_or(self.config.chunk_overlap),
                ),
                a.doc.document_id,
                text,
            ),
            None => self.stages.chunker.chunk(a.doc.document_id, text),
        };
        log.fields.chunks = Some(chunks.len() as i32);
        log.done("chunk", "chunked", t, json!({"chunks": chunks.len()}));
        progress.set(&[("chunks", json!(chunks.len()))]);
        chunks
    }

    async fn embed(
        &self,
        chunks: &[Chunk],
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<Vec<Vec<f32>>, PipelineError> {
        let embedder = need(
            &self.stages.embedder,
            "embeddings",
            "MINDORA_EMBED_BASE_URL",
        )?;
        progress.set(&[("stage", json!("embed")), ("embedded", json!(0))]);
        let t = Instant::now();
        let texts: Vec<String> = chunks.iter().map(|c| c.text.clone()).collect();
        let report = |n: usize| progress.set(&[("embedded", json!(n))]);
        let vectors = embedder.embed(&texts, &report).await?;
        log.done(
            "embed",
            "embedded",
            t,
            json!({"vectors": vectors.len(), "dimensions": embedder.dimensions()}),
        );
        Ok(vectors)
    }

    async fn index(
        &self,
        a: &Args,
        meta: &ChunkMeta,
        chunks: &[Chunk],
        vectors: Option<&[Vec<f32>]>,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<Value, PipelineError> {
        let mut out = Map::new();
        let t = Instant::now();
        let mut any = false;
        if option_on(&a.options, "index_fulltext") {
            if let Some(ft) = &self.stages.fulltext {
                progress.stage("index_fulltext");
                let r: IndexReport = ft.index(&a.app, meta, chunks).await?;
                out.insert("fulltext".into(), json!(r));
                any = true;
            }
        }
        if option_on(&a.options, "index_vectors") {
            if let Some(vx) = &self.stages.vectors {
                let Some(vectors) = vectors else {
                    return Err(PipelineError::NotConfigured {
                        what: "embeddings (needed by the Qdrant index)",
                        var: "MINDORA_EMBED_BASE_URL",
                    });
                };
                progress.stage("index_vectors");
                let r = vx.index(&a.app, meta, chunks, vectors).await?;
                out.insert("vectors".into(), json!(r));
                any = true;
            }
        }
        if any {
            log.done("index", "indexed", t, Value::Object(out.clone()));
        }
        Ok(Value::Object(out))
    }

    async fn analyze(
        &self,
        a: &Args,
        text: &str,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<Option<Value>, PipelineError> {
        let Some(analyzer) = &self.stages.analyzer else {
            return Ok(None);
        };
        if !option_on(&a.options, "analyze") {
            return Ok(None);
        }
        progress.stage("analyze");
        let t = Instant::now();
        let analysis = analyzer.analyze(a.doc.file_name(), text).await?;
        log.done(
            "analyze",
            "analyzed",
            t,
            json!({"keywords": analysis.keywords.len()}),
        );
        let v = json!(analysis);
        log.fields.analysis = Some(analysis);
        Ok(Some(v))
    }

    fn meta(&self, a: &Args, text: &ExtractedText, log: &RunLog) -> ChunkMeta {
        ChunkMeta {
            document: a.doc.clone(),
            kind: text.kind.clone(),
            pages: text.pages,
            run_id: log.run_id,
            metadata: a
                .options
                .get("metadata")
                .cloned()
                .unwrap_or_else(|| json!({})),
        }
    }

    fn base(&self, a: &Args) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("document_id".into(), json!(a.doc.document_id.to_string()));
        m.insert("app".into(), json!(a.app.as_str()));
        m.insert("bucket".into(), json!(a.doc.bucket));
        m.insert("key".into(), json!(a.doc.key));
        m
    }

    async fn process_document(
        &self,
        a: &Args,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<Value, PipelineError> {
        log.fields.metadata = a.options.get("metadata").cloned();
        let obj = self.fetch(a, progress, log).await?;
        let (sha, size) = (obj.sha256.clone(), obj.bytes.len());
        let text = self.extract(a, obj, progress, log).await?;
        let chunks = self.chunk(a, &text.text, progress, log);
        let wants_vectors = self.stages.vectors.is_some() && option_on(&a.options, "index_vectors");
        let vectors = if wants_vectors
            || (self.stages.embedder.is_some() && self.stages.fulltext.is_none())
        {
            Some(self.embed(&chunks, progress, log).await?)
        } else {
            None
        };
        let meta = self.meta(a, &text, log);
        let indexed = self
            .index(a, &meta, &chunks, vectors.as_deref(), progress, log)
            .await?;
        let analysis = self.analyze(a, &text.text, progress, log).await?;
        log.transitions.push(("done".into(), json!({})));
        let mut m = self.base(a);
        m.insert("status".into(), json!("done"));
        m.insert("kind".into(), json!(text.kind));
        m.insert("pages".into(), json!(text.pages));
        m.insert("chunks".into(), json!(chunks.len()));
        m.insert("characters".into(), json!(text.text.chars().count()));
        extract_notes(&mut m, &text);
        m.insert("sha256".into(), json!(sha));
        m.insert("size_bytes".into(), json!(size));
        m.insert("indexed".into(), indexed);
        m.insert("analysis".into(), analysis.unwrap_or(Value::Null));
        Ok(Value::Object(m))
    }

    fn records(&self) -> Result<&Arc<dyn RecordStore>, PipelineError> {
        need(
            &self.stages.records,
            "PostgreSQL (chained stages store their output there)",
            "MINDORA_DATABASE_URL",
        )
    }

    async fn stored_text(&self, a: &Args) -> Result<ExtractedText, PipelineError> {
        self.records()?
            .load_text(&a.app, a.doc.document_id)
            .await?
            .ok_or_else(|| PipelineError::MissingInput {
                document_id: a.doc.document_id.to_string(),
                what: "extracted text",
                stage: "pipelines.extract",
            })
    }

    async fn stage_fetch(
        &self,
        a: &Args,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<Value, PipelineError> {
        let obj = self.fetch(a, progress, log).await?;
        let mut m = self.base(a);
        m.insert("sha256".into(), json!(obj.sha256));
        m.insert("size_bytes".into(), json!(obj.bytes.len()));
        m.insert("content_type".into(), json!(obj.content_type));
        Ok(Value::Object(m))
    }

    async fn stage_extract(
        &self,
        a: &Args,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<Value, PipelineError> {
        let obj = self.fetch(a, progress, log).await?;
        let text = self.extract(a, obj, progress, log).await?;
        let mut m = self.base(a);
        m.insert("kind".into(), json!(text.kind));
        m.insert("pages".into(), json!(text.pages));
        m.insert("characters".into(), json!(text.text.chars().count()));
        extract_notes(&mut m, &text);
        log.text = Some(text);
        Ok(Value::Object(m))
    }

    async fn stage_chunk(
        &self,
        a: &Args,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<Value, PipelineError> {
        let text = self.stored_text(a).await?;
        let chunks = self.chunk(a, &text.text, progress, log);
        let mut m = self.base(a);
        m.insert("chunks".into(), json!(chunks.len()));
        log.chunks = Some(chunks);
        Ok(Value::Object(m))
    }

    async fn stored_chunks(
        &self,
        a: &Args,
    ) -> Result<Vec<(Chunk, Option<Vec<f32>>)>, PipelineError> {
        let chunks = self
            .records()?
            .load_chunks(&a.app, a.doc.document_id)
            .await?;
        if chunks.is_empty() {
            return Err(PipelineError::MissingInput {
                document_id: a.doc.document_id.to_string(),
                what: "chunks",
                stage: "pipelines.chunk",
            });
        }
        Ok(chunks)
    }

    async fn stage_embed(
        &self,
        a: &Args,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<Value, PipelineError> {
        let stored = self.stored_chunks(a).await?;
        let chunks: Vec<Chunk> = stored.into_iter().map(|(c, _)| c).collect();
        let vectors = self.embed(&chunks, progress, log).await?;
        let mut m = self.base(a);
        m.insert("chunks".into(), json!(chunks.len()));
        m.insert(
            "dimensions".into(),
            json!(vectors.first().map_or(0, Vec::len)),
        );
        log.vectors = Some(vectors);
        Ok(Value::Object(m))
    }

    async fn stage_index(
        &self,
        a: &Args,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<Value, PipelineError> {
        let text = self.stored_text(a).await?;
        let stored = self.stored_chunks(a).await?;
        let has_all = stored.iter().all(|(_, v)| v.is_some());
        let chunks: Vec<Chunk> = stored.iter().map(|(c, _)| c.clone()).collect();
        let vectors: Option<Vec<Vec<f32>>> = if has_all {
            Some(stored.into_iter().filter_map(|(_, v)| v).collect())
        } else if self.stages.vectors.is_some() && option_on(&a.options, "index_vectors") {
            return Err(PipelineError::MissingInput {
                document_id: a.doc.document_id.to_string(),
                what: "embeddings",
                stage: "pipelines.embed",
            });
        } else {
            None
        };
        let meta = self.meta(a, &text, log);
        log.fields.chunks = Some(chunks.len() as i32);
        let indexed = self
            .index(a, &meta, &chunks, vectors.as_deref(), progress, log)
            .await?;
        let mut m = self.base(a);
        m.insert("chunks".into(), json!(chunks.len()));
        m.insert("indexed".into(), indexed);
        Ok(Value::Object(m))
    }

    async fn stage_analyze(
        &self,
        a: &Args,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<Value, PipelineError> {
        need(
            &self.stages.analyzer,
            "the analyze stage",
            "MINDORA_CHAT_MODEL",
        )?;
        let text = self.stored_text(a).await?;
        let analysis = self.analyze(a, &text.text, progress, log).await?;
        let mut m = self.base(a);
        m.insert("analysis".into(), analysis.unwrap_or(Value::Null));
        Ok(Value::Object(m))
    }

    async fn stage_record(
        &self,
        a: &Args,
        _progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<Value, PipelineError> {
        self.records()?;
        log.fields.metadata = a.options.get("metadata").cloned();
        log.transitions.push(("done".into(), json!({})));
        let mut m = self.base(a);
        m.insert("status".into(), json!("done"));
        Ok(Value::Object(m))
    }

    async fn stage_notify(
        &self,
        a: &Args,
        progress: &Progress<'_>,
        _log: &mut RunLog,
        job: &JobInfo,
    ) -> Result<Value, PipelineError> {
        let notifier = need(
            &self.stages.notifier,
            "notifications",
            "MINDORA_AMQP_URL or MINDORA_NOTIFY_REDIS_URL",
        )?;
        progress.stage("notify");
        let doc = match &self.stages.records {
            Some(r) => r.load_document(&a.app, a.doc.document_id).await?,
            None => None,
        };
        let status = doc
            .as_ref()
            .and_then(|d| d["status"].as_str())
            .unwrap_or("done")
            .to_string();
        let event = if status == "failed" {
            "document.failed"
        } else {
            "document.processed"
        };
        let mut msg = notification(a, job, event, doc.as_ref().unwrap_or(&Value::Null), None);
        if let (Value::Object(m), Some(d)) = (&mut msg, &doc) {
            m.insert("status".into(), json!(status));
            m.insert("error".into(), d["error"].clone());
        }
        let report = notifier.notify(&a.app, &msg).await?;
        let mut m = self.base(a);
        m.insert("notified".into(), json!(report));
        Ok(Value::Object(m))
    }
}

/// The notification message (a JSON object) sent on RabbitMQ and Redis.
fn notification(
    a: &Args,
    job: &JobInfo,
    event: &str,
    result: &Value,
    error: Option<&PipelineError>,
) -> Value {
    json!({
        "event": event,
        "app": a.app.as_str(),
        "document_id": a.doc.document_id.to_string(),
        "bucket": a.doc.bucket,
        "key": a.doc.key,
        "file_name": a.doc.file_name(),
        "user_id": a.doc.user_id,
        "status": if error.is_some() { "failed" } else { "done" },
        "pages": result.get("pages").cloned().unwrap_or(Value::Null),
        "chunks": result.get("chunks").cloned().unwrap_or(Value::Null),
        "error": error.map(|e| e.to_string()),
        "error_kind": error.map(|e| e.kind()),
        "retryable": error.map(|e| e.is_retryable()),
        "job_id": job.id,
        "at": Utc::now().to_rfc3339(),
    })
}
