//! `sluice --replace PID`: a binary upgrade that starts the new process first. It starts
//! `sluice --upgrade` with the same config, waits until that process passed its own checks and
//! waits on `server.upgrade_sock`, and only then sends SIGQUIT to `PID`, which hands its
//! listeners over. It returns once the new process serves. A new process that fails before the
//! hand-over (invalid config, a certificate that does not load, a crash) costs nothing: `PID`
//! is never signalled and keeps serving, and the command exits non-zero saying so. This is what
//! the `Type=notify` systemd unit's `ExecReload` runs (docs/sluice.service).

use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::notify::READY_SOCKET_ENV;

/// How long the new process may take to pass its checks and wait for the listeners.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the new process may take to serve after the hand-over began.
const SERVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Poll interval while waiting for the new process.
const POLL: Duration = Duration::from_millis(20);

/// Replace the running Sluice `old` by a new process reading `config` (already validated by
/// the caller), whose `server.upgrade_sock` is `upgrade_sock`.
pub fn replace(old: u32, config: &Path, upgrade_sock: &Path) -> ExitCode {
    match run(old, config, upgrade_sock) {
        Ok(new) => {
            println!("sluice: process {new} serves; process {old} hands over and drains");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice: upgrade failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(old: u32, config: &Path, upgrade_sock: &Path) -> Result<u32, String> {
    if !alive(old) {
        return Err(format!("process {old} is not running"));
    }
    // The new process binds `upgrade_sock` once its checks passed: a file left by an earlier
    // upgrade must not be taken for that sign.
    remove(upgrade_sock)?;
    let ready_path = ready_path(upgrade_sock);
    remove(&ready_path)?;
    let ready = UnixDatagram::bind(&ready_path)
        .map_err(|e| format!("cannot bind {}: {e}", ready_path.display()))?;
    let _cleanup = Cleanup(ready_path.clone());

    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut child = Command::new(&exe)
        .arg("--upgrade")
        .arg("--config")
        .arg(config)
        .env(READY_SOCKET_ENV, &ready_path)
        .stdin(Stdio::null())
        // The server writes nothing to stdout; holding this command's stdout open would keep a
        // caller that reads it (`$(sluice --replace ...)`) waiting for the server to exit.
        // Its log goes to stderr, inherited (under systemd, the journal).
        .stdout(Stdio::null())
        // Its own process group: it outlives this command, and a signal meant for the command
        // (a Ctrl-C in a terminal) must not reach it.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let new = child.id();

    // 1. The new process waits for the listeners (or failed before; then `old` is untouched).
    let end = Instant::now() + START_TIMEOUT;
    while !upgrade_sock.exists() {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!(
                "the new process exited ({status}) before taking the listeners; process {old} keeps serving"
            ));
        }
        if Instant::now() > end {
            kill(&mut child);
            return Err(format!(
                "the new process did not wait for the listeners within {}s (stopped it); process {old} keeps serving",
                START_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(POLL);
    }

    // 2. Hand over.
    if let Err(e) = signal::kill(pid(old), Signal::SIGQUIT) {
        kill(&mut child);
        return Err(format!(
            "cannot signal process {old}: {e} (stopped the new process)"
        ));
    }

    // 3. The new process serves.
    ready
        .set_read_timeout(Some(POLL))
        .map_err(|e| e.to_string())?;
    let end = Instant::now() + SERVE_TIMEOUT;
    let mut buf = [0u8; 256];
    loop {
        if let Ok(n) = ready.recv(&mut buf) {
            if buf[..n].split(|b| *b == b'\n').any(|l| l == b"READY=1") {
                return Ok(new);
            }
        }
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!(
                "the new process exited ({status}) during the hand-over; process {old} keeps serving if it still holds the listeners (see its log)"
            ));
        }
        if Instant::now() > end {
            return Err(format!(
                "the new process (pid {new}) took the hand-over but does not serve after {}s; see its log",
                SERVE_TIMEOUT.as_secs()
            ));
        }
    }
}

/// Where the new process reports readiness: next to the upgrade socket, whose directory the
/// service owns.
fn ready_path(upgrade_sock: &Path) -> PathBuf {
    let mut p = upgrade_sock.as_os_str().to_owned();
    p.push(".ready");
    PathBuf::from(p)
}

fn remove(path: &Path) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("cannot remove {}: {e}", path.display()))
        }
        _ => Ok(()),
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Whether process `pid` exists (signal 0 checks without sending anything).
fn alive(pid: u32) -> bool {
    // EPERM: it exists but belongs to another user.
    pid > 0
        && matches!(
            signal::kill(self::pid(pid), None),
            Ok(()) | Err(Errno::EPERM)
        )
}

fn pid(p: u32) -> Pid {
    Pid::from_raw(i32::try_from(p).unwrap_or(i32::MAX))
}

/// Removes the readiness socket's file when the command ends.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
