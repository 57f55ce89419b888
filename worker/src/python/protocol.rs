//! The framed protocol between the worker and a runner process, version 1 (the Python side
//! is `python/mindora_runner/protocol.py`).
//!
//! A frame is `u32 BE total length`, `u32 BE header length`, a JSON header whose `t` names
//! the message, then an opaque body (a serialized return value, an `exc_string`). Pickle
//! never crosses into Rust as anything but opaque bytes.
//!
//! Within a version, a message may gain optional fields (skipped when empty) and both sides
//! ignore header keys they do not know, so a runner of the same version without the field
//! still works; anything an older peer would misread needs a new version.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The protocol version this worker speaks; a runner saying another one is refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame accepted (return values can be big; this bounds a corrupt length).
pub const MAX_FRAME: usize = 512 * 1024 * 1024;

/// Messages to a runner.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ToRunner {
    /// Run the rq job `id` (the runner loads the job hash and decodes it itself).
    Job {
        /// Pool-wide request tag.
        tag: u64,
        /// rq job id.
        id: String,
        /// Queue it came from.
        origin: String,
        /// Dotted path of a custom rq serializer (else told from the bytes).
        #[serde(skip_serializing_if = "Option::is_none")]
        serializer: Option<String>,
        /// The job's timeout in seconds, for messages.
        timeout: u64,
        /// The W3C trace context (`traceparent`, `tracestate`) of the worker's span for this
        /// attempt: the runner makes it current around the call so the team's own
        /// OpenTelemetry instrumentation continues the trace. Absent when tracing is off.
        #[serde(skip_serializing_if = "HashMap::is_empty")]
        trace: HashMap<String, String>,
    },
    /// Run a job's `on_failure` / `on_stopped` callback after its own process was killed.
    Callback {
        /// Pool-wide request tag.
        tag: u64,
        /// rq job id.
        id: String,
        /// `failure` or `stopped`.
        kind: &'static str,
        /// Exception class the failure callback receives (`JobTimeoutException` or
        /// `ProcessDied`).
        exc_type: &'static str,
        /// Its message.
        message: String,
        /// Custom serializer path, as for jobs.
        #[serde(skip_serializing_if = "Option::is_none")]
        serializer: Option<String>,
        /// Run it only once the job's status reads this (`stopped`: the worker recorded a
        /// stop command, not a shutdown requeue).
        #[serde(skip_serializing_if = "Option::is_none")]
        if_status: Option<&'static str>,
    },
    /// Cancel an `async def` job (timeout or stop); the runner runs its callback and answers.
    Cancel {
        /// Tag of the job.
        tag: u64,
        /// `timeout` or `stopped`.
        reason: &'static str,
    },
    /// Finish and exit (sent when the process is idle).
    Exit,
}

/// Messages from a runner.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum FromRunner {
    /// First frame: who is speaking.
    Hello {
        /// Its protocol version.
        protocol: u32,
        /// Its pid.
        pid: u32,
        /// Python version.
        #[serde(default)]
        python: String,
        /// rq version.
        #[serde(default)]
        rq: String,
        /// How many `async def` jobs it runs at once.
        #[serde(default)]
        async_slots: usize,
    },
    /// The job's function is imported; `mode` says whether it holds the process.
    Started {
        /// Tag of the job.
        tag: u64,
        /// `sync` or `async`.
        mode: String,
    },
    /// A callback runs now, with its own timeout.
    Phase {
        /// Tag of the job.
        tag: u64,
        /// Callback timeout in seconds.
        timeout: u64,
    },
    /// Success; the body is `serializer.dumps(return_value)`.
    Ok {
        /// Tag of the job.
        tag: u64,
        /// RSS of the process after the job.
        #[serde(default)]
        rss: u64,
    },
    /// Failure; the body is rq's `exc_string`.
    Err {
        /// Tag of the job.
        tag: u64,
        /// Exception class name.
        #[serde(default)]
        exc_type: String,
        /// RSS of the process after the job.
        #[serde(default)]
        rss: u64,
    },
    /// Alive (sent every 2 s from a thread of its own).
    Hb {
        /// RSS now.
        #[serde(default)]
        rss: u64,
    },
}

/// A frame that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The pipe failed or ended inside a frame.
    #[error("reading from the runner: {0}")]
    Io(#[from] std::io::Error),
    /// Lengths that cannot be a frame.
    #[error("bad frame lengths {total}/{header}")]
    Lengths {
        /// Total length.
        total: usize,
        /// Header length.
        header: usize,
    },
    /// A header that is not one of the messages above.
    #[error("bad frame header: {0}")]
    Header(#[from] serde_json::Error),
}

/// Encodes one frame.
pub fn encode(msg: &ToRunner, body: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let head = serde_json::to_vec(msg)?;
    let total = 4 + head.len() + body.len();
    let mut out = Vec::with_capacity(4 + total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(body);
    Ok(out)
}

/// Reads one frame; `Ok(None)` at a clean end of stream (the process exited).
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<(FromRunner, Vec<u8>)>, FrameError> {
    let mut prefix = [0u8; 8];
    match r.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let total = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    let header = u32::from_be_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]) as usize;
    if !(4..=MAX_FRAME).contains(&total) || header > total - 4 {
        return Err(FrameError::Lengths { total, header });
    }
    let mut rest = vec![0u8; total - 4];
    r.read_exact(&mut rest).await?;
    let body = rest.split_off(header);
    Ok(Some((serde_json::from_slice(&rest)?, body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_bad_lengths_are_refused() {
        let frame = encode(&ToRunner::Exit, b"body").expect("encodes");
        assert_eq!(&frame[8..], br#"{"t":"exit"}body"#);
        let reply = {
            let head = br#"{"t":"ok","tag":7,"rss":5}"#;
            let mut f = ((4 + head.len() + 3) as u32).to_be_bytes().to_vec();
            f.extend_from_slice(&(head.len() as u32).to_be_bytes());
            f.extend_from_slice(head);
            f.extend_from_slice(b"abc");
            f
        };
        let mut r = reply.as_slice();
        let (msg, body) = read_frame(&mut r).await.expect("reads").expect("a frame");
        assert!(matches!(msg, FromRunner::Ok { tag: 7, rss: 5 }));
        assert_eq!(body, b"abc");
        assert!(read_frame(&mut r).await.expect("clean end").is_none());
        let mut bad: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 9];
        assert!(read_frame(&mut bad).await.is_err());
    }

    #[test]
    fn a_job_carries_its_trace_context_only_when_there_is_one() {
        let job = |trace: HashMap<String, String>| ToRunner::Job {
            tag: 1,
            id: "j".into(),
            origin: "q".into(),
            serializer: None,
            timeout: 5,
            trace,
        };
        let head = |msg: &ToRunner| {
            let frame = encode(msg, b"").expect("encodes");
            serde_json::from_slice::<serde_json::Value>(&frame[8..]).expect("json")
        };
        assert!(head(&job(HashMap::new())).get("trace").is_none());
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let with = head(&job(HashMap::from([("traceparent".into(), tp.into())])));
        assert_eq!(with["trace"], serde_json::json!({ "traceparent": tp }));
    }
}
