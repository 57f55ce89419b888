//! Errors of the SDK.

use crate::wire::job::JobHashError;
use crate::wire::serializer::CodecError;

/// Everything that can go wrong talking to an rq deployment.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// Redis refused or dropped the command.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The connection settings cannot work (bad URL, unreadable certificate, ...).
    #[error(transparent)]
    Connect(#[from] crate::connect::ConnectError),
    /// A value could not be encoded or a stored payload could not be decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The job hash is missing or malformed.
    #[error(transparent)]
    Job(#[from] JobHashError),
    /// A job did not reach a final status in time.
    #[error("job {job_id} still {status} after {waited_ms} ms")]
    Timeout {
        /// Job id.
        job_id: String,
        /// Last status seen.
        status: String,
        /// How long we waited.
        waited_ms: u128,
    },
    /// The job failed (or was stopped/canceled); carries rq's `exc_string`.
    #[error("job {job_id} {status}: {message}")]
    JobFailed {
        /// Job id.
        job_id: String,
        /// Final status.
        status: String,
        /// The error text the worker recorded.
        message: String,
    },
    /// Options that contradict each other.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
}
