//! `--cron` with a YAML schedule file: the worker runs it (plain rq jobs, listed by rq's
//! `CronScheduler.all()` with the file's path), and a bad YAML file stops the worker at
//! start-up with a message that names the problem. (That YAML and TOML files give the same
//! entries is a unit test of `worker/src/cron/schedule.rs`.)

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Result};
use mindora_tests::{run_python, wait_for, worker_binary, RedisDb, WorkerProcess, RQ_VERSIONS};
use redis::Commands;

fn schedule_dir(db: &RedisDb) -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "mindora-cron-yaml-{}-{}",
        std::process::id(),
        db.db
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[test]
fn a_yaml_schedule_runs_like_a_toml_one() -> Result<()> {
    let db = RedisDb::lease()?;
    let file = schedule_dir(&db)?.join("cron.yml");
    std::fs::write(
        &file,
        r#"# every second, in Berlin time
timezone: Europe/Berlin
job:
  - name: yaml-beat
    cron: "* * * * * *"
    queue: cronq
    func: mindora.echo
    args: [1, "two"]
    kwargs: {tag: yaml}
    result_ttl: 600
"#,
    )?;
    let f = file.display().to_string();
    let _w = WorkerProcess::start(&db, "cron-yaml", &["--queues", "cronq", "--cron", &f])?;
    let mut conn = db.conn()?;
    let ids = wait_for(Duration::from_secs(20), "three ticks enqueued", || {
        let ids: Vec<String> = conn.zrange("rq:cron_job:yaml-beat:jobs", 0, -1)?;
        Ok((ids.len() >= 3).then_some(ids))
    })?;
    wait_for(
        Duration::from_secs(20),
        "the first tick's job to finish",
        || {
            let st: Option<String> = conn.hget(format!("rq:job:{}", ids[0]), "status")?;
            Ok((st.as_deref() == Some("finished")).then_some(()))
        },
    )?;
    for version in RQ_VERSIONS {
        let out = run_python(
            version,
            &db,
            &format!(
                r#"
from rq.cron import CronScheduler
from rq.job import Job
s = [s for s in CronScheduler.all(r) if s.name == "cron-yaml"]
assert len(s) == 1, CronScheduler.all(r)
assert s[0].config_file.endswith("cron.yml"), s[0].config_file
(j,) = s[0].get_jobs()
assert j.name == "yaml-beat" and j.queue_name == "cronq", j
job = Job.fetch("{first}", connection=r)
assert job.func_name == "mindora.echo" and list(job.args) == [1, "two"] and job.kwargs == {{"tag": "yaml"}}
assert job.return_value() == {{"args": [1, "two"], "kwargs": {{"tag": "yaml"}}}}, job.return_value()
print("ok")
"#,
                first = ids[0]
            ),
        )?;
        ensure!(out.trim() == "ok", "rq {version}: {out}");
    }
    Ok(())
}

#[test]
fn a_bad_yaml_schedule_stops_the_worker_at_start_with_the_reason() -> Result<()> {
    let db = RedisDb::lease()?;
    let dir = schedule_dir(&db)?;
    for (name, text, want) in [
        // An unquoted `*` starts a YAML alias.
        (
            "alias.yaml",
            "job:\n  - cron: */5 * * * * *\n    func: mindora.echo\n",
            "invalid schedule file (YAML)",
        ),
        (
            "unknown.yaml",
            "job:\n  - cron: \"* * * * *\"\n    func: mindora.echo\n    colour: red\n",
            "unknown field `colour`",
        ),
        (
            "expr.yaml",
            "job:\n  - name: broken\n    cron: \"61 * * * *\"\n    func: mindora.echo\n",
            "entry broken: invalid cron expression",
        ),
    ] {
        let file = dir.join(name);
        std::fs::write(&file, text)?;
        let out = Command::new(worker_binary()?)
            .arg("--redis-url")
            .arg(db.url())
            .arg("--name")
            .arg("cron-bad")
            .arg("--cron")
            .arg(&file)
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success(),
            "{name}: the worker started: {stderr}"
        );
        ensure!(
            stderr.contains("cron schedule") && stderr.contains(want),
            "{name}: want {want:?} in:\n{stderr}"
        );
    }
    Ok(())
}
