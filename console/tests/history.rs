//! History queries on real PostgreSQL, in a schema of the test's own (the migrations of
//! `mindora-history` applied): search with keyset pages, count, bulk ids, a job's
//! timeline, error groups, hourly figures, the audit log, and a database that is down.

use std::collections::HashSet;

use chrono::{Duration, Utc};
use mindora_console::data::{Filter, History, HistoryState};

async fn fresh() -> History {
    let schema = format!(
        "console_test_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let h = History::connect(&mindora_tests::postgres_url(), &schema).expect("connect");
    h.migrate().await.expect("migrate");
    h
}

async fn drop_schema(h: History) {
    let sql = format!("DROP SCHEMA \"{}\" CASCADE", h.schema());
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(h.pool())
        .await
        .expect("drop schema");
}

#[allow(clippy::too_many_arguments)]
async fn insert(
    h: &History,
    ago_s: i64,
    job: &str,
    function: &str,
    attempt: i32,
    status: &str,
    run_ms: i64,
    error: Option<(&str, &str)>,
) {
    let ended = Utc::now() - Duration::seconds(ago_s);
    sqlx::query(
        "INSERT INTO mindora_job_attempts (ended_at, job_id, source, queue, function, attempt, \
         status, worker, enqueued_at, started_at, wait_ms, run_ms, error_type, error_message) \
         VALUES ($1, $2, 'redis', 'default', $3, $4, $5, 'w1', $6, $7, 10, $8, $9, $10)",
    )
    .bind(ended)
    .bind(job)
    .bind(function)
    .bind(attempt)
    .bind(status)
    .bind(ended - Duration::milliseconds(run_ms + 10))
    .bind(ended - Duration::milliseconds(run_ms))
    .bind(run_ms)
    .bind(error.map(|e| e.0))
    .bind(error.map(|e| e.1))
    .execute(h.pool())
    .await
    .expect("insert");
}

#[tokio::test(flavor = "multi_thread")]
async fn search_timeline_groups_and_audit() {
    let h = fresh().await;
    assert!(matches!(h.state().await, HistoryState::On { dropped: 0 }));

    insert(
        &h,
        300,
        "j1",
        "docs.upload",
        1,
        "retried",
        50,
        Some(("ValueError", "job 17 failed at 0xdeadbeef12")),
    )
    .await;
    insert(
        &h,
        200,
        "j1",
        "docs.upload",
        2,
        "retried",
        60,
        Some(("ValueError", "job 18 failed at 0xabc12345ff")),
    )
    .await;
    insert(&h, 100, "j1", "docs.upload", 3, "finished", 70, None).await;
    insert(
        &h,
        90,
        "j2",
        "docs.index",
        1,
        "failed",
        5,
        Some(("ConnectionError", "timeout after 30s")),
    )
    .await;
    for i in 0..30 {
        insert(
            &h,
            400 + i * 60,
            &format!("k{i:02}"),
            "docs.index",
            1,
            "finished",
            100 + i,
            None,
        )
        .await;
    }

    // Keyset pages of 7 cover the 31 docs.index rows once each, newest first.
    let f = Filter {
        function: Some("docs.index".into()),
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = h.search(&f, 7, before.clone()).await.expect("search");
        if page.is_empty() {
            break;
        }
        let last = page.last().expect("row");
        before = Some((last.ended_at, last.job_id.clone()));
        seen.extend(page);
    }
    assert_eq!(seen.len(), 31);
    assert_eq!(
        seen.iter().map(|r| &r.job_id).collect::<HashSet<_>>().len(),
        31
    );
    assert!(seen.windows(2).all(|w| w[0].ended_at >= w[1].ended_at));
    assert_eq!(h.count(&f).await.expect("count"), 31);

    let by_error = Filter {
        error: Some("FAILED AT".into()),
        ..Default::default()
    };
    assert_eq!(h.count(&by_error).await.expect("count"), 2);
    let rows = h.search(&by_error, 10, None).await.expect("search");
    assert!(rows
        .iter()
        .all(|r| r.job_id == "j1" && r.status == "retried"));
    // `%` in the text is a character, not a wildcard.
    let pct = Filter {
        error: Some("%".into()),
        ..Default::default()
    };
    assert_eq!(h.count(&pct).await.expect("count"), 0);

    let retried = Filter {
        status: Some("retried".into()),
        ..Default::default()
    };
    assert_eq!(
        h.job_ids(&retried, 10).await.expect("ids"),
        vec!["j1".to_string()]
    );
    let recent = Filter {
        from: Some(Utc::now() - Duration::seconds(250)),
        ..Default::default()
    };
    let ids = h.job_ids(&recent, 10).await.expect("ids");
    assert_eq!(ids, vec!["j2".to_string(), "j1".to_string()]);

    let timeline = h.timeline("j1").await.expect("timeline");
    let steps: Vec<(i32, &str)> = timeline
        .iter()
        .map(|r| (r.attempt, r.status.as_str()))
        .collect();
    assert_eq!(steps, vec![(1, "retried"), (2, "retried"), (3, "finished")]);
    assert_eq!(timeline[0].wait_ms, Some(10));

    let groups = h
        .error_groups(&Filter::default(), 10)
        .await
        .expect("groups");
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert_eq!(groups[0].error_type, "ValueError");
    assert_eq!(groups[0].message, "job # failed at #");
    assert_eq!((groups[0].count, groups[0].jobs), (2, 1));
    assert_eq!(groups[0].functions, vec!["docs.upload".to_string()]);
    assert_eq!(groups[1].message, "timeout after #s");

    let hours = h
        .hourly(Utc::now() - Duration::hours(100))
        .await
        .expect("hourly");
    let index_finished: i64 = hours
        .iter()
        .filter(|s| s.function == "docs.index")
        .map(|s| s.finished)
        .sum();
    let index_failed: i64 = hours
        .iter()
        .filter(|s| s.function == "docs.index")
        .map(|s| s.failed)
        .sum();
    assert_eq!((index_finished, index_failed), (30, 1));
    assert!(hours
        .iter()
        .any(|s| s.p95_run_ms.is_some_and(|p| p >= 100.0)));

    h.record_action(
        "ana",
        "operator",
        "bulk_requeue",
        "status=failed",
        2,
        Some(serde_json::json!({"done": 2})),
    )
    .await
    .expect("audit");
    h.record_action("ana", "operator", "suspend", "*", 0, None)
        .await
        .expect("audit");
    let actions = h.recent_actions(10).await.expect("actions");
    assert_eq!(actions.len(), 2);
    assert_eq!(
        (actions[0].action.as_str(), actions[1].jobs),
        ("suspend", 2)
    );

    sqlx::query(
        "INSERT INTO mindora_history_writers (worker, written, dropped) VALUES ('w1', 10, 5)",
    )
    .execute(h.pool())
    .await
    .expect("writer row");
    assert!(matches!(h.state().await, HistoryState::On { dropped: 5 }));
    drop_schema(h).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_that_is_down_is_unreachable_not_fatal() {
    let h = History::connect("postgres://postgres@127.0.0.1:1/test", "mindora_history")
        .expect("connect is lazy");
    match h.state().await {
        HistoryState::Unreachable(why) => assert!(!why.is_empty()),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(h.search(&Filter::default(), 10, None).await.is_err());
}

/// `warm` computes the closed hours in the background; `hourly` during it answers with what
/// is done so far, never more than the truth, and the same figures as without a warm-up after.
#[tokio::test(flavor = "multi_thread")]
async fn warm_up_fills_closed_hours() {
    let h = fresh().await;
    // 60 closed hours of one function: 3 finished and 1 failed attempt each.
    sqlx::query(
        "INSERT INTO mindora_job_attempts (ended_at, job_id, source, queue, function, attempt, \
         status, worker, started_at, run_ms, error_type, error_message) \
         SELECT date_trunc('hour', now()) - make_interval(hours => hr, mins => 30, secs => i), \
           'w-' || hr || '-' || i, 'redis', 'default', 'warm.fn', 1, \
           CASE WHEN i = 0 THEN 'failed' ELSE 'finished' END, 'w1', now(), 100 * i, \
           CASE WHEN i = 0 THEN 'E' END, CASE WHEN i = 0 THEN 'boom' END \
         FROM generate_series(2, 61) hr, generate_series(0, 3) i",
    )
    .execute(h.pool())
    .await
    .expect("seed");
    let since = Utc::now() - Duration::hours(72);
    let totals = |rows: &[mindora_console::data::HourStat]| {
        rows.iter()
            .filter(|s| s.function == "warm.fn")
            .fold((0, 0), |(f, x), s| (f + s.finished, x + s.failed))
    };

    let warm = h.warm();
    let during = h.hourly(since).await.expect("hourly during warm-up");
    let (f, x) = totals(&during);
    assert!(f <= 180 && x <= 60 && f == 3 * x, "{f} {x}");
    warm.await.expect("warm-up task");
    assert!(!h.warming());
    assert_eq!(totals(&h.hourly(since).await.expect("hourly")), (180, 60));

    // A second handle without a warm-up computes the same on its own.
    let cold = History::connect(&mindora_tests::postgres_url(), h.schema()).expect("connect");
    assert_eq!(
        totals(&cold.hourly(since).await.expect("hourly")),
        (180, 60)
    );
    drop_schema(h).await;
}
