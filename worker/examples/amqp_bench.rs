//! Throughput and broker cost of the AMQP source on no-op tasks vs a Python pika consumer
//! doing the same ack-after-handle loop, same broker, same run. Not a test: it prints
//! figures.
//!
//! ```text
//! bash tests/amqp/setup.sh
//! cargo run --release -p mindora-worker --example amqp_bench -- [MESSAGES] [CONCURRENCY] [ROUNDS]
//! ```
//!
//! Each round gives both consumers the same backlog of persistent `mindora.noop` envelopes
//! in a durable priority queue and the same per-consumer prefetch (= CONCURRENCY); the
//! order alternates between rounds. For each consumer:
//! 1. the backlog is published (with confirms) *before* the measured window, and the bench
//!    waits until the broker is quiet again (its CPU under 5% of a core over 250 ms), so
//!    neither the publishing nor its after-work (index writes, message store GC of the
//!    previous round) is charged to a consumer;
//! 2. the window runs from just before the consumer connects until it has handled all N,
//!    closed its connection and the queue holds nothing (every ack processed): set-up and
//!    tear-down are inside the window for both;
//! 3. broker (beam.smp) CPU over the window is reported per message, raw and net of the
//!    broker's idle rate measured just before (background work, and other users of a
//!    shared broker, scale with time, not messages).
//!
//! Throughput is timed from the first to the last handled message. The worker coalesces
//! acks (`multiple=true`); pika acks each message, or with `multiple=true` every N messages
//! when `MINDORA_BENCH_PIKA_ACK_EVERY=N` (what coalescing can save the broker at best). The
//! broker's pid is `pgrep -o beam.smp` unless `MINDORA_BENCH_BROKER_PID` names it (e.g. a
//! private node on its own port, with `MINDORA_TEST_AMQP_URL` pointing at it).

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
use metrics_exporter_prometheus::PrometheusHandle;
use mindora_sdk::amqp::{task_properties, Envelope, PublishOptions};
use mindora_worker::amqp::{declare_topology, run_amqp, AmqpArgs, Topology, AMQP_ACK_FRAMES};
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
    if let Ok(pid) = std::env::var("MINDORA_BENCH_BROKER_PID") {
        return Some(pid);
    }
    let out = std::process::Command::new("pgrep")
        .arg("-o")
        .arg("beam.smp")
        .output()
        .ok()?;
    let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!pid.is_empty()).then_some(pid)
}

/// Waits (up to 10 s) until the broker uses under 5% of a core over 250 ms; returns its
/// CPU rate (seconds per second) over that last quiet interval.
async fn quiet_broker(pid: &str) -> f64 {
    let step = Duration::from_millis(250);
    let mut rate = 0.0;
    for _ in 0..40 {
        let c0 = cpu_secs(pid);
        let t0 = Instant::now();
        tokio::time::sleep(step).await;
        rate = (cpu_secs(pid) - c0) / t0.elapsed().as_secs_f64();
        if rate < 0.05 {
            break;
        }
    }
    rate
}

/// One consumer's figures in one round.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Messages per second, first to last handled.
    rate: f64,
    /// Consumer process CPU per message (us).
    cpu_us: f64,
    /// Broker CPU per message over the window (us), raw.
    broker_us: f64,
    /// Same, minus the broker's idle rate times the window.
    broker_net_us: f64,
    /// Broker busy over the window (share of one core).
    broker_busy: f64,
    /// Ack frames sent (ours only).
    ack_frames: f64,
}

struct Bench {
    url: String,
    queue: String,
    args: AmqpArgs,
    ch: Channel,
    n: usize,
    concurrency: usize,
    broker: String,
    python: PathBuf,
    script: PathBuf,
    /// `MINDORA_BENCH_PIKA_ACK_EVERY`: 1 (default) acks each message; N > 1 makes the pika
    /// consumer ack with `multiple=true` every N messages, the reference for coalesced acks.
    pika_ack_every: u32,
    metrics: PrometheusHandle,
}

/// Sum of a counter (all label sets) in the Prometheus text.
fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

impl Bench {
    /// Backlog in, broker quiet; returns the broker's idle rate.
    async fn prepare(&self) -> Result<f64> {
        fill(&self.ch, &self.queue, self.n).await?;
        Ok(quiet_broker(&self.broker).await)
    }

    /// Waits until every message of the queue is gone (acked).
    async fn drained(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while depth(&self.ch, &self.queue).await? != 0 {
            if Instant::now() > deadline {
                bail!("{} still holds messages", self.queue);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    fn sample(&self, idle: f64, window: (f64, f64), rate: f64, cpu: f64, frames: f64) -> Sample {
        let (broker_cpu, secs) = window;
        let per_msg = |c: f64| c / self.n as f64 * 1e6;
        Sample {
            rate,
            cpu_us: per_msg(cpu),
            broker_us: per_msg(broker_cpu),
            broker_net_us: per_msg((broker_cpu - idle * secs).max(0.0)),
            broker_busy: broker_cpu / secs,
            ack_frames: frames,
        }
    }

    async fn ours(&self) -> Result<Sample> {
        let idle = self.prepare().await?;
        let n = self.n as u64;
        let done = Arc::new(AtomicU64::new(0));
        let span = Arc::new(Mutex::new(None));
        let registry = counting_registry(n, done.clone(), span.clone());
        let token = CancellationToken::new();
        let frames0 = counter(&self.metrics.render(), AMQP_ACK_FRAMES);
        let broker0 = cpu_secs(&self.broker);
        let cpu0 = cpu_secs("self");
        let t0 = Instant::now();
        let worker = tokio::spawn(run_amqp(
            self.args.clone(),
            Arc::new(registry),
            self.concurrency,
            token.clone(),
        ));
        let deadline = Instant::now() + Duration::from_secs(600);
        while done.load(Ordering::Relaxed) < n {
            if Instant::now() > deadline {
                bail!(
                    "worker handled only {} of {n}",
                    done.load(Ordering::Relaxed)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        token.cancel();
        worker.await??;
        let cpu = cpu_secs("self") - cpu0;
        self.drained().await?;
        let window = (cpu_secs(&self.broker) - broker0, t0.elapsed().as_secs_f64());
        let frames = counter(&self.metrics.render(), AMQP_ACK_FRAMES) - frames0;
        let (first, last) = span
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .context("no message handled")?;
        let rate = n as f64 / (last - first).as_secs_f64().max(1e-9);
        Ok(self.sample(idle, window, rate, cpu, frames))
    }

    async fn pika(&self) -> Result<Sample> {
        let idle = self.prepare().await?;
        let broker0 = cpu_secs(&self.broker);
        let t0 = Instant::now();
        let out = tokio::process::Command::new(&self.python)
            .arg(&self.script)
            .args([
                self.url.clone(),
                self.queue.clone(),
                self.n.to_string(),
                self.concurrency.to_string(),
                self.pika_ack_every.to_string(),
            ])
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "bench_consumer.py: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.drained().await?;
        let window = (cpu_secs(&self.broker) - broker0, t0.elapsed().as_secs_f64());
        let py: Value = serde_json::from_slice(&out.stdout)?;
        let rate = py["per_sec"].as_f64().context("per_sec")?;
        let cpu = py["cpu_seconds"].as_f64().context("cpu_seconds")?;
        Ok(self.sample(idle, window, rate, cpu, self.n as f64))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut argv = std::env::args().skip(1);
    let mut arg = |default: usize| -> Result<usize> {
        Ok(argv
            .next()
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let n = arg(20_000)?;
    let concurrency = arg(64)?;
    let rounds = arg(5)?.max(1);
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
    let broker = broker_pid().context("no beam.smp running (set MINDORA_BENCH_BROKER_PID)")?;
    let metrics = mindora_worker::metrics::install()?;

    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let queue = format!("bench_amqp_{suffix}");
    let mut args = AmqpArgs::new(url())?;
    args.queues = vec![queue.clone()];
    args.declare_shared = false;
    args.connection_name = format!("mindora-bench-{suffix}");
    declare_topology(&args)
        .await
        .context("declaring the bench queue")?;
    let conn = Connection::connect(&url(), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let bench = Bench {
        url: url(),
        queue,
        args,
        ch,
        n,
        concurrency,
        broker,
        python,
        script,
        pika_ack_every: std::env::var("MINDORA_BENCH_PIKA_ACK_EVERY")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n >= 1)
            .unwrap_or(1),
        metrics,
    };

    println!("AMQP benchmark: {n} persistent mindora.noop messages per consumer and round, prefetch {concurrency} per consumer, {rounds} rounds");
    println!("round | first | mindora msg/s | pika msg/s | x | broker us/msg ours / pika (raw) | net of idle | ours/pika raw | net | msgs per ack frame | consumer CPU us/msg ours / pika");
    let mut results = Vec::new();
    for r in 0..rounds {
        let ours_first = r % 2 == 0;
        let (ours, pika) = if ours_first {
            let o = bench.ours().await?;
            (o, bench.pika().await?)
        } else {
            let p = bench.pika().await?;
            (bench.ours().await?, p)
        };
        println!(
            "{:>5} | {:>5} | {:>13.0} | {:>10.0} | {:>3.1} | {:>6.1} / {:>6.1} | {:>6.1} / {:>6.1} | {:>4.2} | {:>4.2} | {:>5.1} | {:.1} / {:.1}",
            r + 1,
            if ours_first { "ours" } else { "pika" },
            ours.rate,
            pika.rate,
            ours.rate / pika.rate,
            ours.broker_us,
            pika.broker_us,
            ours.broker_net_us,
            pika.broker_net_us,
            ours.broker_us / pika.broker_us.max(1e-9),
            ours.broker_net_us / pika.broker_net_us.max(1e-9),
            n as f64 / ours.ack_frames.max(1.0),
            ours.cpu_us,
            pika.cpu_us,
        );
        println!(
            "      | broker busy: {:.0}% of a core during ours, {:.0}% during pika",
            ours.broker_busy * 100.0,
            pika.broker_busy * 100.0
        );
        results.push((ours, pika));
    }
    let raw: Vec<f64> = results
        .iter()
        .map(|(o, p)| o.broker_us / p.broker_us.max(1e-9))
        .collect();
    let net: Vec<f64> = results
        .iter()
        .map(|(o, p)| o.broker_net_us / p.broker_net_us.max(1e-9))
        .collect();
    let speed: Vec<f64> = results.iter().map(|(o, p)| o.rate / p.rate).collect();
    let worst = |v: &[f64]| v.iter().copied().fold(f64::MIN, f64::max);
    println!(
        "broker CPU per message, ours / pika: raw median {:.2}, worst {:.2}; net of idle median {:.2}, worst {:.2}",
        median(raw.clone()),
        worst(&raw),
        median(net.clone()),
        worst(&net)
    );
    println!(
        "throughput, ours / pika: median {:.1}x, lowest {:.1}x",
        median(speed.clone()),
        speed.iter().copied().fold(f64::MAX, f64::min)
    );

    let topology = Topology::from_args(&bench.args)?;
    for q in topology.owned_queue_names() {
        let _ = bench
            .ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "bench done".into()).await;
    Ok(())
}
