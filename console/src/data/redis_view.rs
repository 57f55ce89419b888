//! What Redis holds, read as rq does: queues and their registries, workers, one job, one
//! page of a queue. Counts are `LLEN` / `ZCARD` (O(1)); pages are `LRANGE` / `ZRANGE` of
//! one window: nothing here walks a whole queue (except [`failed_ids`], which reads the
//! failed registry in chunks up to its cap for bulk actions).

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use mindora_sdk::wire::job::field;
use mindora_sdk::wire::serializer::{self, Serializer};
use mindora_sdk::wire::time::parse_utc;
use mindora_sdk::wire::{keys, result, trace, JobHash};
use mindora_sdk::RedisConn;
use serde::Serialize;

use super::repr::{repr, repr_args, repr_map};
use super::{DataError, JobView, Overview, QueueCounts, WorkerView};

/// Which list of a queue a page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registry {
    /// The queue list itself (`rq:queue:<name>`), head first.
    Queued,
    /// Running executions (`rq:wip:<name>`).
    Started,
    /// Waiting for their time, soonest first.
    Scheduled,
    /// Waiting for dependencies.
    Deferred,
    /// Failed for good, newest first.
    Failed,
    /// Finished, newest first.
    Finished,
    /// Canceled, newest first.
    Canceled,
}

impl Registry {
    /// Every list, in the overview's order.
    pub const ALL: [Registry; 7] = [
        Registry::Queued,
        Registry::Started,
        Registry::Scheduled,
        Registry::Deferred,
        Registry::Failed,
        Registry::Finished,
        Registry::Canceled,
    ];

    /// The lowercase name (as in URLs).
    pub fn as_str(self) -> &'static str {
        match self {
            Registry::Queued => "queued",
            Registry::Started => "started",
            Registry::Scheduled => "scheduled",
            Registry::Deferred => "deferred",
            Registry::Failed => "failed",
            Registry::Finished => "finished",
            Registry::Canceled => "canceled",
        }
    }

    /// The Redis key of this list for `queue`.
    pub fn key(self, queue: &str) -> String {
        match self {
            Registry::Queued => keys::queue(queue),
            Registry::Started => keys::started(queue),
            Registry::Scheduled => keys::scheduled(queue),
            Registry::Deferred => keys::deferred(queue),
            Registry::Failed => keys::failed(queue),
            Registry::Finished => keys::finished(queue),
            Registry::Canceled => keys::canceled(queue),
        }
    }
}

impl std::str::FromStr for Registry {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Registry::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown registry {s:?} (queued, started, scheduled, deferred, failed, finished, canceled)"))
    }
}

/// One row of a queue page: what a list shows without decoding results.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    pub id: String,
    /// rq's status, or `gone` when the hash expired while its id is still listed.
    pub status: String,
    pub function: String,
    pub description: String,
    pub created_at: Option<DateTime<Utc>>,
    pub enqueued_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub worker_name: Option<String>,
}

/// Every queue of rq's queue set with its counts, every registered worker, and whether
/// `rq suspend` is in force.
pub async fn overview(conn: &RedisConn) -> Result<Overview, DataError> {
    let mut c = conn.clone();
    let (queue_keys, worker_keys, suspended, paused): (
        BTreeSet<String>,
        BTreeSet<String>,
        bool,
        BTreeSet<String>,
    ) = redis::pipe()
        .smembers(keys::queues())
        .smembers(keys::workers())
        .exists(keys::suspended())
        .smembers(keys::paused_queues())
        .query_async(&mut c)
        .await?;
    let names: Vec<String> = queue_keys
        .iter()
        .filter_map(|k| keys::queue_name_from_key(k))
        .map(str::to_string)
        .collect();
    let mut pipe = redis::pipe();
    // (An empty pipeline is an error in the redis crate: each is skipped when empty.)
    for q in &names {
        pipe.llen(keys::queue(q));
        for r in &Registry::ALL[1..] {
            pipe.zcard(r.key(q));
        }
    }
    let counts: Vec<u64> = if names.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(&mut c).await?
    };
    let queues = names
        .into_iter()
        .zip(counts.chunks(Registry::ALL.len()))
        .map(|(name, n)| QueueCounts {
            paused: paused.contains(&name),
            queued: n[0],
            started: n[1],
            scheduled: n[2],
            deferred: n[3],
            failed: n[4],
            finished: n[5],
            canceled: n[6],
            name,
        })
        .collect();
    let workers = workers(&mut c, &worker_keys).await?;
    Ok(Overview {
        queues,
        workers,
        suspended,
    })
}

async fn workers(
    c: &mut RedisConn,
    worker_keys: &BTreeSet<String>,
) -> Result<Vec<WorkerView>, DataError> {
    let head = keys::worker("");
    let names: Vec<&str> = worker_keys
        .iter()
        .filter_map(|k| k.strip_prefix(head.as_str()))
        .collect();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for n in &names {
        pipe.hgetall(keys::worker(n))
            .smembers(keys::worker_executions(n));
    }
    let raw: Vec<(HashMap<String, String>, Vec<String>)> = {
        let flat: Vec<redis::Value> = pipe.query_async(c).await?;
        let mut out = Vec::with_capacity(names.len());
        let mut it = flat.into_iter();
        while let (Some(h), Some(e)) = (it.next(), it.next()) {
            out.push((
                redis::from_redis_value(h).unwrap_or_default(),
                redis::from_redis_value(e).unwrap_or_default(),
            ));
        }
        out
    };
    Ok(names
        .into_iter()
        .zip(raw)
        // A worker key whose hash expired (a dead worker not yet cleaned up) is skipped.
        .filter(|(_, (h, _))| !h.is_empty())
        .map(|(name, (h, execs))| worker_view(name, &h, &execs))
        .collect())
}

fn worker_view(name: &str, h: &HashMap<String, String>, execs: &[String]) -> WorkerView {
    let text = |k: &str| h.get(k).cloned().unwrap_or_default();
    let num = |k: &str| h.get(k).and_then(|v| v.trim().parse::<u64>().ok());
    let time = |k: &str| h.get(k).and_then(|v| parse_utc(v));
    // Our workers run many jobs at once: every live execution is a current job; Python
    // rq workers have one, in `current_job`.
    let mut current: Vec<String> = execs
        .iter()
        .map(|m| keys::job_id_from_composite(m).to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if current.is_empty() {
        if let Some(j) = h.get("current_job").filter(|j| !j.is_empty()) {
            current.push(j.clone());
        }
    }
    let mut version = text("version");
    if let Some(py) = h.get("python_version").filter(|p| !p.is_empty()) {
        let py = py.split_whitespace().next().unwrap_or(py);
        version = format!("rq {version}, Python {py}");
    }
    WorkerView {
        name: name.to_string(),
        state: text("state"),
        queues: text("queues")
            .split(',')
            .filter(|q| !q.is_empty())
            .map(str::to_string)
            .collect(),
        current_jobs: current,
        last_heartbeat: time("last_heartbeat"),
        version,
        hostname: text("hostname"),
        pid: h.get("pid").and_then(|p| p.trim().parse().ok()),
        birth: time("birth"),
        successful_jobs: num("successful_job_count").unwrap_or(0),
        failed_jobs: num("failed_job_count").unwrap_or(0),
    }
}

/// Reads a job hash; `NoSuchJob` when it is gone.
pub(crate) async fn job_hash(c: &mut RedisConn, id: &str) -> Result<JobHash, DataError> {
    let fields: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
        .arg(keys::job(id))
        .query_async(c)
        .await?;
    JobHash::from_fields(id, fields).map_err(|_| DataError::NoSuchJob(id.to_string()))
}

/// One job, decoded for its page: call, meta, result or traceback, dependencies,
/// dependents and trace id. Undecodable data does not fail the page: the field says why.
pub async fn job(conn: &RedisConn, id: &str) -> Result<JobView, DataError> {
    let mut c = conn.clone();
    let h = job_hash(&mut c, id).await?;
    let (entries, dependency_set, dependents): (redis::Value, BTreeSet<String>, BTreeSet<String>) =
        redis::pipe()
            .cmd("XREVRANGE")
            .arg(keys::results(id))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .smembers(keys::dependencies(id))
            .smembers(keys::dependents(id))
            .query_async(&mut c)
            .await?;
    let mut latest = stream_entries(entries);
    let status = h.text(field::STATUS).unwrap_or("created").to_string();
    let (ser, function, args, kwargs) = match h.call() {
        Ok((ser, call)) => (
            ser,
            call.function.clone(),
            repr_args(&call.args),
            repr_map(&call.kwargs),
        ),
        Err(e) => {
            // The call string still names the function (rq's `get_call_string`).
            let function = h
                .text(field::DESCRIPTION)
                .and_then(|d| d.split('(').next())
                .unwrap_or_default()
                .to_string();
            let why = format!("<undecodable: {e}>");
            (Serializer::Pickle, function, why.clone(), why)
        }
    };
    let meta_map = meta(&h, ser);
    let meta_text = match &meta_map {
        Ok(m) => repr_map(m),
        Err(e) => format!("<undecodable: {e}>"),
    };
    let trace_id = meta_map.as_ref().ok().and_then(|m| {
        trace::carrier_from_meta(m)
            .get(trace::TRACEPARENT)
            .and_then(|tp| tp.split('-').nth(1).map(str::to_string))
    });
    let (mut result_text, mut exc_info) = (None, None);
    if let Some((_, fields)) = latest.pop() {
        match result::parse_entry(&fields, ser) {
            Ok(entry) => {
                result_text = entry.return_value.as_ref().map(repr);
                exc_info = entry.exc_string;
            }
            Err(e) => result_text = Some(format!("<undecodable result: {e}>")),
        }
    }
    if exc_info.is_none() {
        // rq before results streams kept the traceback in the hash, zlib-compressed.
        exc_info = h
            .raw("exc_info")
            .filter(|b| !b.is_empty())
            .map(|b| String::from_utf8_lossy(&serializer::decompress_or_raw(b)).into_owned());
    }
    let mut dependency_ids = h.dependency_ids();
    for d in dependency_set {
        if !dependency_ids.contains(&d) {
            dependency_ids.push(d);
        }
    }
    Ok(JobView {
        id: id.to_string(),
        status,
        queue: h.origin().unwrap_or_default().to_string(),
        function,
        args,
        kwargs,
        meta: meta_text,
        description: h.text(field::DESCRIPTION).unwrap_or_default().to_string(),
        result: result_text,
        exc_info,
        dependency_ids,
        dependent_ids: dependents.into_iter().collect(),
        created_at: h.text(field::CREATED_AT).and_then(parse_utc),
        enqueued_at: h.enqueued_at(),
        started_at: h.started_at(),
        ended_at: h.ended_at(),
        worker_name: h.worker_name().map(str::to_string),
        retries_left: h.retries_left(),
        timeout: h.text(field::TIMEOUT).map(str::to_string),
        trace_id,
    })
}

/// `meta` decoded with the job's serializer (empty when absent).
fn meta(
    h: &JobHash,
    ser: Serializer,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let Some(raw) = h.raw(field::META).filter(|b| !b.is_empty()) else {
        return Ok(Default::default());
    };
    match ser.loads(raw).map_err(|e| e.to_string())? {
        serde_json::Value::Object(m) => Ok(m),
        other => Err(format!("meta is not a dict: {}", repr(&other))),
    }
}

/// A stream reply (`XRANGE`-shaped) as (id, fields) pairs; anything else is empty.
fn stream_entries(v: redis::Value) -> Vec<(String, HashMap<String, Vec<u8>>)> {
    redis::from_redis_value::<Vec<(String, HashMap<String, Vec<u8>>)>>(v).unwrap_or_default()
}

/// One page (`offset`, `limit`) of a queue or registry, with the list's total length.
pub async fn queue_jobs(
    conn: &RedisConn,
    queue: &str,
    which: Registry,
    offset: u64,
    limit: u64,
) -> Result<(u64, Vec<JobSummary>), DataError> {
    let mut c = conn.clone();
    let key = which.key(queue);
    let limit = limit.clamp(1, 1000);
    let (start, stop) = (offset as i64, (offset + limit) as i64 - 1);
    let (total, members): (u64, Vec<String>) = match which {
        Registry::Queued => {
            redis::pipe()
                .llen(&key)
                .lrange(&key, start as isize, stop as isize)
                .query_async(&mut c)
                .await?
        }
        Registry::Started | Registry::Scheduled | Registry::Deferred => {
            redis::pipe()
                .zcard(&key)
                .zrange(&key, start as isize, stop as isize)
                .query_async(&mut c)
                .await?
        }
        Registry::Failed | Registry::Finished | Registry::Canceled => {
            redis::pipe()
                .zcard(&key)
                .zrevrange(&key, start as isize, stop as isize)
                .query_async(&mut c)
                .await?
        }
    };
    let ids: Vec<String> = members
        .iter()
        .map(|m| match which {
            Registry::Started => keys::job_id_from_composite(m).to_string(),
            _ => m.clone(),
        })
        .collect();
    Ok((total, summaries(&mut c, &ids).await?))
}

const SUMMARY_FIELDS: [&str; 8] = [
    field::STATUS,
    field::DATA,
    field::DESCRIPTION,
    field::CREATED_AT,
    field::ENQUEUED_AT,
    field::ENDED_AT,
    field::WORKER_NAME,
    field::ORIGIN,
];

/// Light summaries of `ids` (one pipelined `HMGET` each).
pub async fn summaries(c: &mut RedisConn, ids: &[String]) -> Result<Vec<JobSummary>, DataError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.cmd("HMGET")
            .arg(keys::job(id))
            .arg(&SUMMARY_FIELDS[..]);
    }
    let rows: Vec<Vec<Option<Vec<u8>>>> = pipe.query_async(c).await?;
    Ok(ids
        .iter()
        .zip(rows)
        .map(|(id, row)| summary(id, &row))
        .collect())
}

fn summary(id: &str, row: &[Option<Vec<u8>>]) -> JobSummary {
    let text = |i: usize| {
        row.get(i)
            .and_then(|v| v.as_deref())
            .and_then(|b| std::str::from_utf8(b).ok())
            .filter(|s| !s.is_empty())
    };
    let exists = row.iter().any(Option::is_some);
    let function = row
        .get(1)
        .and_then(|v| v.as_deref())
        .map(|d| match serializer::decode_job_data(d) {
            Ok((_, call)) => call.function,
            Err(e) => format!("<undecodable: {e}>"),
        })
        .unwrap_or_default();
    JobSummary {
        id: id.to_string(),
        status: if exists {
            text(0).unwrap_or("created").to_string()
        } else {
            "gone".to_string()
        },
        function,
        description: text(2).unwrap_or_default().chars().take(300).collect(),
        created_at: text(3).and_then(parse_utc),
        enqueued_at: text(4).and_then(parse_utc),
        ended_at: text(5).and_then(parse_utc),
        worker_name: text(6).map(str::to_string),
    }
}

/// Ids in `queue`'s failed registry (newest first), those of `function` only when given,
/// at most `cap`: the targets of a bulk action when there is no history.
pub async fn failed_ids(
    conn: &RedisConn,
    queue: &str,
    function: Option<&str>,
    cap: usize,
) -> Result<Vec<String>, DataError> {
    const CHUNK: isize = 500;
    let mut c = conn.clone();
    let key = keys::failed(queue);
    let mut out = Vec::new();
    let mut start: isize = 0;
    while out.len() < cap {
        let ids: Vec<String> = redis::cmd("ZREVRANGE")
            .arg(&key)
            .arg(start)
            .arg(start + CHUNK - 1)
            .query_async(&mut c)
            .await?;
        if ids.is_empty() {
            break;
        }
        start += CHUNK;
        match function {
            None => out.extend(ids),
            Some(f) => {
                let found = summaries(&mut c, &ids).await?;
                out.extend(found.into_iter().filter(|s| s.function == f).map(|s| s.id));
            }
        }
    }
    out.truncate(cap);
    Ok(out)
}
