//! Access control over HTTP against the real router, real Redis (a job enqueued by Python
//! rq) and real PostgreSQL: no anonymous access, wrong passwords, login throttling, viewers
//! refused, CSRF checked on every POST, an operator's action done and audited, and the
//! security headers.

mod common;

use anyhow::Result;
use common::{csrf_of, Console, OPERATOR, VIEWER};
use mindora_tests::python_rq::PythonRq;
use redis::Commands;
use reqwest::{header, redirect, Client, StatusCode};

fn client() -> Result<Client> {
    Ok(Client::builder()
        .cookie_store(true)
        .redirect(redirect::Policy::none())
        .build()?)
}

/// Logs in through the form (GET for its token, POST); returns the status of the POST.
async fn login(c: &Client, con: &Console, user: &str, pw: &str) -> Result<StatusCode> {
    let form = c.get(con.url("/login")).send().await?.text().await?;
    let token = csrf_of(&form).unwrap_or_default();
    Ok(c.post(con.url("/login"))
        .form(&[
            ("username", user),
            ("password", pw),
            ("csrf", token.as_str()),
        ])
        .send()
        .await?
        .status())
}

/// The session's CSRF token (from the logout form every page has).
async fn token(c: &Client, con: &Console) -> Result<String> {
    let page = c.get(con.url("/search")).send().await?.text().await?;
    csrf_of(&page).ok_or_else(|| anyhow::anyhow!("no CSRF token on the page"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn access_control_csrf_roles_and_audit() -> Result<()> {
    let rq = PythonRq::lease("3.0")?;
    let con = Console::start(&rq.db, "console_web_http").await?;
    rq.enqueue("j = q.enqueue('jobs.add', 1, 2, job_id='web-http-job')\nq.enqueue('jobs.add', 3, job_id='other-job')")?;

    // Anonymous: browsers are sent to the login page, other clients get 401, actions too.
    let anon = client()?;
    let r = anon
        .get(con.url("/"))
        .header(header::ACCEPT, "text/html")
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION], "/console/login");
    for path in [
        "/",
        "/jobs/web-http-job",
        "/search",
        "/audit",
        "/cron",
        "/bulk?action=requeue&queue=default",
    ] {
        assert_eq!(
            anon.get(con.url(path)).send().await?.status(),
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    let r = anon
        .post(con.url("/jobs/web-http-job/cancel"))
        .form(&[("csrf", "x")])
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        anon.post(con.url("/suspend")).send().await?.status(),
        StatusCode::UNAUTHORIZED
    );

    // The login form itself carries a CSRF token.
    let r = anon
        .post(con.url("/login"))
        .form(&[("username", OPERATOR.0), ("password", OPERATOR.1)])
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // Wrong password: no session.
    assert_eq!(
        login(&anon, &con, OPERATOR.0, "wrong").await?,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&anon, &con, "nobody", "wrong").await?,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        anon.get(con.url("/")).send().await?.status(),
        StatusCode::UNAUTHORIZED
    );

    // Viewer: sees, cannot act (403 even with the right token), sees no action buttons.
    let viewer = client()?;
    assert_eq!(
        login(&viewer, &con, VIEWER.0, VIEWER.1).await?,
        StatusCode::SEE_OTHER
    );
    let page = viewer.get(con.url("/jobs/web-http-job")).send().await?;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await?;
    assert!(html.contains("jobs.add"), "{html}");
    assert!(
        !html.contains("/jobs/web-http-job/cancel"),
        "viewer sees an action button"
    );
    let t = token(&viewer, &con).await?;
    for path in [
        "/jobs/web-http-job/cancel",
        "/suspend",
        "/queues/default/pause",
    ] {
        let r = viewer
            .post(con.url(path))
            .form(&[("csrf", t.as_str())])
            .send()
            .await?;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let r = viewer
        .post(con.url("/bulk"))
        .form(&[
            ("csrf", t.as_str()),
            ("action", "delete"),
            ("queue", "default"),
        ])
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // Operator: every POST without or with a wrong token is refused, and changes nothing.
    let op = client()?;
    assert_eq!(
        login(&op, &con, OPERATOR.0, OPERATOR.1).await?,
        StatusCode::SEE_OTHER
    );
    let t = token(&op, &con).await?;
    let wrong = "0".repeat(64);
    for path in [
        "/jobs/web-http-job/cancel",
        "/suspend",
        "/queues/default/pause",
        "/logout",
    ] {
        let r = op.post(con.url(path)).send().await?;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "no token: {path}");
        let r = op
            .post(con.url(path))
            .form(&[("csrf", wrong.as_str())])
            .send()
            .await?;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "wrong token: {path}");
    }
    let r = op
        .post(con.url("/bulk"))
        .form(&[("action", "delete"), ("queue", "default")])
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let mut conn = rq.db.conn()?;
    let status: Option<String> = conn.hget("rq:job:web-http-job", "status")?;
    assert_eq!(status.as_deref(), Some("queued"));
    assert!(con.audit().await?.is_empty());

    // ... and with the token the action is done, audited, and reported on the job page.
    let r = op
        .post(con.url("/jobs/web-http-job/cancel"))
        .form(&[("csrf", t.as_str())])
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = r.headers()[header::LOCATION].to_str()?.to_string();
    assert!(
        back.starts_with("/console/jobs/web-http-job?msg="),
        "{back}"
    );
    let status: Option<String> = conn.hget("rq:job:web-http-job", "status")?;
    assert_eq!(status.as_deref(), Some("canceled"));
    let audit = con.audit().await?;
    assert_eq!(
        audit,
        vec![("ann".into(), "cancel".into(), "web-http-job".into(), 1)]
    );
    let r = op
        .post(con.url("/suspend"))
        .form(&[("csrf", t.as_str())])
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let overview = op.get(con.url("/")).send().await?.text().await?;
    assert!(overview.contains("Workers are suspended"), "{overview}");
    let audit_page = op.get(con.url("/audit")).send().await?.text().await?;
    assert!(audit_page.contains("suspend") && audit_page.contains("web-http-job"));

    // Security headers on pages.
    let r = op.get(con.url("/")).send().await?;
    let h = r.headers();
    assert!(h[header::CONTENT_SECURITY_POLICY]
        .to_str()?
        .contains("default-src 'none'"));
    assert!(!h[header::CONTENT_SECURITY_POLICY]
        .to_str()?
        .contains("script-src"));
    assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
    assert!(h[header::CACHE_CONTROL].to_str()?.contains("no-store"));

    // Logout ends the session.
    let r = op
        .post(con.url("/logout"))
        .form(&[("csrf", t.as_str())])
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        op.get(con.url("/")).send().await?.status(),
        StatusCode::UNAUTHORIZED
    );

    // Throttling: after 5 wrong passwords even the right one is refused for a while.
    let t2 = client()?;
    for _ in 0..5 {
        assert_eq!(
            login(&t2, &con, VIEWER.0, "nope").await?,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login(&t2, &con, VIEWER.0, VIEWER.1).await?,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        login(&t2, &con, OPERATOR.0, OPERATOR.1).await?,
        StatusCode::SEE_OTHER
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_cookie_is_private() -> Result<()> {
    let db = mindora_tests::RedisDb::lease()?;
    let con = Console::start(&db, "console_web_http_cookie").await?;
    let c = client()?;
    let form = c.get(con.url("/login")).send().await?.text().await?;
    let token = csrf_of(&form).unwrap_or_default();
    let r = c
        .post(con.url("/login"))
        .form(&[
            ("username", VIEWER.0),
            ("password", VIEWER.1),
            ("csrf", token.as_str()),
        ])
        .send()
        .await?;
    let cookie = r
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("mindora_console_session="))
        .unwrap_or_default()
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("Path=/console"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("bob") && !cookie.contains("viewer"),
        "cookie not encrypted: {cookie}"
    );
    // A forged cookie (the plain JSON of an operator session) is no session.
    let forged = Client::builder()
        .redirect(redirect::Policy::none())
        .build()?;
    let r = forged
        .get(con.url("/"))
        .header(header::COOKIE, "mindora_console_session={\"user\":\"ann\",\"role\":\"operator\",\"csrf\":\"x\",\"expires\":9999999999}")
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    Ok(())
}

/// The users file is re-read when it changes: a user added by `add-user` while the console
/// runs can log in, a removed user's session ends, and a broken file keeps the last good
/// users.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_file_changes_apply_without_a_restart() -> Result<()> {
    use mindora_console::web::users::{add_user, Role};
    let db = mindora_tests::RedisDb::lease()?;
    let con = Console::start_with(&db, None).await?;
    let wait = || tokio::time::sleep(std::time::Duration::from_millis(300));
    let carl = client()?;
    assert_eq!(
        login(&carl, &con, "carl", "carl-new-pw").await?,
        StatusCode::UNAUTHORIZED
    );
    add_user(&con.users_file, "carl", Role::Viewer, "carl-new-pw")?;
    wait().await;
    assert_eq!(
        login(&carl, &con, "carl", "carl-new-pw").await?,
        StatusCode::SEE_OTHER,
        "a user added while the console runs logs in"
    );
    let bob = client()?;
    assert_eq!(
        login(&bob, &con, VIEWER.0, VIEWER.1).await?,
        StatusCode::SEE_OTHER
    );
    // Remove bob: his session ends at the next check.
    let text = std::fs::read_to_string(&con.users_file)?;
    let kept: String = text
        .lines()
        .filter(|l| !l.starts_with("bob:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&con.users_file, kept)?;
    wait().await;
    let r = bob.get(con.url("/search")).send().await?;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "removed user's session"
    );
    // A broken file: the last good users stay.
    std::fs::write(&con.users_file, "not a users line\n")?;
    wait().await;
    let r = carl.get(con.url("/search")).send().await?;
    assert_eq!(r.status(), StatusCode::OK, "a broken file keeps carl");
    let ann = client()?;
    assert_eq!(
        login(&ann, &con, OPERATOR.0, OPERATOR.1).await?,
        StatusCode::SEE_OTHER
    );
    Ok(())
}
