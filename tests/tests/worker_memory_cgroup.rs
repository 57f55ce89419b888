//! Issue 23: the worker's memory limit proven at the limit. The real `mindora-worker` (release
//! build, with its `mindora-pdf` helper beside it) runs inside a cgroup v1 memory cgroup of
//! exactly `MEM_WORKER` from `.env.example`, with the compose settings of that file
//! (`WORKER_CONCURRENCY`, `WORKER_MAX_OBJECT_BYTES`, `WORKER_DB_MAX_CONNECTIONS`, the embedding
//! model and dimensions; chunking and the rest at the code defaults, as compose leaves them),
//! against a real S3 server (s3s-fs), PostgreSQL, RabbitMQ and the wire-checking OpenAI /
//! Elasticsearch / Qdrant stand-ins, jobs enqueued by Python rq. Maximum-size documents:
//!
//! 1. `text`: one `WORKER_MAX_OBJECT_BYTES` plain-text document alone;
//! 2. `pdf`: one PDF just under that size alone (generated prose, text layer on every page);
//! 3. `concurrent`: `WORKER_CONCURRENCY` jobs at once, the text document first, then PDFs.
//!
//! Each phase must end with every job `finished`, no OOM kill and the worker alive; it prints
//! the kernel's peak charge (`memory.max_usage_in_bytes`) against the limit, the sampled peak
//! anonymous memory and each process's peak RSS. Opt-in (`#[ignore]`, minutes of runtime and
//! root for the cgroup): run `bash infra/tests/worker-memory-cgroup.sh`, which builds the
//! release binaries and skips with a message where no memory cgroup can be made.
//!
//! Environment: `MINDORA_WORKER_BIN` (the worker to run; the script passes the release one),
//! `MINDORA_MEMTEST_PHASES` (default `text,pdf,concurrent`), `MINDORA_MEMTEST_OBJECT_BYTES`
//! (document size, default the cap: smaller only to try the harness), `MINDORA_MEMTEST_LIMIT`,
//! `_CAP`, `_CONCURRENCY` (other settings than `.env.example`'s: the Kubernetes ConfigMap's, or
//! a lower limit to find the real need).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mindora_tests::cgroup::{self, MemCgroup};
use mindora_tests::pipelines::e2e::{Env, RQ_QUEUE};
use mindora_tests::pipelines::{fixtures, Services, PG_URL, S3_KEY, S3_SECRET};
use mindora_tests::{repo_root, RedisDb, WorkerProcess, RQ_VERSIONS};
use serde_json::{json, Value};

const MIB: f64 = 1024.0 * 1024.0;

/// `KEY=VALUE` lines of `.env.example` (the compose defaults).
fn env_example() -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(repo_root().join(".env.example"))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

fn get<'a>(env: &'a BTreeMap<String, String>, key: &str) -> Result<&'a str> {
    env.get(key)
        .map(String::as_str)
        .with_context(|| format!("{key} missing from .env.example"))
}

fn override_u64(var: &str) -> Result<Option<u64>> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(Some(cgroup::parse_size(&v)?)),
        _ => Ok(None),
    }
}

/// A prose PDF of at most `max` bytes and at least 99% of it, cached in the target dir (the
/// generator is deterministic; a 100 MiB one takes a while in a debug build).
fn big_pdf(max: u64) -> Result<Vec<u8>> {
    let dir = std::env::current_exe()?
        .parent()
        .and_then(|d| d.parent())
        .context("no target dir")?
        .join("memtest-docs");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("prose-v1-{max}.pdf"));
    if let Ok(b) = std::fs::read(&path) {
        return Ok(b);
    }
    let sample = fixtures::pdf(
        &(1..=200)
            .map(|p| fixtures::prose_page(p, 12))
            .collect::<Vec<_>>(),
    );
    let mut pages = (max as f64 * 0.995 / (sample.len() as f64 / 200.0)) as usize;
    loop {
        let doc = fixtures::pdf(
            &(1..=pages)
                .map(|p| fixtures::prose_page(p, 12))
                .collect::<Vec<_>>(),
        );
        let len = doc.len() as u64;
        if len <= max && len * 100 >= max * 99 {
            std::fs::write(&path, &doc)?;
            return Ok(doc);
        }
        let next = (pages as f64 * max as f64 * 0.995 / len as f64) as usize;
        if next == pages || pages < 2 {
            bail!("cannot fit a PDF to {max} bytes ({pages} pages gave {len})");
        }
        pages = next;
    }
}

/// Plain text of exactly `size` bytes: numbered English prose lines (no two chunks alike).
fn big_text(size: u64) -> Vec<u8> {
    let mut out = String::with_capacity(size as usize + 200);
    let mut n = 0u64;
    while (out.len() as u64) < size {
        n += 1;
        out.push_str(&format!(
            "Paragraph {n}: the quarterly report covers revenue, costs and outlook in detail for region {}.\n",
            n % 97
        ));
        if n.is_multiple_of(8) {
            out.push('\n');
        }
    }
    out.truncate(size as usize);
    out.into_bytes()
}

struct Setup {
    limit: u64,
    concurrency: usize,
    cap: u64,
    doc_bytes: u64,
    worker_bin: PathBuf,
}

/// Enqueues `keys` as `pipelines.process_document` jobs (rq's own client), returns their ids.
fn enqueue(e: &Env, keys: &[String]) -> Result<Vec<String>> {
    let out = e.python(
        RQ_VERSIONS[RQ_VERSIONS.len() - 1],
        json!({"keys": keys}),
        r#"
jobs = [q.enqueue("pipelines.process_document", key=k, user_id="memtest", job_timeout=3600, **KW)
        for k in P["keys"]]
print(json.dumps([j.id for j in jobs]))
"#,
    )?;
    serde_json::from_value(out).context("job ids")
}

/// What Python rq sees of each job once it has ended.
fn outcomes(e: &Env, ids: &[String]) -> Result<Vec<Value>> {
    let out = e.python(
        RQ_VERSIONS[RQ_VERSIONS.len() - 1],
        json!({"ids": ids}),
        r#"
out = []
for i in P["ids"]:
    o = outcome(Job.fetch(i, connection=r))
    rv = o["return_value"] if isinstance(o["return_value"], dict) else {}
    out.append({"status": o["status"], "key": rv.get("key"), "kind": rv.get("kind"),
                "size_bytes": rv.get("size_bytes"), "pages": rv.get("pages"),
                "chunks": rv.get("chunks"), "timings_ms": rv.get("timings_ms"),
                "exc": (o["exc"] or "")[-800:]})
print(json.dumps(out))
"#,
    )?;
    serde_json::from_value(out).context("outcomes")
}

/// One phase: enqueue, wait for every job to end (or the worker to die), report and check.
fn phase(
    name: &str,
    e: &Env,
    cg: &MemCgroup,
    worker: &mut WorkerProcess,
    keys: &[String],
    s: &Setup,
) -> Result<()> {
    cg.reset_peaks()?;
    let baseline = cg.read_u64("memory.usage_in_bytes")?;
    let started = Instant::now();
    let ids = enqueue(e, keys)?;
    let sampler = cg.sampler(Duration::from_millis(200));
    let mut conn = e.db.conn()?;
    let deadline = started + Duration::from_secs(3000);
    let mut exited = None;
    loop {
        let mut ended = 0;
        for id in &ids {
            let st = mindora_tests::status(&mut conn, id)?.unwrap_or_default();
            if matches!(st.as_str(), "finished" | "failed" | "stopped" | "canceled") {
                ended += 1;
            }
        }
        if ended == ids.len() {
            break;
        }
        if let Some(status) = worker.child.try_wait()? {
            exited = Some(status);
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let secs = started.elapsed().as_secs_f64();
    let samples = sampler.finish();
    let report = cg.report()?;
    let outs = outcomes(e, &ids)?;

    println!(
        "== phase {name}: {} jobs, concurrency {}, documents of {:.1} MiB, cap {:.0} MiB, {secs:.0} s",
        ids.len(),
        s.concurrency,
        s.doc_bytes as f64 / MIB,
        s.cap as f64 / MIB
    );
    println!(
        "   cgroup limit {:.0} MiB | kernel peak (memory.max_usage_in_bytes) {:.0} MiB = {:.0}% | \
         peak anonymous (memory.stat rss) {:.0} MiB (+{:.0} MiB page cache then) | \
         peak summed VmRSS {:.0} MiB | usage at start {:.0} MiB | failcnt {} | oom_kill {}",
        report.limit as f64 / MIB,
        report.max_usage as f64 / MIB,
        report.max_usage as f64 * 100.0 / report.limit as f64,
        samples.rss_peak as f64 / MIB,
        samples.cache_at_rss_peak as f64 / MIB,
        samples.sum_rss_peak as f64 / MIB,
        baseline as f64 / MIB,
        report.failcnt,
        report.oom_kills
    );
    for (comm, rss) in &samples.per_process {
        println!("   peak VmRSS {comm}: {:.0} MiB", *rss as f64 / MIB);
    }
    for o in &outs {
        println!("   job {o}");
    }

    if let Some(status) = exited {
        bail!("phase {name}: the worker exited ({status}; 137 = SIGKILL, the OOM killer) with oom_kill={}", report.oom_kills);
    }
    let unfinished: Vec<&Value> = outs.iter().filter(|o| o["status"] != "finished").collect();
    if !unfinished.is_empty() {
        bail!("phase {name}: jobs did not finish: {unfinished:#?}");
    }
    if report.oom_kills > 0 {
        bail!(
            "phase {name}: {} OOM kill(s) in the cgroup (a helper?)",
            report.oom_kills
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "opt-in, minutes and root: bash infra/tests/worker-memory-cgroup.sh"]
async fn worker_stays_under_the_compose_memory_limit_with_maximum_size_documents() -> Result<()> {
    if let Some(why) = cgroup::unavailable() {
        bail!("no memory cgroup here ({why}); infra/tests/worker-memory-cgroup.sh skips instead");
    }
    let env = env_example()?;
    let mem_worker = get(&env, "MEM_WORKER")?;
    let limit = match override_u64("MINDORA_MEMTEST_LIMIT")? {
        Some(l) => l,
        None => cgroup::parse_size(mem_worker)?,
    };
    let cap = match override_u64("MINDORA_MEMTEST_CAP")? {
        Some(c) => c,
        None => get(&env, "WORKER_MAX_OBJECT_BYTES")?.parse()?,
    };
    let worker_bin = match std::env::var_os("MINDORA_WORKER_BIN") {
        Some(p) => PathBuf::from(p),
        None => mindora_tests::worker_binary()?,
    };
    let helper = worker_bin.with_file_name("mindora-pdf");
    if !helper.is_file() {
        bail!(
            "{} is missing: the worker would extract PDFs in-process",
            helper.display()
        );
    }
    let s = Setup {
        limit,
        concurrency: match override_u64("MINDORA_MEMTEST_CONCURRENCY")? {
            Some(c) => c as usize,
            None => get(&env, "WORKER_CONCURRENCY")?.parse()?,
        },
        cap,
        doc_bytes: override_u64("MINDORA_MEMTEST_OBJECT_BYTES")?
            .unwrap_or(cap)
            .min(cap),
        worker_bin,
    };
    println!(
        "worker {} (MEM_WORKER={mem_worker}, limit {} bytes), WORKER_CONCURRENCY={}, WORKER_MAX_OBJECT_BYTES={cap}",
        s.worker_bin.display(),
        s.limit,
        s.concurrency
    );

    let e = Env {
        services: Services::start("memcg", "user_notifications_memcg_").await,
        db: RedisDb::lease()?,
    };
    let pdf = big_pdf(s.doc_bytes)?;
    let text = big_text(s.doc_bytes);
    println!(
        "documents: PDF {} bytes, text {} bytes",
        pdf.len(),
        text.len()
    );
    let pdfs = s.concurrency.saturating_sub(1).max(1);
    e.s3.put(&e.bucket, "max/alone.txt", text.clone()).await;
    e.s3.put(&e.bucket, "max/alone.pdf", pdf.clone()).await;
    e.s3.put(&e.bucket, "max/c-0.txt", text).await;
    for i in 1..=pdfs {
        e.s3.put(&e.bucket, &format!("max/c-{i}.pdf"), pdf.clone())
            .await;
    }
    drop(pdf);

    let cg = MemCgroup::create("mindora-memtest", s.limit)?;
    let mut worker = spawn_worker(&e, &cg, &s, &env)?;
    let phases =
        std::env::var("MINDORA_MEMTEST_PHASES").unwrap_or_else(|_| "text,pdf,concurrent".into());
    let mut failures = Vec::new();
    for p in phases.split(',').map(str::trim) {
        let keys: Vec<String> = match p {
            "text" => vec!["max/alone.txt".into()],
            "pdf" => vec!["max/alone.pdf".into()],
            "concurrent" => std::iter::once("max/c-0.txt".to_string())
                .chain((1..=pdfs).map(|i| format!("max/c-{i}.pdf")))
                .collect(),
            other => bail!("unknown phase {other}"),
        };
        if let Err(err) = phase(p, &e, &cg, &mut worker, &keys, &s) {
            println!("   FAILED: {err:#}");
            failures.push(format!("{err:#}"));
            // The next phase gets a fresh worker (as a container restart would), in a fresh
            // Redis state for its jobs: the dead worker's jobs stay `started`.
            if worker.child.try_wait()?.is_some() {
                worker = spawn_worker(&e, &cg, &s, &env)?;
            }
        }
    }
    let worker_hwm = std::fs::read_to_string(format!("/proc/{}/status", worker.child.id()))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: ?")
        .to_string();
    println!("worker process over the whole run: {worker_hwm}");
    e.assert_no_violations();
    drop(worker);
    if !failures.is_empty() {
        bail!(
            "{} phase(s) failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    Ok(())
}

/// The worker in the cgroup, configured as compose configures it (values from `.env.example`).
fn spawn_worker(
    e: &Env,
    cg: &MemCgroup,
    s: &Setup,
    env: &BTreeMap<String, String>,
) -> Result<WorkerProcess> {
    let mut cmd = cg.command(&s.worker_bin);
    let concurrency = s.concurrency.to_string();
    let cap = s.cap.to_string();
    // A new name per start: a killed worker's registration stays until it expires.
    static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let name = format!(
        "w-memtest-{}",
        STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    cmd.arg("--redis-url")
        .arg(e.db.url())
        .args(["--name", &name, "--queues", RQ_QUEUE])
        .args(["--concurrency", &concurrency, "--apps", &e.app])
        .args(["--database-url", PG_URL])
        .args([
            "--database-max-connections",
            get(env, "WORKER_DB_MAX_CONNECTIONS")?,
        ])
        .args(["--max-object-bytes", &cap])
        .args(["--s3-endpoint", &e.s3.endpoint])
        .args(["--s3-access-key", S3_KEY, "--s3-secret-key", S3_SECRET])
        .args([
            "--embed-base-url",
            &e.openai.url,
            "--embed-api-key",
            "sk-test",
        ])
        .args(["--embed-model", get(env, "EMBED_MODEL")?])
        .args(["--embed-dimensions", get(env, "EMBED_DIMENSIONS")?])
        .args([
            "--elasticsearch-url",
            &e.es.url,
            "--qdrant-url",
            &e.qdrant.url,
        ])
        .args(["--notify-amqp-url", mindora_tests::pipelines::AMQP_URL])
        .args(["--notify-queue", &e.queue])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit());
    let child = cmd
        .spawn()
        .context("starting mindora-worker in the cgroup")?;
    let worker = WorkerProcess { child, name };
    std::thread::sleep(Duration::from_secs(2));
    if cg.pids().is_empty() {
        bail!("the worker is not in {}", cg.dir.display());
    }
    Ok(worker)
}
