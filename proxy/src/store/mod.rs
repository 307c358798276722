//! Everything that talks to Redis connections and circuit breakers: the connection (one node or
//! a Cluster, [`conn`], which also opens one connection per master for admin scans), the
//! breaker ([`breaker`]), and [`Guarded::call`], the one way a request-path Redis call is made:
//! skipped while the breaker is open, bounded by the command timeout (connecting included),
//! and counted by the breaker, whose transitions are logged.
//! The rate limiter and the cache each hold a [`Guarded`]; what they store is theirs.

pub mod breaker;
pub mod conn;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tracing::{info, warn};

pub use breaker::{Breaker, BreakerState};
pub use conn::{Conn, LazyConn};

use crate::config::RedisSpec;
use crate::metrics::{Kind, Live, LiveFamily, Metrics};
use crate::util::clock::now_ms;

/// The Redis work given to [`Guarded::call`]: boxed where it is written. A Redis command's
/// future is about 3 KB; passed by value through the call, the breaker, the timeout and
/// `into_future`, it was copied about nine times per call (callgrind: 1,900 instructions of a
/// Redis cache hit), boxed it is copied once.
pub type Work<'a, T> = Pin<Box<dyn Future<Output = redis::RedisResult<T>> + Send + 'a>>;

/// Why a guarded call gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The breaker is open: Redis was not called.
    #[error("skipped: the circuit breaker is open")]
    Skipped,
    /// No answer within the command timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

impl CallError {
    /// A fixed label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Skipped => "skipped",
            CallError::Timeout(_) => "timeout",
            CallError::Redis(e) if e.is_io_error() || e.is_connection_dropped() => "connection",
            CallError::Redis(_) => "response",
        }
    }
}

/// Who holds a [`Guarded`]: names its log events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The rate limiter (`redis_breaker_open` / `redis_breaker_closed`).
    RateLimit,
    /// The response cache (`cache_redis_breaker_open` / `cache_redis_breaker_closed`).
    Cache,
}

impl Component {
    /// The `component` label of `sluice_redis_breaker_transitions_total`.
    fn label(self) -> &'static str {
        match self {
            Component::RateLimit => "ratelimit",
            Component::Cache => "cache",
        }
    }

    fn events(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Component::RateLimit => (
                "redis_breaker_open",
                "redis_breaker_closed",
                "rate limiting",
            ),
            Component::Cache => (
                "cache_redis_breaker_open",
                "cache_redis_breaker_closed",
                "the cache",
            ),
        }
    }
}

/// A Redis connection behind a circuit breaker and a timeout.
pub struct Guarded {
    conn: LazyConn,
    breaker: Breaker,
    timeout: Duration,
    component: Component,
}

impl Guarded {
    /// A guarded connection for `spec` (its target, command timeout and breaker settings), with
    /// `timeout` bounding each call; nothing is connected yet.
    pub fn new(spec: &RedisSpec, timeout: Duration, component: Component) -> Self {
        Guarded {
            conn: LazyConn::new(spec.target.clone(), timeout),
            breaker: Breaker::new(
                spec.breaker_failures,
                spec.breaker_cooldown.as_millis() as u64,
            ),
            timeout,
            component,
        }
    }

    /// The connection, for the work given to [`Self::call`] (which opens it on first use).
    pub fn conn(&self) -> &LazyConn {
        &self.conn
    }

    /// Run `work` unless the breaker is open, bounded by the timeout; the breaker counts the
    /// outcome, and its opening and closing are logged.
    pub async fn call<T>(&self, work: Work<'_, T>) -> Result<T, CallError> {
        if !self.breaker.allow(now_ms()) {
            return Err(CallError::Skipped);
        }
        let (opened, closed, who) = self.component.events();
        match bounded(self.timeout, work).await {
            Ok(v) => {
                if self.breaker.success() {
                    info!(event = closed, "Redis answers again; {who} uses it again");
                }
                Ok(v)
            }
            Err(e) => {
                if self.breaker.failure(now_ms()) {
                    warn!(
                        event = opened,
                        kind = e.kind(),
                        error = %e,
                        "{who} stops calling Redis for the breaker's cool-down"
                    );
                }
                Err(e)
            }
        }
    }

    /// Run `work` bounded by `timeout`, without the breaker (admin calls, API-key lookups).
    pub async fn unguarded<T>(&self, timeout: Duration, work: Work<'_, T>) -> Result<T, CallError> {
        bounded(timeout, work).await
    }

    /// The breaker's state.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// How many times the breaker opened and closed.
    pub fn breaker_transitions(&self) -> (u64, u64) {
        self.breaker.transitions()
    }

    /// Round trip of a `PING` (admin status), bounded by the timeout but at least 250 ms.
    pub async fn ping(&self) -> Result<Duration, String> {
        self.conn.ping().await
    }
}

/// `work` bounded by `timeout`.
async fn bounded<T>(timeout: Duration, work: Work<'_, T>) -> Result<T, CallError> {
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r.map_err(CallError::from),
        Err(_) => Err(CallError::Timeout(timeout)),
    }
}

/// `sluice_redis_breaker_transitions_total`, one collector per component (its `component`
/// label is a constant of the collector, so both share the family).
static TRANSITIONS: [LiveFamily; 1] = [LiveFamily {
    name: "sluice_redis_breaker_transitions_total",
    help: "Circuit breaker openings and closings, by component.",
    kind: Kind::Counter,
    labels: &["to"],
}];

static RATELIMIT_OPEN: [LiveFamily; 1] = [LiveFamily {
    name: "sluice_ratelimit_breaker_open",
    help: "1 while the rate-limit circuit breaker skips Redis.",
    kind: Kind::Gauge,
    labels: &[],
}];

static CACHE_OPEN: [LiveFamily; 1] = [LiveFamily {
    name: "sluice_cache_breaker_open",
    help: "1 while the cache's circuit breaker skips Redis.",
    kind: Kind::Gauge,
    labels: &[],
}];

/// What a breaker's metrics read at scrape time: its state and (openings, closings), `None`
/// when the component has no Redis (exported as closed, never opened).
pub type BreakerReading = Option<(BreakerState, (u64, u64))>;

/// Register the breaker metrics of `component` on `metrics`, read through `read` at scrape
/// time: whether it is open, and its transitions.
pub fn register_breaker_metrics(
    metrics: &Metrics,
    component: Component,
    read: impl Fn() -> BreakerReading + Clone + Send + Sync + 'static,
) -> Result<(), crate::metrics::Error> {
    let open_family = match component {
        Component::RateLimit => &RATELIMIT_OPEN,
        Component::Cache => &CACHE_OPEN,
    };
    let read_open = read.clone();
    let open = Live::new(open_family, &[], move |s| {
        let open = matches!(read_open(), Some((BreakerState::Open, _)));
        s.add(0, &[], f64::from(u8::from(open)));
    })?;
    let transitions = Live::new(
        &TRANSITIONS,
        &[("component", component.label())],
        move |s| {
            let (opened, closed) = read().map_or((0, 0), |(_, t)| t);
            s.add(0, &["open"], opened as f64);
            s.add(0, &["closed"], closed as f64);
        },
    )?;
    metrics.registry().register(Box::new(open))?;
    metrics.registry().register(Box::new(transitions))
}
