//! The console's Redis view against real Python rq 2.12 and 3.0: overview counts and
//! workers, job pages of pickle and JSON jobs (args, meta, trace id, dependencies, result,
//! traceback), queue pages and the failed ids of bulk actions.

use anyhow::Result;
use mindora_console::data::redis_view::{self, Registry};
use mindora_tests::python_rq::PythonRq;

/// The ids a snippet printed last (rq's worker logs to stdout before).
fn last_line_words(out: &str) -> Vec<&str> {
    out.lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .collect()
}

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// Runs the queued jobs of `queues` with Python rq's own worker, in burst mode.
const BURST: &str = "from rq import SimpleWorker\n\
def burst(*names):\n    SimpleWorker([Queue(n, connection=r) for n in names], connection=r).work(burst=True, logging_level='WARNING')\n";

#[tokio::test(flavor = "multi_thread")]
async fn overview_counts_follow_python_rq() -> Result<()> {
    for rq in PythonRq::each_version() {
        let rq = rq?;
        let conn = rq.db.sdk_conn().await?;
        let empty = redis_view::overview(&conn).await?;
        assert!(empty.queues.is_empty() && empty.workers.is_empty() && !empty.suspended);

        rq.enqueue(
            "from datetime import timedelta\n\
             for i in range(3): q.enqueue('jobs.add', i)\n\
             q.enqueue_in(timedelta(hours=1), 'jobs.add', 9)\n\
             parent = q.enqueue('jobs.add', 1)\n\
             q.enqueue('jobs.add', 2, depends_on=parent)\n",
        )?;
        let o = redis_view::overview(&conn).await?;
        let d = o
            .queues
            .iter()
            .find(|q| q.name == "default")
            .expect("default");
        assert_eq!(
            (d.queued, d.scheduled, d.deferred, d.failed, d.paused),
            (4, 1, 1, 0, false),
            "rq {}",
            rq.version
        );

        rq.run(&format!(
            "{BURST}q2 = Queue('other', connection=r)\n\
             q2.enqueue('jobs.add', 1)\nq2.enqueue('jobs.boom', 'bad')\nburst('other')\n"
        ))?;
        let o = redis_view::overview(&conn).await?;
        let other = o.queues.iter().find(|q| q.name == "other").expect("other");
        assert_eq!((other.queued, other.finished, other.failed), (0, 1, 1));

        // A registered (idle) Python rq worker.
        rq.run(
            "from rq import Worker\n\
             w = Worker(['default', 'other'], connection=r, name='py-idle')\n\
             w.register_birth()\nw.set_state('idle')\n",
        )?;
        let o = redis_view::overview(&conn).await?;
        let w = o
            .workers
            .iter()
            .find(|w| w.name == "py-idle")
            .expect("worker listed");
        assert_eq!(w.queues, vec!["default".to_string(), "other".to_string()]);
        assert_eq!(w.state, "idle");
        assert!(w.version.contains(rq.version), "{}", w.version);
        assert!(w.pid.is_some() && w.birth.is_some() && !w.hostname.is_empty());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn job_view_decodes_pickle_and_json_jobs() -> Result<()> {
    for rq in PythonRq::each_version() {
        let rq = rq?;
        let conn = rq.db.sdk_conn().await?;
        let out = rq.run(&format!(
            "from rq.serializers import JSONSerializer\n\
             qp = Queue('pick', connection=r)\n\
             qj = Queue('json', connection=r, serializer=JSONSerializer)\n\
             a = qp.enqueue('jobs.echo', 1, 'a', k={{'x': [1, 2]}}, meta={{'traceparent': '{TRACEPARENT}'}})\n\
             b = qj.enqueue('jobs.echo', 2, 'b', flag=True)\n\
             c = qp.enqueue('jobs.add', 5, depends_on=a)\n\
             print(a.id, b.id, c.id)\n"
        ))?;
        let ids = last_line_words(&out);
        let (a, b, c) = (ids[0], ids[1], ids[2]);

        let ja = redis_view::job(&conn, a).await?;
        assert_eq!(ja.function, "jobs.echo");
        assert_eq!(ja.args, "(1, 'a')");
        assert_eq!(ja.kwargs, "{'k': {'x': [1, 2]}}");
        assert!(ja.meta.contains("traceparent"), "{}", ja.meta);
        assert_eq!(
            ja.trace_id.as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!((ja.status.as_str(), ja.queue.as_str()), ("queued", "pick"));
        assert_eq!(ja.dependent_ids, vec![c.to_string()]);
        assert!(ja.enqueued_at.is_some() && ja.created_at.is_some());

        let jb = redis_view::job(&conn, b).await?;
        assert_eq!(jb.args, "(2, 'b')");
        assert_eq!(jb.kwargs, "{'flag': True}");
        assert_eq!(jb.queue, "json");

        let jc = redis_view::job(&conn, c).await?;
        assert_eq!(jc.status, "deferred");
        assert_eq!(jc.dependency_ids, vec![a.to_string()]);

        // Results and tracebacks, written by Python rq's own worker.
        let out = rq.run(&format!(
            "{BURST}from rq.serializers import JSONSerializer\n\
             qf = Queue('f', connection=r, serializer=JSONSerializer)\n\
             ok = qf.enqueue('jobs.add', 1, y=2)\nbad = qf.enqueue('jobs.boom', 'it broke 17')\n\
             SimpleWorker([qf], connection=r, serializer=JSONSerializer).work(burst=True, logging_level='WARNING')\n\
             print(ok.id, bad.id)\n"
        ))?;
        let ids = last_line_words(&out);
        let ok = redis_view::job(&conn, ids[0]).await?;
        assert_eq!(ok.status, "finished");
        assert_eq!(ok.result.as_deref(), Some("{'sum': 3}"));
        let bad = redis_view::job(&conn, ids[1]).await?;
        assert_eq!(bad.status, "failed");
        let exc = bad.exc_info.unwrap_or_default();
        assert!(exc.contains("ValueError: it broke 17"), "{exc}");
        assert!(bad.worker_name.is_some() && bad.ended_at.is_some());

        let missing = redis_view::job(&conn, "no-such-job").await;
        assert!(matches!(
            missing,
            Err(mindora_console::data::DataError::NoSuchJob(_))
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_pages_and_failed_ids() -> Result<()> {
    let rq = PythonRq::lease("3.0")?;
    let conn = rq.db.sdk_conn().await?;
    rq.enqueue("for i in range(25): q.enqueue('jobs.add', i)\n")?;
    let (total, page) = redis_view::queue_jobs(&conn, "default", Registry::Queued, 20, 10).await?;
    assert_eq!((total, page.len()), (25, 5));
    assert!(page
        .iter()
        .all(|j| j.function == "jobs.add" && j.status == "queued"));

    rq.run(&format!(
        "{BURST}qf = Queue('f', connection=r)\n\
         for i in range(4): qf.enqueue('jobs.boom', str(i))\n\
         qf.enqueue('jobs.add', 'x')\n\
         burst('f')\n"
    ))?;
    let (total, failed) = redis_view::queue_jobs(&conn, "f", Registry::Failed, 0, 50).await?;
    assert_eq!(total, 5);
    assert!(failed
        .iter()
        .all(|j| j.status == "failed" && j.ended_at.is_some()));
    let all = redis_view::failed_ids(&conn, "f", None, 100).await?;
    let boom = redis_view::failed_ids(&conn, "f", Some("jobs.boom"), 100).await?;
    let capped = redis_view::failed_ids(&conn, "f", None, 2).await?;
    assert_eq!((all.len(), boom.len(), capped.len()), (5, 4, 2));
    Ok(())
}

/// Our worker runs many jobs at once: the overview lists every one of them as current
/// (from rq 3.0's per-worker executions set), and the queue's started count agrees.
#[tokio::test(flavor = "multi_thread")]
async fn a_concurrent_worker_shows_every_current_job() -> Result<()> {
    let rq = PythonRq::lease("3.0")?;
    let conn = rq.db.sdk_conn().await?;
    let out = rq.run(&format!(
        "{}print(' '.join(q.enqueue('mindora.sleep', 4).id for _ in range(3)))\n",
        mindora_tests::python_rq::DEFAULT_QUEUE
    ))?;
    let mut ids: Vec<String> = last_line_words(&out)
        .iter()
        .map(|s| s.to_string())
        .collect();
    ids.sort();
    let _w = mindora_tests::WorkerProcess::start(&rq.db, "w-many", &["--concurrency", "4"])?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let o = redis_view::overview(&conn).await?;
        let busy = o.workers.iter().find(|w| w.name == "w-many");
        if let Some(w) = busy.filter(|w| w.current_jobs.len() == 3) {
            assert_eq!(w.current_jobs, ids);
            assert_eq!(w.state, "busy");
            let d = o
                .queues
                .iter()
                .find(|q| q.name == "default")
                .expect("default");
            assert_eq!((d.queued, d.started), (0, 3));
            let j = redis_view::job(&conn, &ids[0]).await?;
            assert_eq!(
                (j.status.as_str(), j.worker_name.as_deref()),
                ("started", Some("w-many"))
            );
            let (total, page) =
                redis_view::queue_jobs(&conn, "default", Registry::Started, 0, 10).await?;
            assert_eq!(total, 3);
            let mut started: Vec<String> = page.into_iter().map(|s| s.id).collect();
            started.sort();
            assert_eq!(started, ids);
            return Ok(());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "worker never showed 3 current jobs: {busy:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
