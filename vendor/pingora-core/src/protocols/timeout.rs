// SLUICE PATCH (I/O timers, README section 16): the timer of a timed HTTP/1 read or write.
//
// Stock Pingora times each HTTP/1 read and write with `pingora_timeout::timeout`, the "fast"
// timer: every call checks that the clock thread runs (a clock read and an atomic), and an
// operation that has to wait registers in a per-thread `BTreeMap` behind an `RwLock`, gets two
// `Arc`s and a `Notify` waiter, and a separate thread wakes every 10 ms to fire due timers.
// Under callgrind that came to about 1,100 instructions per proxied request (one timed
// upstream read waits on each). A tokio timer costs about 300 here (one wheel insert and one
// removal on this thread's driver), and nothing when the operation completes at once.
// `set_fast_io_timeouts(true)` brings the stock timer back.

//! The timer of timed HTTP/1 reads and writes.

use pingora_timeout::Elapsed;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

static FAST: AtomicBool = AtomicBool::new(false);

/// Time HTTP/1 reads and writes with `pingora_timeout`'s fast timer (stock Pingora's choice)
/// instead of tokio's timer (this crate's default).
pub fn set_fast_io_timeouts(fast: bool) {
    FAST.store(fast, Ordering::Relaxed);
}

type Delay = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// `fut`, or `Elapsed` once it has been pending for `d`. As with `pingora_timeout::timeout`, the
/// timer starts only when `fut` first returns pending, so an operation that completes at once
/// costs no timer.
pub async fn timeout<F: Future>(d: Duration, fut: F) -> Result<F::Output, Elapsed> {
    let mut fut = std::pin::pin!(fut);
    let mut delay: Option<Delay> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        let delay = delay.get_or_insert_with(|| {
            if FAST.load(Ordering::Relaxed) {
                Box::pin(pingora_timeout::sleep(d))
            } else {
                Box::pin(tokio::time::sleep(d))
            }
        });
        match delay.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_at_once_needs_no_timer() {
        assert_eq!(timeout(Duration::ZERO, async { 7 }).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn a_pending_operation_times_out_and_a_quick_one_does_not() {
        let slow = tokio::time::sleep(Duration::from_secs(30));
        let started = std::time::Instant::now();
        assert!(timeout(Duration::from_millis(50), slow).await.is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
        let quick = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            1
        };
        assert_eq!(timeout(Duration::from_secs(30), quick).await.unwrap(), 1);
        set_fast_io_timeouts(true);
        let slow = tokio::time::sleep(Duration::from_secs(30));
        assert!(timeout(Duration::from_millis(50), slow).await.is_err());
        set_fast_io_timeouts(false);
    }
}
