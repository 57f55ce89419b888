//! Warm `mindora-pdf` helpers: each serves many documents, so a document no longer pays a
//! process start, the PDFium load and the font scan (the CJK fallback font alone is 4 MB).
//!
//! At most `size` helpers live at once; a document waits for a free one (the wait counts
//! against its time limit). A helper goes back to the pool only after a conversation that
//! ended with its terminal message; every other ending (the deadline, a crash, a bad line, a
//! panic in the caller: the [`Lease`] is dropped without [`Lease::give_back`]) kills and reaps
//! it, so an idle helper is always one waiting for its next request. A helper is also retired
//! after `recycle_docs` documents or once its anonymous memory passes `recycle_rss_mb` (PDFium
//! caches and heap fragmentation grow with what it has read).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::protocol::{Msg, Request};
use super::{failed, Helper, MEMORY_ENV};
use crate::error::ExtractProblem;

/// Environment variable: how many helpers may run at once (default: the CPU count).
pub const POOL_ENV: &str = "MINDORA_PDF_POOL";
/// Environment variable: documents a helper reads before it is replaced (default 200).
pub const RECYCLE_DOCS_ENV: &str = "MINDORA_PDF_RECYCLE_DOCS";
/// Environment variable: anonymous memory (MiB) past which a helper is replaced (default 512).
pub const RECYCLE_RSS_ENV: &str = "MINDORA_PDF_RECYCLE_RSS_MB";

/// How many helpers, and when one is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Helpers alive at most (at least 1).
    pub size: usize,
    /// Documents (and rendered pages) a helper serves before it is replaced (at least 1).
    pub recycle_docs: u32,
    /// Anonymous resident memory in MiB past which a helper is replaced after a document.
    pub recycle_rss_mb: u64,
}

impl PoolConfig {
    /// From `MINDORA_PDF_POOL`, `MINDORA_PDF_RECYCLE_DOCS` and `MINDORA_PDF_RECYCLE_RSS_MB`.
    pub fn from_env() -> Self {
        fn var<T: std::str::FromStr>(name: &str) -> Option<T> {
            std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
        }
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        PoolConfig {
            size: var(POOL_ENV).unwrap_or(cpus).max(1),
            recycle_docs: var(RECYCLE_DOCS_ENV).unwrap_or(200u32).max(1),
            recycle_rss_mb: var(RECYCLE_RSS_ENV).unwrap_or(512),
        }
    }
}

/// What the pool has done, for tests and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Helpers started so far.
    pub spawned: u64,
    /// Helpers alive now (idle or leased).
    pub live: usize,
    /// Pids of the idle helpers.
    pub idle: Vec<u32>,
    /// Pids of the last helpers retired (killed or exited, and reaped), oldest first.
    pub retired: Vec<u32>,
}

/// A bounded set of warm helpers of one binary.
pub struct Pool {
    helper: Helper,
    config: PoolConfig,
    state: Mutex<State>,
    freed: Condvar,
}

#[derive(Default)]
struct State {
    idle: Vec<Warm>,
    stats: PoolStats,
}

/// How many retired pids [`PoolStats::retired`] keeps.
const RETIRED_KEPT: usize = 64;
/// Lines of a helper's output read ahead of the consumer.
const LINES_QUEUED: usize = 64;
/// Bytes of a helper's stderr kept for the error of a crash.
const STDERR_KEPT: usize = 8192;

/// A live helper between requests.
struct Warm {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<std::io::Result<String>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_closed: Receiver<()>,
    docs: u32,
}

impl Warm {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// How a conversation with a helper ended, when it did not fail.
pub enum Ended {
    /// The helper sent its terminal message.
    Finished,
    /// The deadline came first; the helper was killed.
    TimedOut,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pool {
    /// A pool of `helper` processes; none is started until a document needs one.
    pub fn new(helper: Helper, config: PoolConfig) -> Self {
        Pool {
            helper,
            config: PoolConfig {
                size: config.size.max(1),
                recycle_docs: config.recycle_docs.max(1),
                ..config
            },
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
        }
    }

    /// The helper binary and its memory cap.
    pub fn helper(&self) -> &Helper {
        &self.helper
    }

    /// Counters and pids.
    pub fn stats(&self) -> PoolStats {
        let st = lock(&self.state);
        PoolStats {
            idle: st.idle.iter().map(Warm::pid).collect(),
            ..st.stats.clone()
        }
    }

    /// Kills the idle helpers (the busy ones finish their document first).
    pub fn shrink(&self) {
        let idle = std::mem::take(&mut lock(&self.state).idle);
        for w in idle {
            self.retire(w);
        }
    }

    /// Sends `request` (and `bytes`) to a helper and hands each answer to `on_msg`, until the
    /// terminal message or `deadline`. `on_msg` failing on a terminal message leaves the helper
    /// clean; on any other message the helper is killed, as its state is then unknown.
    pub fn converse(
        &self,
        request: &Request,
        bytes: Option<&[u8]>,
        deadline: Instant,
        mut on_msg: impl FnMut(Msg) -> Result<(), ExtractProblem>,
    ) -> Result<Ended, ExtractProblem> {
        let header = serde_json::to_string(request).map_err(|e| failed(format!("request: {e}")))?;
        let Some(mut lease) = self.checkout(deadline)? else {
            return Ok(Ended::TimedOut);
        };
        let warm = lease.warm.as_mut().ok_or_else(|| failed("no helper"))?;
        warm.docs += 1;
        let Warm {
            stdin,
            lines,
            child,
            ..
        } = warm;
        let outcome = std::thread::scope(|s| {
            let mut send = move || -> std::io::Result<()> {
                stdin.write_all(header.as_bytes())?;
                stdin.write_all(b"\n")?;
                if let Some(bytes) = bytes {
                    stdin.write_all(bytes)?;
                }
                stdin.flush()
            };
            // A small request fits the pipe; bytes may not, and a stuck helper must not stop
            // the deadline. A write error means the helper died: its exit status says why.
            match bytes {
                Some(_) => drop(s.spawn(send)),
                None => drop(send()),
            }
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match lines.recv_timeout(left.max(Duration::from_millis(1))) {
                    Ok(Ok(line)) => {
                        let msg = match serde_json::from_str::<Msg>(&line) {
                            Ok(msg) => msg,
                            Err(e) => {
                                return Talk::Broken(failed(format!(
                                    "bad line from the helper: {e}"
                                )))
                            }
                        };
                        let last = msg.is_last();
                        match (on_msg(msg), last) {
                            (Ok(()), true) => return Talk::Clean(Ok(Ended::Finished)),
                            (Err(p), true) => return Talk::Clean(Err(p)),
                            (Ok(()), false) => {}
                            (Err(p), false) => return Talk::Broken(p),
                        }
                    }
                    Ok(Err(_)) | Err(RecvTimeoutError::Disconnected) => return Talk::Died,
                    Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                        // Also ends a blocked writer above (its pipe breaks).
                        let _ = child.kill();
                        return Talk::TimedOut;
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                }
            }
        });
        match outcome {
            Talk::Clean(result) => {
                lease.give_back();
                result
            }
            Talk::Broken(p) => Err(p),
            Talk::TimedOut => Ok(Ended::TimedOut),
            Talk::Died => Err(lease.died()),
        }
    }

    /// A helper for one conversation: an idle one, a new one while fewer than `size` live, or
    /// the next one freed before `deadline` (`None`: none was).
    fn checkout(&self, deadline: Instant) -> Result<Option<Lease<'_>>, ExtractProblem> {
        let mut st = lock(&self.state);
        loop {
            while let Some(mut w) = st.idle.pop() {
                if matches!(w.child.try_wait(), Ok(None)) {
                    return Ok(Some(Lease {
                        pool: self,
                        warm: Some(w),
                    }));
                }
                // Died while idle (killed from outside, OOM killer): already reaped.
                Self::forget(&mut st, w.pid());
            }
            if st.stats.live < self.config.size {
                st.stats.live += 1;
                st.stats.spawned += 1;
                drop(st);
                return match self.spawn() {
                    Ok(w) => Ok(Some(Lease {
                        pool: self,
                        warm: Some(w),
                    })),
                    Err(e) => {
                        let mut st = lock(&self.state);
                        st.stats.live -= 1;
                        drop(st);
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            st = self
                .freed
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn spawn(&self) -> Result<Warm, ExtractProblem> {
        let helper = &self.helper;
        let mut child = Command::new(&helper.path)
            .env(MEMORY_ENV, helper.memory_mb.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                ExtractProblem::EngineUnavailable(format!(
                    "the PDF helper {} could not be started: {e}",
                    helper.path.display()
                ))
            })?;
        let (Some(stdin), Some(stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed("the PDF helper's pipes were not set up"));
        };
        // Readers live as long as the helper's pipes; they end on its exit. The line queue is
        // bounded: a slow consumer holds the helper back (its pipe fills) instead of queueing
        // a whole document's pages here.
        let (tx, lines) = mpsc::sync_channel(LINES_QUEUED);
        std::thread::Builder::new()
            .name("pdf-helper-out".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| failed(format!("reader thread: {e}")))?;
        let tail = Arc::new(Mutex::new(Vec::new()));
        let (closed_tx, stderr_closed) = mpsc::channel();
        let keep = Arc::clone(&tail);
        std::thread::Builder::new()
            .name("pdf-helper-err".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stderr.read(&mut buf) {
                    let mut t = keep.lock().unwrap_or_else(PoisonError::into_inner);
                    t.extend_from_slice(&buf[..n]);
                    let over = t.len().saturating_sub(STDERR_KEPT);
                    t.drain(..over);
                }
                let _ = closed_tx.send(());
            })
            .map_err(|e| failed(format!("reader thread: {e}")))?;
        Ok(Warm {
            child,
            stdin,
            lines,
            stderr: tail,
            stderr_closed,
            docs: 0,
        })
    }

    /// Kills and reaps `w`, and frees its place.
    fn retire(&self, mut w: Warm) {
        let _ = w.child.kill();
        let _ = w.child.wait();
        let mut st = lock(&self.state);
        Self::forget(&mut st, w.pid());
        drop(st);
        self.freed.notify_one();
    }

    fn forget(st: &mut State, pid: u32) {
        st.stats.live = st.stats.live.saturating_sub(1);
        st.stats.retired.push(pid);
        let over = st.stats.retired.len().saturating_sub(RETIRED_KEPT);
        st.stats.retired.drain(..over);
    }
}

impl Drop for Pool {
    /// Idle helpers would exit at the end of their input, but unreaped: kill and reap them.
    fn drop(&mut self) {
        self.shrink();
    }
}

/// The end of a conversation, before the helper is given back or retired.
enum Talk {
    /// Terminal message seen: the helper is ready for the next request.
    Clean(Result<Ended, ExtractProblem>),
    /// The caller or the line was wrong mid-document: the helper's state is unknown.
    Broken(ExtractProblem),
    /// The deadline: the helper was killed.
    TimedOut,
    /// Its output ended before the terminal message.
    Died,
}

/// A helper checked out of the pool; dropped without [`Lease::give_back`], it is killed.
struct Lease<'p> {
    pool: &'p Pool,
    warm: Option<Warm>,
}

impl Lease<'_> {
    /// Returns a helper that ended its request cleanly, unless it is due for recycling.
    fn give_back(mut self) {
        let Some(w) = self.warm.take() else { return };
        let config = self.pool.config;
        let fat = anon_rss_mb(w.pid()).is_some_and(|mb| mb > config.recycle_rss_mb);
        if w.docs >= config.recycle_docs || fat {
            tracing::debug!(pid = w.pid(), docs = w.docs, fat, "PDF helper recycled");
            self.pool.retire(w);
            return;
        }
        lock(&self.pool.state).idle.push(w);
        self.pool.freed.notify_one();
    }

    /// The error for a helper whose output ended mid-request: how it exited, its last words.
    fn died(mut self) -> ExtractProblem {
        let Some(mut w) = self.warm.take() else {
            return failed("the PDF helper went away");
        };
        let status = exit_status(&mut w.child);
        // Its stderr closes with it (unless a grandchild holds it: then do not wait long).
        let _ = w.stderr_closed.recv_timeout(Duration::from_secs(2));
        let said =
            String::from_utf8_lossy(&w.stderr.lock().unwrap_or_else(PoisonError::into_inner))
                .trim()
                .to_string();
        let memory_mb = self.pool.helper.memory_mb;
        self.pool.retire(w);
        match status {
            Ok(status) => died(status, memory_mb, &said),
            Err(e) => failed(format!("waiting for the PDF helper: {e}")),
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(w) = self.warm.take() {
            self.pool.retire(w);
        }
    }
}

/// The exit status of a helper whose output ended: it normally exits at once; one that
/// lingers is killed after a moment (its status then says SIGKILL).
fn exit_status(child: &mut Child) -> std::io::Result<ExitStatus> {
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    child.wait()
}

fn died(status: ExitStatus, memory_mb: u64, stderr: &str) -> ExtractProblem {
    use std::os::unix::process::ExitStatusExt;
    let tail: String = stderr
        .lines()
        .last()
        .unwrap_or("")
        .chars()
        .take(300)
        .collect();
    let how = match status.signal() {
        Some(sig) => format!("it crashed (signal {sig})"),
        None => format!("it exited with {status}"),
    };
    failed(format!(
        "{how} while reading this file, or it went over its memory limit of {memory_mb} MiB ({MEMORY_ENV}){}",
        if tail.is_empty() {
            String::new()
        } else {
            format!("; it said: {tail}")
        }
    ))
}

/// Anonymous resident memory of `pid` in MiB (the mapped PDF file does not count: the kernel
/// can drop those pages), from `/proc/<pid>/status`.
pub fn anon_rss_mb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    field("RssAnon:")
        .or_else(|| field("VmRSS:"))
        .map(|kb| kb / 1024)
}
