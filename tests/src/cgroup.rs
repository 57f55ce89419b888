//! A cgroup v1 memory cgroup of a test's own, to run a real process under a container's exact
//! memory limit (what Docker's `mem_limit` and a Kubernetes `limits.memory` set) and read what
//! the kernel measured: the peak charge (`memory.max_usage_in_bytes`), how often the limit was
//! hit (`memory.failcnt`) and OOM kills (`memory.oom_control`). Only the child is moved in
//! (`sh -c 'echo $$ > cgroup.procs; exec ...'`), never the test process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Where memory cgroups are made: `MINDORA_MEMTEST_CGROUP_PARENT`, else the v1 memory root.
pub fn parent() -> PathBuf {
    std::env::var_os("MINDORA_MEMTEST_CGROUP_PARENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup/memory"))
}

/// Why a memory cgroup cannot be used here, or `None` when one can be made, limited and removed.
pub fn unavailable() -> Option<String> {
    let p = parent();
    if !p.join("memory.limit_in_bytes").is_file() {
        return Some(format!(
            "{} is not a cgroup v1 memory controller directory",
            p.display()
        ));
    }
    match MemCgroup::create("mindora-probe", 64 << 20) {
        Ok(cg) => {
            drop(cg);
            None
        }
        Err(e) => Some(format!(
            "cannot make a memory cgroup under {}: {e:#}",
            p.display()
        )),
    }
}

/// A memory cgroup removed on drop (its remaining processes, all started by the test, killed).
pub struct MemCgroup {
    pub dir: PathBuf,
    pub limit: u64,
}

impl MemCgroup {
    /// Makes `<parent>/<name>-<random>` with a hard limit of `limit` bytes.
    pub fn create(name: &str, limit: u64) -> Result<MemCgroup> {
        let dir = parent().join(format!("{name}-{:08x}", rand_u32()));
        std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let cg = MemCgroup { dir, limit };
        cg.write("memory.limit_in_bytes", &limit.to_string())?;
        let set = cg.read_u64("memory.limit_in_bytes")?;
        if set != limit {
            bail!("memory.limit_in_bytes reads {set}, wrote {limit} (not page aligned?)");
        }
        Ok(cg)
    }

    fn write(&self, file: &str, value: &str) -> Result<()> {
        std::fs::write(self.dir.join(file), value)
            .with_context(|| format!("write {value} to {}", self.dir.join(file).display()))
    }

    /// A counter file of the cgroup.
    pub fn read_u64(&self, file: &str) -> Result<u64> {
        let s = std::fs::read_to_string(self.dir.join(file))
            .with_context(|| format!("read {}", self.dir.join(file).display()))?;
        s.trim().parse().with_context(|| format!("{file}: {s:?}"))
    }

    /// `key value` lines of `memory.stat` / `memory.oom_control`.
    pub fn read_map(&self, file: &str) -> Result<BTreeMap<String, u64>> {
        read_map(&self.dir.join(file))
    }

    /// Resets the peak (`memory.max_usage_in_bytes`) and the limit-hit counter, so each phase
    /// of a test reads its own.
    pub fn reset_peaks(&self) -> Result<()> {
        self.write("memory.max_usage_in_bytes", "0")?;
        self.write("memory.failcnt", "0")
    }

    /// A command that moves itself into this cgroup, then execs `program` (so only the child,
    /// and what it starts, is charged and limited).
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(r#"echo $$ > "$MEMTEST_CGROUP/cgroup.procs" && exec "$0" "$@""#)
            .arg(program)
            .env("MEMTEST_CGROUP", &self.dir);
        c
    }

    /// Process ids in the cgroup now.
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// The final figures.
    pub fn report(&self) -> Result<Report> {
        let oom = self.read_map("memory.oom_control")?;
        Ok(Report {
            limit: self.limit,
            max_usage: self.read_u64("memory.max_usage_in_bytes")?,
            failcnt: self.read_u64("memory.failcnt")?,
            oom_kills: oom.get("oom_kill").copied().unwrap_or(0),
        })
    }

    /// Samples the cgroup every `every` until stopped: peak anonymous memory (`rss` of
    /// `memory.stat`, what the processes hold; the kernel's peak also counts page cache) and
    /// each process name's peak RSS.
    pub fn sampler(&self, every: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let (dir, flag) = (self.dir.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            let mut s = Samples::default();
            while !flag.load(Ordering::Relaxed) {
                if let Ok(stat) = read_map(&dir.join("memory.stat")) {
                    // `rss` includes transparent huge pages.
                    let rss = stat.get("rss").copied().unwrap_or(0);
                    s.rss_peak = s.rss_peak.max(rss);
                    s.cache_at_rss_peak = if rss == s.rss_peak {
                        stat.get("cache").copied().unwrap_or(0)
                    } else {
                        s.cache_at_rss_peak
                    };
                }
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                let mut total = 0;
                for pid in procs.lines().map(str::trim) {
                    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .unwrap_or_default()
                        .trim()
                        .to_string();
                    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
                        .ok()
                        .and_then(|st| kib_field(&st, "VmRSS:"))
                        .unwrap_or(0);
                    total += rss;
                    let e = s.per_process.entry(comm).or_default();
                    *e = (*e).max(rss);
                }
                s.sum_rss_peak = s.sum_rss_peak.max(total);
                s.samples += 1;
                std::thread::sleep(every);
            }
            s
        });
        Sampler { stop, handle }
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        // Only processes this test started are in here (the worker and its helpers).
        for _ in 0..50 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("could not remove cgroup {}", self.dir.display());
    }
}

/// What the kernel measured for a cgroup.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub limit: u64,
    /// Peak charge: anonymous memory, page cache and tmpfs of the cgroup's processes.
    pub max_usage: u64,
    /// Times a charge hit the limit (the kernel then reclaimed cache, or OOM-killed).
    pub failcnt: u64,
    pub oom_kills: u64,
}

/// Peaks seen by [`MemCgroup::sampler`].
#[derive(Debug, Default, Clone)]
pub struct Samples {
    /// Peak `rss` of `memory.stat` (anonymous memory of the cgroup), bytes.
    pub rss_peak: u64,
    /// `cache` of `memory.stat` at that moment, bytes.
    pub cache_at_rss_peak: u64,
    /// Peak of the processes' summed VmRSS, bytes.
    pub sum_rss_peak: u64,
    /// Peak VmRSS by process name, bytes.
    pub per_process: BTreeMap<String, u64>,
    pub samples: u64,
}

/// A running [`MemCgroup::sampler`].
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Samples>,
}

impl Sampler {
    /// Stops sampling and returns the peaks.
    pub fn finish(self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

fn read_map(path: &Path) -> Result<BTreeMap<String, u64>> {
    let s = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    Ok(s.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect())
}

/// A `Name:   123 kB` field of /proc/PID/status, in bytes.
fn kib_field(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// `1792m`, `2g`, `512k`, `1048576` (Compose's byte units, binary) in bytes.
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.trim_end_matches('b');
    let (num, mult) = match s.as_bytes().last() {
        Some(b'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'm') => (&s[..s.len() - 1], 1 << 20),
        Some(b'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = num.parse().with_context(|| format!("size {s:?}"))?;
    Ok(n * mult)
}

fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1792m").unwrap(), 1792 << 20);
        assert_eq!(parse_size("128m").unwrap(), 128 << 20);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert_eq!(parse_size("104857600").unwrap(), 104857600);
        assert_eq!(parse_size("640k").unwrap(), 640 << 10);
    }

    #[test]
    fn status_field() {
        let st = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(kib_field(st, "VmRSS:"), Some(1 << 20));
    }
}
