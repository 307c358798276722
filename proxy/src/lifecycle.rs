//! Process lifecycle on top of Pingora's signals: SIGTERM (graceful stop) and SIGQUIT (hand the
//! listeners to a new process started with `--upgrade`) mark the process as draining, so
//! `/readyz` turns 503, and exit as soon as no request is in flight instead of always waiting
//! the whole grace period (Pingora's own behaviour, which remains the upper bound). SIGINT is a
//! fast stop. SIGHUP (reload) is handled by [`crate::reload::ReloadService`].

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{
    ExecutionPhase, ShutdownSignal, ShutdownSignalWatch, UnixShutdownSignalWatch,
};
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::process::App;

/// How long Pingora keeps the old listeners open after handing them over on SIGQUIT
/// (`CLOSE_TIMEOUT` in pingora-core); the old process must not exit before.
const UPGRADE_HAND_OVER: Duration = Duration::from_secs(5);

/// How long idle keep-alive connections may still send one last request after shutdown began
/// (`KEEPALIVE_CLOSE_PAUSE` of the vendored pingora-proxy); exiting earlier would reset them.
const KEEPALIVE_CLOSE: Duration = pingora::proxy::KEEPALIVE_CLOSE_PAUSE;

/// How long the access log (and the span export) may take to write out its queue when the
/// process exits.
pub const LOG_FLUSH: Duration = Duration::from_secs(2);

/// In-flight must stay at zero this long before the process exits: a request whose
/// connection was accepted just before the listeners closed gets the time to be read.
const QUIET: Duration = Duration::from_millis(200);

/// Sluice's [`ShutdownSignalWatch`]: Pingora's Unix signals plus draining.
pub struct Signals {
    app: Arc<App>,
    grace: Duration,
    drain_delay: Duration,
    /// Pingora's execution phases, followed once the first SIGQUIT arrives.
    phases: std::sync::Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
}

impl Signals {
    /// Signals for `app`; in-flight requests get at most `grace` after a graceful stop, which
    /// starts `drain_delay` after SIGTERM (listeners stay open meanwhile, `/readyz` says 503).
    /// `phases` (from `Server::watch_execution_phase`) tells whether an upgrade handed the
    /// listeners over.
    pub fn new(
        app: Arc<App>,
        grace: Duration,
        drain_delay: Duration,
        phases: broadcast::Receiver<ExecutionPhase>,
    ) -> Self {
        Signals {
            app,
            grace,
            drain_delay,
            phases: std::sync::Mutex::new(Some(phases)),
        }
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let signal = UnixShutdownSignalWatch.recv().await;
        match signal {
            ShutdownSignal::GracefulTerminate => {
                start_draining(&self.app, false);
                if !self.drain_delay.is_zero() {
                    info!(
                        event = "drain_delay",
                        delay_ms = self.drain_delay.as_millis() as u64,
                        "not ready; still accepting until the drain delay ends"
                    );
                    tokio::time::sleep(self.drain_delay).await;
                }
                let (grace, app) = (self.grace, Arc::clone(&self.app));
                std::thread::spawn(move || exit_when_drained(&app, KEEPALIVE_CLOSE, grace));
            }
            ShutdownSignal::GracefulUpgrade => {
                // Draining starts only once a new process took the listeners: if none does
                // (it failed to start), the vendored Pingora keeps this one serving.
                let phases = self.phases.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(phases) = phases {
                    tokio::spawn(follow_upgrade(phases, Arc::clone(&self.app), self.grace));
                }
            }
            ShutdownSignal::FastShutdown => {}
        }
        signal
    }
}

/// Mark the process draining (`/readyz` 503, `Connection: close`) and say so.
fn start_draining(app: &App, upgrade: bool) {
    app.draining.store(true, Relaxed);
    if !upgrade {
        // After a hand-over the new process is the service's main process (it sent `MAINPID`
        // and `READY=1`); a `STOPPING=1` from this one would read as the service stopping.
        crate::notify::stopping();
    }
    info!(
        event = "draining",
        upgrade,
        in_flight = app.metrics.in_flight(),
        "graceful stop: no new connections; finishing requests in flight"
    );
}

/// Follow Pingora's phases after SIGQUIT: once the listeners went to the new process, drain and
/// exit; when the hand-over failed (Pingora is `Running` again), say so and keep serving.
async fn follow_upgrade(
    mut phases: broadcast::Receiver<ExecutionPhase>,
    app: Arc<App>,
    grace: Duration,
) {
    let mut transferring = false;
    loop {
        match phases.recv().await {
            Ok(ExecutionPhase::GracefulUpgradeTransferringFds) => transferring = true,
            Ok(ExecutionPhase::GracefulUpgradeCloseTimeout) => {
                start_draining(&app, true);
                let app = Arc::clone(&app);
                std::thread::spawn(move || {
                    exit_when_drained(&app, UPGRADE_HAND_OVER + KEEPALIVE_CLOSE, grace)
                });
                return;
            }
            Ok(ExecutionPhase::Running) if transferring => {
                transferring = false;
                warn!(
                    event = "upgrade_failed",
                    "no new process took the listeners (did it fail to start? see its output); this process keeps serving"
                );
            }
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// After `hold`, exit the process once nothing is in flight for [`QUIET`]; give up (and let
/// Pingora finish its grace period) after `grace`.
fn exit_when_drained(app: &App, hold: Duration, grace: Duration) {
    let metrics = app.metrics;
    std::thread::sleep(hold);
    let deadline = Instant::now() + grace;
    let mut quiet_since: Option<Instant> = None;
    while Instant::now() < deadline {
        if metrics.in_flight() <= 0 {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= QUIET {
                info!(event = "drained", "no request in flight; exiting");
                // The access log's queue is written out first: its last lines are the
                // requests that were just drained.
                app.flush_logs(LOG_FLUSH);
                std::process::exit(0);
            }
        } else {
            quiet_since = None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
