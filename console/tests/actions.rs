//! Console actions on jobs Python rq 2.12 and 3.0 made, checked by Python rq's own view
//! of the jobs afterwards: requeue, cancel, delete (one and many), suspend / resume.

use anyhow::Result;
use mindora_console::data::actions::{self, Outcome};
use mindora_tests::python_rq::PythonRq;

const FAIL_THREE: &str = "from rq import SimpleWorker\n\
ids = [q.enqueue('jobs.boom', str(i)).id for i in range(3)]\n\
SimpleWorker([q], connection=r).work(burst=True, logging_level='WARNING')\n\
print(' '.join(ids))\n";

/// The words of the last line a snippet printed (rq's worker logs to stdout before).
fn words(s: &str) -> Vec<String> {
    s.lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn requeue_one_and_many_back_to_the_queue() -> Result<()> {
    for rq in PythonRq::each_version() {
        let rq = rq?;
        let conn = rq.db.sdk_conn().await?;
        let failed = words(&rq.run(&format!(
            "{}{FAIL_THREE}",
            mindora_tests::python_rq::DEFAULT_QUEUE
        ))?);
        let queued = words(&rq.run(&format!(
            "{}print(q.enqueue('jobs.add', 1).id)",
            mindora_tests::python_rq::DEFAULT_QUEUE
        ))?);

        assert_eq!(actions::requeue(&conn, &failed[0]).await?, Outcome::Done);
        let mut many = failed[1..].to_vec();
        many.push(queued[0].clone());
        many.push("no-such-job".into());
        let report = actions::requeue_many(&conn, &many).await?;
        assert_eq!(report.done, 2, "{report:?}");
        assert_eq!(report.skipped.len(), 2);
        assert!(report.skipped[0].1.starts_with("queued"), "{report:?}");
        assert!(report.skipped[1].1.contains("no such job"), "{report:?}");

        rq.check(&format!(
            "from rq.job import Job\n\
             ids = {failed:?}\n\
             for i in ids:\n\
             \x20   j = Job.fetch(i, connection=r)\n\
             \x20   assert j.get_status() == 'queued', (i, j.get_status())\n\
             \x20   assert i in q.job_ids\n\
             \x20   assert i not in q.failed_job_registry.get_job_ids()\n\
             \x20   assert j.ended_at is None\n\
             assert len(q) == 4\n"
        ))?;
        // And they run again.
        rq.check(
            "from rq import SimpleWorker\nSimpleWorker([q], connection=r).work(burst=True, logging_level='WARNING')\n\
             assert q.failed_job_registry.count == 3\nassert len(q) == 0\n",
        )?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_and_delete_as_rq_sees_them() -> Result<()> {
    for rq in PythonRq::each_version() {
        let rq = rq?;
        let conn = rq.db.sdk_conn().await?;
        let ids = words(&rq.run(&format!(
            "{}from datetime import timedelta\n\
             a = q.enqueue('jobs.add', 1)\nb = q.enqueue('jobs.add', 2)\n\
             c = q.enqueue_in(timedelta(hours=1), 'jobs.add', 3)\n\
             d = q.enqueue('jobs.add', 4, depends_on=a)\n\
             e = q.enqueue('jobs.add', 5)\n\
             print(a.id, b.id, c.id, d.id, e.id)\n",
            mindora_tests::python_rq::DEFAULT_QUEUE
        ))?);
        let (a, b, c, d, e) = (&ids[0], &ids[1], &ids[2], &ids[3], &ids[4]);

        assert_eq!(actions::cancel(&conn, b).await?, Outcome::Done);
        let report = actions::cancel_many(&conn, &[c.clone(), b.clone()]).await?;
        assert_eq!(report.done, 1);
        assert!(report.skipped[0].1.starts_with("canceled"), "{report:?}");
        rq.check(&format!(
            "from rq.job import Job\n\
             for i in ['{b}', '{c}']:\n\
             \x20   assert Job.fetch(i, connection=r).get_status() == 'canceled'\n\
             \x20   assert i in q.canceled_job_registry.get_job_ids()\n\
             assert '{b}' not in q.job_ids\n\
             assert '{c}' not in q.scheduled_job_registry.get_job_ids()\n"
        ))?;

        // Deleting the parent unlinks it; deleting many reports the missing one.
        assert_eq!(actions::delete(&conn, a).await?, Outcome::Done);
        let report = actions::delete_many(&conn, &[d.clone(), e.clone(), a.clone()]).await?;
        assert_eq!(report.done, 2, "{report:?}");
        assert_eq!(report.skipped[0].0, *a);
        rq.check(&format!(
            "from rq.job import Job\n\
             for i in ['{a}', '{d}', '{e}']:\n\
             \x20   assert not Job.exists(i, connection=r), i\n\
             \x20   assert i not in q.job_ids\n\
             assert '{d}' not in q.deferred_job_registry.get_job_ids()\n\
             assert r.exists('rq:results:{a}') == 0\n\
             assert r.exists('rq:job:{a}:dependents') == 0\n"
        ))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn suspend_and_resume_are_rqs() -> Result<()> {
    for rq in PythonRq::each_version() {
        let rq = rq?;
        let conn = rq.db.sdk_conn().await?;
        actions::suspend(&conn).await?;
        rq.check("from rq.suspension import is_suspended\nassert is_suspended(r)\n")?;
        assert!(
            mindora_console::data::redis_view::overview(&conn)
                .await?
                .suspended
        );
        actions::resume(&conn).await?;
        rq.check("from rq.suspension import is_suspended\nassert not is_suspended(r)\n")?;
    }
    Ok(())
}

/// Deleting a job a mindora worker is running: its execution ends with the job, the
/// worker's late outcome is dropped (fencing), the hash is not written back, and the
/// worker goes on with the next job.
#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_running_job_leaves_nothing_behind() -> Result<()> {
    let rq = PythonRq::lease("3.0")?;
    let conn = rq.db.sdk_conn().await?;
    let ids = words(&rq.run(&format!(
        "{}print(q.enqueue('mindora.sleep', 2).id)",
        mindora_tests::python_rq::DEFAULT_QUEUE
    ))?);
    let _w = mindora_tests::WorkerProcess::start(&rq.db, "w-del", &["--concurrency", "2"])?;
    let mut c = rq.db.conn()?;
    mindora_tests::wait_for(std::time::Duration::from_secs(20), "job started", || {
        Ok((mindora_tests::status(&mut c, &ids[0])?.as_deref() == Some("started")).then_some(()))
    })?;
    assert_eq!(actions::delete(&conn, &ids[0]).await?, Outcome::Done);
    let after = words(&rq.run(&format!(
        "{}print(q.enqueue('mindora.echo', 1).id)",
        mindora_tests::python_rq::DEFAULT_QUEUE
    ))?);
    // Well after the sleep ended: the deleted job stays gone, the next job ran.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    rq.check(&format!(
        "from rq.job import Job\n\
         assert not Job.exists('{}', connection=r)\n\
         assert r.exists('rq:results:{}') == 0\n\
         assert q.started_job_registry.count == 0\n\
         assert Job.fetch('{}', connection=r).get_status() == 'finished'\n",
        ids[0], ids[0], after[0]
    ))?;
    Ok(())
}
