//! Process lifecycle on top of Pingora's signals: SIGTERM (graceful stop) and SIGQUIT (hand the
//! listeners to a new process started with `--upgrade`) mark the process as draining, so
//! `/readyz` turns 503, and exit as soon as no request is in flight instead of always waiting
//! the whole grace period (Pingora's own behaviour, which remains the upper bound). SIGINT is a
//! fast stop. SIGHUP (reload) is handled by [`crate::reload::ReloadService`].

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, UnixShutdownSignalWatch};
use tracing::info;

use crate::app::App;
use crate::metrics::METRICS;

/// How long Pingora keeps the old listeners open after handing them over on SIGQUIT
/// (`CLOSE_TIMEOUT` in pingora-core); the old process must not exit before.
const UPGRADE_HAND_OVER: Duration = Duration::from_secs(5);

/// How long idle keep-alive connections may still send one last request after shutdown began
/// (`KEEPALIVE_CLOSE_PAUSE` of the vendored pingora-proxy); exiting earlier would reset them.
const KEEPALIVE_CLOSE: Duration = pingora::proxy::KEEPALIVE_CLOSE_PAUSE;

/// In-flight must stay at zero this long before the process exits: a request whose
/// connection was accepted just before the listeners closed gets the time to be read.
const QUIET: Duration = Duration::from_millis(200);

/// Sluice's [`ShutdownSignalWatch`]: Pingora's Unix signals plus draining.
pub struct Signals {
    app: Arc<App>,
    grace: Duration,
    drain_delay: Duration,
}

impl Signals {
    /// Signals for `app`; in-flight requests get at most `grace` after a graceful stop, which
    /// starts `drain_delay` after SIGTERM (listeners stay open meanwhile, `/readyz` says 503).
    pub fn new(app: Arc<App>, grace: Duration, drain_delay: Duration) -> Self {
        Signals {
            app,
            grace,
            drain_delay,
        }
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let signal = UnixShutdownSignalWatch.recv().await;
        let hold = match signal {
            ShutdownSignal::GracefulTerminate => Some(KEEPALIVE_CLOSE),
            ShutdownSignal::GracefulUpgrade => Some(UPGRADE_HAND_OVER + KEEPALIVE_CLOSE),
            ShutdownSignal::FastShutdown => None,
        };
        if let Some(hold) = hold {
            self.app.draining.store(true, Relaxed);
            info!(
                event = "draining",
                upgrade = hold > KEEPALIVE_CLOSE,
                in_flight = METRICS.in_flight.load(Relaxed),
                grace_ms = self.grace.as_millis() as u64,
                "graceful stop: no new connections; finishing requests in flight"
            );
            let grace = self.grace;
            if matches!(signal, ShutdownSignal::GracefulTerminate) && !self.drain_delay.is_zero() {
                info!(
                    event = "drain_delay",
                    delay_ms = self.drain_delay.as_millis() as u64,
                    "not ready; still accepting until the drain delay ends"
                );
                tokio::time::sleep(self.drain_delay).await;
            }
            std::thread::spawn(move || exit_when_drained(hold, grace));
        }
        signal
    }
}

/// After `hold`, exit the process once nothing is in flight for [`QUIET`]; give up (and let
/// Pingora finish its grace period) after `grace`.
fn exit_when_drained(hold: Duration, grace: Duration) {
    std::thread::sleep(hold);
    let deadline = Instant::now() + grace;
    let mut quiet_since: Option<Instant> = None;
    while Instant::now() < deadline {
        if METRICS.in_flight.load(Relaxed) <= 0 {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= QUIET {
                info!(event = "drained", "no request in flight; exiting");
                std::process::exit(0);
            }
        } else {
            quiet_since = None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
