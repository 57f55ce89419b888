//! `rediss://` with server verification, mutual TLS and an ACL user, against a private
//! `redis-server` (own ports, test CA generated here; the default user is off). The same
//! server also listens in plain TCP, so the run prints the worker's throughput over TLS
//! against plain, measured back to back.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mindora_sdk::connect::{RedisConnector, RedisSettings, TlsFiles};
use mindora_sdk::{Client, EnqueueOptions};
use mindora_tests::servers::{connect_error, free_port, secs, spawn_worker, start_redis, TestPki};

const USER: &str = "mindora";
const PASSWORD: &str = "s3cret-pass";

struct Setup {
    _dir: tempfile::TempDir,
    _server: mindora_tests::servers::Daemon,
    pki: TestPki,
    plain_port: u16,
    tls_port: u16,
    password_file: std::path::PathBuf,
}

fn setup() -> Result<Setup> {
    let dir = tempfile::tempdir()?;
    let pki = TestPki::generate(dir.path())?;
    let (plain_port, tls_port) = (free_port()?, free_port()?);
    let config = format!(
        "port {plain_port}\ntls-port {tls_port}\ntls-cert-file {}\ntls-key-file {}\n\
         tls-ca-cert-file {}\ntls-auth-clients yes\n\
         user default off\nuser {USER} on >{PASSWORD} ~* &* +@all\n",
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca.display()
    );
    let server = start_redis(dir.path(), "tls-redis", &config, plain_port)?;
    let password_file = dir.path().join("redis-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n"))?;
    Ok(Setup {
        _dir: dir,
        _server: server,
        pki,
        plain_port,
        tls_port,
        password_file,
    })
}

impl Setup {
    fn tls_settings(&self, db: u32) -> RedisSettings {
        RedisSettings {
            username: Some(USER.into()),
            password_file: Some(self.password_file.clone()),
            tls: TlsFiles {
                ca_file: Some(self.pki.ca.clone()),
                client_cert: Some(self.pki.client_cert.clone()),
                client_key: Some(self.pki.client_key.clone()),
            },
            ..RedisSettings::from_url(format!("rediss://localhost:{}/{db}", self.tls_port))
        }
    }
}

async fn enqueue_noops(client: &Client, n: usize) -> Result<Vec<String>> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let job = client
            .enqueue(
                "default",
                "mindora.noop",
                vec![],
                Default::default(),
                EnqueueOptions::default(),
            )
            .await?;
        ids.push(job.id);
    }
    Ok(ids)
}

/// Runs a burst worker over `worker_args` until the queue is drained; returns jobs/s.
async fn drain(
    client: &Client,
    url: &str,
    name: &str,
    worker_args: &[&str],
    n: usize,
) -> Result<f64> {
    let ids = enqueue_noops(client, n).await?;
    let started = Instant::now();
    let mut args = vec!["--burst", "--concurrency", "32"];
    args.extend_from_slice(worker_args);
    let mut worker = spawn_worker(url, name, &args)?;
    let status = worker.wait_exit(Duration::from_secs(120))?;
    let elapsed = secs(started);
    anyhow::ensure!(status.success(), "worker {name} exited with {status}");
    for id in ids.iter().step_by(97).chain(ids.last()) {
        let s = client.status(id).await?;
        anyhow::ensure!(
            s.to_string() == "finished",
            "job {id} is {s} after the {name} run"
        );
    }
    Ok(n as f64 / elapsed)
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_and_sdk_over_tls_with_an_acl_user() -> Result<()> {
    let s = setup()?;
    let password_file = s.password_file.to_string_lossy().to_string();
    let (ca, cert, key) = (
        s.pki.ca.to_string_lossy().to_string(),
        s.pki.client_cert.to_string_lossy().to_string(),
        s.pki.client_key.to_string_lossy().to_string(),
    );

    // The SDK over TLS (CA file, client certificate, password from a file).
    let tls_client = Client::connect_with(&RedisConnector::new(&s.tls_settings(1))?).await?;
    // Plain TCP on the same server, ACL credentials in the URL.
    let plain_url = format!("redis://{USER}:{PASSWORD}@127.0.0.1:{}/2", s.plain_port);
    let plain_client = Client::connect(&plain_url).await?;

    let tls_url = format!("rediss://localhost:{}/1", s.tls_port);
    let tls_args: [&str; 10] = [
        "--redis-username",
        USER,
        "--redis-password-file",
        password_file.as_str(),
        "--redis-ca-file",
        ca.as_str(),
        "--redis-client-cert",
        cert.as_str(),
        "--redis-client-key",
        key.as_str(),
    ];
    // The suite checks both paths drain; the figures come from tests/scale/bench.sh.
    let figures = mindora_tests::figures_wanted();
    let n = if figures { 3000 } else { 200 };
    // Warm-up of both paths (page cache, first TLS handshake), then the measured runs.
    drain(&plain_client, &plain_url, "w-plain-warm", &[], 200).await?;
    let plain = drain(&plain_client, &plain_url, "w-plain", &[], n).await?;
    let tls = drain(&tls_client, &tls_url, "w-tls", &tls_args, n).await?;
    if figures {
        eprintln!(
            "FIGURES redis-tls: {n} no-op jobs, --concurrency 32, same redis-server: \
             plain {plain:.0} jobs/s, TLS {tls:.0} jobs/s, TLS/plain {:.2}",
            tls / plain
        );
    }

    // The job really round-trips over TLS: a value enqueued and read back.
    let job = tls_client
        .enqueue(
            "default",
            "mindora.echo",
            vec![7.into()],
            Default::default(),
            EnqueueOptions::default(),
        )
        .await?;
    let mut worker = spawn_worker(
        &tls_url,
        "w-tls-echo",
        &[&["--burst"][..], &tls_args[..]].concat(),
    )?;
    let value = tls_client.wait(&job, Duration::from_secs(30)).await?;
    assert_eq!(value["args"][0], 7);
    worker.wait_exit(Duration::from_secs(30))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_and_acl_failures_are_clear_errors() -> Result<()> {
    let s = setup()?;
    // A CA that did not sign the server's certificate.
    let mut wrong_ca = s.tls_settings(0);
    wrong_ca.tls.ca_file = Some(s.pki.other_ca.clone());
    let err = connect_error(wrong_ca)
        .await?
        .context("a foreign CA must be refused")?;
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // No client certificate where the server requires one.
    let mut no_cert = s.tls_settings(0);
    no_cert.tls.client_cert = None;
    no_cert.tls.client_key = None;
    assert!(
        connect_error(no_cert).await?.is_some(),
        "mutual TLS must be enforced"
    );
    // A wrong password for the ACL user.
    let mut wrong_pass = s.tls_settings(0);
    wrong_pass.password = Some("nope".into());
    let err = connect_error(wrong_pass)
        .await?
        .context("a wrong password must be refused")?;
    assert!(
        err.contains("WRONGPASS") || err.to_lowercase().contains("auth"),
        "{err}"
    );
    // Settings that cannot work fail before connecting.
    let mut cert_without_tls = s.tls_settings(0);
    cert_without_tls.url = format!("redis://127.0.0.1:{}/0", s.plain_port);
    assert!(RedisConnector::new(&cert_without_tls).is_err());
    let mut missing = s.tls_settings(0);
    missing.tls.ca_file = Some("/nonexistent/ca.pem".into());
    let err = RedisConnector::new(&missing)
        .err()
        .context("missing CA file")?;
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    Ok(())
}

/// Runs the worker binary with `args` and expects it to exit by itself, non-zero, within
/// 60 s; returns its stderr and how long it took.
fn expect_exit(url: &str, args: &[&str]) -> Result<(String, f64)> {
    let started = Instant::now();
    let mut child = std::process::Command::new(mindora_tests::worker_binary()?)
        .arg("--redis-url")
        .arg(url)
        .args(["--name", "w-bad-settings"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            anyhow::bail!("the worker kept retrying settings that cannot work ({args:?})");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output()?;
    anyhow::ensure!(!status.success(), "must exit non-zero");
    Ok((
        String::from_utf8_lossy(&out.stderr).into_owned(),
        secs(started),
    ))
}

#[test]
fn the_binary_exits_on_settings_that_cannot_work_but_waits_for_a_server_that_is_down() -> Result<()>
{
    let s = setup()?;
    let p = |p: &std::path::Path| p.to_string_lossy().to_string();
    let (ca, other_ca, cert, key, pw) = (
        p(&s.pki.ca),
        p(&s.pki.other_ca),
        p(&s.pki.client_cert),
        p(&s.pki.client_key),
        p(&s.password_file),
    );
    let url = format!("rediss://localhost:{}/0", s.tls_port);
    let with_ca = |ca: &str| -> Vec<String> {
        [
            "--redis-username",
            USER,
            "--redis-password-file",
            pw.as_str(),
            "--redis-ca-file",
            ca,
            "--redis-client-cert",
            cert.as_str(),
            "--redis-client-key",
            key.as_str(),
        ]
        .map(String::from)
        .to_vec()
    };
    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    // A CA that did not sign the server's certificate: a TLS verification failure.
    let (err, took) = expect_exit(&url, &refs(&with_ca(&other_ca)))?;
    assert!(
        err.contains("cannot use Redis") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    eprintln!("wrong CA: exited after {took:.1} s: {}", err.trim());
    // A CA file that is not PEM.
    let garbage = s._dir.path().join("garbage-ca.pem");
    std::fs::write(&garbage, "not a certificate\n")?;
    let (err, took) = expect_exit(&url, &refs(&with_ca(&p(&garbage))))?;
    // Not rejected while parsing (no certificate found in it): the handshake then fails.
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    eprintln!("CA file not PEM: exited after {took:.1} s: {}", err.trim());
    // A CA file that does not exist.
    let (err, _) = expect_exit(&url, &refs(&with_ca("/nonexistent/ca.pem")))?;
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    // A wrong password.
    let mut wrong_pass = with_ca(&ca);
    wrong_pass[3] = "/dev/null".into();
    wrong_pass.extend(["--redis-password".into(), "nope".into()]);
    let (err, _) = expect_exit(&url, &refs(&wrong_pass))?;
    assert!(
        err.contains("WRONGPASS") || err.to_lowercase().contains("auth"),
        "{err}"
    );

    // A server that is down is waited for (it may start after the worker).
    let down = format!("rediss://localhost:{}/0", free_port()?);
    let mut waiting = spawn_worker(&down, "w-waits", &refs(&with_ca(&ca)))?;
    std::thread::sleep(Duration::from_secs(4));
    assert!(waiting.alive(), "a server that is down is retried");
    waiting.signal("KILL")?;
    Ok(())
}

/// Python, with the runner's connection code and the worker's settings as
/// `MINDORA_REDIS_*` (TLS files, ACL user, password file); `r` is its connection.
fn python_over_tls(s: &Setup, version: &str, url: &str, code: &str) -> Result<String> {
    let root = mindora_tests::repo_root();
    let out = std::process::Command::new(mindora_tests::python(version)?)
        .env(
            "PYTHONPATH",
            std::env::join_paths([root.join("python"), root.join("tests/python")])?,
        )
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("MINDORA_REDIS_URL", url)
        .env("MINDORA_REDIS_USERNAME", USER)
        .env("MINDORA_REDIS_PASSWORD_FILE", &s.password_file)
        .env("MINDORA_REDIS_CA_FILE", &s.pki.ca)
        .env("MINDORA_REDIS_CLIENT_CERT", &s.pki.client_cert)
        .env("MINDORA_REDIS_CLIENT_KEY", &s.pki.client_key)
        .arg("-c")
        .arg(format!(
            "from mindora_runner.connection import connect\nfrom rq import Queue\n\
             from rq.job import Job\nr = connect()\n{code}"
        ))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn python_rq_functions_over_tls_with_an_acl_user() -> Result<()> {
    let s = setup()?;
    let url = format!("rediss://localhost:{}/5", s.tls_port);
    for version in mindora_tests::RQ_VERSIONS {
        python_over_tls(
            &s,
            version,
            &url,
            r#"
q = Queue("default", connection=r)
q.enqueue("pytasks.add", 2, y=40, job_id="py-add")
q.enqueue("pytasks.progress", 3, job_id="py-meta")
"#,
        )?;
        let p = |p: &std::path::Path| p.to_string_lossy().to_string();
        let mut args = mindora_tests::python_pool_args(version, 1)?;
        args.extend([
            "--redis-username".into(),
            USER.into(),
            "--redis-password-file".into(),
            p(&s.password_file),
            "--redis-ca-file".into(),
            p(&s.pki.ca),
            "--redis-client-cert".into(),
            p(&s.pki.client_cert),
            "--redis-client-key".into(),
            p(&s.pki.client_key),
            "--burst".into(),
        ]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut worker = spawn_worker(&url, &format!("w-py-tls-{version}"), &refs)?;
        let status = worker.wait_exit(Duration::from_secs(90))?;
        anyhow::ensure!(status.success(), "worker exited with {status}");
        let out = python_over_tls(
            &s,
            version,
            &url,
            r#"
a = Job.fetch("py-add", connection=r)
assert a.get_status() == "finished" and a.return_value() == {"sum": 42}, (a.get_status(), a.return_value())
m = Job.fetch("py-meta", connection=r)
assert m.get_meta() == {"step": 3}, m.get_meta()
r.delete("rq:job:py-add", "rq:job:py-meta")
print("ok")
"#,
        )?;
        assert_eq!(out.trim(), "ok", "rq {version}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn pipeline_notification_over_tls() -> Result<()> {
    use futures::StreamExt;
    use mindora_pipelines::notify::{redis_channel, BrokerNotifier, Notifier};
    let s = setup()?;
    let connector = RedisConnector::new(&s.tls_settings(0))?;
    let app = mindora_pipelines::model::App::parse("tlsapp")?;
    let channel = redis_channel(&app);
    let mut sub = connector.pubsub().await?;
    sub.subscribe(&channel).await?;
    let notifier = BrokerNotifier::new("unused".into(), None, Some(connector));
    let message = serde_json::json!({"document": "d-1", "status": "done"});
    let report = notifier.notify(&app, &message).await?;
    assert_eq!(report.redis_channel, Some((channel, 1)));
    let mut messages = Box::pin(sub.on_message());
    let got = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await?
        .context("subscription ended")?;
    let body: serde_json::Value = serde_json::from_str(&got.get_payload::<String>()?)?;
    assert_eq!(body, message);
    Ok(())
}
