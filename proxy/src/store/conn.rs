//! One lazily opened Redis connection (a single node through the `redis` crate's connection
//! manager, or a Cluster through its cluster client; both reconnect by themselves). The rate
//! limiter and the cache each open one, behind their own [`super::Guarded`].

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisResult, ScriptInvocation};
use tokio::sync::OnceCell;

use crate::config::RedisTarget;

/// An open connection.
#[derive(Clone)]
pub enum Conn {
    /// One node.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

/// Whether `e` says the connection itself broke (the manager reconnects on the next call).
fn connection_broke(e: &redis::RedisError) -> bool {
    e.is_connection_dropped() || e.is_io_error() || e.is_connection_refusal()
}

impl Conn {
    /// Run one command.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        match self {
            Conn::Single(c) => {
                let r = cmd.query_async(&mut c.clone()).await;
                match r {
                    // After an outage the first command runs on the dead connection and only
                    // starts the reconnect: once, go again on the new one, so that a Redis that
                    // is back is seen as back (the caller's timeout bounds both).
                    Err(e) if connection_broke(&e) => cmd.query_async(&mut c.clone()).await,
                    r => r,
                }
            }
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
    }

    /// Run a pipeline (all its keys must share a hash slot on a Cluster).
    pub async fn pipe<T: FromRedisValue>(&self, p: &Pipeline) -> RedisResult<T> {
        match self {
            Conn::Single(c) => match p.query_async(&mut c.clone()).await {
                Err(e) if connection_broke(&e) => p.query_async(&mut c.clone()).await,
                r => r,
            },
            Conn::Cluster(c) => p.query_async(&mut c.clone()).await,
        }
    }

    /// Run a Lua script by EVALSHA (loaded on demand).
    pub async fn invoke<T: FromRedisValue>(&self, inv: &ScriptInvocation<'_>) -> RedisResult<T> {
        match self {
            Conn::Single(c) => match inv.invoke_async(&mut c.clone()).await {
                Err(e) if connection_broke(&e) => inv.invoke_async(&mut c.clone()).await,
                r => r,
            },
            Conn::Cluster(c) => inv.invoke_async(&mut c.clone()).await,
        }
    }
}

/// A connection opened on first use (from inside a request's runtime) and kept.
pub struct LazyConn {
    target: RedisTarget,
    timeout: Duration,
    conn: OnceCell<Conn>,
}

impl LazyConn {
    /// A connection to `target` whose commands give up after `timeout`.
    pub fn new(target: RedisTarget, timeout: Duration) -> Self {
        LazyConn {
            target,
            timeout,
            conn: OnceCell::new(),
        }
    }

    /// Whether the connection has been opened.
    pub fn is_open(&self) -> bool {
        self.conn.initialized()
    }

    /// Round trip of a `PING` (opening the connection if needed), bounded by the command
    /// timeout but at least 250 ms; `Err` names what went wrong.
    pub async fn ping(&self) -> Result<Duration, String> {
        let bound = self.timeout.max(Duration::from_millis(250));
        let start = std::time::Instant::now();
        let work = async { self.get().await?.query::<String>(&redis::cmd("PING")).await };
        match tokio::time::timeout(bound, work).await {
            Ok(Ok(_)) => Ok(start.elapsed()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", bound.as_millis())),
        }
    }

    /// The connection, opening it if needed.
    pub async fn get(&self) -> RedisResult<&Conn> {
        self.conn.get_or_try_init(|| self.connect()).await
    }

    async fn connect(&self) -> RedisResult<Conn> {
        let t = self.timeout;
        match &self.target {
            RedisTarget::Single(url) => {
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(1)
                    .set_connection_timeout(Some(t.max(Duration::from_millis(250))))
                    .set_response_timeout(Some(t));
                let client = redis::Client::open(url.as_str())?;
                Ok(Conn::Single(
                    ConnectionManager::new_with_config(client, config).await?,
                ))
            }
            RedisTarget::Cluster(nodes) => {
                let client = ClusterClient::builder(nodes.iter().map(String::as_str))
                    .retries(1)
                    .connection_timeout(t.max(Duration::from_millis(250)))
                    .response_timeout(t)
                    .build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }
}
