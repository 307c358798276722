//! systemd's readiness protocol (`sd_notify`): when started with `NOTIFY_SOCKET` set (a
//! `Type=notify` unit), Sluice sends `READY=1` once its proxy listeners accept connections and
//! `STOPPING=1` when it starts draining. Without the variable it does nothing. Hand-written: one
//! datagram on a Unix socket, not worth a crate.

use std::os::unix::net::UnixDatagram;

/// Where a `sluice --replace` waiting for this process wants to hear `READY=1` (a Unix datagram
/// socket path), besides systemd's `NOTIFY_SOCKET`; set only for the process it starts.
pub const READY_SOCKET_ENV: &str = "SLUICE_READY_SOCKET";

/// Send `state` (newline-separated `KEY=value` lines) to the service manager, if there is one.
/// Failures are logged and otherwise ignored: readiness reporting must never stop the proxy.
pub fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = UnixDatagram::unbound().and_then(|sock| {
        let bytes = target.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            // An abstract socket (`@name`), as systemd may use.
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr)
            }
            None => sock.send_to(state.as_bytes(), &target),
        }
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, socket = ?target, "could not notify the service manager");
    }
}

/// The proxy listeners accept connections.
pub fn ready() {
    if let Some(path) = std::env::var_os(READY_SOCKET_ENV) {
        // The waiting `--replace` may have given up already; that is its failure to report.
        let sent = UnixDatagram::unbound().and_then(|s| s.send_to(b"READY=1\n", &path));
        if let Err(e) = sent {
            tracing::debug!(error = %e, "could not tell the upgrading command that this process serves");
        }
    }
    notify(&format!(
        "READY=1\nSTATUS=serving\nMAINPID={}\n",
        std::process::id()
    ));
}

/// A graceful stop (or an upgrade's hand-over) began.
pub fn stopping() {
    notify("STOPPING=1\nSTATUS=draining\n");
}
