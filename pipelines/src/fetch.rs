//! Fetch stage: download one object from S3/MinIO.

use async_trait::async_trait;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use sha2::{Digest, Sha256};

use crate::config::PipelineConfig;
use crate::error::PipelineError;
use crate::model::FetchedObject;

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
        if let Some(endpoint) = &config.s3_endpoint {
            builder = builder.endpoint_url(endpoint.clone());
        }
        Ok(S3Source {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
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
    async fn fetch(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: u64,
    ) -> Result<FetchedObject, PipelineError> {
        let resp = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error(bucket, key, e))?;
        let too_large = |size: u64| PipelineError::ObjectTooLarge {
            bucket: bucket.into(),
            key: key.into(),
            size,
            limit: max_bytes,
        };
        let declared = resp.content_length().unwrap_or(0).max(0) as u64;
        if declared > max_bytes {
            return Err(too_large(declared));
        }
        let content_type = resp.content_type().map(str::to_string);
        let mut body = resp.body;
        let mut bytes = Vec::with_capacity(declared as usize);
        let mut hasher = Sha256::new();
        while let Some(part) = body.try_next().await.map_err(|e| {
            PipelineError::transient(
                "S3",
                format!("s3://{bucket}/{key}: download interrupted: {e}"),
            )
        })? {
            if (bytes.len() + part.len()) as u64 > max_bytes {
                return Err(too_large((bytes.len() + part.len()) as u64));
            }
            hasher.update(&part);
            bytes.extend_from_slice(&part);
        }
        let sha256 = hex(&hasher.finalize());
        Ok(FetchedObject {
            bytes,
            sha256,
            content_type,
        })
    }
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
