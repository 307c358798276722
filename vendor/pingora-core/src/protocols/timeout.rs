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

/// `fut`, or `Elapsed` once it has been pending for `d`. As with `pingora_timeout::timeout`, the
/// timer starts only when `fut` first returns pending, so an operation that completes at once
/// costs no timer.
pub async fn timeout<F: Future>(d: Duration, fut: F) -> Result<F::Output, Elapsed> {
    if FAST.load(Ordering::Relaxed) {
        return pingora_timeout::timeout(d, fut).await;
    }
    // A timer of its own: the one-operation case of a connection's [`SlackTimer`].
    timeout_slack(&mut SlackTimer::default(), d, fut).await
}

/// SLUICE PATCH (README section 24): a timer for a connection's successive idle waits, with
/// slack. A tokio timer registered and removed for every wait costs two wheel operations (each
/// under the driver's lock), about 600 instructions per proxied request. This one is registered
/// at the first wait's deadline and stays registered while the connection serves requests: a
/// later wait whose deadline is later polls it as it is, and only when it fires early (at an
/// earlier wait's deadline) is it re-armed for the current one. A busy connection re-arms it
/// about once per wait limit (1 s for the keep-alive release) instead of twice per request, and
/// its task is woken needlessly at most as often.
#[derive(Default, Debug)]
pub struct SlackTimer {
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl SlackTimer {
    /// Ready once `deadline` has passed.
    pub fn poll_until(
        &mut self,
        cx: &mut std::task::Context<'_>,
        deadline: tokio::time::Instant,
    ) -> Poll<()> {
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        }
        loop {
            match sleep.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if sleep.deadline() >= deadline => return Poll::Ready(()),
                // Fired at an earlier wait's deadline: re-armed for this one and polled again,
                // which registers it.
                Poll::Ready(()) => sleep.as_mut().reset(deadline),
            }
        }
    }

    /// Completes once `deadline` has passed.
    pub async fn until(&mut self, deadline: tokio::time::Instant) {
        std::future::poll_fn(|cx| self.poll_until(cx, deadline)).await
    }

    /// Completes `d` from now.
    pub async fn after(&mut self, d: Duration) {
        self.until(tokio::time::Instant::now() + d).await
    }
}

/// SLUICE PATCH (README section 24): [`timeout`] on a connection's [`SlackTimer`] (an upstream
/// connection's successive reads of response heads), for the timer of tokio's timer wheel
/// (the stock fast timer is not used here). As with [`timeout`], the timer starts only when
/// `fut` first returns pending.
pub(crate) async fn timeout_slack<F: Future>(
    timer: &mut SlackTimer,
    d: Duration,
    fut: F,
) -> Result<F::Output, Elapsed> {
    let mut fut = std::pin::pin!(fut);
    let mut deadline = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        let deadline = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + d);
        match timer.poll_until(cx, deadline) {
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

    #[tokio::test]
    async fn a_slack_timer_waits_each_deadline_and_stays_registered_across_waits() {
        let mut t = SlackTimer::default();
        let start = tokio::time::Instant::now();
        // A first wait that ends by something else (here: at once), leaving the timer
        // registered at its deadline.
        let first = start + Duration::from_millis(100);
        tokio::select! {
            biased;
            _ = tokio::task::yield_now() => {}
            _ = t.until(first) => panic!("not yet due"),
        }
        // A later, longer wait keeps the registered timer (no re-arm) ...
        let second = start + Duration::from_millis(300);
        tokio::select! {
            biased;
            _ = tokio::task::yield_now() => {}
            _ = t.until(second) => panic!("not yet due"),
        }
        assert_eq!(t.sleep.as_ref().unwrap().deadline(), first);
        // ... and when it fires at the first deadline, the wait goes on to its own.
        t.until(second).await;
        assert!(tokio::time::Instant::now() >= second);
        // A shorter wait than the registered one re-arms it for its own deadline.
        let long = tokio::time::Instant::now() + Duration::from_secs(30);
        tokio::select! {
            biased;
            _ = tokio::task::yield_now() => {}
            _ = t.until(long) => panic!("not yet due"),
        }
        assert_eq!(t.sleep.as_ref().unwrap().deadline(), long);
        let before = tokio::time::Instant::now();
        t.after(Duration::from_millis(50)).await;
        assert!(before.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_slack_timer_waited_on_by_another_task_wakes_that_task() {
        // An upstream connection's timer goes from one request's task to another's with the
        // connection. Registered by one task ...
        let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
        let t = tokio::spawn(async move {
            let mut t = SlackTimer::default();
            tokio::select! {
                biased;
                _ = tokio::task::yield_now() => {}
                _ = t.until(deadline) => panic!("not yet due"),
            }
            t
        })
        .await
        .unwrap();
        // ... it must wake the next task that waits on it, not the first one.
        let waited = tokio::spawn(async move {
            let mut t = t;
            t.until(deadline).await
        });
        tokio::time::timeout(Duration::from_secs(5), waited)
            .await
            .expect("the second task was woken at the deadline")
            .unwrap();
    }

    #[tokio::test]
    async fn a_slack_timeout_starts_when_pending_and_fires_at_its_own_deadline() {
        let mut t = SlackTimer::default();
        // Ready at once: no timer at all.
        assert_eq!(
            timeout_slack(&mut t, Duration::ZERO, async { 7 })
                .await
                .unwrap(),
            7
        );
        assert!(t.sleep.is_none());
        // A quick read leaves the timer registered at its deadline ...
        let quick = tokio::time::sleep(Duration::from_millis(10));
        timeout_slack(&mut t, Duration::from_millis(100), quick)
            .await
            .unwrap();
        let first = t.sleep.as_ref().unwrap().deadline();
        // ... and a slow one after it is timed from its own start, not from the first's.
        tokio::time::sleep(Duration::from_millis(60)).await;
        let started = tokio::time::Instant::now();
        let slow = tokio::time::sleep(Duration::from_secs(30));
        assert!(timeout_slack(&mut t, Duration::from_millis(100), slow)
            .await
            .is_err());
        assert!(tokio::time::Instant::now() >= started + Duration::from_millis(100));
        assert!(first < started + Duration::from_millis(100));
    }
}
