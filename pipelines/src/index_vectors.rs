//! Vector index stage: Qdrant, one collection per app, over gRPC with qdrant-client.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Mutex;

use async_trait::async_trait;
use qdrant_client::qdrant::vectors_config::Config as VectorsConfigKind;
use qdrant_client::qdrant::{
    Condition, CreateCollectionBuilder, DeletePointsBuilder, Distance, Filter, PointStruct,
    UpsertPointsBuilder, VectorParamsBuilder,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use serde_json::json;

use crate::config::{PipelineConfig, QdrantDistance};
use crate::error::PipelineError;
use crate::index_fulltext::IndexReport;
use crate::model::{App, Chunk, ChunkMeta};
use crate::telemetry;

const SERVICE: &str = "Qdrant";
/// Points per upsert request.
const UPSERT_BATCH: usize = 256;

/// Vector index of chunks, written batch by batch ([`VectorIndex::write`]) and then finished
/// ([`VectorIndex::remove_other_runs`]), like [`crate::index_fulltext::FulltextIndex`].
#[async_trait]
pub trait VectorIndex: Send + Sync {
    /// Writes one point per chunk of a batch (`vectors[i]` belongs to `chunks[i]`), waiting for
    /// Qdrant to acknowledge.
    async fn write(
        &self,
        app: &App,
        meta: &ChunkMeta,
        chunks: &[Chunk],
        vectors: &[Vec<f32>],
    ) -> Result<IndexReport, PipelineError>;

    /// Every point of the run written: removes the document's points of other runs.
    async fn remove_other_runs(&self, app: &App, meta: &ChunkMeta) -> Result<(), PipelineError>;

    /// Writes all points of one document, then removes its points from earlier runs.
    async fn index(
        &self,
        app: &App,
        meta: &ChunkMeta,
        chunks: &[Chunk],
        vectors: &[Vec<f32>],
    ) -> Result<IndexReport, PipelineError> {
        let report = self.write(app, meta, chunks, vectors).await?;
        self.remove_other_runs(app, meta).await?;
        Ok(report)
    }
}

/// [`VectorIndex`] on Qdrant.
pub struct QdrantIndex {
    client: Qdrant,
    /// `server.address` of the client spans.
    server: String,
    distance: Distance,
    ready: Mutex<HashSet<String>>,
}

/// The wire enum for the configured distance.
fn distance(d: QdrantDistance) -> Distance {
    match d {
        QdrantDistance::Cosine => Distance::Cosine,
        QdrantDistance::Dot => Distance::Dot,
        QdrantDistance::Euclid => Distance::Euclid,
        QdrantDistance::Manhattan => Distance::Manhattan,
    }
}

impl QdrantIndex {
    /// Builds the client without contacting the server.
    pub fn from_config(config: &PipelineConfig) -> Result<Self, PipelineError> {
        let Some(url) = &config.qdrant_url else {
            return Err(PipelineError::NotConfigured {
                what: SERVICE,
                var: "MINDORA_QDRANT_URL",
            });
        };
        let client = Qdrant::from_url(url)
            .api_key(config.qdrant_api_key.clone())
            .skip_compatibility_check()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| PipelineError::Config(format!("MINDORA_QDRANT_URL {url:?}: {e}")))?;
        Ok(QdrantIndex {
            client,
            server: telemetry::server_of(url).0,
            distance: distance(config.qdrant_distance),
            ready: Mutex::new(HashSet::new()),
        })
    }
}

fn map_error(what: &str, e: QdrantError) -> PipelineError {
    use tonic_code::*;
    let retryable = match &e {
        QdrantError::ResponseError { status } => transient(status.code()),
        QdrantError::ResourceExhaustedError { .. } => true,
        _ => false,
    };
    PipelineError::Service {
        service: SERVICE,
        message: format!("{what}: {e}"),
        retryable,
    }
}

/// gRPC codes worth retrying, without naming tonic (a transitive dependency).
mod tonic_code {
    pub fn transient<C: std::fmt::Debug>(code: C) -> bool {
        matches!(
            format!("{code:?}").as_str(),
            "Unavailable"
                | "DeadlineExceeded"
                | "ResourceExhausted"
                | "Aborted"
                | "Internal"
                | "Unknown"
        )
    }
}

impl QdrantIndex {
    /// CLIENT span of one Qdrant call (`db.operation.name` is the gRPC method).
    fn span(&self, operation: &str, collection: &str) -> tracing::Span {
        telemetry::db("qdrant", operation, collection, &self.server)
    }

    /// The client to call inside a client span: one sending the span's context as gRPC
    /// metadata (qdrant-client's `with_header`, a clone sharing the connection pool), or the
    /// shared client itself when tracing is off.
    fn traced(&self) -> Cow<'_, Qdrant> {
        let carrier = telemetry::context();
        if carrier.is_empty() {
            return Cow::Borrowed(&self.client);
        }
        let mut client = self.client.clone();
        for (k, v) in carrier {
            client = client.with_header(k, v);
        }
        Cow::Owned(client)
    }

    async fn ensure_collection(&self, name: &str, dims: usize) -> Result<(), PipelineError> {
        if self.ready.lock().map(|r| r.contains(name)).unwrap_or(false) {
            return Ok(());
        }
        let exists = telemetry::in_client(self.span("collection_exists", name), async {
            self.traced()
                .collection_exists(name)
                .await
                .map_err(|e| map_error("collection exists", e))
        })
        .await?;
        if !exists {
            let created = telemetry::in_client(self.span("create_collection", name), async {
                self.traced()
                    .create_collection(
                        CreateCollectionBuilder::new(name)
                            .vectors_config(VectorParamsBuilder::new(dims as u64, self.distance)),
                    )
                    .await
                    .map_err(|e| map_error("create collection", e))
            })
            .await;
            if let Err(e) = created {
                // Another worker may have created it meanwhile; the size check below decides.
                tracing::info!(collection = name, error = %e, "create collection failed; checking it");
            }
        }
        let info = telemetry::in_client(self.span("collection_info", name), async {
            self.traced()
                .collection_info(name)
                .await
                .map_err(|e| map_error(&format!("collection info {name}"), e))
        })
        .await?;
        let size = info
            .result
            .and_then(|r| r.config)
            .and_then(|c| c.params)
            .and_then(|p| p.vectors_config)
            .and_then(|v| v.config);
        match size {
            Some(VectorsConfigKind::Params(p)) if p.size as usize == dims => {}
            Some(VectorsConfigKind::Params(p)) => {
                return Err(PipelineError::Config(format!(
                    "Qdrant collection {name} holds {}-dimensional vectors but the embedding model gives {dims} \
                     (MINDORA_EMBED_DIMENSIONS); use a matching model or another app/collection",
                    p.size
                )))
            }
            _ => {
                return Err(PipelineError::Config(format!(
                    "Qdrant collection {name} does not have a single unnamed vector; cannot store {dims}-dimensional vectors in it"
                )))
            }
        }
        if let Ok(mut r) = self.ready.lock() {
            r.insert(name.to_string());
        }
        Ok(())
    }
}

#[async_trait]
impl VectorIndex for QdrantIndex {
    async fn write(
        &self,
        app: &App,
        meta: &ChunkMeta,
        chunks: &[Chunk],
        vectors: &[Vec<f32>],
    ) -> Result<IndexReport, PipelineError> {
        if chunks.len() != vectors.len() {
            return Err(PipelineError::InvalidArgument(format!(
                "{} chunks but {} vectors",
                chunks.len(),
                vectors.len()
            )));
        }
        let name = app.qdrant_collection();
        let dims = vectors.first().map_or(0, Vec::len);
        if dims > 0 {
            self.ensure_collection(&name, dims).await?;
        }
        let d = &meta.document;
        for (cs, vs) in chunks
            .chunks(UPSERT_BATCH)
            .zip(vectors.chunks(UPSERT_BATCH))
        {
            let points: Vec<PointStruct> = cs
                .iter()
                .zip(vs)
                .map(|(c, v)| {
                    let payload = json!({
                        "document_id": d.document_id.to_string(),
                        "chunk_index": c.index,
                        "text": c.text,
                        "heading_path": c.heading_path,
                        "page": c.page,
                        "app": d.app,
                        "bucket": d.bucket,
                        "key": d.key,
                        "file_name": d.file_name(),
                        "kind": meta.kind,
                        "pages": meta.pages,
                        "user_id": d.user_id,
                        "run_id": meta.run_id.to_string(),
                        "metadata": meta.metadata,
                    });
                    let payload = match payload {
                        serde_json::Value::Object(map) => Payload::from(map),
                        _ => Payload::new(),
                    };
                    PointStruct::new(c.id.to_string(), v.clone(), payload)
                })
                .collect();
            let span = self.span("upsert_points", &name);
            span.record("db.operation.batch.size", points.len() as u64);
            telemetry::in_client(span, async {
                self.traced()
                    .upsert_points(UpsertPointsBuilder::new(&name, points).wait(true))
                    .await
                    .map_err(|e| map_error(&format!("{}: upsert into {name}", d.file_name()), e))
            })
            .await?;
        }
        Ok(IndexReport {
            indexed: chunks.len(),
            removed: 0,
            target: name,
        })
    }

    async fn remove_other_runs(&self, app: &App, meta: &ChunkMeta) -> Result<(), PipelineError> {
        let name = app.qdrant_collection();
        let d = &meta.document;
        let filter = Filter {
            must: vec![Condition::matches("document_id", d.document_id.to_string())],
            must_not: vec![Condition::matches("run_id", meta.run_id.to_string())],
            ..Default::default()
        };
        // A collection this process made or checked exists; otherwise ask (a document with no
        // chunks on a fresh app must not fail on a missing collection).
        let known = self
            .ready
            .lock()
            .map(|r| r.contains(&name))
            .unwrap_or(false);
        let exists = known
            || telemetry::in_client(self.span("collection_exists", &name), async {
                self.traced()
                    .collection_exists(&name)
                    .await
                    .map_err(|e| map_error("collection exists", e))
            })
            .await?;
        if exists {
            telemetry::in_client(self.span("delete_points", &name), async {
                self.traced()
                    .delete_points(DeletePointsBuilder::new(&name).points(filter).wait(true))
                    .await
                    .map_err(|e| map_error(&format!("{}: delete stale points", d.file_name()), e))
            })
            .await?;
        }
        Ok(())
    }
}
