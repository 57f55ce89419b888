//! Peak memory of `pipelines.process_document` per document size (issue 24).
//!
//! `cargo run --release -p mindora-pipelines --example stream_memory -- FILE...`
//!
//! The stand-ins (real s3s-fs S3 server, OpenAI/Elasticsearch/Qdrant fakes, real PostgreSQL)
//! run in this process, which uploads each file; each document is then processed by a fresh
//! child process (this example again, with `--child`) so its figures are its own: the worker's
//! peak RSS (`VmHWM`) plus the peaks of its PDF helpers, the sum being what a container limit
//! has to hold. The helpers are warm (a pool keeps them alive after the document), so they are
//! read while alive from `/proc/<pid>/status` (`VmHWM`, and `RssFile`: the mapped PDF's pages,
//! page cache the kernel can drop), and helpers already reaped (recycled) from
//! `RUSAGE_CHILDREN`. The fakes keep every indexed chunk in memory, which is why they are not in
//! the measured process.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use mindora_pipelines::{PipelineConfig, Pipelines};
use mindora_tests::pipelines::{env, job, kwargs};
use serde_json::{json, Value};

#[derive(Parser)]
struct Child {
    #[command(flatten)]
    config: PipelineConfig,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if args.first().map(String::as_str) == Some("--child") {
        return rt.block_on(child(&args[1..]));
    }
    rt.block_on(parent(&args))
}

/// Uploads each file and measures a child processing it.
async fn parent(files: &[String]) -> Result<()> {
    if files.is_empty() {
        bail!("usage: stream_memory FILE...");
    }
    let e = env(1536).await;
    let c = &e.config;
    let envs = [
        ("MINDORA_S3_ENDPOINT", c.s3_endpoint.clone()),
        ("MINDORA_S3_ACCESS_KEY", c.s3_access_key.clone()),
        ("MINDORA_S3_SECRET_KEY", c.s3_secret_key.clone()),
        ("MINDORA_DATABASE_URL", c.database_url.clone()),
        ("MINDORA_EMBED_BASE_URL", c.embed_base_url.clone()),
        ("MINDORA_EMBED_API_KEY", c.embed_api_key.clone()),
        ("MINDORA_EMBED_MODEL", Some(c.embed_model.clone())),
        (
            "MINDORA_EMBED_DIMENSIONS",
            Some(c.embed_dimensions.to_string()),
        ),
        ("MINDORA_ELASTICSEARCH_URL", c.elasticsearch_url.clone()),
        ("MINDORA_QDRANT_URL", c.qdrant_url.clone()),
        ("MINDORA_MAX_OBJECT_BYTES", Some((128u64 << 20).to_string())),
        ("MINDORA_MAX_PARSED_BYTES", Some((128u64 << 20).to_string())),
    ];
    println!(
        "{:<16} {:>9} {:>7} {:>8} {:>10} {:>10} {:>11} {:>10} {:>8}",
        "document",
        "MiB",
        "pages",
        "chunks",
        "worker MiB",
        "helper MiB",
        "helper file",
        "sum MiB",
        "s"
    );
    for file in files {
        let path = Path::new(file);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .context("file name")?
            .to_string();
        let bytes = std::fs::read(path).with_context(|| file.clone())?;
        let mib = bytes.len() as f64 / 1048576.0;
        e.s3.put(&e.bucket, &name, bytes).await;
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["--child", &e.app, &e.bucket, &name]);
        for (k, v) in &envs {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        let started = Instant::now();
        let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
        let secs = started.elapsed().as_secs_f64();
        let line = String::from_utf8_lossy(&out.stdout);
        let Ok(r) = serde_json::from_str::<Value>(line.trim()) else {
            bail!(
                "{name}: child failed: {line}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let mib_of = |k: &str| r[k].as_f64().unwrap_or(0.0) / 1024.0;
        let (w, h, f) = (
            mib_of("worker_kib"),
            mib_of("helper_kib"),
            mib_of("helper_file_kib"),
        );
        println!(
            "{name:<16} {mib:>9.1} {:>7} {:>8} {w:>10.0} {h:>10.0} {f:>11.0} {:>10.0} {secs:>8.1}",
            r["pages"],
            r["chunks"],
            w + h
        );
    }
    Ok(())
}

/// Processes one object with the configuration from the environment and prints its peaks.
async fn child(args: &[String]) -> Result<()> {
    let [app, bucket, key] = args else {
        bail!("--child APP BUCKET KEY");
    };
    let config = Child::parse_from(["child"]).config;
    let p = Pipelines::new(config).await?;
    p.migrate(app).await?;
    let kw = kwargs(json!({"app": app, "bucket": bucket, "key": key,
                           "options": {"notify": false}}));
    let out = p
        .call(
            "pipelines.process_document",
            &job("stream_memory"),
            &[],
            &kw,
            &mindora_pipelines::NoProgress,
        )
        .await?;
    let (live_hwm, live_file) = live_children_kib();
    println!(
        "{}",
        json!({"pages": out["pages"], "chunks": out["chunks"],
               "worker_kib": vm_hwm_kib()?,
               "helper_kib": live_hwm.max(children_maxrss_kib().max(0) as u64),
               "helper_file_kib": live_file})
    );
    Ok(())
}

/// The live children's (warm PDF helpers') summed peak resident sets (`VmHWM`) and summed
/// file-backed resident memory now (`RssFile`: the mapped PDF), KiB.
fn live_children_kib() -> (u64, u64) {
    let me = std::process::id().to_string();
    let (mut hwm, mut file) = (0, 0);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (0, 0);
    };
    for entry in dir.flatten() {
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().trim_end_matches("kB").trim().to_string())
        };
        if field("PPid:").as_deref() != Some(me.as_str()) {
            continue;
        }
        hwm += field("VmHWM:").and_then(|v| v.parse().ok()).unwrap_or(0u64);
        file += field("RssFile:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0u64);
    }
    (hwm, file)
}

/// This process's peak resident set (`VmHWM`), KiB.
fn vm_hwm_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM")
}

/// The largest peak resident set of the waited-for children (the PDF helpers), KiB.
fn children_maxrss_kib() -> i64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a zeroed rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return 0;
    }
    usage.ru_maxrss
}
