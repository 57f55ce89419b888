//! Private servers for tests of TLS, ACL users and failover: a test CA and certificates
//! (openssl CLI), `redis-server` / Sentinel processes and a RabbitMQ node with a TLS listener
//! on free loopback ports in a temp dir, stopped on drop. The shared services are never
//! touched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{wait_for, WorkerProcess};

mod rabbitmq;
pub use rabbitmq::{start_rabbitmq, RabbitNode};

pub use crate::free_port;

/// Whether a program is installed (`tests/scale/setup.sh` installs what these need).
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A throw-away CA with a server certificate (for `localhost` and `127.0.0.1`) and a
/// client certificate, as PEM files in `dir`.
pub struct TestPki {
    /// CA certificate.
    pub ca: PathBuf,
    /// Server certificate, signed by the CA.
    pub server_cert: PathBuf,
    /// Server key (PKCS#8).
    pub server_key: PathBuf,
    /// Client certificate, signed by the CA.
    pub client_cert: PathBuf,
    /// Client key (PKCS#8).
    pub client_key: PathBuf,
    /// A second CA that signed nothing here (to check that verification really happens).
    pub other_ca: PathBuf,
}

impl TestPki {
    /// Generates everything with the openssl CLI (EC P-256 keys: fast).
    pub fn generate(dir: &Path) -> Result<Self> {
        let p = |n: &str| dir.join(n);
        let key = |name: &str| -> Result<()> {
            run(Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                ])
                .arg(p(name)))
        };
        for (k, c) in [("ca.key", "ca.pem"), ("other-ca.key", "other-ca.pem")] {
            key(k)?;
            run(Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-new",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=mindora test CA",
                ])
                .arg("-key")
                .arg(p(k))
                .arg("-out")
                .arg(p(c)))?;
        }
        for (name, cn, ext) in [
            (
                "server",
                "localhost",
                "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "mindora-worker", "extendedKeyUsage=clientAuth\n"),
        ] {
            key(&format!("{name}.key"))?;
            run(Command::new("openssl")
                .args(["req", "-new", "-subj", &format!("/CN={cn}")])
                .arg("-key")
                .arg(p(&format!("{name}.key")))
                .arg("-out")
                .arg(p(&format!("{name}.csr"))))?;
            std::fs::write(p(&format!("{name}.ext")), ext)?;
            run(Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
                .arg("-in")
                .arg(p(&format!("{name}.csr")))
                .arg("-CA")
                .arg(p("ca.pem"))
                .arg("-CAkey")
                .arg(p("ca.key"))
                .arg("-extfile")
                .arg(p(&format!("{name}.ext")))
                .arg("-out")
                .arg(p(&format!("{name}.pem"))))?;
        }
        Ok(TestPki {
            ca: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
            client_cert: p("client.pem"),
            client_key: p("client.key"),
            other_ca: p("other-ca.pem"),
        })
    }
}

/// A child process killed (and reaped) on drop.
pub struct Daemon {
    /// The process.
    pub child: Child,
    /// What it is, for messages.
    pub what: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_port(port: u16, what: &str) -> Result<()> {
    wait_for(Duration::from_secs(15), what, || {
        Ok(std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ()))
    })
}

/// Starts `redis-server` with `config` (redis.conf lines) written to `dir/<name>.conf`;
/// returns once `wait_port` accepts connections.
pub fn start_redis(dir: &Path, name: &str, config: &str, wait_on: u16) -> Result<Daemon> {
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(
        &conf,
        format!(
            "bind 127.0.0.1\nsave \"\"\nappendonly no\ndir {}\nlogfile {}\n{config}\n",
            dir.display(),
            dir.join(format!("{name}.log")).display()
        ),
    )?;
    let child = Command::new("redis-server")
        .arg(&conf)
        .stdout(Stdio::null())
        .spawn()
        .context("starting redis-server")?;
    let d = Daemon {
        child,
        what: name.to_string(),
    };
    wait_port(wait_on, name)?;
    Ok(d)
}

/// redis.conf lines for a TLS-only server on `port` with mutual TLS (clients need a
/// certificate from the test CA), TLS replication, and the client certificate for the
/// server's own outgoing connections (replication, Sentinel to the data nodes).
pub fn redis_tls_config(pki: &TestPki, port: u16) -> String {
    format!(
        "port 0\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
         tls-client-cert-file {}\ntls-client-key-file {}\ntls-auth-clients yes\n\
         tls-replication yes\n",
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display(),
    )
}

/// How a Sentinel of [`start_sentinel_with`] is secured.
#[derive(Default)]
pub struct SentinelSecurity<'a> {
    /// TLS only, mutual, to clients and to the data nodes (see [`redis_tls_config`]).
    pub tls: Option<&'a TestPki>,
    /// The Sentinel's own password (`requirepass`; also given to the other Sentinels).
    pub requirepass: Option<&'a str>,
    /// ACL user and password the Sentinel uses on the master and replicas.
    pub data_auth: Option<(&'a str, &'a str)>,
}

/// Starts a Sentinel on `port` monitoring `master_name` at 127.0.0.1:`master_port`
/// (quorum 1, down after 2 s).
pub fn start_sentinel(
    dir: &Path,
    name: &str,
    port: u16,
    master_name: &str,
    master_port: u16,
) -> Result<Daemon> {
    start_sentinel_with(
        dir,
        name,
        port,
        master_name,
        master_port,
        &SentinelSecurity::default(),
    )
}

/// A private master, its replica and two Sentinels monitoring it (see [`start_sentinel`]),
/// each on a free loopback port, files in one directory; the shared Redis is untouched.
/// Everything stops when it is dropped (the Sentinels first).
pub struct SentinelGroup {
    /// The Sentinels' ports.
    pub sentinels: [u16; 2],
    /// The master's port.
    pub master: u16,
    /// The replica's port.
    pub replica: u16,
    /// The name the Sentinels monitor the master as.
    pub master_name: String,
    // Declared in drop order (fields drop top to bottom); the directory goes last.
    _daemons: [Daemon; 4],
    _dir: tempfile::TempDir,
}

impl SentinelGroup {
    /// Starts the four servers, the Sentinels monitoring the master as `master_name`.
    pub fn start(master_name: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let (master, replica) = (free_port()?, free_port()?);
        let sentinels = [free_port()?, free_port()?];
        let path = dir.path();
        let m = start_redis(path, "master", &format!("port {master}"), master)?;
        let r = start_redis(
            path,
            "replica",
            &format!("port {replica}\nreplicaof 127.0.0.1 {master}"),
            replica,
        )?;
        let s1 = start_sentinel(path, "sentinel1", sentinels[0], master_name, master)?;
        let s2 = start_sentinel(path, "sentinel2", sentinels[1], master_name, master)?;
        Ok(SentinelGroup {
            sentinels,
            master,
            replica,
            master_name: master_name.to_string(),
            _daemons: [s2, s1, r, m],
            _dir: dir,
        })
    }

    /// Waits until the first Sentinel knows the replica as healthy: Sentinel can only fail
    /// over to a replica it has seen with its link to the master up.
    pub fn wait_replica_seen(&self) -> Result<()> {
        let url = format!("redis://127.0.0.1:{}/0", self.sentinels[0]);
        let mut s = redis::Client::open(url)?.get_connection()?;
        wait_for(
            Duration::from_secs(30),
            "the Sentinels to see the replica",
            || {
                let replicas: Vec<HashMap<String, String>> = redis::cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg(&self.master_name)
                    .query(&mut s)?;
                Ok(replicas
                    .iter()
                    .any(|r| {
                        r.get("flags").is_some_and(|f| f == "slave")
                            && r.get("master-link-status").is_some_and(|l| l == "ok")
                    })
                    .then_some(()))
            },
        )
    }

    /// `SENTINEL FAILOVER` through the first Sentinel, retried for up to 20 s while the
    /// Sentinels still refuse it (e.g. no good replica yet); returns when it was accepted.
    pub fn failover(&self) -> Result<Instant> {
        let url = format!("redis://127.0.0.1:{}/0", self.sentinels[0]);
        let mut s = redis::Client::open(url)?.get_connection()?;
        let t0 = Instant::now();
        loop {
            match redis::cmd("SENTINEL")
                .arg("FAILOVER")
                .arg(&self.master_name)
                .query::<String>(&mut s)
            {
                Ok(_) => return Ok(Instant::now()),
                Err(e) if t0.elapsed() < Duration::from_secs(20) => {
                    eprintln!("SENTINEL FAILOVER not yet: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => bail!("SENTINEL FAILOVER: {e}"),
            }
        }
    }

    /// The directory of the servers' files (a test may put its own logs there).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }
}

/// [`start_sentinel`] with TLS, its own password and credentials for the data nodes.
pub fn start_sentinel_with(
    dir: &Path,
    name: &str,
    port: u16,
    master_name: &str,
    master_port: u16,
    security: &SentinelSecurity<'_>,
) -> Result<Daemon> {
    let conf = dir.join(format!("{name}.conf"));
    let listen = match security.tls {
        Some(pki) => redis_tls_config(pki, port),
        None => format!("port {port}\n"),
    };
    let mut extra = String::new();
    if let Some(pass) = security.requirepass {
        extra.push_str(&format!(
            "requirepass {pass}\nsentinel sentinel-pass {pass}\n"
        ));
    }
    if let Some((user, pass)) = security.data_auth {
        extra.push_str(&format!(
            "sentinel auth-user {master_name} {user}\nsentinel auth-pass {master_name} {pass}\n"
        ));
    }
    // Sentinel rewrites its config file, so it gets its own.
    std::fs::write(
        &conf,
        format!(
            "{listen}bind 127.0.0.1\ndir {dir}\nlogfile {log}\n\
             sentinel monitor {master_name} 127.0.0.1 {master_port} 1\n\
             sentinel down-after-milliseconds {master_name} 2000\n\
             sentinel failover-timeout {master_name} 20000\n\
             sentinel parallel-syncs {master_name} 1\n{extra}",
            dir = dir.display(),
            log = dir.join(format!("{name}.log")).display()
        ),
    )?;
    let child = Command::new("redis-server")
        .arg(&conf)
        .arg("--sentinel")
        .stdout(Stdio::null())
        .spawn()
        .context("starting redis-server --sentinel")?;
    let d = Daemon {
        child,
        what: name.to_string(),
    };
    wait_port(port, name)?;
    Ok(d)
}

/// Enqueues `n` `mindora.sleep` jobs of `seconds` each for a failover run, each with rq
/// retries: a job the old master started after the promotion is unknown to the new one, which
/// recovers it as abandoned, and a retry runs it again. Size the work to outlast the failover.
pub async fn enqueue_failover_jobs(
    client: &mindora_sdk::Client,
    n: usize,
    seconds: f64,
) -> Result<Vec<String>> {
    let opts = mindora_sdk::EnqueueOptions {
        timeout_secs: Some(10),
        retry: Some(mindora_sdk::RetryPolicy::Rq {
            max: 3,
            intervals: vec![],
        }),
        ..Default::default()
    };
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let job = client
            .enqueue(
                "default",
                "mindora.sleep",
                vec![serde_json::json!(seconds)],
                Default::default(),
                opts.clone(),
            )
            .await?;
        ids.push(job.id);
    }
    Ok(ids)
}

/// Why the SDK could not connect with `settings` (`None` when it could), bounded at 20 s so a
/// connection that hangs fails the test instead of holding it.
pub async fn connect_error(
    settings: mindora_sdk::connect::RedisSettings,
) -> Result<Option<String>> {
    let connector = mindora_sdk::connect::RedisConnector::new(&settings)?;
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        mindora_sdk::Client::connect_with(&connector),
    )
    .await
    .context("connect hung")?;
    Ok(r.err().map(|e| e.to_string()))
}

/// Worker flags for a failover run: 4 slots, and heartbeat, recovery and abandon grace short
/// enough that jobs lost in the switch come back within seconds.
pub const FAILOVER_WORKER_FLAGS: [&str; 8] = [
    "--concurrency",
    "4",
    "--heartbeat-secs",
    "1",
    "--recover-every-secs",
    "1",
    "--abandon-grace-secs",
    "2",
];

/// Starts the worker binary on `redis_url` with extra arguments (logs at warn to stderr).
pub fn spawn_worker(redis_url: &str, name: &str, args: &[&str]) -> Result<WorkerProcess> {
    WorkerProcess::spawn(redis_url, name, args, &[])
}

/// Seconds since `t`, as a float, for printed figures.
pub fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}
