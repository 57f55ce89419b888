//! Issue 24 part 4, replay safety: the real `mindora-worker` is `kill -9`ed while
//! `pipelines.process_document` (enqueued by Python rq) is embedding, while an Elasticsearch
//! bulk is in flight and while a Qdrant upsert is in flight (each after earlier batches were
//! written); a new worker recovers the job through the liveness lease and retries it to
//! success. Then Elasticsearch and Qdrant hold exactly the document's chunks (the ids of an
//! uncrashed run of the same bytes, no duplicates, none missing, all from the final run),
//! PostgreSQL has the document done and one succeeded run, and the notification went out once,
//! on RabbitMQ and on the app's Redis channel.
//!
//! Black box: the stand-ins hold the answer of the N-th request of a kind (the request itself is
//! applied, as the real service would apply what it read), whatever batches the pipeline sends.
//!
//! Needs what `pipelines_e2e.rs` needs (s3s-fs, the rq venvs, the `mindora-worker` binary).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use futures::StreamExt;
use mindora_tests::pipelines::e2e::Env;
use mindora_tests::pipelines::{fakes, long_pdf, pg, Gate, REDIS_URL};
use qdrant_client::qdrant as q;
use serde_json::{json, Value};
use sqlx::Row;

/// Pages of the document: enough chunks (about 6 a page at `--chunk-size 200`) for several
/// Elasticsearch bulks (500 chunks each) and Qdrant upserts (256 points each).
const PAGES: usize = 110;

/// Short lease so the dead worker's job is recovered within seconds; small chunks for many
/// batches.
const WORKER_ARGS: &[&str] = &[
    "--lease-secs",
    "2",
    "--chunk-size",
    "200",
    "--chunk-overlap",
    "40",
    "--embed-batch-size",
    "32",
];

const RQ: &str = "3.0";
const WAIT: Duration = Duration::from_secs(240);

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// The third embeddings request is held (two batches were embedded).
    Embed,
    /// The second bulk request is held (one bulk was written, the held one too).
    Fulltext,
    /// The second upsert is held (Elasticsearch complete, one upsert written, the held one too).
    Vectors,
}

impl Phase {
    fn gate<'a>(&self, e: &'a Env) -> (&'a Gate, &'static str, usize) {
        match self {
            Phase::Embed => (&e.openai.gate, "/embeddings", 2),
            Phase::Fulltext => (&e.es.gate, "/_bulk", 1),
            Phase::Vectors => (&e.qdrant.gate, "/qdrant.Points/Upsert", 1),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_embed_then_retry_indexes_each_chunk_once() -> Result<()> {
    kill_then_retry(Phase::Embed).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_elasticsearch_bulk_then_retry_indexes_each_chunk_once() -> Result<()> {
    kill_then_retry(Phase::Fulltext).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_qdrant_upsert_then_retry_indexes_each_chunk_once() -> Result<()> {
    kill_then_retry(Phase::Vectors).await
}

/// Enqueues `key` and prints the job id.
const ENQUEUE: &str = r#"
from rq import Retry
job = q.enqueue("pipelines.process_document", key=P["key"], user_id="u-7",
                options={"metadata": {"team": "ops"}}, retry=Retry(max=2), job_timeout=900, **KW)
print(json.dumps({"id": job.id}))
"#;

/// Waits for job `id` to end; prints its outcome.
const WATCH: &str = r#"
job = Job.fetch(P["id"], connection=r)
st, seen = watch(job, timeout=P["timeout"])
o = outcome(job)
o["retries_left"] = job.retries_left
print(json.dumps(o, default=str))
"#;

async fn kill_then_retry(phase: Phase) -> Result<()> {
    let e = Env::new().await?;
    let bytes = long_pdf(PAGES);
    let (key, reference_key) = ("crash/handbook.pdf", "crash/reference.pdf");
    e.s3.put(&e.bucket, key, bytes.clone()).await;
    e.s3.put(&e.bucket, reference_key, bytes).await;
    let redis = redis::Client::open(REDIS_URL)?;
    let mut pubsub = redis.get_async_pubsub().await?;
    pubsub
        .subscribe(format!("mindora:{}:notifications", e.app))
        .await?;

    let (gate, path, pass) = phase.gate(&e);
    gate.hold_after(path, pass);
    let mut victim = e.start_worker_args("w-replay-victim", WORKER_ARGS, &[])?;
    let id = e.python(RQ, json!({"key": key}), ENQUEUE)?["id"]
        .as_str()
        .context("job id")?
        .to_string();
    gate.wait_held(1, WAIT).await?;
    let at_kill = snapshot(&e);
    victim.signal("KILL")?;
    victim.wait_exit(Duration::from_secs(5))?;
    // What the dead worker sent was applied; its answers go nowhere.
    gate.release();
    eprintln!("{phase:?}: killed with {at_kill}");

    let mut survivor = e.start_worker_args("w-replay-survivor", WORKER_ARGS, &[])?;
    let timeout = json!(WAIT.as_secs());
    let out = e.python(RQ, json!({"id": id, "timeout": timeout}), WATCH)?;
    ensure!(out["status"] == "finished", "{phase:?}: {out:#}");
    ensure!(out["worker"] == "w-replay-survivor", "{out:#}");
    ensure!(out["retries_left"] == 1, "one retry used: {out:#}");
    let rv = &out["return_value"];
    let doc_id = rv["document_id"].as_str().context("document_id")?;
    let run_id = rv["run_id"].as_str().context("run_id")?;
    let chunks = rv["chunks"].as_u64().context("chunks")? as usize;
    ensure!(chunks > 500, "{chunks} chunks: too few for several batches");
    ensure!(rv["indexed"]["fulltext"]["indexed"] == chunks, "{rv:#}");
    ensure!(rv["indexed"]["vectors"]["indexed"] == chunks, "{rv:#}");

    // The same bytes, processed without a crash: the chunks the index must hold.
    let ref_id = e.python(RQ, json!({"key": reference_key}), ENQUEUE)?["id"]
        .as_str()
        .context("job id")?
        .to_string();
    let reference = e.python(RQ, json!({"id": ref_id, "timeout": timeout}), WATCH)?;
    ensure!(reference["status"] == "finished", "{reference:#}");
    let ref_doc = reference["return_value"]["document_id"]
        .as_str()
        .context("reference document_id")?;
    ensure!(
        reference["return_value"]["chunks"] == chunks,
        "{reference:#}"
    );

    let es = es_chunks(&e, doc_id, run_id)?;
    let es_ref = es_chunks(
        &e,
        ref_doc,
        reference["return_value"]["run_id"].as_str().unwrap_or(""),
    )?;
    ensure!(
        es.len() == chunks,
        "{} ES docs for {chunks} chunks",
        es.len()
    );
    let texts: Vec<&String> = es.values().map(|c| &c.text).collect();
    let ref_texts: Vec<&String> = es_ref.values().map(|c| &c.text).collect();
    ensure!(
        texts == ref_texts,
        "the indexed chunks differ from an uncrashed run's"
    );
    let qd = qdrant_points(&e, doc_id, run_id)?;
    ensure!(
        qd == es
            .iter()
            .map(|(i, c)| (*i, c.id.clone()))
            .collect::<BTreeMap<_, _>>(),
        "Qdrant points differ from the Elasticsearch documents"
    );

    check_postgres(&e, doc_id, run_id, chunks, &es).await?;
    check_notifications(&e, &mut pubsub, &[doc_id, ref_doc]).await?;
    e.assert_no_violations();
    ensure!(survivor.alive(), "the survivor died");
    Ok(())
}

/// One chunk as Elasticsearch holds it.
struct EsChunk {
    id: String,
    text: String,
}

/// What the stand-ins held when the worker was killed.
fn snapshot(e: &Env) -> String {
    let es: usize =
        e.es.state
            .lock()
            .unwrap()
            .indices
            .values()
            .map(|d| d.len())
            .sum();
    let points: usize = e
        .qdrant
        .state
        .lock()
        .unwrap()
        .points
        .values()
        .map(|p| p.len())
        .sum();
    let texts = e.openai.state.lock().unwrap().embedded_texts;
    format!("{texts} texts embedded, {es} ES documents, {points} Qdrant points")
}

/// The document's Elasticsearch documents by chunk index: each index once, `_id` equal to its
/// `chunk_id`, every one from `run_id`.
fn es_chunks(e: &Env, doc_id: &str, run_id: &str) -> Result<BTreeMap<u64, EsChunk>> {
    let docs = e.es.state.lock().unwrap().docs_of(doc_id);
    let mut out = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for (path, src) in docs {
        let id = path.rsplit('/').next().unwrap_or_default().to_string();
        ensure!(
            src["chunk_id"] == id.as_str(),
            "{path}: chunk_id {}",
            src["chunk_id"]
        );
        ensure!(
            src["run_id"] == run_id,
            "{path} from run {} (final run {run_id})",
            src["run_id"]
        );
        ensure!(ids.insert(id.clone()), "chunk {id} twice (in two indices?)");
        let index = src["chunk_index"].as_u64().context("chunk_index")?;
        let text = src["text"].as_str().unwrap_or_default().to_string();
        ensure!(
            out.insert(index, EsChunk { id, text }).is_none(),
            "chunk index {index} twice"
        );
    }
    ensure!(
        out.keys().copied().eq(0..out.len() as u64),
        "chunk indices are not 0..{}",
        out.len()
    );
    Ok(out)
}

fn payload(p: &std::collections::HashMap<String, q::Value>, key: &str) -> Option<Value> {
    match p.get(key).and_then(|v| v.kind.as_ref())? {
        q::value::Kind::StringValue(s) => Some(json!(s)),
        q::value::Kind::IntegerValue(i) => Some(json!(i)),
        _ => None,
    }
}

/// The document's Qdrant points: chunk index → point id, every one from `run_id`, each vector
/// the embedding of its own text.
fn qdrant_points(e: &Env, doc_id: &str, run_id: &str) -> Result<BTreeMap<u64, String>> {
    let st = e.qdrant.state.lock().unwrap();
    let points = st.points.get(&e.collection()).context("no collection")?;
    let mut out = BTreeMap::new();
    for (id, (vector, pl)) in points {
        if payload(pl, "document_id") != Some(json!(doc_id)) {
            continue;
        }
        ensure!(
            payload(pl, "run_id") == Some(json!(run_id)),
            "point {id} from another run"
        );
        let index = payload(pl, "chunk_index")
            .and_then(|v| v.as_u64())
            .context("chunk_index")?;
        let text = payload(pl, "text").context("text")?;
        let want = fakes::fake_vector(text.as_str().unwrap_or_default(), vector.len());
        ensure!(
            *vector == want,
            "point {id}: the vector is not its text's embedding"
        );
        ensure!(
            out.insert(index, id.clone()).is_none(),
            "chunk index {index} twice in Qdrant"
        );
    }
    Ok(out)
}

/// The document row is done and names the final run; that run is the one succeeded run and
/// its audit trail is complete; stored chunks, if the pipeline stores any, are exactly these.
async fn check_postgres(
    e: &Env,
    doc_id: &str,
    run_id: &str,
    chunks: usize,
    es: &BTreeMap<u64, EsChunk>,
) -> Result<()> {
    let pool = pg().await;
    let s = e.schema();
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT status, chunks, last_run_id::text AS run, error FROM \"{s}\".documents WHERE id = $1::uuid"
    )))
    .bind(doc_id)
    .fetch_one(&pool)
    .await?;
    ensure!(row.get::<String, _>("status") == "done");
    ensure!(row.get::<Option<i32>, _>("chunks") == Some(chunks as i32));
    ensure!(row.get::<Option<String>, _>("run").as_deref() == Some(run_id));
    ensure!(row.get::<Option<String>, _>("error").is_none());
    let runs: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id::text, status FROM \"{s}\".processing_runs WHERE document_id = $1::uuid"
    )))
    .bind(doc_id)
    .fetch_all(&pool)
    .await?;
    let succeeded: Vec<&String> = runs
        .iter()
        .filter(|r| r.1 == "succeeded")
        .map(|r| &r.0)
        .collect();
    ensure!(succeeded == [run_id], "runs {runs:?}");
    let trail: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT to_status FROM \"{s}\".audit_log WHERE document_id = $1::uuid AND run_id = $2::uuid ORDER BY id"
    )))
    .bind(doc_id)
    .bind(run_id)
    .fetch_all(&pool)
    .await?;
    let done = [
        "fetched",
        "extracted",
        "chunked",
        "embedded",
        "indexed",
        "done",
    ];
    ensure!(
        trail.ends_with(&done.map(String::from)),
        "audit trail {trail:?}"
    );
    let done_rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{s}\".audit_log WHERE document_id = $1::uuid AND to_status = 'done'"
    )))
    .bind(doc_id)
    .fetch_one(&pool)
    .await?;
    ensure!(done_rows == 1, "{done_rows} 'done' audit rows");
    let stored: Vec<(i32, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT chunk_index, chunk_id::text FROM \"{s}\".chunks WHERE document_id = $1::uuid ORDER BY chunk_index"
    )))
    .bind(doc_id)
    .fetch_all(&pool)
    .await?;
    let want: Vec<(i32, String)> = es.iter().map(|(i, c)| (*i as i32, c.id.clone())).collect();
    ensure!(
        stored.is_empty() || stored == want,
        "{} chunk rows stored",
        stored.len()
    );
    Ok(())
}

/// One notification per document on RabbitMQ and one on the Redis channel, nothing more.
async fn check_notifications(
    e: &Env,
    pubsub: &mut redis::aio::PubSub,
    docs: &[&str],
) -> Result<()> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = e.notify_queue_len().await?;
    ensure!(
        waiting as usize == docs.len(),
        "{waiting} notifications for {} documents",
        docs.len()
    );
    let mut amqp = Vec::new();
    for _ in 0..waiting {
        let msg = e.notification().await?;
        ensure!(
            msg["event"] == "document.processed" && msg["status"] == "done",
            "{msg:#}"
        );
        amqp.push(msg["document_id"].as_str().unwrap_or_default().to_string());
    }
    amqp.sort();
    let mut want: Vec<String> = docs.iter().map(|d| d.to_string()).collect();
    want.sort();
    ensure!(amqp == want, "RabbitMQ notifications for {amqp:?}");
    let mut published = Vec::new();
    let mut stream = pubsub.on_message();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), stream.next()).await {
        let v: Value = serde_json::from_str(&m.get_payload::<String>()?)?;
        published.push(v["document_id"].as_str().unwrap_or_default().to_string());
    }
    published.sort();
    ensure!(published == want, "Redis notifications for {published:?}");
    Ok(())
}
