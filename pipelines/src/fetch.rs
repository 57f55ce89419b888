//! Fetch stage: download one object from S3/MinIO.
//!
//! Memory is bounded per process, not per job: every download reserves its size from one
//! [`MemoryBudget`] of `MINDORA_MAX_OBJECT_BYTES` before the first byte arrives and keeps the
//! reservation until the bytes are dropped after extraction. With 8 concurrent jobs, one large
//! upload makes the others wait instead of pushing the replica past its container limit.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::PipelineConfig;
use crate::error::PipelineError;
use crate::model::{FetchedObject, MemoryReservation};
use crate::telemetry;

/// Budget unit: the semaphore counts KiB so that a `u32` permit count covers objects up to 4 TiB.
const UNIT: u64 = 1024;

/// Bytes of downloaded objects one process may hold at once, shared by all of its jobs.
#[derive(Clone, Debug)]
pub struct MemoryBudget {
    units: Arc<Semaphore>,
    total_units: u32,
}

impl MemoryBudget {
    /// A budget of `bytes` (rounded up to whole KiB, at least one).
    pub fn new(bytes: u64) -> Self {
        let total_units = u32::try_from(bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
        MemoryBudget {
            units: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
        }
    }

    /// Bytes currently free (for tests and diagnostics).
    pub fn available_bytes(&self) -> u64 {
        self.units.available_permits() as u64 * UNIT
    }

    /// Waits until `bytes` are free and reserves them; `None` when `bytes` exceed the whole
    /// budget (such an object can never be held).
    pub async fn reserve(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        let units = u32::try_from(bytes.div_ceil(UNIT).max(1)).ok()?;
        if units > self.total_units {
            return None;
        }
        self.units.clone().acquire_many_owned(units).await.ok()
    }
}

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
    budget: MemoryBudget,
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
            budget: MemoryBudget::new(config.max_object_bytes),
            server,
        })
    }

    /// The underlying client (tests use it to upload fixtures through the same settings).
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// The process-wide budget downloads reserve from.
    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
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
    /// One CLIENT span `S3.GetObject` over the request and the body download (the memory
    /// budget wait between them included: it holds the open response).
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
        // Reserve before reading: the declared size, or the per-object cap when the server sent
        // no Content-Length. An object over the whole budget is refused like one over the cap.
        let reserved = length.unwrap_or(max_bytes);
        let Some(permit) = self.budget.reserve(reserved).await else {
            return Err(PipelineError::ObjectTooLarge {
                bucket: bucket.into(),
                key: key.into(),
                size: reserved,
                limit: self.budget.total_units as u64 * UNIT,
            });
        };
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
            let so_far = (bytes.len() + part.len()) as u64;
            if so_far > max_bytes {
                return Err(too_large(so_far));
            }
            if so_far > reserved {
                return Err(PipelineError::transient(
                    "S3",
                    format!("s3://{bucket}/{key}: more bytes than the declared Content-Length {reserved}"),
                ));
            }
            hasher.update(&part);
            bytes.extend_from_slice(&part);
        }
        let sha256 = hex(&hasher.finalize());
        tracing::Span::current().record("http.response.body.size", bytes.len() as u64);
        Ok(FetchedObject {
            bytes,
            sha256,
            content_type,
            reservation: Some(MemoryReservation::new(permit)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn budget_is_shared_and_released_on_drop() {
        let budget = MemoryBudget::new(10 * UNIT);
        let a = budget.reserve(6 * UNIT).await.unwrap();
        assert_eq!(budget.available_bytes(), 4 * UNIT);
        // A second large object waits until the first is dropped.
        let waiting = {
            let b = budget.clone();
            tokio::spawn(async move { b.reserve(6 * UNIT).await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(a);
        assert!(waiting.await.unwrap().is_some());
        // More than the whole budget can never be held.
        assert!(budget.reserve(11 * UNIT).await.is_none());
    }
}
