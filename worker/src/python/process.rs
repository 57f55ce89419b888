//! One runner process: started ahead of time, handshaken, supervised until it exits (by
//! itself, recycled, or killed), then replaced. Its in-flight jobs fail with the reason.

use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::pool::{Event, Inner, Mode, ProcEntry};
use super::protocol::{self, FromRunner, ToRunner, PROTOCOL_VERSION};
use super::{FailureKind, PoolError, PyOutcome};

/// An idle process silent this long (heartbeats come every 2 s) is taken for hung.
const HANG_AFTER: Duration = Duration::from_secs(30);
/// How long a process asked to exit may take before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// Starts one process in the background; `ready` hears whether its handshake worked.
pub(crate) fn launch(inner: Arc<Inner>, ready: Option<oneshot::Sender<Result<(), PoolError>>>) {
    tokio::spawn(supervise(inner, ready));
}

struct Started {
    child: Child,
    stdin: ChildStdin,
    frames: mpsc::UnboundedReceiver<(FromRunner, Vec<u8>)>,
    pid: u32,
    async_slots: usize,
}

async fn start(inner: &Inner) -> Result<Started, PoolError> {
    let cfg = &inner.cfg;
    let mut paths: Vec<std::ffi::OsString> = cfg
        .python_path
        .iter()
        .map(|p| p.as_os_str().to_owned())
        .collect();
    if let Some(existing) = std::env::var_os("PYTHONPATH") {
        paths.push(existing);
    }
    let mut cmd = Command::new(&cfg.interpreter);
    cmd.arg("-m")
        .arg("mindora_runner")
        .env("MINDORA_PYTHON_ASYNC_SLOTS", cfg.async_slots.to_string())
        .env("MINDORA_PYTHON_PRELOAD", cfg.preload.join(","))
        .env("PYTHONUNBUFFERED", "1")
        // rq 3.0 reads its key prefix itself: the runner must name the worker's keys.
        .env(
            mindora_sdk::wire::keys::PREFIX_ENV,
            mindora_sdk::wire::keys::prefix(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (name, value) in super::config::redis_env(&cfg.redis) {
        match value {
            Some(v) => cmd.env(name, v),
            None => cmd.env_remove(name),
        };
    }
    if !paths.is_empty() {
        cmd.env(
            "PYTHONPATH",
            std::env::join_paths(paths).unwrap_or_default(),
        );
    }
    if let Some(s) = &cfg.serializer {
        cmd.env("MINDORA_PYTHON_SERIALIZER", s);
    }
    let mut child = cmd.spawn().map_err(|source| PoolError::Spawn {
        interpreter: cfg.interpreter.display().to_string(),
        source,
    })?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(PoolError::Handshake("no pipes to the runner".into()));
    };
    let mut frames = spawn_reader(stdout);
    let hello = tokio::time::timeout(cfg.start_timeout, frames.recv()).await;
    let fail = |child: &mut Child, why: String| {
        let _ = child.start_kill();
        PoolError::Handshake(why)
    };
    match hello {
        Ok(Some((
            FromRunner::Hello {
                protocol,
                pid,
                python,
                rq,
                async_slots,
            },
            _,
        ))) => {
            if protocol != PROTOCOL_VERSION {
                return Err(fail(&mut child, format!("runner speaks protocol {protocol}, this worker speaks {PROTOCOL_VERSION} (install the mindora_runner of this release)")));
            }
            debug!(pid, python = %python, rq = %rq, "Python runner ready");
            Ok(Started {
                child,
                stdin,
                frames,
                pid,
                async_slots: async_slots.max(1),
            })
        }
        Ok(Some((other, _))) => Err(fail(
            &mut child,
            format!("first frame was {other:?}, not hello"),
        )),
        Ok(None) => {
            let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
            let status = match status {
                Ok(Ok(s)) => describe(s),
                _ => "no exit status".into(),
            };
            Err(PoolError::Handshake(format!("runner exited before its hello ({status}); its stderr above says why (is `mindora_runner` installed for {}?)", cfg.interpreter.display())))
        }
        Err(_) => Err(fail(
            &mut child,
            format!("no hello within {:?}", cfg.start_timeout),
        )),
    }
}

/// Reads frames on a task of its own (reads are not cancel-safe); ends at end of stream.
fn spawn_reader(stdout: ChildStdout) -> mpsc::UnboundedReceiver<(FromRunner, Vec<u8>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut r = BufReader::with_capacity(64 * 1024, stdout);
        loop {
            match protocol::read_frame(&mut r).await {
                Ok(Some(f)) => {
                    if tx.send(f).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    warn!(error = %e, "bad frame from a Python runner; dropping the process");
                    return;
                }
            }
        }
    });
    rx
}

/// Writes frames in order on a task of its own.
fn spawn_writer(mut stdin: ChildStdin) -> mpsc::UnboundedSender<Vec<u8>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if stdin.write_all(&frame).await.is_err() || stdin.flush().await.is_err() {
                return;
            }
        }
    });
    tx
}

/// How a process ended, in words (`killed by signal 11 (SIGSEGV)`).
pub(crate) fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            let name = match sig {
                4 => " (SIGILL)",
                6 => " (SIGABRT)",
                7 => " (SIGBUS)",
                8 => " (SIGFPE)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                15 => " (SIGTERM)",
                _ => "",
            };
            return format!("killed by signal {sig}{name}");
        }
    }
    match status.code() {
        Some(c) => format!("exit code {c}"),
        None => "unknown exit status".into(),
    }
}

async fn supervise(inner: Arc<Inner>, ready: Option<oneshot::Sender<Result<(), PoolError>>>) {
    let born = Instant::now();
    let started = match start(&inner).await {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "Python process did not start");
            inner.start_failed(e.to_string());
            if let Some(r) = ready {
                let _ = r.send(Err(e));
            }
            let pause = inner.next_start_pause();
            let stopped = tokio::select! {
                _ = tokio::time::sleep(pause) => false,
                _ = inner.shutdown.cancelled() => true,
            };
            if !stopped {
                launch(inner, None);
            }
            return;
        }
    };
    let Started {
        mut child,
        stdin,
        mut frames,
        pid,
        async_slots,
    } = started;
    let kill = CancellationToken::new();
    let id = inner.register(ProcEntry::new(
        pid,
        spawn_writer(stdin),
        kill.clone(),
        async_slots,
    ));
    inner.started_ok();
    if let Some(r) = ready {
        let _ = r.send(Ok(()));
    }
    info!(pid, "Python process started");
    let mut last_seen = Instant::now();
    let mut hung = false;
    let mut exit_asked: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let status = loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Some((msg, body)) => {
                    last_seen = Instant::now();
                    inner.on_frame(id, msg, body);
                }
                None => break child.wait().await,
            },
            status = child.wait() => break status,
            _ = kill.cancelled(), if exit_asked.is_none() => {
                let _ = child.start_kill();
                exit_asked = Some(Instant::now());
            }
            _ = tick.tick() => {
                match inner.housekeeping(id) {
                    Housekeeping::Exit if exit_asked.is_none() => {
                        inner.send(id, &ToRunner::Exit);
                        exit_asked = Some(Instant::now());
                    }
                    Housekeeping::Idle if last_seen.elapsed() > HANG_AFTER => {
                        warn!(pid, "idle Python process stopped answering; killing it");
                        hung = true;
                        let _ = child.start_kill();
                    }
                    _ => {}
                }
                if exit_asked.is_some_and(|t| t.elapsed() > EXIT_GRACE) {
                    let _ = child.start_kill();
                }
            }
        }
    };
    // Frames the process wrote before exiting (its last outcomes) still count.
    while let Ok(Some((msg, body))) =
        tokio::time::timeout(Duration::from_millis(200), frames.recv()).await
    {
        inner.on_frame(id, msg, body);
    }
    let how = match status {
        Ok(s) => describe(s),
        Err(e) => format!("wait failed: {e}"),
    };
    let (ended_by, orphans) = inner.unregister(id);
    let reason = format!(
        "Work-horse terminated unexpectedly: Python process {pid} ({how}) died while running the job"
    );
    for (job_id, events) in orphans {
        error!(pid, job_id = %job_id, how = %how, "Python process died with a job in flight");
        let _ = events.send(Event::Done(PyOutcome::failed(
            FailureKind::ProcessDied,
            "WorkHorseTerminated",
            reason.clone(),
        )));
    }
    if let Some(why) = ended_by {
        // Its replacement was started when the pool decided to end it.
        info!(pid, how = %how, reason = why.label(), "Python process {}", why.describe());
    } else if !inner.shutdown.is_cancelled() {
        let reason = if hung { "hung" } else { "crashed" };
        metrics::counter!(crate::metrics::PYTHON_RESTARTS, "reason" => reason).increment(1);
        warn!(pid, how = %how, reason, "Python process exited; starting a replacement");
        if born.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(inner.next_start_pause()).await;
        }
        launch(inner, None);
    }
}

/// What the supervisor should do on its periodic tick.
pub(crate) enum Housekeeping {
    /// Jobs in flight.
    Busy,
    /// Nothing in flight.
    Idle,
    /// Retiring (or shutting down) with nothing in flight: ask it to exit.
    Exit,
}

impl Mode {
    /// From a `started` message.
    pub(crate) fn parse(mode: &str) -> Self {
        if mode == "async" {
            Mode::Async
        } else {
            Mode::Sync
        }
    }
}
