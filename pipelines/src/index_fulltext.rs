//! Full-text index stage: Elasticsearch, one index per app and month, created from a template
//! whose analyzer bigrams CJK text (so Chinese/Japanese/Korean words are searchable without a
//! plugin).

use std::collections::HashSet;
use std::sync::Mutex;

use async_trait::async_trait;
use elasticsearch::auth::Credentials;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::Url;
use elasticsearch::indices::IndicesPutIndexTemplateParts;
use elasticsearch::params::Conflicts;
use elasticsearch::{BulkOperation, BulkParts, DeleteByQueryParts, Elasticsearch};
use serde_json::{json, Value};

use crate::config::PipelineConfig;
use crate::error::PipelineError;
use crate::model::{App, Chunk, ChunkMeta};
use crate::telemetry;

/// What an index stage did.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq)]
pub struct IndexReport {
    /// Chunks written.
    pub indexed: usize,
    /// Stale chunks of earlier runs removed.
    pub removed: u64,
    /// Index or collection written to.
    pub target: String,
}

/// Full-text index of chunks. A document is written batch by batch ([`FulltextIndex::write`])
/// and then finished ([`FulltextIndex::remove_other_runs`]), so no stage holds all its chunks.
#[async_trait]
pub trait FulltextIndex: Send + Sync {
    /// Writes a batch of one document's `chunks` (ids are deterministic, so a re-sent batch
    /// overwrites itself); `removed` of the report is 0.
    async fn write(
        &self,
        app: &App,
        meta: &ChunkMeta,
        chunks: &[Chunk],
    ) -> Result<IndexReport, PipelineError>;

    /// Every chunk of the run written: removes the document's chunks of other runs. Returns
    /// how many were removed.
    async fn remove_other_runs(&self, app: &App, meta: &ChunkMeta) -> Result<u64, PipelineError>;

    /// Writes all `chunks` of one document, then removes that document's chunks from earlier runs.
    async fn index(
        &self,
        app: &App,
        meta: &ChunkMeta,
        chunks: &[Chunk],
    ) -> Result<IndexReport, PipelineError> {
        let mut report = self.write(app, meta, chunks).await?;
        report.removed = self.remove_other_runs(app, meta).await?;
        Ok(report)
    }
}

const SERVICE: &str = "Elasticsearch";
/// Chunks per bulk request: keeps requests well under the default 100 MB limit.
const BULK_BATCH: usize = 500;
/// Re-sends of items Elasticsearch rejected with 429 (queue full).
const BULK_RETRIES: u32 = 3;

/// [`FulltextIndex`] on Elasticsearch through the official client.
pub struct ElasticIndex {
    client: Elasticsearch,
    /// `server.address` of the client spans.
    server: String,
    templates: Mutex<HashSet<String>>,
}

impl ElasticIndex {
    /// Builds the client; no request is made until the first document.
    pub fn from_config(config: &PipelineConfig) -> Result<Self, PipelineError> {
        let Some(url) = &config.elasticsearch_url else {
            return Err(PipelineError::NotConfigured {
                what: SERVICE,
                var: "MINDORA_ELASTICSEARCH_URL",
            });
        };
        let server = telemetry::server_of(url).0;
        let url = Url::parse(url).map_err(|e| {
            PipelineError::Config(format!(
                "MINDORA_ELASTICSEARCH_URL {url:?} is not a URL: {e}"
            ))
        })?;
        let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url))
            .timeout(std::time::Duration::from_secs(60));
        if let Some(user) = &config.elasticsearch_username {
            builder = builder.auth(Credentials::Basic(
                user.clone(),
                config.elasticsearch_password.clone().unwrap_or_default(),
            ));
        }
        let transport = builder
            .build()
            .map_err(|e| PipelineError::Config(format!("Elasticsearch client: {e}")))?;
        Ok(ElasticIndex {
            client: Elasticsearch::new(transport),
            server,
            templates: Mutex::new(HashSet::new()),
        })
    }
}

/// Read alias over every monthly index of an app (`{app}-documents`, named like the template):
/// what the stack advertises to apps in Consul KV (`es_documents_alias`).
pub fn read_alias(app: &App) -> String {
    app.es_template()
}

/// The index template of an app: CJK-aware analyzer, explicit mappings, and the read alias that
/// every monthly index joins when it is created. The worker is the only owner of this template
/// (the stack's init jobs create no documents template, alias or ILM policy), so its name,
/// pattern and alias cannot disagree with the indices the worker writes.
pub fn index_template(app: &App) -> Value {
    json!({
        "index_patterns": [app.es_index_pattern()],
        "priority": 200,
        "template": {
            "aliases": {read_alias(app): {}},
            "settings": {
                "number_of_shards": 1,
                "analysis": {
                    "analyzer": {
                        "mindora_text": {
                            "type": "custom",
                            "tokenizer": "standard",
                            "filter": ["cjk_width", "lowercase", "cjk_bigram"]
                        }
                    }
                }
            },
            "mappings": {
                "dynamic": "strict",
                "properties": {
                    "document_id": {"type": "keyword"},
                    "chunk_id": {"type": "keyword"},
                    "chunk_index": {"type": "integer"},
                    "app": {"type": "keyword"},
                    "bucket": {"type": "keyword"},
                    "key": {"type": "keyword"},
                    "file_name": {"type": "keyword"},
                    "kind": {"type": "keyword"},
                    "pages": {"type": "integer"},
                    "user_id": {"type": "keyword"},
                    "run_id": {"type": "keyword"},
                    "text": {"type": "text", "analyzer": "mindora_text"},
                    "char_start": {"type": "integer"},
                    "char_end": {"type": "integer"},
                    // Titles of the chunk's enclosing headings, outermost first: searchable
                    // with the text's analyzer, filterable and aggregatable as keywords.
                    "heading_path": {
                        "type": "text",
                        "analyzer": "mindora_text",
                        "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}}
                    },
                    "page": {"type": "integer"},
                    "metadata": {"type": "flattened"},
                    "indexed_at": {"type": "date"}
                }
            }
        },
        "_meta": {"managed_by": "mindora-pipelines"}
    })
}

/// The source document of one chunk.
pub fn chunk_source(meta: &ChunkMeta, chunk: &Chunk, now: &str) -> Value {
    let d = &meta.document;
    json!({
        "document_id": d.document_id.to_string(),
        "chunk_id": chunk.id.to_string(),
        "chunk_index": chunk.index,
        "app": d.app,
        "bucket": d.bucket,
        "key": d.key,
        "file_name": d.file_name(),
        "kind": meta.kind,
        "pages": meta.pages,
        "user_id": d.user_id,
        "run_id": meta.run_id.to_string(),
        "text": chunk.text,
        "char_start": chunk.char_start,
        "char_end": chunk.char_end,
        "heading_path": chunk.heading_path,
        "page": chunk.page,
        "metadata": meta.metadata,
        "indexed_at": now,
    })
}

fn transport_error(what: &str, e: elasticsearch::Error) -> PipelineError {
    let status = e.status_code().map(|s| s.as_u16());
    PipelineError::Service {
        service: SERVICE,
        message: format!("{what}: {e}"),
        retryable: status.is_none_or(|s| s == 429 || s >= 500),
    }
}

async fn checked(
    what: &str,
    resp: elasticsearch::http::response::Response,
) -> Result<Value, PipelineError> {
    let status = resp.status_code().as_u16();
    tracing::Span::current().record("http.response.status_code", status);
    let body: Value = resp.json().await.map_err(|e| transport_error(what, e))?;
    if status >= 300 {
        let reason = body["error"]["reason"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| body.to_string());
        return Err(PipelineError::Service {
            service: SERVICE,
            message: format!("{what}: HTTP {status}: {reason}"),
            retryable: status == 429 || status >= 500,
        });
    }
    Ok(body)
}

impl ElasticIndex {
    /// CLIENT span of one Elasticsearch API call (`db.operation.name` is the API's name).
    fn span(&self, operation: &str, target: &str) -> tracing::Span {
        telemetry::db("elasticsearch", operation, target, &self.server)
    }

    async fn ensure_template(&self, app: &App) -> Result<(), PipelineError> {
        let name = app.es_template();
        if self
            .templates
            .lock()
            .map(|t| t.contains(&name))
            .unwrap_or(false)
        {
            return Ok(());
        }
        let span = self.span("indices.put_index_template", &name);
        telemetry::in_client(span, async {
            let indices = self.client.indices();
            let mut request = indices.put_index_template(IndicesPutIndexTemplateParts::Name(&name));
            for (k, v) in &telemetry::http_headers() {
                request = request.header(k.clone(), v.clone());
            }
            let resp = request
                .body(index_template(app))
                .send()
                .await
                .map_err(|e| transport_error("put index template", e))?;
            checked(&format!("put index template {name}"), resp).await
        })
        .await?;
        if let Ok(mut t) = self.templates.lock() {
            t.insert(name);
        }
        Ok(())
    }

    /// Sends one bulk request; returns positions (into `batch`) of items to retry (429) and the
    /// permanent failures as messages.
    async fn bulk(
        &self,
        index: &str,
        meta: &ChunkMeta,
        batch: &[&Chunk],
        now: &str,
    ) -> Result<(Vec<usize>, Vec<String>), PipelineError> {
        let ops: Vec<BulkOperation<Value>> = batch
            .iter()
            .map(|c| {
                BulkOperation::index(chunk_source(meta, c, now))
                    .id(c.id.to_string())
                    .into()
            })
            .collect();
        let span = self.span("bulk", index);
        span.record("db.operation.batch.size", batch.len() as u64);
        let body = telemetry::in_client(span, async {
            let mut request = self.client.bulk(BulkParts::Index(index));
            for (k, v) in &telemetry::http_headers() {
                request = request.header(k.clone(), v.clone());
            }
            let resp = request
                .body(ops)
                .send()
                .await
                .map_err(|e| transport_error("bulk", e))?;
            checked(&format!("bulk into {index}"), resp).await
        })
        .await?;
        let mut retry = Vec::new();
        let mut failed = Vec::new();
        if body["errors"].as_bool().unwrap_or(false) {
            let items = body["items"].as_array().cloned().unwrap_or_default();
            if items.len() != batch.len() {
                return Err(PipelineError::transient(
                    SERVICE,
                    format!(
                        "bulk into {index}: sent {} items, {} answered",
                        batch.len(),
                        items.len()
                    ),
                ));
            }
            for (pos, item) in items.iter().enumerate() {
                let result = item
                    .as_object()
                    .and_then(|o| o.values().next())
                    .cloned()
                    .unwrap_or(Value::Null);
                let status = result["status"].as_u64().unwrap_or(0);
                if result.get("error").is_none() && (200..300).contains(&status) {
                    continue;
                }
                if status == 429 || status >= 500 {
                    retry.push(pos);
                } else {
                    failed.push(format!(
                        "chunk {}: {}: {}",
                        batch[pos].index,
                        result["error"]["type"].as_str().unwrap_or("error"),
                        result["error"]["reason"].as_str().unwrap_or("rejected")
                    ));
                }
            }
        }
        Ok((retry, failed))
    }
}

#[async_trait]
impl FulltextIndex for ElasticIndex {
    async fn write(
        &self,
        app: &App,
        meta: &ChunkMeta,
        chunks: &[Chunk],
    ) -> Result<IndexReport, PipelineError> {
        self.ensure_template(app).await?;
        let at = chrono::Utc::now();
        let index = app.es_index(at);
        let now = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let file = meta.document.file_name().to_string();
        for batch in chunks.chunks(BULK_BATCH) {
            let mut pending: Vec<&Chunk> = batch.iter().collect();
            let mut attempt = 0;
            loop {
                let (retry, failed) = self.bulk(&index, meta, &pending, &now).await?;
                if !failed.is_empty() {
                    return Err(PipelineError::permanent(
                        SERVICE,
                        format!(
                            "{file}: {} of {} chunks rejected by index {index}; first: {}",
                            failed.len(),
                            chunks.len(),
                            failed[0]
                        ),
                    ));
                }
                if retry.is_empty() {
                    break;
                }
                attempt += 1;
                if attempt > BULK_RETRIES {
                    return Err(PipelineError::transient(
                        SERVICE,
                        format!("{file}: {} chunks still rejected with 429/5xx after {BULK_RETRIES} retries", retry.len()),
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
                pending = retry.into_iter().map(|i| pending[i]).collect();
            }
        }
        Ok(IndexReport {
            indexed: chunks.len(),
            removed: 0,
            target: index,
        })
    }

    async fn remove_other_runs(&self, app: &App, meta: &ChunkMeta) -> Result<u64, PipelineError> {
        let file = meta.document.file_name().to_string();
        // Replace: drop this document's chunks written by any other run (other months included).
        let pattern = app.es_index_pattern();
        let span = self.span("delete_by_query", &pattern);
        let body = telemetry::in_client(span, async {
            let targets = [pattern.as_str()];
            let mut request = self
                .client
                .delete_by_query(DeleteByQueryParts::Index(&targets));
            for (k, v) in &telemetry::http_headers() {
                request = request.header(k.clone(), v.clone());
            }
            let resp = request
            .conflicts(Conflicts::Proceed)
            .allow_no_indices(true)
            .ignore_unavailable(true)
            .refresh(true)
            .body(json!({
                "query": {"bool": {
                    "filter": [{"term": {"document_id": meta.document.document_id.to_string()}}],
                    "must_not": [{"term": {"run_id": meta.run_id.to_string()}}]
                }}
            }))
            .send()
            .await
            .map_err(|e| transport_error("delete stale chunks", e))?;
            checked(&format!("delete stale chunks of {file}"), resp).await
        })
        .await?;
        Ok(body["deleted"].as_u64().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names the stack advertises (infra/consul/kv-seed.txt, infra/README.md) are these;
    /// infra/check.sh compares them with the same strings.
    #[test]
    fn template_alias_and_pattern_cover_the_monthly_indices() {
        let app = App::parse("demo").unwrap();
        let t = index_template(&app);
        assert_eq!(t["index_patterns"], json!(["demo-documents-*"]));
        assert_eq!(app.es_template(), "demo-documents");
        assert!(t["template"]["aliases"]["demo-documents"].is_object());
        let index = app.es_index(chrono::Utc::now());
        assert!(index.starts_with("demo-documents-"), "{index}");
        // No ILM rollover alias: the indices are monthly by name, not rolled over.
        assert!(t["template"]["settings"]
            .get("index.lifecycle.rollover_alias")
            .is_none());
    }
}
