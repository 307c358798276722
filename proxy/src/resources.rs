//! Process resources: the open-file limit and how many client connections it can carry while
//! keeping descriptors for everything else (the admin API, health probes, Redis, upstream
//! connections).

use tracing::{info, warn};

/// Descriptors kept free of client connections: the admin API, health probes, Redis, logs,
/// listeners, the config watch.
pub const RESERVED_FDS: u64 = 256;

/// Raise the soft open-file limit to the hard one, then say how many client connections the
/// proxy may hold: `configured`, or fewer when each connection and its upstream connection (two
/// descriptors) would not fit beside [`RESERVED_FDS`]. Logs what it decided.
pub fn connection_budget(configured: usize) -> usize {
    let (soft, hard) = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "cannot read the open-file limit; max_connections taken as is");
            return configured;
        }
    };
    let soft = if soft < hard {
        match rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        }
    } else {
        soft
    };
    budget(configured, soft)
}

/// [`connection_budget`] for an open-file limit of `nofile`.
fn budget(configured: usize, nofile: u64) -> usize {
    let fits = (nofile.saturating_sub(RESERVED_FDS) / 2).max(1);
    if (configured as u64) <= fits {
        info!(
            max_connections = configured,
            open_file_limit = nofile,
            "connection limit"
        );
        configured
    } else {
        warn!(
            configured,
            max_connections = fits,
            open_file_limit = nofile,
            reserved = RESERVED_FDS,
            "max_connections lowered to fit the open-file limit (two descriptors per client connection, {RESERVED_FDS} kept for the admin API, probes and Redis); raise LimitNOFILE / ulimit -n to allow more"
        );
        fits as usize
    }
}

/// Whether every listener of `config` (proxy, TLS, admin) can be bound now: an address in use
/// (another Sluice, another server) is named with what to do about it.
pub fn check_ports_free(config: &crate::config::Config) -> Result<(), String> {
    let addrs = config
        .server
        .listen
        .iter()
        .chain(config.server.tls.iter().map(|t| &t.listen))
        .chain(config.admin.listen.iter());
    for addr in addrs {
        // std binds with SO_REUSEADDR, as Pingora does, so a socket in TIME_WAIT does not count.
        if let Err(e) = std::net::TcpListener::bind(addr) {
            return Err(if e.kind() == std::io::ErrorKind::AddrInUse {
                format!(
                    "cannot listen on {addr}: the address is in use (is another Sluice running? stop it, or start this one with --upgrade to take its listeners over)"
                )
            } else {
                format!("cannot listen on {addr}: {e}")
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_keeps_descriptors_for_everything_else() {
        assert_eq!(budget(10_000, 1_048_576), 10_000);
        assert_eq!(budget(10_000, 4096), (4096 - 256) / 2);
        assert_eq!(budget(10, 100), 1, "never zero");
    }
}
