//! Process-log setup: `tracing` with an env filter (`RUST_LOG`, default `info`), as text or one
//! JSON object per line (`[logging] format`); Pingora's `log` records are bridged in. The access
//! log is not a `tracing` target: it has its own writer (the `accesslog` module).

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Install the global subscriber once; later calls do nothing.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
