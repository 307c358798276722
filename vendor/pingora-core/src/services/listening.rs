// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! The listening service
//!
//! A [Service] (listening service) responds to incoming requests on its endpoints.
//! Each [Service] can be configured with custom application logic (e.g. an `HTTPProxy`) and one or
//! more endpoints to listen to.

use crate::apps::ServerApp;
use crate::listeners::tls::TlsSettings;
#[cfg(feature = "connection_filter")]
use crate::listeners::AcceptAllFilter;
use crate::listeners::{
    ConnectionFilter, ListenerConfig, Listeners, ServerAddress, TcpSocketOptions, TransportStack,
};
use crate::protocols::Stream;
#[cfg(unix)]
use crate::server::ListenFds;
use crate::server::{RuntimeOpts, ShutdownWatch};
use crate::services::Service as ServiceTrait;

use async_trait::async_trait;
use futures::FutureExt;
use log::{debug, error, info};
use pingora_error::Result;
use pingora_runtime::current_handle;
use pingora_timeout::timeout;
use std::fs::Permissions;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Override the runtime options used to run a listening service.
pub type RuntimeOptsOverride = Arc<dyn Fn(&RuntimeOpts) -> Option<RuntimeOpts> + Send + Sync>;

/// The type of service that is associated with a list of listening endpoints and a particular application
pub struct Service<A> {
    name: String,
    listeners: Listeners,
    app_logic: Option<A>,
    /// The number of preferred threads. `None` to follow global setting.
    pub threads: Option<usize>,
    runtime_opts_override: Option<RuntimeOptsOverride>,
    #[cfg(feature = "connection_filter")]
    connection_filter: Arc<dyn ConnectionFilter>,
    /// SLUICE PATCH (listener lifecycle): called once every endpoint is bound and accepting.
    on_listening: Option<Box<dyn FnOnce() + Send + Sync>>,
    /// SLUICE PATCH (connection limit): one permit per open downstream connection.
    connection_limit: Option<Arc<tokio::sync::Semaphore>>,
    /// SLUICE PATCH (open connections): downstream connections accepted and not yet ended.
    connections_open: Option<Arc<AtomicUsize>>,
}

/// SLUICE PATCH (open connections): one unit of the open-connections count, from accept to
/// the end of the connection's task.
struct OpenConnection(Option<Arc<AtomicUsize>>);

impl OpenConnection {
    fn new(count: &Option<Arc<AtomicUsize>>) -> Self {
        if let Some(c) = count {
            c.fetch_add(1, Ordering::Relaxed);
        }
        OpenConnection(count.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<A> Service<A> {
    /// Create a new [`Service`] with the given application (see [`crate::apps`]).
    pub fn new(name: String, app_logic: A) -> Self {
        Service {
            name,
            listeners: Listeners::new(),
            app_logic: Some(app_logic),
            threads: None,
            runtime_opts_override: None,
            #[cfg(feature = "connection_filter")]
            connection_filter: Arc::new(AcceptAllFilter),
            on_listening: None,
            connection_limit: None,
            connections_open: None,
        }
    }

    /// Create a new [`Service`] with the given application (see [`crate::apps`]) and the given
    /// [`Listeners`].
    pub fn with_listeners(name: String, listeners: Listeners, app_logic: A) -> Self {
        Service {
            name,
            listeners,
            app_logic: Some(app_logic),
            threads: None,
            runtime_opts_override: None,
            #[cfg(feature = "connection_filter")]
            connection_filter: Arc::new(AcceptAllFilter),
            on_listening: None,
            connection_limit: None,
            connections_open: None,
        }
    }

    /// Set a runtime options override for this service.
    ///
    /// Returning [`None`] from the override uses the global runtime options.
    pub fn set_runtime_opts_override(&mut self, override_fn: RuntimeOptsOverride) {
        self.runtime_opts_override = Some(override_fn);
    }

    /// Set a custom connection filter for this service.
    ///
    /// The connection filter will be applied to all incoming connections
    /// on all endpoints of this service. Connections that don't pass the
    /// filter will be dropped immediately at the TCP level, before TLS
    /// handshake or any HTTP processing.
    ///
    /// # Feature Flag
    ///
    /// This method requires the `connection_filter` feature to be enabled.
    /// When the feature is disabled, this method is a no-op.
    ///
    /// # Example
    ///
    /// ```rust,no_run
    /// # use std::sync::Arc;
    /// # use pingora_core::listeners::{ConnectionFilter, AcceptAllFilter};
    /// # struct MyService;
    /// # impl MyService {
    /// #   fn new() -> Self { MyService }
    /// # }
    /// let mut service = MyService::new();
    /// let filter = Arc::new(AcceptAllFilter);
    /// service.set_connection_filter(filter);
    /// ```
    #[cfg(feature = "connection_filter")]
    pub fn set_connection_filter(&mut self, filter: Arc<dyn ConnectionFilter>) {
        self.connection_filter = filter.clone();
        self.listeners.set_connection_filter(filter);
    }

    #[cfg(not(feature = "connection_filter"))]
    pub fn set_connection_filter(&mut self, _filter: Arc<dyn ConnectionFilter>) {}

    /// SLUICE PATCH (listener lifecycle): call `f` once every endpoint of this service is bound
    /// and accepting connections (readiness). A service whose listeners cannot be built logs
    /// why and exits the process with status 1 instead of leaving it running without them.
    pub fn on_listening(&mut self, f: impl FnOnce() + Send + Sync + 'static) {
        self.on_listening = Some(Box::new(f));
    }

    /// SLUICE PATCH (connection limit): at most `limit.available_permits()` downstream
    /// connections at once; at the limit the service stops accepting (new connections wait in
    /// the kernel's backlog) until one closes.
    pub fn set_connection_limit(&mut self, limit: Arc<tokio::sync::Semaphore>) {
        self.connection_limit = Some(limit);
    }

    /// SLUICE PATCH (open connections): keep `count` at the number of downstream connections
    /// accepted and not yet ended (for a gauge read elsewhere).
    pub fn set_connection_counter(&mut self, count: Arc<AtomicUsize>) {
        self.connections_open = Some(count);
    }

    /// Get the [`Listeners`], mostly to add more endpoints.
    pub fn endpoints(&mut self) -> &mut Listeners {
        &mut self.listeners
    }

    // the follow add* function has no effect if the server is already started

    /// Add a TCP listening endpoint with the given address (e.g., `127.0.0.1:8000`).
    pub fn add_tcp(&mut self, addr: &str) {
        self.listeners.add_tcp(addr);
    }

    /// Add a listening endpoint configured by a [`ListenerConfig`].
    pub fn add_listener(&mut self, endpoint: ListenerConfig) {
        self.listeners.add_listener(endpoint);
    }

    /// Add a TCP listening endpoint with the given [`TcpSocketOptions`].
    pub fn add_tcp_with_settings(&mut self, addr: &str, sock_opt: TcpSocketOptions) {
        self.listeners.add_tcp_with_settings(addr, sock_opt);
    }

    /// Add a Unix domain socket listening endpoint with the given path.
    ///
    /// Optionally take a permission of the socket file. The default is read and write access for
    /// everyone (0o666).
    #[cfg(unix)]
    pub fn add_uds(&mut self, addr: &str, perm: Option<Permissions>) {
        self.listeners.add_uds(addr, perm);
    }

    /// Add a TLS listening endpoint with the given certificate and key paths.
    pub fn add_tls(&mut self, addr: &str, cert_path: &str, key_path: &str) -> Result<()> {
        self.listeners.add_tls(addr, cert_path, key_path)
    }

    /// Add a TLS listening endpoint with the given [`TlsSettings`] and [`TcpSocketOptions`].
    pub fn add_tls_with_settings(
        &mut self,
        addr: &str,
        sock_opt: Option<TcpSocketOptions>,
        settings: TlsSettings,
    ) {
        self.listeners
            .add_tls_with_settings(addr, sock_opt, settings)
    }

    /// Add an endpoint according to the given [`ServerAddress`]
    pub fn add_address(&mut self, addr: ServerAddress) {
        self.listeners.add_address(addr);
    }

    /// Get a reference to the application inside this service
    pub fn app_logic(&self) -> Option<&A> {
        self.app_logic.as_ref()
    }

    /// Get a mutable reference to the application inside this service
    pub fn app_logic_mut(&mut self) -> Option<&mut A> {
        self.app_logic.as_mut()
    }
}

impl<A: ServerApp + Send + Sync + 'static> Service<A> {
    pub async fn handle_event(event: Stream, app_logic: Arc<A>, shutdown: ShutdownWatch) {
        debug!("new event!");
        let mut reuse_event = app_logic.process_new(event, &shutdown).await;
        while let Some(event) = reuse_event {
            // TODO: with no steal runtime, consider spawn() the next event on
            // another thread for more evenly load balancing
            debug!("new reusable event!");
            reuse_event = app_logic.process_new(event, &shutdown).await;
        }
    }

    async fn run_endpoint(
        app_logic: Arc<A>,
        mut stack: TransportStack,
        mut shutdown: ShutdownWatch,
        limit: Option<Arc<tokio::sync::Semaphore>>,
        open: Option<Arc<AtomicUsize>>,
    ) {
        // SLUICE PATCH (connection limit): a permit is taken before accepting and held by the
        // connection's task until it ends.
        let next_permit = || {
            let limit = limit.clone();
            async move {
                match limit {
                    Some(l) => l.acquire_owned().await.ok(),
                    None => None,
                }
            }
        };
        // the accept loop, until the system is shutting down
        loop {
            let new_io = tokio::select! { // TODO: consider biased for perf reason?
                new_io = async {
                    let permit = next_permit().await;
                    stack.accept().await.map(|io| (io, permit))
                } => new_io,
                shutdown_signal = shutdown.changed() => {
                    match shutdown_signal {
                        Ok(()) => {
                            if !*shutdown.borrow() {
                                // happen in the initial read
                                continue;
                            }
                            info!("Shutting down {}", stack.as_str());
                            break;
                        }
                        Err(e) => {
                            error!("shutdown_signal error {e}");
                            break;
                        }
                    }
                }
            };
            match new_io {
                Ok((io, permit)) => {
                    let app = app_logic.clone();
                    let shutdown = shutdown.clone();
                    let counted = OpenConnection::new(&open);
                    let peer_addr = io.peer_addr();
                    // SLUICE PATCH (small connection task): the handshake future (the TLS
                    // accept's, about 8 KiB) is boxed, so it is freed once the handshake is
                    // done instead of sizing the task every connection holds for its life. It
                    // is boxed before the task is spawned, so that the task does not keep the
                    // 440-byte stream it was made from for its life either (784 to about 300
                    // bytes of task).
                    let handshake = Box::pin(io.handshake());
                    current_handle().spawn(async move {
                        let _permit = permit;
                        let _counted = counted;
                        match timeout(Duration::from_secs(60), handshake).await {
                            Ok(handshake) => {
                                match handshake {
                                    Ok(io) => Self::handle_event(io, app, shutdown).await,
                                    Err(e) => {
                                        // TODO: Maybe IOApp trait needs a fn to handle/filter out this error
                                        if let Some(addr) = peer_addr {
                                            error!("Downstream handshake error from {}: {e}", addr);
                                        } else {
                                            error!("Downstream handshake error: {e}");
                                        }
                                    }
                                }
                            }
                            Err(_) => {
                                error!("Downstream handshake timeout");
                            }
                        }
                    });
                }
                Err(e) => {
                    // SLUICE PATCH: at most one line per 10 s (with the count), not one per
                    // failed accept: out of file descriptors, accept fails in a tight loop.
                    log_accept_error(&e);
                    if let Some(io_error) = e
                        .root_cause()
                        .downcast_ref::<std::io::Error>()
                        .and_then(|e| e.raw_os_error())
                    {
                        // 24: too many open files. In this case accept() will continue return this
                        // error without blocking, which could use up all the resources
                        if io_error == 24 {
                            // call sleep to calm the thread down and wait for others to release
                            // some resources
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        }
                    }
                }
            }
        }

        stack.cleanup();
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServiceTrait for Service<A> {
    async fn start_service(
        &mut self,
        #[cfg(unix)] fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        let runtime = current_handle();
        // SLUICE PATCH (listener lifecycle): stock Pingora panics here (and the TLS acceptor
        // panics on an unreadable certificate), which kills this service's thread while the
        // rest of the process runs on without its listeners. Exit instead, so that a
        // supervisor sees the failure.
        let built = std::panic::AssertUnwindSafe(self.listeners.build(
            #[cfg(unix)]
            fds,
        ))
        .catch_unwind()
        .await;
        let endpoints = match built {
            Ok(Ok(endpoints)) => endpoints,
            Ok(Err(e)) => {
                error!("service {}: cannot open its listeners: {e}", self.name);
                eprintln!("service {}: cannot open its listeners: {e}", self.name);
                std::process::exit(1);
            }
            Err(_) => {
                error!("service {}: building its listeners panicked", self.name);
                eprintln!("service {}: building its listeners panicked", self.name);
                std::process::exit(1);
            }
        };
        if let Some(f) = self.on_listening.take() {
            f();
        }

        let app_logic = self
            .app_logic
            .take()
            .expect("can only start_service() once");
        let app_logic = Arc::new(app_logic);

        let mut handlers = Vec::new();

        endpoints.into_iter().for_each(|endpoint| {
            for _ in 0..listeners_per_fd {
                let shutdown = shutdown.clone();
                let my_app_logic = app_logic.clone();
                let endpoint = endpoint.clone();

                let limit = self.connection_limit.clone();
                let open = self.connections_open.clone();
                let jh = runtime.spawn(async move {
                    Self::run_endpoint(my_app_logic, endpoint, shutdown, limit, open).await;
                });

                handlers.push(jh);
            }
        });

        futures::future::join_all(handlers).await;
        self.listeners.cleanup();
        app_logic.cleanup().await;
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn threads(&self) -> Option<usize> {
        self.threads
    }

    fn runtime_opts_override(&self, global: &RuntimeOpts) -> Option<RuntimeOpts> {
        self.runtime_opts_override
            .as_ref()
            .and_then(|override_fn| override_fn(global))
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(self.listeners.addresses())
    }
}

/// SLUICE PATCH: log a failed `accept()` at most once per 10 s, with how many were not logged.
fn log_accept_error(e: &pingora_error::Error) {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::OnceLock;
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    static NEXT_LOG_S: AtomicU64 = AtomicU64::new(0);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    let now = START.get_or_init(std::time::Instant::now).elapsed().as_secs();
    let next = NEXT_LOG_S.load(Relaxed);
    if now >= next
        && NEXT_LOG_S
            .compare_exchange(next, now + 10, Relaxed, Relaxed)
            .is_ok()
    {
        let skipped = SUPPRESSED.swap(0, Relaxed);
        error!("Accept() failed {e} ({skipped} more failures not logged in the last 10 s)");
    } else {
        SUPPRESSED.fetch_add(1, Relaxed);
    }
}
