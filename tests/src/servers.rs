//! Private servers for tests of TLS, ACL users and failover: a test CA and certificates
//! (openssl CLI), `redis-server` / `redis-sentinel` / `stunnel4` processes on free loopback
//! ports in a temp dir, killed on drop. The shared services are never touched.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{wait_for, worker_binary, WorkerProcess};

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

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

/// Starts a Sentinel on `port` monitoring `master_name` at 127.0.0.1:`master_port`
/// (quorum 1, down after 2 s).
pub fn start_sentinel(
    dir: &Path,
    name: &str,
    port: u16,
    master_name: &str,
    master_port: u16,
) -> Result<Daemon> {
    let conf = dir.join(format!("{name}.conf"));
    // Sentinel rewrites its config file, so it gets its own.
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {log}\n\
             sentinel monitor {master_name} 127.0.0.1 {master_port} 1\n\
             sentinel down-after-milliseconds {master_name} 2000\n\
             sentinel failover-timeout {master_name} 20000\n\
             sentinel parallel-syncs {master_name} 1\n",
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

/// Starts `stunnel4` terminating TLS on `accept` and forwarding to 127.0.0.1:`connect`;
/// with `require_client_cert`, clients must present a certificate signed by the CA.
pub fn start_stunnel(
    dir: &Path,
    pki: &TestPki,
    accept: u16,
    connect: u16,
    require_client_cert: bool,
) -> Result<Daemon> {
    let conf = dir.join(format!("stunnel-{accept}.conf"));
    let verify = if require_client_cert {
        format!(
            "verifyChain = yes\nrequireCert = yes\nCAfile = {}\n",
            pki.ca.display()
        )
    } else {
        String::new()
    };
    std::fs::write(
        &conf,
        format!(
            "foreground = yes\npid =\noutput = {log}\n[amqps]\naccept = 127.0.0.1:{accept}\n\
             connect = 127.0.0.1:{connect}\ncert = {cert}\nkey = {key}\n{verify}",
            log = dir.join(format!("stunnel-{accept}.log")).display(),
            cert = pki.server_cert.display(),
            key = pki.server_key.display(),
        ),
    )?;
    let child = Command::new("stunnel4")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting stunnel4 (tests/scale/setup.sh installs it)")?;
    let d = Daemon {
        child,
        what: "stunnel".into(),
    };
    wait_port(accept, "stunnel")?;
    Ok(d)
}

/// Starts the worker binary on `redis_url` with extra arguments (logs at warn to stderr).
pub fn spawn_worker(redis_url: &str, name: &str, args: &[&str]) -> Result<WorkerProcess> {
    let child = Command::new(worker_binary()?)
        .arg("--redis-url")
        .arg(redis_url)
        .arg("--name")
        .arg(name)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting mindora-worker")?;
    Ok(WorkerProcess {
        child,
        name: name.to_string(),
    })
}

/// Seconds since `t`, as a float, for printed figures.
pub fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}
