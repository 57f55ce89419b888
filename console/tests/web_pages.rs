//! Pages over HTTP against the real router, Redis, PostgreSQL and Python rq: without the
//! history the console says so and bulk-requeues from Redis's failed registry; search pages
//! by keyset; a job only the history remembers; bad input is a clear 400, never a crash; an
//! expired or forged session is no session; every link stays under the base path.

mod common;

use anyhow::Result;
use axum_extra::extract::cookie::Key;
use common::{client, csrf_of, get, login, Console, OPERATOR, VIEWER};
use cookie::{Cookie, CookieJar};
use mindora_tests::python_rq::PythonRq;
use redis::Commands;
use reqwest::{header, redirect, Client, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_history_redis_only_and_bulk_from_the_failed_registry() -> Result<()> {
    let rq = PythonRq::lease("2.12")?;
    let con = Console::start_with(&rq.db, None).await?;
    rq.enqueue(
        "import jobs\nfrom rq import Worker\nfq = Queue('fails', connection=r)\n\
         for i in range(3): fq.enqueue(jobs.boom, f'bad input {i}', job_id=f'fail-{i}')\n\
         fq.enqueue('jobs.add', 1, job_id='ok-0')\n\
         Worker([fq], connection=r).work(burst=True)\n",
    )?;
    let c = client()?;
    login(&c, &con, OPERATOR.0, OPERATOR.1).await?;
    let (code, html) = get(&c, &con, "/").await?;
    assert_eq!(code, StatusCode::OK);
    assert!(html.contains("History is off"), "{html}");
    let (_, html) = get(&c, &con, "/search").await?;
    assert!(html.contains("History is off"));
    let (_, html) = get(&c, &con, "/jobs/fail-1").await?;
    assert!(
        html.contains("The history is off") && html.contains("bad input 1"),
        "{html}"
    );

    // Bulk requeue of a queue's failed jobs, from Redis.
    let (code, html) = get(&c, &con, "/bulk?action=requeue&queue=fails&status=failed").await?;
    assert_eq!(code, StatusCode::OK);
    assert!(
        html.contains("<strong>3</strong> jobs match now")
            && html.contains("Redis failed registry"),
        "{html}"
    );
    let (code, html) = get(&c, &con, "/bulk?action=requeue&function=jobs.boom").await?;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{html}");
    assert!(html.contains("needs a queue"));
    let token = csrf_of(&html).unwrap_or_default();
    let r = c
        .post(con.url("/bulk"))
        .form(&[
            ("csrf", token.as_str()),
            ("action", "requeue"),
            ("queue", "fails"),
            ("status", "failed"),
        ])
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await?;
    assert!(
        html.contains("<strong id=\"done\">3</strong> of 3"),
        "{html}"
    );
    let mut conn = rq.db.conn()?;
    let queued: u64 = conn.llen("rq:queue:fails")?;
    assert_eq!(queued, 3);
    let status: Option<String> = conn.hget("rq:job:fail-0", "status")?;
    assert_eq!(status.as_deref(), Some("queued"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn search_paging_history_only_jobs_and_bad_input() -> Result<()> {
    let db = mindora_tests::RedisDb::lease()?;
    let con = Console::start(&db, "console_web_pages").await?;
    for i in 0..120 {
        con.insert_attempt(
            &format!("gone-{i:03}"),
            "q1",
            "mod.f",
            1,
            "failed",
            1000 - i,
            Some(("KeyError", "missing key 'x'")),
            None,
        )
        .await?;
    }
    let c = client()?;
    login(&c, &con, VIEWER.0, VIEWER.1).await?;

    // Keyset paging: 50 + 50 + 20 rows, newest first, no row twice.
    let mut seen = Vec::new();
    let mut path = "/search?function=mod.f".to_string();
    for _ in 0..5 {
        let (code, html) = get(&c, &con, &path).await?;
        assert_eq!(code, StatusCode::OK);
        assert!(html.contains("<strong id=\"total\">120</strong>"));
        let ids: Vec<String> = html
            .match_indices("/console/jobs/gone-")
            .map(|(at, _)| html[at + 14..at + 22].to_string())
            .collect();
        seen.extend(ids);
        match html.find("older →") {
            Some(end) => {
                let start = html[..end].rfind("href=\"").unwrap_or(0) + 6;
                let href = html[start..end]
                    .split('"')
                    .next()
                    .unwrap_or_default()
                    .replace("&amp;", "&");
                path = href.trim_start_matches("/console").to_string();
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 120, "{seen:?}");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 120);
    assert_eq!(seen[0], "gone-119");

    // A job Redis forgot: the history's attempts, and the page says so.
    let (code, html) = get(&c, &con, "/jobs/gone-007").await?;
    assert_eq!(code, StatusCode::OK);
    assert!(html.contains("Redis no longer holds this job") && html.contains("missing key"));
    assert!(html.contains("href=\"https://traces.example/trace/4bf92f3577b34da6a3ce929d0e0e4736\""));
    let (code, _) = get(&c, &con, "/jobs/never-existed").await?;
    assert_eq!(code, StatusCode::NOT_FOUND);

    // Bad input: a clear 400 or a message, never a crash.
    let (code, html) = get(&c, &con, "/search?from=yesterday").await?;
    assert_eq!(code, StatusCode::OK);
    assert!(html.contains("bad time &quot;yesterday&quot;"), "{html}");
    let (code, _) = get(&c, &con, "/queues/q1/nonsense").await?;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _) = get(&c, &con, "/bulk?action=explode&queue=q1").await?;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, _) = get(&c, &con, "/bulk?action=delete").await?;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, _) = get(&c, &con, &format!("/search?error={}", "%25".repeat(3000))).await?;
    assert_eq!(code, StatusCode::OK);

    // Rows a writer dropped are said on every page that reads the history.
    sqlx::query(
        "INSERT INTO mindora_history_writers (worker, written, dropped) VALUES ('w1', 10, 7)",
    )
    .execute(con.history()?.pool())
    .await?;
    for page in ["/", "/search", "/jobs/gone-001"] {
        let (_, html) = get(&c, &con, page).await?;
        assert!(
            html.contains("The history is missing 7 rows"),
            "{page}: {html}"
        );
    }

    // Errors page groups the 120 failures in one line.
    let (_, html) = get(&c, &con, "/errors").await?;
    assert!(
        html.contains("KeyError") && html.contains(">120<"),
        "{html}"
    );

    // Every link and form stays under the base path.
    for page in [
        "/",
        "/search?function=mod.f",
        "/errors",
        "/jobs/gone-001",
        "/cron",
        "/audit",
        "/queues/q1/failed",
    ] {
        let (_, html) = get(&c, &con, page).await?;
        for attr in ["href=\"", "action=\""] {
            for (at, _) in html.match_indices(attr) {
                let v = &html[at + attr.len()..];
                assert!(
                    v.starts_with("/console/") || v.starts_with("https://traces.example/"),
                    "{page}: {}",
                    &v[..v.len().min(60)]
                );
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_sessions_are_no_sessions() -> Result<()> {
    let db = mindora_tests::RedisDb::lease()?;
    let con = Console::start_with(&db, None).await?;
    // A cookie sealed with the console's own key, but expired.
    let key = Key::derive_from(common::SECRET);
    let mut jar = CookieJar::new();
    let expired = serde_json::json!({"user": "ann", "role": "operator", "csrf": "ab", "expires": chrono::Utc::now().timestamp() - 1});
    jar.private_mut(&key)
        .add(Cookie::new("mindora_console_session", expired.to_string()));
    let sealed = jar
        .get("mindora_console_session")
        .map(|c| c.value().to_string())
        .unwrap_or_default();
    let plain = Client::builder()
        .redirect(redirect::Policy::none())
        .build()?;
    let r = plain
        .get(con.url("/"))
        .header(header::COOKIE, format!("mindora_console_session={sealed}"))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The same, not expired: a session (so the check above is the expiry).
    let mut jar = CookieJar::new();
    let fresh = serde_json::json!({"user": "ann", "role": "operator", "csrf": "ab", "expires": chrono::Utc::now().timestamp() + 600});
    jar.private_mut(&key)
        .add(Cookie::new("mindora_console_session", fresh.to_string()));
    let sealed = jar
        .get("mindora_console_session")
        .map(|c| c.value().to_string())
        .unwrap_or_default();
    let r = plain
        .get(con.url("/"))
        .header(header::COOKIE, format!("mindora_console_session={sealed}"))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    // A role the users file does not give (bob is a viewer): no session.
    let mut jar = CookieJar::new();
    let promoted = serde_json::json!({"user": "bob", "role": "operator", "csrf": "ab", "expires": chrono::Utc::now().timestamp() + 600});
    jar.private_mut(&key)
        .add(Cookie::new("mindora_console_session", promoted.to_string()));
    let sealed = jar
        .get("mindora_console_session")
        .map(|c| c.value().to_string())
        .unwrap_or_default();
    let r = plain
        .get(con.url("/"))
        .header(header::COOKIE, format!("mindora_console_session={sealed}"))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_away_is_said_and_pages_still_answer() -> Result<()> {
    let rq = PythonRq::lease("3.0")?;
    rq.enqueue("q.enqueue('jobs.add', 1, job_id='still-here')")?;
    let closed = mindora_tests::free_port()?;
    let url = format!("postgres://postgres@127.0.0.1:{closed}/test");
    let con = Console::start_full(&rq.db, Some("console_web_away"), None, Some(&url)).await?;
    let c = client()?;
    login(&c, &con, OPERATOR.0, OPERATOR.1).await?;
    for page in [
        "/",
        "/jobs/still-here",
        "/search?error=x",
        "/errors",
        "/audit",
        "/queues/default/queued",
    ] {
        let started = std::time::Instant::now();
        let (code, html) = get(&c, &con, page).await?;
        assert_eq!(code, StatusCode::OK, "{page}: {html}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(8),
            "{page} took {:?}",
            started.elapsed()
        );
        if page != "/queues/default/queued" {
            assert!(
                html.contains("History database unreachable"),
                "{page}: {html}"
            );
        }
    }
    // Redis still acts; the audit row cannot be written and the page says so.
    let (_, html) = get(&c, &con, "/jobs/still-here").await?;
    let token = csrf_of(&html).unwrap_or_default();
    let r = c
        .post(con.url("/jobs/still-here/cancel"))
        .form(&[("csrf", token.as_str())])
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, html) = get(
        &c,
        &con,
        r.headers()[header::LOCATION]
            .to_str()?
            .trim_start_matches("/console"),
    )
    .await?;
    assert!(
        html.contains("cancel: done") && html.contains("audit row was not written"),
        "{html}"
    );
    Ok(())
}

/// Python rq workers write no history: the queue page's bulk link acts on the failed
/// registry as Redis holds it, even with the history on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_page_bulk_acts_on_redis_with_history_on() -> Result<()> {
    let rq = PythonRq::lease("3.0")?;
    let con = Console::start(&rq.db, "console_web_redis_bulk").await?;
    rq.enqueue(
        "import jobs\nfrom rq import Worker\nfq = Queue('pyfails', connection=r)\n\
         for i in range(2): fq.enqueue(jobs.boom, f'x{i}', job_id=f'py-fail-{i}')\n\
         Worker([fq], connection=r).work(burst=True)\n",
    )?;
    let c = client()?;
    login(&c, &con, OPERATOR.0, OPERATOR.1).await?;
    let (_, html) = get(&c, &con, "/queues/pyfails/failed").await?;
    let link = "/bulk?action=requeue&amp;source_of_ids=redis&amp;queue=pyfails&amp;status=failed";
    assert!(html.contains(link), "{html}");
    let (_, html) = get(&c, &con, "/bulk?action=requeue&queue=pyfails&status=failed").await?;
    assert!(
        html.contains("<strong>0</strong> jobs match now") && html.contains("from the history"),
        "{html}"
    );
    let (_, html) = get(&c, &con, &link.replace("&amp;", "&")).await?;
    assert!(
        html.contains("<strong>2</strong> jobs match now")
            && html.contains("Redis failed registry"),
        "{html}"
    );
    let token = csrf_of(&html).unwrap_or_default();
    let r = c
        .post(con.url("/bulk"))
        .form(&[
            ("csrf", token.as_str()),
            ("action", "requeue"),
            ("source_of_ids", "redis"),
            ("queue", "pyfails"),
            ("status", "failed"),
        ])
        .send()
        .await?;
    let html = r.text().await?;
    assert!(
        html.contains("<strong id=\"done\">2</strong> of 2"),
        "{html}"
    );
    let queued: u64 = rq.db.conn()?.llen("rq:queue:pyfails")?;
    assert_eq!(queued, 2);
    Ok(())
}
