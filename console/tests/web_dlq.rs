//! AMQP dead letters on real RabbitMQ, listed and requeued from the console's DLQ page.

mod common;

use anyhow::Result;
use common::{client, csrf_of, get, login, Console, OPERATOR, VIEWER};
use reqwest::{header, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_requeued_from_the_page() -> Result<()> {
    use mindora_sdk::amqp::Envelope;
    use mindora_tests::amqp::{self as amqp_kit, registry, wait_until, Fixture, Log};
    use std::time::Duration;

    let fx = Fixture::new("console_web_dlq").await;
    let running = fx.start(registry(Log::default()), 2);
    for i in 0..2 {
        fx.publish_env(&Envelope::new("test.flaky", vec![serde_json::json!(i)]))
            .await;
    }
    let dlq_name = fx.dlq();
    assert!(
        wait_until(Duration::from_secs(30), || async {
            fx.depth(&dlq_name).await == 2
        })
        .await,
        "both tasks dead-lettered"
    );
    running.stop().await;

    let db = mindora_tests::RedisDb::lease()?;
    let con = Console::start_full(
        &db,
        Some("console_web_dlq"),
        Some((amqp_kit::url(), vec![fx.queue.clone()])),
        None,
    )
    .await?;
    let viewer = client()?;
    login(&viewer, &con, VIEWER.0, VIEWER.1).await?;
    let (_, html) = get(&viewer, &con, "/dlq").await?;
    assert!(
        html.contains(&dlq_name) && !html.contains("Requeue to"),
        "{html}"
    );
    let c = client()?;
    login(&c, &con, OPERATOR.0, OPERATOR.1).await?;
    let (code, html) = get(&c, &con, "/dlq").await?;
    assert_eq!(code, StatusCode::OK);
    assert!(html.contains(&dlq_name) && html.contains(">2<"), "{html}");
    let token = csrf_of(&html).unwrap_or_default();
    let r = c
        .post(con.url("/dlq/requeue"))
        .form(&[
            ("csrf", token.as_str()),
            ("queue", fx.queue.as_str()),
            ("limit", "2"),
        ])
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
    assert!(html.contains("2 dead letters moved"), "{html}");
    assert_eq!(fx.depth(&dlq_name).await, 0);
    assert_eq!(fx.depth(&fx.queue).await, 2);
    let audit = con.audit().await?;
    assert_eq!(audit[0].1, "dlq_requeue");
    assert_eq!(audit[0].3, 2);
    // A queue the console was not told about is refused.
    let r = c
        .post(con.url("/dlq/requeue"))
        .form(&[("csrf", token.as_str()), ("queue", "some_other_queue")])
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    fx.cleanup().await;
    Ok(())
}
