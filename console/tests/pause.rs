//! Pausing a queue from the console: a mindora worker serving two queues leaves the paused
//! one's jobs queued while it runs the other's, and runs them once the queue is resumed.

use std::time::Duration;

use anyhow::Result;
use mindora_console::data::{actions, redis_view};
use mindora_tests::python_rq::PythonRq;
use mindora_tests::wait_for;

fn counts(rq: &PythonRq, queue: &str) -> Result<(u64, u64)> {
    let mut c = rq.db.conn()?;
    let queued: u64 = redis::cmd("LLEN")
        .arg(format!("rq:queue:{queue}"))
        .query(&mut c)?;
    let finished: u64 = redis::cmd("ZCARD")
        .arg(format!("rq:finished:{queue}"))
        .query(&mut c)?;
    Ok((queued, finished))
}

#[tokio::test(flavor = "multi_thread")]
async fn paused_queue_waits_while_the_other_runs() -> Result<()> {
    let rq = PythonRq::lease("3.0")?;
    let conn = rq.db.sdk_conn().await?;
    actions::pause_queue(&conn, "slow").await?;
    rq.run(
        "qs = Queue('slow', connection=r)\nqf = Queue('fast', connection=r)\n\
         for i in range(3):\n    qs.enqueue('jobs.add', i)\n    qf.enqueue('jobs.add', i)\n",
    )?;
    let overview = redis_view::overview(&conn).await?;
    let slow = overview.queues.iter().find(|q| q.name == "slow");
    assert!(slow.is_some_and(|q| q.paused));

    let _w = rq.start_pool_worker("w-pause", 1, &["--queues", "slow,fast"])?;
    wait_for(Duration::from_secs(60), "fast jobs finished", || {
        Ok((counts(&rq, "fast")?.1 == 3).then_some(()))
    })?;
    // Well past the worker's one-second look at the paused set: still untouched.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(counts(&rq, "slow")?, (3, 0));

    actions::resume_queue(&conn, "slow").await?;
    wait_for(
        Duration::from_secs(30),
        "slow jobs finished after resume",
        || Ok((counts(&rq, "slow")? == (0, 3)).then_some(())),
    )?;
    Ok(())
}
