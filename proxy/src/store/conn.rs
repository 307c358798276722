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

/// A connection to every master (the one node, or each Cluster master from
/// `CLUSTER NODES`), for scans. Admin-only: not on the request path.
pub async fn masters(target: &RedisTarget) -> RedisResult<Vec<redis::aio::MultiplexedConnection>> {
    let open = |url: String| async move {
        redis::Client::open(url)?
            .get_multiplexed_async_connection()
            .await
    };
    match target {
        RedisTarget::Single(url) => Ok(vec![open(url.clone()).await?]),
        RedisTarget::Cluster(seeds) => {
            let mut last = None;
            for seed in seeds {
                let mut c = match open(seed.clone()).await {
                    Ok(c) => c,
                    Err(e) => {
                        last = Some(e);
                        continue;
                    }
                };
                let nodes: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query_async(&mut c)
                    .await?;
                let mut out = Vec::new();
                for line in nodes.lines() {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    if f.len() < 3 || !f[2].split(',').any(|x| x == "master") {
                        continue;
                    }
                    if f[2].contains("fail") {
                        continue;
                    }
                    let addr = f[1].split('@').next().unwrap_or(f[1]);
                    out.push(open(with_addr(seed, addr)).await?);
                }
                return Ok(out);
            }
            Err(last.unwrap_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::Io, "no cluster seed reachable"))
            }))
        }
    }
}

/// `url` with its `host:port` replaced by `addr` (keeping scheme, credentials and db).
fn with_addr(url: &str, addr: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    let (auth, hostpart) = match rest.rsplit_once('@') {
        Some((a, h)) => (format!("{a}@"), h),
        None => (String::new(), rest),
    };
    let path = hostpart.find('/').map_or("/", |i| &hostpart[i..]);
    format!("{scheme}://{auth}{addr}{path}")
}

#[cfg(test)]
mod address_tests {
    use super::with_addr;

    #[test]
    fn a_node_address_keeps_scheme_credentials_and_db() {
        assert_eq!(
            with_addr("redis://:pw@seed:7000/2", "10.0.0.5:7001"),
            "redis://:pw@10.0.0.5:7001/2"
        );
        assert_eq!(with_addr("rediss://seed:7000", "h:1"), "rediss://h:1/");
        assert_eq!(with_addr("seed:7000", "h:1"), "redis://h:1/");
    }
}
