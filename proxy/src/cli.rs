//! The `sluice` command line: `--config FILE` runs, `--check` validates and exits. Parses its own
//! arguments (Pingora's `Opt::parse_args` rejects flags it does not know) and builds Pingora's
//! `Opt` itself.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pingora::server::configuration::Opt;

use crate::{app, config};

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Edge reverse proxy and load balancer on Pingora"
)]
pub struct Args {
    /// The TOML config file.
    #[arg(short, long, default_value = "conf/sluice.toml")]
    pub config: PathBuf,
    /// Validate the config, print every problem, and exit (0 when valid).
    #[arg(long)]
    pub check: bool,
}

/// Run the command line with the process's arguments; what `main` calls.
pub fn main() -> ExitCode {
    run(Args::parse())
}

/// Run with parsed arguments.
pub fn run(args: Args) -> ExitCode {
    let config = match config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!("{}: ok", args.config.display());
        return ExitCode::SUCCESS;
    }
    crate::logging::init();
    let state = app::App::new(&config);
    let server = match app::build_server(&config, &state, Opt::default()) {
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
        "sluice starting"
    );
    server.run_forever()
}
