//! `mindora-worker healthcheck` (the container health check) as a real subcommand: exit 0
//! against a live worker; non-zero, quickly, against a dead port and against a server that
//! accepts but never answers.

use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::Result;
use mindora_tests::{free_port, worker_binary, RedisDb, WorkerProcess};

fn healthcheck(addr: &str) -> Result<Output> {
    Ok(std::process::Command::new(worker_binary()?)
        .args(["--metrics-addr", addr, "healthcheck"])
        .env("RUST_LOG", "warn")
        .output()?)
}

#[test]
fn healthcheck_passes_on_a_live_worker_and_fails_on_a_dead_port() -> Result<()> {
    let db = RedisDb::lease()?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let mut worker = WorkerProcess::start(&db, "w-healthcheck", &["--metrics-addr", &addr])?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = healthcheck(&addr)?;
    while !last.status.success() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "healthcheck never passed: {}",
            String::from_utf8_lossy(&last.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
        last = healthcheck(&addr)?;
    }
    assert_eq!(last.status.code(), Some(0));
    // A wildcard metrics address is probed on loopback.
    assert!(healthcheck(&format!("0.0.0.0:{port}"))?.status.success());

    // The worker gone: the same address now fails.
    worker.signal("KILL")?;
    worker.wait_exit(Duration::from_secs(10))?;
    let dead = healthcheck(&addr)?;
    assert_eq!(dead.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&dead.stderr);
    assert!(stderr.contains("not healthy"), "{stderr}");
    Ok(())
}

#[test]
fn healthcheck_times_out_on_a_server_that_never_answers() -> Result<()> {
    // Accepts connections (the kernel does, from the backlog) and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    let started = Instant::now();
    let hung = healthcheck(&addr)?;
    let took = started.elapsed();
    assert_eq!(hung.status.code(), Some(1));
    assert!(
        took < Duration::from_secs(15),
        "the probe gave up after its timeout, not never ({took:?})"
    );
    drop(listener);
    Ok(())
}
