//! The `sluice` command line: `--config FILE` runs, `--check` validates and exits. Parses its own
//! arguments (Pingora's `Opt::parse_args` rejects flags it does not know) and builds Pingora's
//! `Opt` itself.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use pingora::server::configuration::Opt;
use pingora::server::RunArgs;

use crate::{app, config, import};

/// What `--version` prints: Sluice's version, the Pingora release it is built on and the
/// vendored, patched Pingora crates (each change is listed in `vendor/README.md`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\npingora 0.9.1, with patched copies of pingora-core, pingora-proxy, pingora-http and ",
    "pingora-cache, and of h2 0.4.20 and http 1.5.0 ",
    "(vendor/README.md): idle pool without a task per connection, request head limits, ",
    "connection limit and count, safe upgrade, panic containment, stale-if-error keep-alive, ",
    "keep-alive hints, fresh-connection retries, response Date kept, brotli stream end, ",
    "body filter at the end of every body, prepared header names, TLS minimum version, ",
    "forwarding fields over HTTP/2 upstreams, client certificate subject, ALPN list, ",
    "small buffers for idle upgraded connections, a small connection task, ",
    "idle keep-alive connections without request state, idle WebSockets without read buffers, ",
    "timed reads on tokio's timer, body framing worked out once, copies of cache metadata, ",
    "WebSocket tunnels, idle TLS connections without request state, ",
    "idle HTTP/2 connections closed at the keep-alive limit and without codec buffers, ",
    "header lookups by one-byte name tags in small maps"
);

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version = VERSION,
    about = "Edge reverse proxy and load balancer on Pingora"
)]
pub struct Args {
    /// The TOML config file.
    #[arg(short, long, default_value = "conf/sluice.toml")]
    pub config: PathBuf,
    /// Validate the config, print every problem, and exit (0 when valid).
    #[arg(long)]
    pub check: bool,
    /// Print the effective config (every default filled in, secrets redacted, as the admin
    /// API's `GET /config` shows it) as JSON and exit; 2 when the config is invalid.
    #[arg(long)]
    pub print_config: bool,
    /// Take the listening sockets over from a running Sluice (send it SIGQUIT after starting
    /// this one) through `server.upgrade_sock`: a binary upgrade without dropping connections.
    #[arg(long)]
    pub upgrade: bool,
    /// Run in the background: the command returns once the daemon runs (its listeners open a
    /// moment later), and the process id is in
    /// `server.pid_file` (for a `Type=forking` systemd unit; see docs/operations.md).
    #[arg(short, long)]
    pub daemon: bool,
    /// Binary upgrade that starts the new process first: start `sluice --upgrade` with this
    /// config, signal the running Sluice PID (SIGQUIT) only once the new one passed its checks
    /// and waits for the listeners, and return when it serves. If the new process fails, PID is
    /// not signalled and keeps serving; the command exits 1. What the systemd unit's reload runs.
    #[arg(long, value_name = "PID", conflicts_with_all = ["check", "print_config", "upgrade", "daemon"])]
    pub replace: Option<u32>,
    /// A command instead of running the proxy (`sluice import nginx ...`).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Commands other than running the proxy.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Turn another proxy's configuration into a Sluice one.
    #[command(subcommand)]
    Import(Import),
}

/// `sluice import ...`.
#[derive(Debug, clap::Subcommand)]
pub enum Import {
    /// Read an nginx configuration (following `include`) and write the equivalent Sluice TOML,
    /// with the nginx file:line of each block and a comment for everything not translated.
    /// Exit 0 when everything was translated, 1 when something was dropped (the file is still
    /// written), 2 when nginx's file cannot be read or the result fails `--check`.
    Nginx {
        /// The nginx configuration, e.g. /etc/nginx/nginx.conf.
        file: PathBuf,
        /// Where to write the Sluice config (default: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// Run the command line with the process's arguments; what `main` calls.
pub fn main() -> ExitCode {
    run(Args::parse())
}

/// Run with parsed arguments.
pub fn run(args: Args) -> ExitCode {
    if let Some(Command::Import(Import::Nginx { file, output })) = &args.command {
        return import_nginx(file, output.as_deref());
    }
    // Reloads re-read this path, possibly after `--daemon` changed the working directory: made
    // absolute, but symlinks are not resolved. A Kubernetes ConfigMap volume is
    // `sluice.toml -> ..data/sluice.toml`, `..data -> ..2026_...`, and an update swaps `..data`
    // and deletes the old directory: a resolved path would point into the deleted one, and the
    // file watch would never see another change.
    let path = std::path::absolute(&args.config).unwrap_or_else(|_| args.config.clone());
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let config = match config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        return match serde_json::to_string_pretty(&config) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sluice: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // Backend names are looked up before anything starts (and by --check): a name that does
    // not resolve is a config error, as it was when names were resolved at load.
    let names = match crate::dns::resolve_blocking(&config, &Default::default()) {
        Ok(n) => n,
        Err(problems) => {
            eprint!("{}", config::later_problems(&args.config, &text, problems));
            return ExitCode::from(2);
        }
    };
    if args.check {
        for w in &config.warnings {
            eprintln!("warning: {w}");
        }
        println!("{}: ok", args.config.display());
        return ExitCode::SUCCESS;
    }
    if let Some(old) = args.replace {
        return crate::replace::replace(old, &path, &config.server.upgrade_sock);
    }
    crate::logging::init(config.logging.format);
    for w in &config.warnings {
        tracing::warn!(event = "config_warning", "{w}");
    }
    if !args.upgrade {
        // Pingora would retry a taken port for 30 s and then leave the process running without
        // that listener. Fail now, with the reason, before anything starts. (With --upgrade
        // the running process hands its listeners over instead.)
        if let Err(e) = crate::resources::check_ports_free(&config) {
            eprintln!("sluice: {e}");
            return ExitCode::FAILURE;
        }
    }
    let access_log = match crate::accesslog::Sink::start(
        config.logging.access_log_path.clone(),
        config.logging.access_log_buffer,
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "sluice: logging.access_log_path: cannot open {}: {e}",
                String::from(config.logging.access_log_path.clone())
            );
            return ExitCode::FAILURE;
        }
    };
    // Before any runtime starts: the exporter's blocking HTTP client makes its own.
    let spans = match &config.tracing.otlp_endpoint {
        None => None,
        Some(endpoint) => match crate::otel::SpanExport::start(
            endpoint,
            &config.tracing.service_name,
            config.tracing.otlp_timeout,
        ) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("sluice: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let tls = match config
        .server
        .tls
        .iter()
        .map(crate::sni::CertSet::load)
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::FAILURE;
        }
    };
    let state = match crate::process::App::new(
        config.clone(),
        &path,
        text,
        access_log,
        spans,
        tls,
        names,
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice: metrics: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opt = Opt {
        upgrade: args.upgrade,
        daemon: args.daemon,
        ..Opt::default()
    };
    let server = match app::build_server(&config, &state, opt) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        config = %args.config.display(),
        listen = ?config.server.listen,
        tls = config.server.tls.len(),
        pools = config.upstreams.len(),
        routes = config.routes.len(),
        admin = ?config.admin.listen,
        upgrade = args.upgrade,
        "sluice starting"
    );
    let signals = crate::lifecycle::Signals::new(
        Arc::clone(&state),
        config.server.grace_period,
        config.server.drain_delay,
        server.watch_execution_phase(),
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(signals),
    });
    state.flush_logs(crate::lifecycle::LOG_FLUSH);
    ExitCode::SUCCESS
}

/// `sluice import nginx FILE [-o OUT]`: translate, write, check as `--check` would (without
/// looking up backend names, which the machine importing may not resolve), summarise on stderr.
fn import_nginx(file: &std::path::Path, output: Option<&std::path::Path>) -> ExitCode {
    let imported = match import::nginx(file) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("sluice import: {e}");
            return ExitCode::from(2);
        }
    };
    let written = match output {
        Some(out) => std::fs::write(out, &imported.toml).map(|()| out.to_owned()),
        None => {
            print!("{}", imported.toml);
            Ok(PathBuf::from("<stdout>.toml"))
        }
    };
    let written = match written {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "sluice import: cannot write {}: {e}",
                output.unwrap_or(file).display()
            );
            return ExitCode::from(2);
        }
    };
    eprint!("sluice import: {}: {}", file.display(), imported.summary());
    let base = std::path::absolute(&written)
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_owned()))
        .unwrap_or_default();
    if let Err(e) = config::load_str(&imported.toml, &written, &base) {
        eprint!("sluice import: the result does not pass --check:\n{e}");
        return ExitCode::from(2);
    }
    if imported.dropped() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
