//! Where access-log lines go (`[logging] access_log_path`): stdout, stderr or a file, written by
//! one thread of its own. Request threads only hand a finished line to a bounded queue
//! (`access_log_buffer` lines); when the queue is full the line is dropped and counted
//! (`sluice_access_log_dropped_total`), so a slow disk or a blocked pipe never slows a request.
//! A file is opened for append and reopened on [`Sink::reopen`] (SIGUSR1, after logrotate
//! renamed it): lines already queued go to whichever file is open when they are written, none is
//! lost or written twice.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;

/// An access-log destination.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(into = "String")]
pub enum Destination {
    /// The process's standard output.
    Stdout,
    /// The process's standard error (beside the process log).
    Stderr,
    /// A file, opened for append (created when missing).
    File(PathBuf),
}

impl From<Destination> for String {
    fn from(d: Destination) -> String {
        match d {
            Destination::Stdout => "stdout".into(),
            Destination::Stderr => "stderr".into(),
            Destination::File(p) => p.display().to_string(),
        }
    }
}

impl Destination {
    /// `stdout`, `stderr`, or a file path.
    pub fn parse(s: &str) -> Destination {
        match s {
            "stdout" => Destination::Stdout,
            "stderr" => Destination::Stderr,
            path => Destination::File(PathBuf::from(path)),
        }
    }

    fn open(&self) -> io::Result<Box<dyn Write + Send>> {
        Ok(match self {
            Destination::Stdout => Box::new(io::stdout()),
            Destination::Stderr => Box::new(io::stderr()),
            Destination::File(p) => Box::new(open_append(p)?),
        })
    }
}

/// Open `path` for appending, creating it (mode 0640) when missing.
pub fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

enum Msg {
    Line(String),
    /// Reopen the file here, in queue order: lines queued before it go to the file open
    /// before. When the queue is full it cannot be queued; the reopen flag is set instead and
    /// the writer looks at it after its next batch.
    Reopen,
    /// Write everything queued, flush, then answer.
    Flush(SyncSender<()>),
}

/// The access log's writer: a bounded queue and the thread that empties it.
pub struct Sink {
    tx: SyncSender<Msg>,
    reopen: Arc<AtomicBool>,
    dropped: IntCounter,
    written: IntCounter,
}

impl Sink {
    /// Open `dest` now (so that a path that cannot be opened is an error at start) and start
    /// the writer thread with a queue of `capacity` lines.
    pub fn start(dest: Destination, capacity: usize) -> io::Result<Sink> {
        let out = dest.open()?;
        let (tx, rx) = sync_channel(capacity.max(1));
        let reopen = Arc::new(AtomicBool::new(false));
        let written = IntCounter::new(
            "sluice_access_log_lines_total",
            "Access-log lines handed to the writer (written, or queued to be).",
        )
        .map_err(io::Error::other)?;
        let dropped = IntCounter::new(
            "sluice_access_log_dropped_total",
            "Access-log lines dropped because the writer's queue was full (the destination is slower than the traffic).",
        )
        .map_err(io::Error::other)?;
        let flag = Arc::clone(&reopen);
        std::thread::Builder::new()
            .name("sluice-access-log".into())
            .spawn(move || write_loop(rx, dest, out, flag))?;
        Ok(Sink {
            tx,
            reopen,
            dropped,
            written,
        })
    }

    /// Queue one finished line (ending in `\n`); never blocks. A full queue drops it and counts.
    pub fn write(&self, line: String) {
        match self.tx.try_send(Msg::Line(line)) {
            Ok(()) => self.written.inc(),
            Err(TrySendError::Full(_)) => self.dropped.inc(),
            // The writer thread is gone (it panicked): nothing can be written any more.
            Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }

    /// Reopen a file destination before the next write (SIGUSR1).
    pub fn reopen(&self) {
        if self.tx.try_send(Msg::Reopen).is_err() {
            self.reopen.store(true, Ordering::Release);
        }
    }

    /// Write out everything queued so far; wait at most `timeout` (before the process exits).
    pub fn flush(&self, timeout: Duration) {
        let (ack, done) = sync_channel(1);
        let tx = self.tx.clone();
        // `send` may wait for room in the queue: from a thread of its own, bounded by `timeout`.
        std::thread::spawn(move || {
            let _ = tx.send(Msg::Flush(ack));
        });
        let _ = done.recv_timeout(timeout);
    }

    /// The two counters (lines written, lines dropped), to be registered by the owner.
    pub fn counters(&self) -> [IntCounter; 2] {
        [self.written.clone(), self.dropped.clone()]
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }
}

fn write_loop(
    rx: Receiver<Msg>,
    dest: Destination,
    out: Box<dyn Write + Send>,
    reopen: Arc<AtomicBool>,
) {
    let mut out = io::BufWriter::with_capacity(64 * 1024, out);
    let mut acks: Vec<SyncSender<()>> = Vec::new();
    loop {
        // Block for the first message; then take whatever else is queued before flushing, so
        // that a busy log is written in large blocks and an idle one at once.
        let Ok(first) = rx.recv() else { break };
        let mut next = Some(first);
        while let Some(m) = next {
            match m {
                Msg::Line(l) => {
                    if let Err(e) = out.write_all(l.as_bytes()) {
                        report(&dest, &e);
                    }
                }
                Msg::Reopen => reopen_file(&dest, &mut out),
                Msg::Flush(ack) => acks.push(ack),
            }
            next = rx.try_recv().ok();
        }
        if reopen.swap(false, Ordering::AcqRel) {
            reopen_file(&dest, &mut out);
        }
        if let Err(e) = out.flush() {
            report(&dest, &e);
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
    let _ = out.flush();
}

/// Write out what is buffered for the file open now, then open the path again (after a
/// rename, a new file). Stdout and stderr are not reopened.
fn reopen_file(dest: &Destination, out: &mut io::BufWriter<Box<dyn Write + Send>>) {
    let Destination::File(p) = dest else {
        return;
    };
    if let Err(e) = out.flush() {
        report(dest, &e);
    }
    match open_append(p) {
        Ok(f) => {
            *out = io::BufWriter::with_capacity(64 * 1024, Box::new(f));
            tracing::info!(event = "access_log_reopened", path = %p.display(), "access log reopened");
        }
        Err(e) => tracing::warn!(
            event = "access_log_reopen_failed",
            path = %p.display(),
            error = %e,
            "cannot reopen the access log; still writing to the file open before"
        ),
    }
}

fn report(dest: &Destination, e: &io::Error) {
    // Rate of these is bounded by the flush rate; a full disk says so once per batch.
    tracing::warn!(event = "access_log_write_failed", destination = %String::from(dest.clone()), error = %e, "cannot write the access log");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_file_and_survive_a_rename_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let sink = Sink::start(Destination::File(path.clone()), 1024).unwrap();
        sink.write("one\n".into());
        sink.flush(Duration::from_secs(5));
        std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        sink.write("two\n".into());
        sink.reopen();
        sink.flush(Duration::from_secs(5));
        sink.write("three\n".into());
        sink.flush(Duration::from_secs(5));
        let old = std::fs::read_to_string(dir.path().join("access.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(format!("{old}{new}"), "one\ntwo\nthree\n");
        assert_eq!(new, "three\n");
        assert_eq!(sink.dropped(), 0);
    }

    #[test]
    fn a_path_that_cannot_be_opened_is_an_error_at_start() {
        assert!(Sink::start(Destination::File("/nonexistent-dir/x.log".into()), 8).is_err());
    }
}
