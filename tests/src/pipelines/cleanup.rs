//! Removing what a test created on the shared PostgreSQL and RabbitMQ, also when it panics.

use std::time::Duration;

use super::{AMQP_URL, PG_URL};

/// Drop guard removing what a test created on the shared real services: the PostgreSQL
/// schemas of its apps and its RabbitMQ queues. It runs on success and when the test panics
/// (during unwinding), from its own thread and runtime so it works inside the test's runtime.
/// Create it right after choosing the names, before anything is created:
/// `let _cleanup = mindora_tests::pipelines::cleanup(&app, &queue);`
#[must_use = "the guard cleans up when dropped; bind it to a named variable (`_cleanup`)"]
#[derive(Default)]
pub struct Cleanup {
    schemas: Vec<String>,
    queues: Vec<String>,
}

/// The guard for one test app (its schema `mindora_<app>`) and one notification queue.
pub fn cleanup(app: &str, queue: &str) -> Cleanup {
    Cleanup::default().app(app).queue(queue)
}

impl Cleanup {
    /// Also drop this app's schema (`mindora_` + name, `-` as `_`, as the record stage names it).
    pub fn app(mut self, app: &str) -> Self {
        self.schemas
            .push(format!("mindora_{}", app.replace('-', "_")));
        self
    }

    /// Also delete this RabbitMQ queue.
    pub fn queue(mut self, queue: &str) -> Self {
        self.queues.push(queue.to_string());
        self
    }

    /// Drops the schemas and deletes the queues; the errors, if any.
    async fn run(schemas: &[String], queues: &[String]) -> Vec<String> {
        use sqlx::Connection;
        let mut errors = Vec::new();
        if !schemas.is_empty() {
            match sqlx::PgConnection::connect(PG_URL).await {
                Ok(mut conn) => {
                    // Never wait forever on a lock a straggling task still holds.
                    let _ = sqlx::query("SET lock_timeout = '10s'")
                        .execute(&mut conn)
                        .await;
                    for s in schemas {
                        let sql = format!(
                            "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                            s.replace('"', "\"\"")
                        );
                        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql))
                            .execute(&mut conn)
                            .await
                        {
                            errors.push(format!("drop schema {s}: {e}"));
                        }
                    }
                    let _ = conn.close().await;
                }
                Err(e) => errors.push(format!("connect to PostgreSQL: {e}")),
            }
        }
        if !queues.is_empty() {
            match lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default()).await
            {
                Ok(conn) => {
                    for q in queues {
                        // A channel per queue: an error closes the channel it happened on.
                        let res = match conn.create_channel().await {
                            Ok(ch) => ch
                                .queue_delete(q.as_str().into(), Default::default())
                                .await
                                .map(drop),
                            Err(e) => Err(e),
                        };
                        if let Err(e) = res {
                            errors.push(format!("delete queue {q}: {e}"));
                        }
                    }
                    let _ = conn.close(200, "cleanup".into()).await;
                }
                Err(e) => errors.push(format!("connect to RabbitMQ: {e}")),
            }
        }
        errors
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let schemas = std::mem::take(&mut self.schemas);
        let queues = std::mem::take(&mut self.queues);
        if schemas.is_empty() && queues.is_empty() {
            return;
        }
        let what = format!("schemas {schemas:?}, queues {queues:?}");
        // Own thread and runtime: Drop runs inside the test's runtime, where blocking on a
        // future is not allowed.
        let errors = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(30), Cleanup::run(&schemas, &queues))
                    .await
                    .unwrap_or_else(|_| vec!["timed out after 30 s".to_string()])
            })
        })
        .join()
        .unwrap_or_else(|_| vec!["cleanup thread panicked".to_string()]);
        if errors.is_empty() {
            return;
        }
        let msg = format!("test cleanup of {what} failed: {}", errors.join("; "));
        if std::thread::panicking() {
            // Already failing: say so, without a second panic (which would abort).
            eprintln!("{msg}");
        } else {
            panic!("{msg}");
        }
    }
}

/// A pool on the real PostgreSQL.
pub async fn pg() -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(PG_URL)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432")
}
