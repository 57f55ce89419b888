//! The compose stack's PostgreSQL initialisation (`infra/postgres/init.sh`) and the worker's
//! migrations agree, with least privilege: the real init script provisions an app in a
//! throwaway database, then `mindora-worker migrate` runs as the `mindora_worker` role it
//! created, which has no CREATE on the database.

use std::process::Command;

use anyhow::{bail, Result};
use mindora_tests::{repo_root, worker_binary};

fn psql(db: &str, sql: &str) -> Result<String> {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", db, "-Atqc", sql])
        .output()?;
    if !out.status.success() {
        bail!("psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

struct Cleanup {
    db: String,
    app: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = psql(
            "test",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db),
        );
        let _ = psql("test", &format!("DROP ROLE IF EXISTS {}", self.app));
    }
}

#[test]
fn init_script_and_worker_migrations_agree_with_least_privilege() -> Result<()> {
    let suffix = format!(
        "{:x}",
        std::process::id() as u64 * 7919
            + std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .subsec_nanos() as u64
    );
    let db = format!("mindora_init_{suffix}");
    let app = format!("zz{suffix}");
    let _cleanup = Cleanup {
        db: db.clone(),
        app: app.clone(),
    };
    psql("test", &format!("CREATE DATABASE {db}"))?;
    for _ in 0..2 {
        // Twice: the init script is idempotent.
        let out = Command::new("bash")
            .arg(repo_root().join("infra/postgres/init.sh"))
            .env("PGHOST", "127.0.0.1")
            .env("PGUSER", "postgres")
            .env("PGDATABASE", &db)
            .env("APPS", &app)
            .env("APP_CREDENTIALS_SECRET", "test-secret")
            .env("POSTGRES_WORKER_PASSWORD", "worker-pw")
            .env("POSTGRES_EXPORTER_PASSWORD", "exporter-pw")
            .env("POSTGRES_CONSOLE_PASSWORD", "console-pw")
            .output()?;
        if !out.status.success() {
            bail!(
                "init.sh: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert_eq!(
        psql(
            &db,
            &format!("SELECT has_database_privilege('mindora_worker', '{db}', 'CREATE')")
        )?,
        "f"
    );
    let out = Command::new(worker_binary()?)
        .arg("--database-url")
        .arg(format!(
            "postgres://mindora_worker:worker-pw@127.0.0.1:5432/{db}"
        ))
        .args(["migrate", "--app", &app])
        .env("RUST_LOG", "warn")
        .output()?;
    if !out.status.success() {
        bail!("migrate: {}", String::from_utf8_lossy(&out.stderr));
    }
    let schema = format!("mindora_{app}");
    let tables = psql(&db, &format!("SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = '{schema}'"))?;
    assert_eq!(
        tables,
        "_sqlx_migrations,audit_log,chunks,document_texts,documents,processing_runs"
    );
    assert_eq!(
        psql(
            &db,
            &format!("SELECT has_table_privilege('{app}', '{schema}.documents', 'SELECT,INSERT')")
        )?,
        "t",
        "the app's own role can use what the worker created"
    );
    assert_eq!(
        psql(
            &db,
            &format!("SELECT has_schema_privilege('mindora_worker', '{schema}', 'CREATE')")
        )?,
        "t"
    );

    // The job history (issue 22): the worker migrates schema mindora_history as its own
    // least-privilege role; the console's role reads it and writes only its audit table.
    let out = Command::new(worker_binary()?)
        .arg("--history-database-url")
        .arg(format!(
            "postgres://mindora_worker:worker-pw@127.0.0.1:5432/{db}"
        ))
        .args(["migrate", "--history"])
        .env("RUST_LOG", "warn")
        .output()?;
    if !out.status.success() {
        bail!(
            "migrate --history: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let privilege = |table: &str, what: &str| {
        psql(
            &db,
            &format!("SELECT has_table_privilege('mindora_console', 'mindora_history.{table}', '{what}')"),
        )
    };
    assert_eq!(privilege("mindora_job_attempts", "SELECT")?, "t");
    assert_eq!(privilege("mindora_console_actions", "INSERT")?, "t");
    assert_eq!(privilege("mindora_job_attempts", "INSERT")?, "f");
    assert_eq!(privilege("mindora_job_attempts", "DELETE")?, "f");
    Ok(())
}
