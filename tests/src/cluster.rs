//! A private 3-master Redis Cluster of Debian's `redis-server` on free loopback ports,
//! created with `redis-cli --cluster create` and stopped (processes killed, temp dir
//! removed) on drop.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::servers::{free_port, start_redis, Daemon};
use crate::wait_for;

/// A running cluster.
pub struct RedisCluster {
    /// The masters' ports (node 0 first).
    pub ports: Vec<u16>,
    _nodes: Vec<Daemon>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts `masters` cluster-enabled nodes, joins them and waits for `cluster_state:ok`.
    pub fn start(masters: usize) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut ports = Vec::new();
        let mut nodes = Vec::new();
        for i in 0..masters {
            let port = free_port()?;
            nodes.push(start_node(dir.path(), i, port)?);
            ports.push(port);
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .arg("--cluster-yes")
            .output()
            .context("running redis-cli --cluster create")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let cluster = RedisCluster {
            ports,
            _nodes: nodes,
            _dir: dir,
        };
        for port in &cluster.ports {
            wait_for(Duration::from_secs(30), "cluster_state:ok", || {
                let info = cli(*port, &["CLUSTER", "INFO"])?;
                Ok(info.contains("cluster_state:ok").then_some(()))
            })?;
        }
        Ok(cluster)
    }

    /// `redis+cluster://127.0.0.1:<p1>` seeded with node `seed` only (the client learns the rest).
    pub fn url(&self, seed: usize) -> String {
        format!("redis+cluster://127.0.0.1:{}", self.ports[seed])
    }

    /// Every key on every master (`KEYS *` per node), as `(port, key)`.
    pub fn all_keys(&self) -> Result<Vec<(u16, String)>> {
        let mut out = Vec::new();
        for port in &self.ports {
            // Not a terminal: redis-cli prints one key per line.
            for k in cli(*port, &["KEYS", "*"])?
                .lines()
                .filter(|k| !k.is_empty())
            {
                out.push((*port, k.to_string()));
            }
        }
        Ok(out)
    }
}

fn start_node(dir: &Path, i: usize, port: u16) -> Result<Daemon> {
    let name = format!("cluster-node-{i}");
    start_redis(
        dir,
        &name,
        &format!(
            "port {port}\ncluster-enabled yes\ncluster-config-file {}\ncluster-node-timeout 2000\n",
            dir.join(format!("{name}-nodes.conf")).display()
        ),
        port,
    )
}

/// `redis-cli -p <port> <args>`; its stdout.
pub fn cli(port: u16, args: &[&str]) -> Result<String> {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .context("running redis-cli")?;
    if !out.status.success() {
        bail!(
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
