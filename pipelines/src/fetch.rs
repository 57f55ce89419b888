//! Fetch stage: download one object from S3/MinIO into a temporary file.
//!
//! The body is streamed to disk while it is hashed and checked against
//! `MINDORA_MAX_OBJECT_BYTES`, so an object's bytes never sit in memory whole: a job's memory is
//! bounded by the pipeline's batches, not by the document (issue 24). The temporary file lives
//! in `MINDORA_TMP_DIR` (else `TMPDIR`, else `/tmp`) and is removed when the job drops it.

use std::path::PathBuf;

use async_trait::async_trait;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::config::PipelineConfig;
use crate::error::PipelineError;
use crate::model::FetchedObject;
use crate::telemetry;

/// Source of document bytes. A trait so tests and other stores (local files, GCS) can stand in.
#[async_trait]
pub trait ObjectSource: Send + Sync {
    /// Downloads `bucket/key`, refusing objects over `max_bytes`.
    async fn fetch(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: u64,
    ) -> Result<FetchedObject, PipelineError>;
}

/// [`ObjectSource`] over the S3 protocol (AWS, MinIO, s3s, Ceph…).
#[derive(Clone, Debug)]
pub struct S3Source {
    client: aws_sdk_s3::Client,
    /// Where downloads go; `None`: the system's temporary directory.
    tmp_dir: Option<PathBuf>,
    /// `server.address` of the client spans: the endpoint's host, or AWS's regional host.
    server: String,
}

impl S3Source {
    /// Builds the client from config; no request is made until the first fetch.
    pub fn from_config(config: &PipelineConfig) -> Result<Self, PipelineError> {
        let (Some(access), Some(secret)) = (&config.s3_access_key, &config.s3_secret_key) else {
            return Err(PipelineError::NotConfigured {
                what: "S3 credentials",
                var: "MINDORA_S3_ACCESS_KEY and MINDORA_S3_SECRET_KEY",
            });
        };
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.s3_region.clone()))
            .credentials_provider(Credentials::new(
                access.clone(),
                secret.clone(),
                None,
                None,
                "mindora-config",
            ))
            .force_path_style(config.s3_force_path_style);
        let mut server = format!("s3.{}.amazonaws.com", config.s3_region);
        if let Some(endpoint) = &config.s3_endpoint {
            builder = builder.endpoint_url(endpoint.clone());
            server = telemetry::server_of(endpoint).0;
        }
        Ok(S3Source {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            tmp_dir: config.tmp_dir.clone(),
            server,
        })
    }

    /// The underlying client (tests use it to upload fixtures through the same settings).
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }
}

/// Turns an SDK error into a pipeline error: a missing key or bucket is permanent, transport
/// problems and 5xx/503-SlowDown are transient.
fn s3_error<E, R>(bucket: &str, key: &str, err: SdkError<E, R>) -> PipelineError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().unwrap_or("");
            if matches!(code, "NoSuchKey" | "NotFound") {
                return PipelineError::ObjectNotFound {
                    bucket: bucket.into(),
                    key: key.into(),
                };
            }
            if code == "NoSuchBucket" {
                return PipelineError::permanent(
                    "S3",
                    format!("s3://{bucket}/{key}: bucket {bucket:?} does not exist"),
                );
            }
            let msg = format!(
                "s3://{bucket}/{key}: {} {}",
                code,
                e.message().unwrap_or("request failed")
            );
            let retryable = matches!(
                code,
                "SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout"
            );
            PipelineError::Service {
                service: "S3",
                message: msg,
                retryable,
            }
        }
        _ => PipelineError::transient(
            "S3",
            format!(
                "s3://{bucket}/{key}: {}",
                aws_sdk_s3::error::DisplayErrorContext(&err)
            ),
        ),
    }
}

#[async_trait]
impl ObjectSource for S3Source {
    /// One CLIENT span `S3.GetObject` over the request and the body download.
    async fn fetch(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: u64,
    ) -> Result<FetchedObject, PipelineError> {
        let span = telemetry::s3("GetObject", bucket, key, &self.server);
        telemetry::in_client(span, self.get_object(bucket, key, max_bytes)).await
    }
}

impl S3Source {
    async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: u64,
    ) -> Result<FetchedObject, PipelineError> {
        let request = self.client.get_object().bucket(bucket).key(key);
        // The client span's context, added before signing (so it is signed like any header).
        let carrier = telemetry::context();
        let sent = if carrier.is_empty() {
            request.send().await
        } else {
            request
                .customize()
                .mutate_request(move |r| {
                    for (k, v) in &carrier {
                        let _ = r.headers_mut().try_insert(k.clone(), v.clone());
                    }
                })
                .send()
                .await
        };
        let resp = sent.map_err(|e| s3_error(bucket, key, e))?;
        let too_large = |size: u64| PipelineError::ObjectTooLarge {
            bucket: bucket.into(),
            key: key.into(),
            size,
            limit: max_bytes,
        };
        let length = resp.content_length().filter(|n| *n >= 0).map(|n| n as u64);
        let declared = length.unwrap_or(0);
        if declared > max_bytes {
            return Err(too_large(declared));
        }
        let content_type = resp.content_type().map(str::to_string);
        let file = self.temp_file()?;
        let (std_file, path) = file.into_parts();
        let mut out =
            tokio::io::BufWriter::with_capacity(256 * 1024, tokio::fs::File::from_std(std_file));
        let mut body = resp.body;
        let mut size = 0u64;
        let mut hasher = Sha256::new();
        while let Some(part) = body.try_next().await.map_err(|e| {
            PipelineError::transient(
                "S3",
                format!("s3://{bucket}/{key}: download interrupted: {e}"),
            )
        })? {
            size += part.len() as u64;
            if size > max_bytes {
                return Err(too_large(size));
            }
            if length.is_some_and(|n| size > n) {
                return Err(PipelineError::transient(
                    "S3",
                    format!("s3://{bucket}/{key}: more bytes than the declared Content-Length {declared}"),
                ));
            }
            hasher.update(&part);
            out.write_all(&part).await.map_err(disk_error)?;
        }
        out.flush().await.map_err(disk_error)?;
        let sha256 = hex(&hasher.finalize());
        tracing::Span::current().record("http.response.body.size", size);
        Ok(FetchedObject {
            file: path,
            size,
            sha256,
            content_type,
        })
    }

    /// A new temporary file in `MINDORA_TMP_DIR` or the system's temporary directory.
    fn temp_file(&self) -> Result<tempfile::NamedTempFile, PipelineError> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("mindora-object-");
        match &self.tmp_dir {
            Some(dir) => builder.tempfile_in(dir),
            None => builder.tempfile(),
        }
        .map_err(disk_error)
    }
}

/// A full or failing temporary directory: transient (space frees up as other jobs finish),
/// naming the setting that moves it.
fn disk_error(e: std::io::Error) -> PipelineError {
    PipelineError::transient(
        "temporary files",
        format!("writing the downloaded object: {e} (set MINDORA_TMP_DIR or TMPDIR to a directory with room)"),
    )
}

/// Lowercase hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
