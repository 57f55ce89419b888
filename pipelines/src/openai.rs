//! Embed and analyze stages, both through async-openai against any OpenAI-compatible API.

use std::sync::Arc;
use std::time::Duration;

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::traits::RequestOptionsBuilder;
use async_openai::types::chat::{
    ChatCompletionRequestSystemMessageArgs, ChatCompletionRequestUserMessageArgs,
    CreateChatCompletionRequestArgs,
};
use async_openai::types::embeddings::{CreateEmbeddingRequestArgs, EmbeddingInput};
use async_openai::Client;
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::Semaphore;

use crate::config::PipelineConfig;
use crate::error::PipelineError;
use crate::model::Analysis;
use crate::telemetry;

/// Turns texts into vectors. A trait so a local model or a test double can stand in.
#[async_trait]
pub trait Embedder: Send + Sync {
    /// Length of every vector this embedder returns (the Qdrant collection's vector size).
    fn dimensions(&self) -> usize;
    /// Embeds `texts` in order; `progress` is called with the number done so far.
    async fn embed(
        &self,
        texts: &[String],
        progress: &(dyn Fn(usize) + Send + Sync),
    ) -> Result<Vec<Vec<f32>>, PipelineError>;
}

/// Produces a summary and keywords. Optional stage.
#[async_trait]
pub trait Analyzer: Send + Sync {
    /// Analyzes a document's text (the implementation decides how much of it to send).
    async fn analyze(&self, file: &str, text: &str) -> Result<Analysis, PipelineError>;
}

/// Where the client spans of the OpenAI-compatible API say they went: the base URL without
/// credentials and its host.
#[derive(Clone, Debug, Default)]
struct Endpoint {
    base: String,
    server: String,
}

impl Endpoint {
    fn of(config: &PipelineConfig) -> Self {
        let base = config.embed_base_url.as_deref().unwrap_or_default();
        Endpoint {
            base: telemetry::redacted_url(base.trim_end_matches('/'))
                .trim_end_matches('/')
                .to_string(),
            server: telemetry::server_of(base).0,
        }
    }

    /// CLIENT span of one request to `path` (its context goes into the request's headers).
    fn span(&self, operation: &'static str, model: &str, path: &str) -> tracing::Span {
        let url = format!("{}{path}", self.base);
        telemetry::gen_ai(operation, model, &url, &self.server)
    }
}

/// Builds the shared client for an OpenAI-compatible base URL.
pub fn client(config: &PipelineConfig) -> Result<Client<OpenAIConfig>, PipelineError> {
    let Some(base) = &config.embed_base_url else {
        return Err(PipelineError::NotConfigured {
            what: "the OpenAI-compatible API",
            var: "MINDORA_EMBED_BASE_URL",
        });
    };
    let cfg = OpenAIConfig::new()
        .with_api_base(base.trim_end_matches('/'))
        .with_api_key(
            config
                .embed_api_key
                .clone()
                .unwrap_or_else(|| "none".into()),
        );
    Ok(Client::with_config(cfg))
}

/// Maps a client error: 429/5xx and connection failures are transient, the rest (bad key,
/// unknown model, malformed request) are permanent.
fn map_error(what: &str, e: OpenAIError) -> PipelineError {
    match e {
        OpenAIError::ApiError(resp) => {
            let status = resp.status_code.as_u16();
            let retryable = status == 429 || status >= 500;
            PipelineError::Service {
                service: "OpenAI-compatible API",
                message: format!("{what}: HTTP {status}: {}", resp.api_error),
                retryable,
            }
        }
        OpenAIError::Reqwest(e) => {
            let status = e.status().map(|s| s.as_u16());
            let retryable = status.is_none_or(|s| s == 429 || s >= 500);
            PipelineError::Service {
                service: "OpenAI-compatible API",
                message: format!("{what}: {e}"),
                retryable,
            }
        }
        OpenAIError::JSONDeserialize(err, body) => PipelineError::transient(
            "OpenAI-compatible API",
            format!(
                "{what}: unexpected response ({err}): {}",
                body.chars().take(200).collect::<String>()
            ),
        ),
        other => PipelineError::permanent("OpenAI-compatible API", format!("{what}: {other}")),
    }
}

/// Retries a transient failure with exponential backoff (on top of the client's own retries).
async fn with_retries<T, F, Fut>(attempts: u32, mut f: F) -> Result<T, PipelineError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PipelineError>>,
{
    let mut n = 0;
    loop {
        match f().await {
            Err(e) if e.is_retryable() && n < attempts => {
                let delay = Duration::from_millis(200u64 << n.min(5)).min(Duration::from_secs(5));
                tracing::warn!(error = %e, attempt = n + 1, ?delay, "retrying");
                tokio::time::sleep(delay).await;
                n += 1;
            }
            other => return other,
        }
    }
}

/// [`Embedder`] over `/v1/embeddings`, batched, with a process-wide cap on requests in flight.
#[derive(Clone)]
pub struct OpenAiEmbedder {
    client: Client<OpenAIConfig>,
    endpoint: Endpoint,
    model: String,
    dimensions: usize,
    send_dimensions: bool,
    batch_size: usize,
    retries: u32,
    concurrency: usize,
    permits: Arc<Semaphore>,
}

impl OpenAiEmbedder {
    /// Builds the embedder; no request is made until the first batch.
    pub fn from_config(config: &PipelineConfig) -> Result<Self, PipelineError> {
        Ok(OpenAiEmbedder {
            client: client(config)?,
            endpoint: Endpoint::of(config),
            model: config.embed_model.clone(),
            dimensions: config.embed_dimensions as usize,
            send_dimensions: config.embed_send_dimensions,
            batch_size: config.embed_batch_size.max(1),
            retries: config.embed_retries,
            concurrency: config.embed_concurrency.max(1),
            permits: Arc::new(Semaphore::new(config.embed_concurrency.max(1))),
        })
    }

    async fn batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, PipelineError> {
        let _permit =
            self.permits.acquire().await.map_err(|_| {
                PipelineError::permanent("OpenAI-compatible API", "embedder shut down")
            })?;
        let mut req = CreateEmbeddingRequestArgs::default();
        req.model(self.model.clone())
            .input(EmbeddingInput::StringArray(texts.to_vec()));
        if self.send_dimensions {
            req.dimensions(self.dimensions as u32);
        }
        let req = req
            .build()
            .map_err(|e| PipelineError::InvalidArgument(e.to_string()))?;
        let span = self.endpoint.span("embeddings", &self.model, "/embeddings");
        span.record("mindora.embed.batch_size", texts.len() as u64);
        let resp = telemetry::in_client(span, async {
            self.client
                .embeddings()
                .headers(telemetry::http_headers())
                .create(req)
                .await
                .map_err(|e| map_error("embeddings", e))
        })
        .await?;
        if resp.data.len() != texts.len() {
            return Err(PipelineError::transient(
                "OpenAI-compatible API",
                format!(
                    "embeddings: asked for {} vectors, got {}",
                    texts.len(),
                    resp.data.len()
                ),
            ));
        }
        let mut data = resp.data;
        data.sort_by_key(|d| d.index);
        let mut out = Vec::with_capacity(data.len());
        for d in data {
            if d.embedding.len() != self.dimensions {
                return Err(PipelineError::Config(format!(
                    "embedding model {:?} returned {}-dimensional vectors but MINDORA_EMBED_DIMENSIONS is {}",
                    self.model,
                    d.embedding.len(),
                    self.dimensions
                )));
            }
            out.push(d.embedding);
        }
        Ok(out)
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn dimensions(&self) -> usize {
        self.dimensions
    }

    async fn embed(
        &self,
        texts: &[String],
        progress: &(dyn Fn(usize) + Send + Sync),
    ) -> Result<Vec<Vec<f32>>, PipelineError> {
        let done = std::sync::atomic::AtomicUsize::new(0);
        let batches: Vec<Vec<String>> = texts
            .chunks(self.batch_size)
            .map(<[String]>::to_vec)
            .collect();
        let done = &done;
        let batches: Vec<Vec<Vec<f32>>> = futures::stream::iter(batches)
            .map(|batch: Vec<String>| async move {
                let vectors = with_retries(self.retries, || self.batch(&batch)).await?;
                let n =
                    done.fetch_add(batch.len(), std::sync::atomic::Ordering::Relaxed) + batch.len();
                progress(n);
                Ok::<_, PipelineError>(vectors)
            })
            .buffered(self.concurrency)
            .try_collect()
            .await?;
        Ok(batches.into_iter().flatten().collect())
    }
}

/// [`Analyzer`] over `/v1/chat/completions`, asking for a JSON object with summary and keywords.
#[derive(Clone)]
pub struct OpenAiAnalyzer {
    client: Client<OpenAIConfig>,
    endpoint: Endpoint,
    model: String,
    retries: u32,
    /// Characters of the document sent (the start of it): bounds cost and context length.
    pub max_chars: usize,
}

impl OpenAiAnalyzer {
    /// Builds the analyzer when a chat model is configured.
    pub fn from_config(config: &PipelineConfig) -> Result<Option<Self>, PipelineError> {
        let Some(model) = &config.chat_model else {
            return Ok(None);
        };
        Ok(Some(OpenAiAnalyzer {
            client: client(config)?,
            endpoint: Endpoint::of(config),
            model: model.clone(),
            retries: config.embed_retries,
            max_chars: 12_000,
        }))
    }
}

const ANALYZE_PROMPT: &str = "You summarize documents. Answer with one JSON object and nothing else: \
{\"summary\": \"<at most 5 sentences, in the document's language>\", \"keywords\": [\"<up to 10 key terms>\"]}";

/// Reads the model's answer leniently: a JSON object anywhere in it, else the whole answer as
/// the summary.
pub(crate) fn parse_analysis(answer: &str) -> Analysis {
    let json = answer
        .find('{')
        .zip(answer.rfind('}'))
        .filter(|(a, b)| a < b)
        .and_then(|(a, b)| serde_json::from_str::<serde_json::Value>(&answer[a..=b]).ok());
    match json {
        Some(v) => Analysis {
            summary: v["summary"].as_str().unwrap_or_default().trim().to_string(),
            keywords: v["keywords"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(|s| s.trim().to_string()))
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        },
        None => Analysis {
            summary: answer.trim().to_string(),
            keywords: Vec::new(),
        },
    }
}

#[async_trait]
impl Analyzer for OpenAiAnalyzer {
    async fn analyze(&self, file: &str, text: &str) -> Result<Analysis, PipelineError> {
        let excerpt: String = text.chars().take(self.max_chars).collect();
        let build = || -> Result<_, OpenAIError> {
            CreateChatCompletionRequestArgs::default()
                .model(self.model.clone())
                .messages(vec![
                    ChatCompletionRequestSystemMessageArgs::default()
                        .content(ANALYZE_PROMPT)
                        .build()?
                        .into(),
                    ChatCompletionRequestUserMessageArgs::default()
                        .content(format!("File: {file}\n\n{excerpt}"))
                        .build()?
                        .into(),
                ])
                .build()
        };
        let req = build().map_err(|e| PipelineError::InvalidArgument(e.to_string()))?;
        let resp = with_retries(self.retries, || {
            let span = self.endpoint.span("chat", &self.model, "/chat/completions");
            telemetry::in_client(span, async {
                self.client
                    .chat()
                    .headers(telemetry::http_headers())
                    .create(req.clone())
                    .await
                    .map_err(|e| map_error("chat completion", e))
            })
        })
        .await?;
        let answer = resp
            .choices
            .first()
            .and_then(|c| c.message.content.clone())
            .unwrap_or_default();
        Ok(parse_analysis(&answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_json_inside_prose() {
        let a = parse_analysis(
            "Sure:\n{\"summary\": \"短い\", \"keywords\": [\"a\", \" b \", \"\"]}\n",
        );
        assert_eq!(a.summary, "短い");
        assert_eq!(a.keywords, vec!["a", "b"]);
        let b = parse_analysis("just text");
        assert_eq!(b.summary, "just text");
        assert!(b.keywords.is_empty());
    }
}
