//! The cron page from rq's own `CronScheduler` registry (2.12 and 3.0) (missed ticks computed from
//! the schedule) and the rate-limit page from rq 3.0 `RateLimit` jobs.

use anyhow::Result;
use mindora_console::data::{actions, cron, ratelimit};
use mindora_tests::python_rq::PythonRq;

#[tokio::test(flavor = "multi_thread")]
async fn cron_entries_from_rqs_cron_scheduler() -> Result<()> {
    for rq in PythonRq::each_version() {
        let rq = rq?;
        let conn = rq.db.sdk_conn().await?;
        assert!(cron::entries(&conn).await?.is_empty());
        rq.run(
        "from datetime import timedelta\nfrom rq.cron import CronScheduler\nfrom rq.utils import now\n\
         import jobs\n\
         cs = CronScheduler(connection=r, name='cs-test')\n\
         a = cs.register(jobs.add, queue_name='default', args=(1,), cron='*/5 * * * *', name='every5')\n\
         a.set_enqueue_time(now() - timedelta(minutes=21))\n\
         b = cs.register(jobs.add, queue_name='reports', interval=60, name='minutely')\n\
         b.set_enqueue_time(now() - timedelta(seconds=200))\n\
         cs.register_birth()\n",
    )?;
        let entries = cron::entries(&conn).await?;
        assert_eq!(entries.len(), 2, "{entries:?}");
        let every5 = entries.iter().find(|e| e.name == "every5").expect("every5");
        assert_eq!(every5.scheduler, "cs-test");
        assert_eq!(every5.function, "jobs.add");
        assert_eq!(every5.schedule, "*/5 * * * *");
        assert!((3..=5).contains(&every5.missed), "{every5:?}");
        assert!(every5.latest.is_some() && every5.next.is_some());
        assert!(every5.scheduler_heartbeat.is_some());
        let minutely = entries
            .iter()
            .find(|e| e.name == "minutely")
            .expect("minutely");
        assert_eq!((minutely.queue.as_str(), minutely.missed), ("reports", 2));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_of_rq_30_jobs() -> Result<()> {
    let rq = PythonRq::lease("3.0")?;
    let conn = rq.db.sdk_conn().await?;
    let out = rq.run(
        "from rq.rate_limit import RateLimit\nq = Queue('default', connection=r)\n\
         ids = [q.enqueue('jobs.add', i, rate_limit=RateLimit('api', 1)).id for i in range(3)]\n\
         print(' '.join(ids))\n",
    )?;
    let ids: Vec<String> = out
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let limits = ratelimit::rate_limits(&conn).await?;
    assert_eq!(limits.len(), 1, "{limits:?}");
    let api = &limits[0];
    assert_eq!(
        (api.key.as_str(), api.concurrency, api.waiting),
        ("api", Some(1), 2)
    );
    assert_eq!(api.in_use, vec![ids[0].clone()]);

    // Canceling the slot holder promotes a waiting job (rq orders them by a timestamp
    // score; two enqueued in the same instant may go either way).
    assert_eq!(
        actions::cancel(&conn, &ids[0]).await?,
        actions::Outcome::Done
    );
    let api = ratelimit::rate_limits(&conn).await?.remove(0);
    assert_eq!((api.waiting, api.in_use.len()), (1, 1));
    let promoted = &api.in_use[0];
    assert!(ids[1..].contains(promoted), "{promoted}");
    rq.check(&format!(
        "from rq.job import Job\nassert Job.fetch('{promoted}', connection=r).get_status() == 'queued'\n"
    ))?;
    Ok(())
}
