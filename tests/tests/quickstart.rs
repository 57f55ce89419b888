//! `scripts/quickstart.sh` on a machine where no Redis answers: it starts one itself and
//! the quickstart runs to the end. The "no Redis" machine is a free loopback port (the
//! shared Redis on 6379 must keep running for the other tests); the server the script
//! starts is stopped here.

use std::process::Command;

use anyhow::{Context, Result};
use mindora_tests::servers::free_port;
use mindora_tests::{cache_dir, repo_root, worker_binary};

/// Stops the redis-server the script started (by its pid file) and removes its files.
struct Started(std::path::PathBuf);

impl Drop for Started {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.0.join("redis.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn quickstart_starts_its_own_redis_when_none_runs() -> Result<()> {
    let port = free_port()?;
    let _cleanup = Started(cache_dir().join(format!("quickstart-redis-{port}")));
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/quickstart.sh"))
        .env("REDIS_URL", format!("redis://127.0.0.1:{port}/9"))
        .env("MINDORA_WORKER_BIN", worker_binary()?)
        .output()
        .context("running scripts/quickstart.sh")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "quickstart failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("started redis-server on 127.0.0.1:{port}")),
        "{stdout}"
    );
    // rq 3.0 prints statuses as `JobStatus.FINISHED`.
    for (id, status) in [
        ("qs-echo", "finished"),
        ("qs-child", "finished"),
        ("qs-later", "finished"),
        ("qs-fail", "failed"),
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(id) && l.to_lowercase().contains(status)),
            "{id} not {status}:\n{stdout}\n{stderr}"
        );
    }
    Ok(())
}
