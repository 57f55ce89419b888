//! [`RedisConn`]: a reconnecting connection that, under Sentinel, follows the master.
//!
//! `redis`'s `ConnectionManager` reconnects to the address it was built with. After a
//! failover that address is a replica (or gone), so under Sentinel we keep one manager per
//! master address: a watcher asks a Sentinel every `follow_every` where the master is (one
//! command on a kept connection), and a change, or any connection-level error or
//! `READONLY` reply, triggers a full lookup (Sentinels, then the master's role) at once. When the master moved, a manager to the new one replaces the old; the failed
//! command's error still reaches the caller, who retries as after any Redis outage.

use std::sync::{Arc, Mutex, Weak};

use futures::FutureExt;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use super::{ManagerOptions, RedisConnector};

/// A reconnecting Redis connection (clone it freely: clones share one connection).
#[derive(Clone)]
pub struct RedisConn(Kind);

#[derive(Clone)]
enum Kind {
    Direct(ConnectionManager),
    Following(Arc<Following>),
    /// Redis Cluster: the redis crate follows slots, `MOVED` / `ASK` and failovers.
    Cluster(ClusterConnection),
}

impl From<ConnectionManager> for RedisConn {
    fn from(conn: ConnectionManager) -> Self {
        RedisConn(Kind::Direct(conn))
    }
}

impl RedisConn {
    pub(super) async fn open(
        connector: &RedisConnector,
        options: &ManagerOptions,
    ) -> RedisResult<Self> {
        if let Some(cluster) = connector.cluster_target() {
            let conn = cluster.client(options)?.get_async_connection().await?;
            return Ok(RedisConn(Kind::Cluster(conn)));
        }
        if !connector.is_sentinel() {
            let client = connector.client().await?;
            let conn = ConnectionManager::new_with_config(client, options.config()).await?;
            return Ok(RedisConn(Kind::Direct(conn)));
        }
        Ok(RedisConn(Kind::Following(
            Following::start(connector.clone(), options.clone()).await?,
        )))
    }

    /// The address of the server this connection talks to now (`host:port`).
    pub fn server(&self) -> String {
        match &self.0 {
            Kind::Direct(_) | Kind::Cluster(_) => String::new(),
            Kind::Following(f) => f.current().2,
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Kind::Direct(c) => c.req_packed_command(cmd),
            Kind::Cluster(c) => c.req_packed_command(cmd),
            Kind::Following(f) => {
                let f = f.clone();
                async move {
                    let (mut conn, generation, _) = f.current();
                    let result = conn.req_packed_command(cmd).await;
                    f.after(&result, generation).await;
                    result
                }
                .boxed()
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Kind::Direct(c) => c.req_packed_commands(pipeline, offset, count),
            Kind::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Kind::Following(f) => {
                let f = f.clone();
                async move {
                    let (mut conn, generation, _) = f.current();
                    let result = conn.req_packed_commands(pipeline, offset, count).await;
                    f.after(&result, generation).await;
                    result
                }
                .boxed()
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Kind::Direct(c) => c.get_db(),
            Kind::Cluster(c) => c.get_db(),
            Kind::Following(f) => f.current().0.get_db(),
        }
    }
}

struct Current {
    conn: ConnectionManager,
    generation: u64,
    addr: String,
}

struct Following {
    connector: RedisConnector,
    options: ManagerOptions,
    current: Mutex<Current>,
    switching: tokio::sync::Mutex<()>,
}

/// Errors after which the master may have moved.
fn may_have_moved(e: &RedisError) -> bool {
    e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_io_error()
        || e.is_timeout()
        || e.code()
            .is_some_and(|c| c == "READONLY" || c == "UNBLOCKED" || c == "MASTERDOWN")
        || e.to_string().contains("READONLY")
}

impl Following {
    async fn start(connector: RedisConnector, options: ManagerOptions) -> RedisResult<Arc<Self>> {
        let client = connector.client().await?;
        let addr = client.get_connection_info().addr().to_string();
        let conn = ConnectionManager::new_with_config(client, options.config()).await?;
        let every = options.follow_every;
        let me = Arc::new(Following {
            connector,
            options,
            current: Mutex::new(Current {
                conn,
                generation: 0,
                addr,
            }),
            switching: tokio::sync::Mutex::new(()),
        });
        let weak: Weak<Following> = Arc::downgrade(&me);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                // Ends when the last clone of the connection is dropped.
                let Some(me) = weak.upgrade() else { return };
                let (_, generation, addr) = me.current();
                match me.connector.master_address().await {
                    Ok(Some(now)) if now == addr => {}
                    // Moved, or the Sentinel we asked is gone: a full lookup decides.
                    _ => me.follow(generation).await,
                }
            }
        });
        Ok(me)
    }

    fn current(&self) -> (ConnectionManager, u64, String) {
        let c = self.current.lock().unwrap_or_else(|p| p.into_inner());
        (c.conn.clone(), c.generation, c.addr.clone())
    }

    async fn after<T>(&self, result: &RedisResult<T>, generation: u64) {
        if let Err(e) = result {
            if may_have_moved(e) {
                self.follow(generation).await;
            }
        }
    }

    /// Asks the Sentinels where the master is; switches when it moved since `seen`.
    async fn follow(&self, seen: u64) {
        let _one_at_a_time = self.switching.lock().await;
        let (_, generation, old) = self.current();
        if generation != seen {
            return; // someone else switched meanwhile
        }
        let client = match self.connector.client().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "Sentinel lookup failed; keeping {old}");
                return;
            }
        };
        let addr = client.get_connection_info().addr().to_string();
        if addr == old {
            return;
        }
        match ConnectionManager::new_with_config(client, self.options.config()).await {
            Ok(conn) => {
                let mut c = self.current.lock().unwrap_or_else(|p| p.into_inner());
                c.conn = conn;
                c.generation += 1;
                c.addr = addr.clone();
                tracing::warn!(from = %old, to = %addr, "Redis master moved (Sentinel); following it");
            }
            Err(e) => {
                tracing::warn!(error = %e, master = %addr, "cannot connect to the new Redis master yet")
            }
        }
    }
}
