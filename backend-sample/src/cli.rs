//! Command line for the `backend-sample` binary.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "backend-sample",
    about = "Sample upstream for Sluice (HTTP + WebSocket)"
)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub listen: SocketAddr,
    /// The id this backend reports in `x-backend-id`.
    #[arg(long, default_value = "b1")]
    pub id: String,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Share `/ws/broadcast` with other instances through this Redis (e.g. redis://127.0.0.1/).
    #[arg(long)]
    pub redis: Option<String>,
    /// Serve TLS (h2 and http/1.1 by ALPN) with this PEM certificate chain.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// With `--tls-cert`: require a client certificate signed by a CA of this PEM bundle.
    #[arg(long, requires = "tls_cert")]
    pub client_ca: Option<std::path::PathBuf>,
}

/// Parse the process arguments and serve until Ctrl-C or SIGTERM.
pub fn main() -> ExitCode {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("backend-sample: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        // Subscribe before listening: once the port accepts, no broadcast is missed.
        let broadcast = match &args.redis {
            None => crate::broadcast::Broadcast::default(),
            Some(url) => match crate::broadcast::Broadcast::connect(url).await {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("backend-sample: cannot use redis {url}: {e}");
                    return ExitCode::FAILURE;
                }
            },
        };
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("backend-sample: cannot listen on {}: {e}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(c), Some(k)) => match crate::tls_config(c, k, args.client_ca.as_deref()) {
                Ok(t) => Some(t),
                Err(e) => {
                    eprintln!("backend-sample: bad TLS files: {e}");
                    return ExitCode::FAILURE;
                }
            },
            _ => None,
        };
        eprintln!("backend-sample {} listening on {}", args.id, args.listen);
        let shared = crate::Shared::with_broadcast(&args.id, broadcast);
        let served = match tls {
            Some(t) => crate::serve_tls(listener, shared, t, shutdown_signal()).await,
            None => crate::serve(listener, shared, shutdown_signal()).await,
        };
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("backend-sample: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
