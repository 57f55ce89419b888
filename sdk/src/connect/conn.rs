//! [`RedisConn`]: a reconnecting connection that, under Sentinel, follows the master.
//!
//! `redis`'s `ConnectionManager` reconnects to the address it was built with. After a
//! failover that address is a replica (or gone), so under Sentinel we keep one manager per
//! master address: a watcher asks a Sentinel every `follow_every` where the master is (one
//! command on a kept connection), and a change, or any connection-level error or
//! `READONLY` reply, triggers a full lookup (Sentinels, then the master's role) at once. When the master moved, a manager to the new one replaces the old; the failed
//! command's error still reaches the caller, who retries as after any Redis outage.
//!
//! Faster still, the Sentinels' failover events ([`super::failover`]): from `+try-failover`
//! commands are held (at most [`HOLD_MAX`]) so the old master takes no write the promoted
//! replica will lack, and on `+promoted-slave` / `+switch-master` the connection moves to
//! the named replica (after checking its role) and releases them there.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::FutureExt;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult, Value,
};
use tokio::sync::watch;

use super::failover::Phase;
use super::{ManagerOptions, RedisConnector};

/// Longest hold of commands during a failover; then they go on and a Sentinel lookup
/// decides where (Sentinel's own failover timeout may be longer, a write-less pause is not).
pub const HOLD_MAX: Duration = Duration::from_secs(10);

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
                    f.released().await;
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
                    f.released().await;
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
    /// True while a failover is under way: commands wait.
    held: watch::Sender<bool>,
    /// The first master's settings (TLS, credentials, database), to reach a promoted replica.
    template: ConnectionInfo,
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
        let template = client.get_connection_info().clone();
        let conn = ConnectionManager::new_with_config(client, options.config()).await?;
        let every = options.follow_every;
        let events = connector.failover_events();
        let me = Arc::new(Following {
            connector,
            options,
            current: Mutex::new(Current {
                conn,
                generation: 0,
                addr,
            }),
            switching: tokio::sync::Mutex::new(()),
            held: watch::Sender::new(false),
            template,
        });
        if let Some(events) = events {
            tokio::spawn(on_failover_events(Arc::downgrade(&me), events));
        }
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

    /// Waits while a failover holds commands.
    async fn released(&self) {
        if !*self.held.borrow() {
            return;
        }
        let mut rx = self.held.subscribe();
        let _ = rx.wait_for(|held| !*held).await;
    }

    /// Moves to `addr` (`host:port`, named by a Sentinel event) if it is a master now.
    async fn follow_to(&self, addr: &str) {
        let _one_at_a_time = self.switching.lock().await;
        let (_, _, old) = self.current();
        if addr == old {
            return;
        }
        let Some((host, port)) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        else {
            return;
        };
        let to = match self.template.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        let info = self.template.clone().set_addr(to);
        let opened = async {
            let client = redis::Client::open(info)?;
            let mut conn =
                ConnectionManager::new_with_config(client, self.options.config()).await?;
            let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut conn).await?;
            let master = role
                .first()
                .and_then(|r| redis::from_redis_value_ref::<String>(r).ok())
                .is_some_and(|r| r == "master");
            Ok::<_, RedisError>((conn, master))
        }
        .await;
        match opened {
            Ok((conn, true)) => self.install(conn, addr.to_string(), &old),
            Ok((_, false)) => tracing::debug!(%addr, "promoted replica not a master yet"),
            Err(e) => {
                tracing::warn!(error = %e, master = %addr, "cannot connect to the promoted replica yet")
            }
        }
    }

    fn install(&self, conn: ConnectionManager, addr: String, old: &str) {
        let mut c = self.current.lock().unwrap_or_else(|p| p.into_inner());
        c.conn = conn;
        c.generation += 1;
        c.addr = addr.clone();
        tracing::warn!(from = %old, to = %addr, "Redis master moved (Sentinel); following it");
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
            Ok(conn) => self.install(conn, addr, &old),
            Err(e) => {
                tracing::warn!(error = %e, master = %addr, "cannot connect to the new Redis master yet")
            }
        }
    }
}

/// Holds the connection's commands from the start of a failover until the promoted
/// replica is reached (or [`HOLD_MAX`] passed, or the failover was aborted).
async fn on_failover_events(weak: Weak<Following>, mut events: watch::Receiver<Phase>) {
    // Events before this connection existed are not its business.
    let _ = events.borrow_and_update();
    loop {
        let holding = weak.upgrade().is_some_and(|me| *me.held.borrow());
        let changed = if holding {
            tokio::time::timeout(HOLD_MAX, events.changed()).await
        } else {
            Ok(events.changed().await)
        };
        let Some(me) = weak.upgrade() else { return };
        match changed {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::warn!(
                    "no new master named {HOLD_MAX:?} into a failover; asking the Sentinels"
                );
                let (_, generation, _) = me.current();
                me.follow(generation).await;
                me.held.send_replace(false);
                continue;
            }
        }
        let phase = events.borrow_and_update().clone();
        match phase {
            Phase::Started => {
                tracing::warn!("Sentinel failover started; holding Redis commands until the new master is known");
                me.held.send_replace(true);
            }
            Phase::Promoted(addr) => {
                me.follow_to(&addr).await;
                me.held.send_replace(false);
            }
            Phase::Stable => {
                me.held.send_replace(false);
            }
        }
    }
}
