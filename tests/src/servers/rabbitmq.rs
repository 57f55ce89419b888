//! A private RabbitMQ node with a TLS listener, for the AMQP TLS tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{run, Daemon, TestPki};
use crate::{free_port, wait_for};

/// A private RabbitMQ node (Debian's `rabbitmq-server`, own node name, ports, data and log
/// dirs, no plugins) with a plain listener and a TLS listener that requires a client
/// certificate from the test CA (`verify_peer`, `fail_if_no_peer_cert`). Stopped with
/// `rabbitmqctl stop` on drop. The shared broker on 5672 is untouched.
pub struct RabbitNode {
    /// Erlang node name (`rabbitmqctl -n`).
    pub node: String,
    /// Plain AMQP port on 127.0.0.1.
    pub amqp_port: u16,
    /// AMQPS port on 127.0.0.1.
    pub tls_port: u16,
    env: Vec<(String, String)>,
    daemon: Option<Daemon>,
}

impl RabbitNode {
    /// `amqp://guest:guest@127.0.0.1:<plain>/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// `amqps://guest:guest@localhost:<tls>/%2f` (the certificate names `localhost`).
    pub fn tls_url(&self) -> String {
        format!("amqps://guest:guest@localhost:{}/%2f", self.tls_port)
    }

    /// Runs `rabbitmqctl -n <node> <args>` against this node.
    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("rabbitmqctl")
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .context("running rabbitmqctl")?;
        if !out.status.success() {
            bail!(
                "rabbitmqctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        let _ = self.ctl(&["stop"]);
        drop(self.daemon.take());
    }
}

/// Starts a [`RabbitNode`] in `dir/rabbitmq` with certificates from `pki`; returns once
/// both listeners accept connections (a node takes some seconds to boot).
pub fn start_rabbitmq(dir: &Path, pki: &TestPki) -> Result<RabbitNode> {
    let d = dir.join("rabbitmq");
    std::fs::create_dir_all(&d)?;
    // Debian's wrapper runs the node as the `rabbitmq` user when started as root: it must
    // read the certificates and write in its directory.
    let copy = |from: &Path, name: &str| -> Result<PathBuf> {
        let to = d.join(name);
        std::fs::copy(from, &to).with_context(|| format!("copying {}", from.display()))?;
        Ok(to)
    };
    let (ca, cert, key) = (
        copy(&pki.ca, "ca.pem")?,
        copy(&pki.server_cert, "server.pem")?,
        copy(&pki.server_key, "server.key")?,
    );
    let (amqp_port, tls_port, dist_port) = (free_port()?, free_port()?, free_port()?);
    std::fs::write(
        d.join("rabbitmq.conf"),
        format!(
            "listeners.tcp.1 = 127.0.0.1:{amqp_port}\n\
             listeners.ssl.1 = 127.0.0.1:{tls_port}\n\
             ssl_options.cacertfile = {ca}\n\
             ssl_options.certfile = {cert}\n\
             ssl_options.keyfile = {key}\n\
             ssl_options.verify = verify_peer\n\
             ssl_options.fail_if_no_peer_cert = true\n\
             vm_memory_high_watermark.absolute = 512MiB\n\
             disk_free_limit.absolute = 50MB\n",
            ca = ca.display(),
            cert = cert.display(),
            key = key.display(),
        ),
    )?;
    std::fs::write(d.join("enabled_plugins"), "[].\n")?;
    let node = format!("mindora-tls-{}-{amqp_port}@localhost", std::process::id());
    let p = |n: &str| d.join(n).display().to_string();
    let env: Vec<(String, String)> = [
        ("RABBITMQ_NODENAME", node.clone()),
        ("RABBITMQ_NODE_PORT", amqp_port.to_string()),
        ("RABBITMQ_DIST_PORT", dist_port.to_string()),
        ("RABBITMQ_CONFIG_FILE", p("rabbitmq.conf")),
        ("RABBITMQ_ENABLED_PLUGINS_FILE", p("enabled_plugins")),
        ("RABBITMQ_MNESIA_BASE", p("mnesia")),
        ("RABBITMQ_LOG_BASE", p("log")),
        ("RABBITMQ_PID_FILE", p("pid")),
        ("RABBITMQ_LOGS", p("rabbit.log")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut perms = std::fs::metadata(dir)?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(dir, perms)?;
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if root {
        run(Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&d))?;
    }
    let child = Command::new("rabbitmq-server")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(&d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting rabbitmq-server")?;
    let node = RabbitNode {
        node,
        amqp_port,
        tls_port,
        env,
        daemon: Some(Daemon {
            child,
            what: "rabbitmq".into(),
        }),
    };
    let booted = wait_for(
        Duration::from_secs(120),
        "the private RabbitMQ node",
        || {
            Ok(
                (std::net::TcpStream::connect(("127.0.0.1", amqp_port)).is_ok()
                    && std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok())
                .then_some(()),
            )
        },
    );
    if let Err(e) = booted {
        let log = std::fs::read_to_string(d.join("rabbit.log")).unwrap_or_default();
        let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().join("\n");
        bail!("{e}; last log lines (newest first):\n{tail}");
    }
    Ok(node)
}
