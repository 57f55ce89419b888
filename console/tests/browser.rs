//! The console in a real browser (Debian's headless Chromium over WebDriver), against real
//! Redis, PostgreSQL and Python rq 2.12 / 3.0 (enqueuing and working): log in; see a queue's
//! counts change as Python rq enqueues; read the three attempts of a job that failed twice
//! and then succeeded; search by error text; bulk-requeue failed jobs by filter and see
//! them finish; an action refused to a viewer and one without a CSRF token. Screenshots of
//! the main pages go to `$CARGO_TARGET_DIR/console-screenshots/`.
//!
//! The retried job runs on a real `mindora-worker` that writes the history (the test fails
//! when the binary lacks `--history-database-url`); the failed Python rq jobs' rows are
//! written into the history directly (Python rq workers write none).

mod common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::browser::Driver;
use common::{Console, OPERATOR, VIEWER};
use mindora_tests::python_rq::PythonRq;
use redis::Commands;
use serde_json::json;
use thirtyfour::prelude::*;

/// The `mindora-worker` next to the tests; it must write the history
/// (`--history-database-url`): the test fails loudly with an older binary.
fn worker_with_history() -> Result<std::path::PathBuf> {
    let bin = mindora_tests::worker_binary()?;
    let help = std::process::Command::new(&bin)
        .arg("--help")
        .output()
        .with_context(|| format!("running {} --help", bin.display()))?;
    ensure!(
        String::from_utf8_lossy(&help.stdout).contains("--history-database-url"),
        "{} has no --history-database-url: rebuild it \
         (`cargo build -p mindora-worker-app --bin mindora-worker`)",
        bin.display()
    );
    Ok(bin)
}

/// Job `retried-job` on queue `retryq`, failed twice then finished, with its three attempts
/// in the history written by a real `mindora-worker` (`mindora.flaky`, rq's
/// `Retry(max=2, interval=1)` from Python rq 3.0). The worker is stopped once the three
/// attempts are in, so nothing else of the test races with it. Returns an error text the
/// timeline shows.
async fn retried_job(rq: &PythonRq, con: &Console) -> Result<String> {
    worker_with_history()?;
    let mut worker = mindora_tests::WorkerProcess::start(
        &rq.db,
        "console-browser-worker",
        &[
            "--queues",
            "retryq",
            "--history-database-url",
            &common::pg_url(),
            "--history-schema",
            "console_browser",
        ],
    )?;
    rq.run(
        "from rq import Retry\nq = Queue('retryq', connection=r)\n\
         q.enqueue('mindora.flaky', 2, job_id='retried-job', retry=Retry(max=2, interval=1))\n",
    )?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while con.history()?.timeline("retried-job").await?.len() < 3 {
        ensure!(
            std::time::Instant::now() < deadline,
            "three attempts of retried-job not in the history after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    worker.signal("TERM")?;
    worker.wait_exit(Duration::from_secs(30))?;
    Ok("flaky attempt 1 of 2 failing".into())
}

const BURST: &str = "from rq import Worker\nWorker([Queue(n, connection=r) for n in QUEUES], connection=r).work(burst=True)\n";

async fn login(d: &WebDriver, con: &Console, user: &str, pw: &str) -> Result<()> {
    d.delete_all_cookies().await?;
    d.goto(con.url("/login")).await?;
    d.find(By::Id("username")).await?.send_keys(user).await?;
    d.find(By::Id("password")).await?.send_keys(pw).await?;
    d.find(By::Css("form.login button")).await?.click().await?;
    let who = d.find(By::Css("header .who span")).await?.text().await?;
    ensure!(who.starts_with(user), "logged in as {who:?}");
    Ok(())
}

/// The count the overview shows for `queue` in `registry`.
async fn count(d: &WebDriver, con: &Console, queue: &str, registry: &str) -> Result<u64> {
    d.goto(con.url("/")).await?;
    let cell = d
        .find(By::Css(format!(
            "tr[data-queue='{queue}'] td[data-registry='{registry}']"
        )))
        .await?;
    Ok(cell.text().await?.trim().parse()?)
}

/// Polls the overview until `queue`'s `registry` count is `want`.
async fn wait_count(
    d: &WebDriver,
    con: &Console,
    queue: &str,
    registry: &str,
    want: u64,
) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n = count(d, con, queue, registry).await.unwrap_or(u64::MAX);
        if n == want {
            return Ok(());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "{queue} {registry}: {n}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Posts a form from the page as a crafted request would (WebDriver's script runs outside
/// the page's CSP): to `action`, with `csrf` when given.
async fn post_from_page(d: &WebDriver, action: &str, csrf: Option<&str>) -> Result<()> {
    d.execute(
        "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];\
         if (arguments[1]) { const i = document.createElement('input'); i.type = 'hidden';\
           i.name = 'csrf'; i.value = arguments[1]; f.appendChild(i); }\
         document.body.appendChild(f); f.submit();",
        vec![json!(action), json!(csrf)],
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

fn python(rq: &PythonRq, version: &str, queues: &str, code: &str) -> Result<String> {
    let code = format!("QUEUES = {queues}\n{code}");
    if version == rq.version {
        rq.run(&code)
    } else {
        mindora_tests::run_python(version, &rq.db, &code)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn console_in_a_real_browser() -> Result<()> {
    let rq = PythonRq::lease("3.0")?;
    let con = Console::start(&rq.db, "console_browser").await?;
    // 72 h of one function for the charts, written before the first overview: the console
    // computes an hour once it is closed (hourly.rs).
    con.seed_hours("reports.build").await?;
    let browser = Driver::start().await?;
    let d = browser.get()?;

    // Log in (the login page first).
    d.goto(con.url("/")).await?;
    ensure!(
        d.current_url().await?.path() == "/console/login",
        "not sent to the login page"
    );
    browser.shot("login").await?;
    login(d, &con, OPERATOR.0, OPERATOR.1).await?;

    // A queue's counts change as real Python rq (2.12, then 3.0) enqueues.
    python(
        &rq,
        "2.12",
        "[]",
        "q = Queue('browserq', connection=r)\nfor i in range(3): q.enqueue('jobs.add', i, 1)\n",
    )?;
    wait_count(d, &con, "browserq", "queued", 3).await?;
    python(
        &rq,
        "3.0",
        "[]",
        "q = Queue('browserq', connection=r)\nfor i in range(2): q.enqueue('jobs.add', i, 2)\n",
    )?;
    wait_count(d, &con, "browserq", "queued", 5).await?;

    // A job that failed twice and then succeeded, read from its three attempts in order.
    let error_text = retried_job(&rq, &con).await?;
    d.goto(con.url("/jobs/retried-job")).await?;
    let items = d.find_all(By::Css("#timeline li")).await?;
    let mut seen = Vec::new();
    for li in &items {
        seen.push((
            li.attr("data-attempt").await?.unwrap_or_default(),
            li.find(By::Css(".badge")).await?.text().await?,
        ));
    }
    ensure!(
        seen == [
            ("1".into(), "retried".to_string()),
            ("2".into(), "retried".into()),
            ("3".into(), "finished".into())
        ],
        "timeline: {seen:?}"
    );
    let job = d.find(By::Id("job")).await?.text().await?;
    ensure!(job.contains("finished") && job.contains("retryq"), "{job}");
    let page = d.source().await?;
    ensure!(
        page.contains(&error_text),
        "no {error_text:?} on the job page"
    );
    browser.shot("job").await?;
    let timeline = d.find(By::Id("timeline")).await?;
    timeline.scroll_into_view().await?;
    browser.shot("job-timeline").await?;

    // Failed jobs: Python rq runs a function that fails while a flag is set.
    let mut conn = rq.db.conn()?;
    let _: () = conn.set("console-test:fail", 1)?;
    python(&rq, "2.12", "['bulkq']", &format!("q = Queue('bulkq', connection=r)\nfor i in range(4): q.enqueue('consoletasks.flaky', i, job_id=f'bulk-{{i}}')\n{BURST}"))?;
    wait_count(d, &con, "bulkq", "failed", 4).await?;
    for i in 0..4 {
        con.insert_attempt(
            &format!("bulk-{i}"),
            "bulkq",
            "consoletasks.flaky",
            1,
            "failed",
            20,
            Some((
                "RuntimeError",
                &format!("upstream unavailable for item {i}"),
            )),
            None,
        )
        .await?;
    }

    // Search by error text.
    d.goto(con.url("/search")).await?;
    d.find(By::Css("input[name='error']"))
        .await?
        .send_keys("upstream unavailable")
        .await?;
    d.find(By::Css("form.filter button[type='submit']"))
        .await?
        .click()
        .await?;
    // The results page, waited for (the submit navigates).
    browser.must_find(By::Id("total"), "total").await?;
    let rows = d.find_all(By::Css("#results tbody tr")).await?;
    ensure!(rows.len() == 4, "search found {} rows", rows.len());
    ensure!(d.find(By::Id("total")).await?.text().await? == "4");
    browser.shot("search").await?;
    d.goto(con.url("/errors")).await?;
    let groups = d.find(By::Id("groups")).await?.text().await?;
    ensure!(
        groups.contains("RuntimeError") && groups.contains("upstream unavailable for item #"),
        "{groups}"
    );
    browser.shot("errors").await?;

    // Bulk requeue by filter (status failed, queue bulkq): preview, confirm, report.
    d.goto(con.url("/search?queue=bulkq&status=failed")).await?;
    d.find(By::LinkText("requeue")).await?.click().await?;
    let preview = browser
        .must_find(By::Id("count"), "count")
        .await?
        .text()
        .await?;
    ensure!(preview.starts_with("4 jobs match"), "{preview}");
    ensure!(d.find_all(By::Css("#sample tbody tr")).await?.len() == 4);
    browser.shot("bulk-preview").await?;
    d.goto(con.url("/queues/bulkq/failed")).await?;
    ensure!(d.find_all(By::Css("#jobs tbody tr")).await?.len() == 4);
    browser.shot("queue-failed").await?;
    d.goto(con.url("/bulk?action=requeue&queue=bulkq&status=failed"))
        .await?;
    let _: () = conn.del("console-test:fail")?;
    browser
        .must_find(By::Id("confirm"), "confirm")
        .await?
        .click()
        .await?;
    let done = browser
        .must_find(By::Id("done"), "done")
        .await?
        .text()
        .await?;
    ensure!(done == "4", "bulk requeue done {done}, want 4");
    browser.shot("bulk-result").await?;
    wait_count(d, &con, "bulkq", "queued", 4).await?;
    // A real Python rq worker drains them; the overview shows them finished, and it.
    let mut worker = mindora_tests::python_command("3.0", &rq.db)?
        .arg("-c")
        .arg(format!(
            "{}QUEUES = ['bulkq', 'browserq']\n{}",
            mindora_tests::PYTHON_PRELUDE,
            BURST.replace("burst=True", "burst=False")
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let drained = async {
        wait_count(d, &con, "bulkq", "finished", 4).await?;
        wait_count(d, &con, "browserq", "finished", 5).await
    }
    .await;
    d.goto(con.url("/")).await?;
    let workers = d.find(By::Id("workers")).await.map(|_| ());
    browser.shot("overview").await?;
    let _ = worker.kill();
    let _ = worker.wait();
    drained?;
    workers.context("the Python rq worker is not on the overview")?;
    ensure!(count(d, &con, "bulkq", "failed").await? == 0);
    let audit = con.audit().await?;
    ensure!(
        audit
            .iter()
            .any(|a| a.0 == "ann" && a.1 == "bulk_requeue" && a.3 == 4),
        "{audit:?}"
    );

    // Cron entries from rq 3.0's own CronScheduler registry; an rq 3.0 rate limit.
    rq.run(
        "from datetime import timedelta\nfrom rq.cron import CronScheduler\nfrom rq.utils import now\n\
         import jobs\n\
         cs = CronScheduler(connection=r, name='nightly-scheduler')\n\
         a = cs.register(jobs.add, queue_name='reports', args=(1,), cron='*/5 * * * *', name='every5')\n\
         a.set_enqueue_time(now() - timedelta(minutes=21))\n\
         b = cs.register(jobs.add, queue_name='reports', interval=60, name='minutely')\n\
         b.set_enqueue_time(now() - timedelta(seconds=30))\n\
         cs.register_birth()\n\
         from rq.rate_limit import RateLimit\nq = Queue('limited', connection=r)\n\
         for i in range(3): q.enqueue('jobs.add', i, rate_limit=RateLimit('partner-api', 1))\n",
    )?;
    d.goto(con.url("/cron")).await?;
    let cron = d.find(By::Id("cron")).await?.text().await?;
    ensure!(
        cron.contains("every5") && cron.contains("*/5 * * * *"),
        "{cron}"
    );
    browser.shot("cron").await?;
    d.goto(con.url("/ratelimits")).await?;
    let limits = d.find(By::Id("ratelimits")).await?.text().await?;
    ensure!(limits.contains("partner-api"), "{limits}");
    browser.shot("ratelimits").await?;
    d.goto(con.url("/audit")).await?;
    browser.shot("audit").await?;

    // Without a CSRF token the operator is refused; nothing happens.
    d.goto(con.url("/")).await?;
    post_from_page(d, "/console/suspend", None).await?;
    ensure!(
        d.title().await?.starts_with("Forbidden"),
        "{}",
        d.title().await?
    );
    ensure!(
        !conn.exists::<_, bool>("rq:suspended")?,
        "suspended without a token"
    );

    // A viewer sees no buttons and is refused even with the session's own token.
    login(d, &con, VIEWER.0, VIEWER.1).await?;
    d.goto(con.url("/jobs/retried-job")).await?;
    ensure!(
        d.find_all(By::Css("div.actions button")).await?.is_empty(),
        "viewer sees action buttons"
    );
    let token = d
        .find(By::Css("header form input[name='csrf']"))
        .await?
        .attr("value")
        .await?
        .context("no token")?;
    post_from_page(d, "/console/jobs/retried-job/delete", Some(&token)).await?;
    ensure!(
        d.title().await?.starts_with("Forbidden"),
        "{}",
        d.title().await?
    );
    let body = d.find(By::Css("main")).await?.text().await?;
    ensure!(body.contains("operator role"), "{body}");
    browser.shot("viewer-refused").await?;
    ensure!(
        conn.exists::<_, bool>("rq:job:retried-job")?,
        "a viewer deleted a job"
    );

    browser.quit().await?;
    Ok(())
}
