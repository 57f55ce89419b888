//! A local stand-in for a Consul agent (none can be installed here): it speaks the parts of
//! Consul's HTTP API the worker uses, as documented, and checks every request against that
//! contract. A request that breaks it gets Consul's 400 and is recorded as a violation, so
//! tests assert that there were none.
//!
//! - `PUT /v1/agent/service/register` (with check definitions), `PUT
//!   /v1/agent/service/deregister/:id`, `GET /v1/agent/service/:id`,
//!   `PUT /v1/agent/check/pass/:id`; HTTP checks are really run against the URL given.
//! - `GET|PUT|DELETE /v1/kv/<key>` with `recurse`, blocking queries (`index`, `wait`,
//!   `X-Consul-Index`), 404 with an index for an empty prefix.
//! - ACLs: with a token configured, requests without `X-Consul-Token` (or a bearer token)
//!   get 403 `Permission denied`, unknown tokens 403 `ACL not found`.
//! - It can stop (open long polls are cut) and start again on the same port, forgetting
//!   its registered services (an agent that lost its state) and, if asked, with KV indexes
//!   renumbered from 1 (the index going backwards, as after a snapshot restore).

mod server;
pub mod validate;
pub mod worker;

pub use worker::ConsulWorker;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, Result};
use serde_json::Value;

/// One stored KV entry.
#[derive(Debug, Clone)]
pub struct KvEntry {
    /// Raw value.
    pub value: Vec<u8>,
    /// Raft index of creation.
    pub create_index: u64,
    /// Raft index of the last write.
    pub modify_index: u64,
}

/// State of a registered check.
#[derive(Debug, Clone)]
pub struct CheckState {
    /// Owning service id.
    pub service_id: String,
    /// `passing`, `warning` or `critical`.
    pub status: String,
    /// HTTP URL for HTTP checks.
    pub http: Option<String>,
    /// Interval (HTTP) or TTL, in ms.
    pub period_ms: u64,
    /// Whether it is a TTL check.
    pub ttl: bool,
    /// When a TTL check was last passed.
    pub last_pass: Option<std::time::Instant>,
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Status answered.
    pub status: u16,
    /// Token presented (`X-Consul-Token` or bearer).
    pub token: Option<String>,
}

/// Everything the fake knows; survives restarts except where said.
#[derive(Debug, Default)]
pub struct State {
    /// Raft index (last write).
    pub index: u64,
    /// KV store.
    pub kv: BTreeMap<String, KvEntry>,
    /// Indexes of deletions, so a prefix's index moves when a key goes.
    pub tombstones: BTreeMap<String, u64>,
    /// Registered services: id → body as registered.
    pub services: BTreeMap<String, Value>,
    /// Every accepted registration body, in order.
    pub registrations: Vec<Value>,
    /// Ids deregistered through the API, in order.
    pub deregistrations: Vec<String>,
    /// Checks by id.
    pub checks: BTreeMap<String, CheckState>,
    /// Every request.
    pub requests: Vec<Recorded>,
    /// Requests that broke the API contract, with the reason.
    pub violations: Vec<String>,
}

impl State {
    /// `X-Consul-Index` of a KV read of `prefix` (`recurse`) or of one key.
    pub fn kv_index(&self, key: &str, recurse: bool) -> u64 {
        let matches = |k: &String| {
            if recurse {
                k.starts_with(key)
            } else {
                k == key
            }
        };
        let live = self
            .kv
            .iter()
            .filter(|(k, _)| matches(k))
            .map(|(_, e)| e.modify_index);
        let gone = self
            .tombstones
            .iter()
            .filter(|(k, _)| matches(k))
            .map(|(_, i)| *i);
        let idx = live.chain(gone).max().unwrap_or(0);
        if idx == 0 {
            self.index.max(1)
        } else {
            idx
        }
    }

    fn put(&mut self, key: &str, value: &[u8]) {
        self.index += 1;
        let index = self.index;
        let create_index = self.kv.get(key).map_or(index, |e| e.create_index);
        self.tombstones.remove(key);
        self.kv.insert(
            key.to_string(),
            KvEntry {
                value: value.to_vec(),
                create_index,
                modify_index: index,
            },
        );
    }

    fn delete(&mut self, key: &str) {
        if self.kv.remove(key).is_some() {
            self.index += 1;
            self.tombstones.insert(key.to_string(), self.index);
        }
    }
}

/// Shared between the test and the server tasks.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub changed: tokio::sync::watch::Sender<u64>,
    pub acl_token: Option<String>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn notify(&self) {
        let index = self.lock().index;
        self.changed.send_replace(index);
    }
}

/// How [`FakeConsul::restart`] comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comeback {
    /// Services forgotten (agent state lost), KV and indexes kept.
    ForgetServices,
    /// Services forgotten and every KV index renumbered from 1 (index goes backwards).
    ResetIndexes,
}

/// The fake agent. Stops when dropped.
pub struct FakeConsul {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeConsul {
    /// Starts on a free loopback port; `acl_token`: require this token on every request.
    pub fn start(acl_token: Option<&str>) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the fake Consul")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: tokio::sync::watch::channel(0).0,
            acl_token: acl_token.map(str::to_string),
        });
        let mut me = FakeConsul {
            addr,
            shared,
            runtime: None,
        };
        me.serve(listener)?;
        Ok(me)
    }

    fn serve(&mut self, listener: TcpListener) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        listener.set_nonblocking(true)?;
        let shared = self.shared.clone();
        runtime.spawn(async move {
            if let Ok(l) = tokio::net::TcpListener::from_std(listener) {
                let _ = axum::serve(l, server::router(shared)).await;
            }
        });
        let shared = self.shared.clone();
        runtime.spawn(server::run_checks(shared));
        self.runtime = Some(runtime);
        Ok(())
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops answering; open connections (long polls) are cut.
    pub fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Starts again on the same port.
    pub fn restart(&mut self, how: Comeback) -> Result<()> {
        self.stop();
        {
            let mut s = self.shared.lock();
            s.services.clear();
            s.checks.clear();
            if how == Comeback::ResetIndexes {
                let mut i = 0;
                for e in s.kv.values_mut() {
                    i += 1;
                    e.create_index = i;
                    e.modify_index = i;
                }
                s.tombstones.clear();
                s.index = i;
            }
        }
        let started = std::time::Instant::now();
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) if started.elapsed() < std::time::Duration::from_secs(10) => {
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => return Err(e).context("re-binding the fake Consul's port"),
            }
        };
        self.serve(listener)
    }

    /// Writes a KV value (as `consul kv put` would) and wakes blocking queries.
    pub fn put(&self, key: &str, value: &str) {
        self.shared.lock().put(key, value.as_bytes());
        self.shared.notify();
    }

    /// Deletes a KV key.
    pub fn delete(&self, key: &str) {
        self.shared.lock().delete(key);
        self.shared.notify();
    }

    /// A copy of the state.
    pub fn with_state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.shared.lock())
    }

    /// Contract violations seen so far.
    pub fn violations(&self) -> Vec<String> {
        self.with_state(|s| s.violations.clone())
    }

    /// The registered services.
    pub fn services(&self) -> BTreeMap<String, Value> {
        self.with_state(|s| s.services.clone())
    }

    /// Status of a check.
    pub fn check_status(&self, check_id: &str) -> Option<String> {
        self.with_state(|s| s.checks.get(check_id).map(|c| c.status.clone()))
    }
}

impl Drop for FakeConsul {
    fn drop(&mut self) {
        self.stop();
    }
}
