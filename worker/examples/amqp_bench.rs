//! Throughput of the AMQP source on no-op tasks vs a Python pika consumer doing the same
//! ack-after-handle loop, same broker, same run. Not a test: it prints figures.
//!
//! ```text
//! bash tests/amqp/setup.sh
//! cargo run --release -p mindora-worker --example amqp_bench -- [MESSAGES] [CONCURRENCY]
//! ```
//!
//! Both sides get the same backlog of persistent `mindora.noop` envelopes in a fresh
//! durable priority queue, the same prefetch, and are timed from their first to their
//! last handled message (so connection set-up is not counted for either). The broker's
//! (beam.smp) CPU is sampled around each consumer's run and reported per message: the
//! worker coalesces acks (`multiple=true`), pika acks each message. The broker is shared,
//! so other traffic on it inflates both figures alike.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use mindora_sdk::amqp::{task_properties, Envelope, PublishOptions};
use mindora_worker::amqp::{declare_topology, run_amqp, AmqpArgs, Topology};
use mindora_worker::handler::{JobContext, Registry};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

fn url() -> String {
    std::env::var("MINDORA_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

async fn fill(ch: &Channel, queue: &str, n: usize) -> Result<()> {
    for chunk_start in (0..n).step_by(1000) {
        for _ in chunk_start..(chunk_start + 1000).min(n) {
            let env = Envelope::new("mindora.noop", vec![]);
            let props = task_properties(&env, &PublishOptions::default())?;
            let _confirm = ch
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    &serde_json::to_vec(&env)?,
                    props,
                )
                .await?;
        }
        ch.wait_for_confirms().await?;
    }
    Ok(())
}

async fn depth(ch: &Channel, queue: &str) -> Result<u32> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    Ok(ch
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await?
        .message_count())
}

/// The builtin `mindora.noop`, plus a counter to time first-to-last handled message.
fn counting_registry(
    n: u64,
    done: Arc<AtomicU64>,
    span: Arc<Mutex<Option<(Instant, Instant)>>>,
) -> Registry {
    let mut r = Registry::new();
    mindora_worker::builtins::register(&mut r);
    r.register("mindora.noop", move |_ctx: JobContext| {
        let done = done.clone();
        let span = span.clone();
        async move {
            let now = Instant::now();
            let k = done.fetch_add(1, Ordering::Relaxed) + 1;
            let mut s = span.lock().unwrap_or_else(|p| p.into_inner());
            match s.as_mut() {
                None => *s = Some((now, now)),
                Some((_, last)) if k >= n => *last = now,
                Some(_) => {}
            }
            Ok(Value::Null)
        }
    });
    r
}

/// CPU seconds (user + system) a process has used, from /proc (Linux clock ticks of 1/100 s).
fn cpu_secs(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            let utime: f64 = after.get(11)?.parse().ok()?;
            let stime: f64 = after.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

/// The RabbitMQ server's pid (beam.smp), to report the broker's share of the CPU.
fn broker_pid() -> Option<String> {
    let out = std::process::Command::new("pgrep")
        .arg("-o")
        .arg("beam.smp")
        .output()
        .ok()?;
    let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!pid.is_empty()).then_some(pid)
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut argv = std::env::args().skip(1);
    let n: usize = argv
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(50_000);
    let concurrency: usize = argv.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let cache = std::env::var("MINDORA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/mindora")
        });
    let python = cache.join("venv-pika/bin/python");
    if !python.exists() {
        bail!(
            "{} missing: run `bash tests/amqp/setup.sh`",
            python.display()
        );
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/amqp/bench_consumer.py");

    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let queue = format!("bench_amqp_{suffix}");
    let mut args = AmqpArgs::new(url());
    args.queues = vec![queue.clone()];
    args.declare_shared = false;
    args.connection_name = format!("mindora-bench-{suffix}");
    declare_topology(&args)
        .await
        .context("declaring the bench queue")?;
    let conn = Connection::connect(&url(), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;

    // mindora-worker's AMQP source.
    fill(&ch, &queue, n).await?;
    let done = Arc::new(AtomicU64::new(0));
    let span = Arc::new(Mutex::new(None));
    let registry = counting_registry(n as u64, done.clone(), span.clone());
    let token = CancellationToken::new();
    let broker = broker_pid();
    let broker_cpu0 = broker.as_deref().map(cpu_secs).unwrap_or(0.0);
    let rust_cpu0 = cpu_secs("self");
    let rust_wall0 = Instant::now();
    let worker = tokio::spawn(run_amqp(
        args.clone(),
        Arc::new(registry),
        concurrency,
        token.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(600);
    while done.load(Ordering::Relaxed) < n as u64 {
        if Instant::now() > deadline {
            bail!(
                "worker handled only {} of {n}",
                done.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rust_cpu = cpu_secs("self") - rust_cpu0;
    let rust_wall = rust_wall0.elapsed().as_secs_f64();
    let rust_broker_cpu = broker.as_deref().map(cpu_secs).unwrap_or(0.0) - broker_cpu0;
    token.cancel();
    worker.await??;
    let left = depth(&ch, &queue).await?;
    if left != 0 {
        bail!("{left} messages left unacked in {queue}");
    }
    let (first, last) = span
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .context("no message handled")?;
    let rust_secs = (last - first).as_secs_f64().max(1e-9);
    let rust_rate = n as f64 / rust_secs;

    // Python pika consumer, same backlog, same prefetch.
    fill(&ch, &queue, n).await?;
    let py_broker_cpu0 = broker.as_deref().map(cpu_secs).unwrap_or(0.0);
    let py_wall0 = Instant::now();
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .args([url(), queue.clone(), n.to_string(), concurrency.to_string()])
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "bench_consumer.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let py: Value = serde_json::from_slice(&out.stdout)?;
    let py_rate = py["per_sec"].as_f64().context("per_sec")?;
    let py_secs = py["seconds"].as_f64().context("seconds")?;
    let py_cpu = py["cpu_seconds"].as_f64().context("cpu_seconds")?;
    let py_wall = py_wall0.elapsed().as_secs_f64();
    let py_broker_cpu = broker.as_deref().map(cpu_secs).unwrap_or(0.0) - py_broker_cpu0;
    let per_msg = |cpu: f64| cpu / n as f64 * 1e6;

    let topology = Topology::from_args(&args)?;
    for q in topology.owned_queue_names() {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "bench done".into()).await;

    println!("AMQP benchmark: {n} persistent mindora.noop messages, prefetch {concurrency}, one process each");
    println!("  mindora-worker (AMQP source, concurrency {concurrency}): {rust_rate:>10.0} msg/s  ({rust_secs:.2} s)");
    println!("  Python pika consumer (ack after handle):          {py_rate:>10.0} msg/s  ({py_secs:.2} s)");
    println!("  ratio: {:.1}x", rust_rate / py_rate);
    println!(
        "  consumer CPU per message: mindora-worker {:.1} us, pika {:.1} us -> {:.1}x less CPU",
        per_msg(rust_cpu),
        per_msg(py_cpu),
        py_cpu / rust_cpu.max(1e-9)
    );
    println!(
        "  broker (beam.smp) CPU per message: mindora-worker {:.1} us (coalesced acks), pika {:.1} us (one ack per message) -> {:.2} of pika's",
        per_msg(rust_broker_cpu),
        per_msg(py_broker_cpu),
        rust_broker_cpu / py_broker_cpu.max(1e-9)
    );
    println!(
        "  broker (beam.smp) busy: {:.0}% of one core during mindora-worker, {:.0}% during pika (its CPU bounds both)",
        rust_broker_cpu / rust_wall * 100.0,
        py_broker_cpu / py_wall * 100.0
    );
    Ok(())
}
