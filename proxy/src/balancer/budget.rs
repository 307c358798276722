//! A pool's retry budget: retries may add only a share of the pool's request rate, so that a
//! struggling pool does not get a retry storm.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// A token bucket in thousandths of a retry: each request deposits `percent`% of a retry, time
/// adds `min_per_second` retries per second, each retry withdraws one. Lock-free; the balance is
/// capped so that a long quiet spell cannot bank an unbounded burst.
#[derive(Debug)]
pub struct RetryBudget {
    per_request_milli: i64,
    per_second_milli: i64,
    cap_milli: i64,
    balance_milli: AtomicI64,
    last_refill_ms: AtomicU64,
}

impl RetryBudget {
    /// A budget allowing retries of `percent`% of requests plus `min_per_second`, starting with
    /// one second's worth of `min_per_second`.
    pub fn new(percent: u32, min_per_second: u32, now_ms: u64) -> Self {
        let per_second_milli = i64::from(min_per_second) * 1000;
        RetryBudget {
            per_request_milli: i64::from(percent) * 10,
            per_second_milli,
            cap_milli: 100_000 + 10 * per_second_milli,
            balance_milli: AtomicI64::new(per_second_milli),
            last_refill_ms: AtomicU64::new(now_ms),
        }
    }

    /// Count one request (first attempts only).
    pub fn deposit(&self) {
        if self.per_request_milli > 0 {
            let b = self
                .balance_milli
                .fetch_add(self.per_request_milli, Relaxed);
            if b + self.per_request_milli > self.cap_milli {
                self.balance_milli.fetch_min(self.cap_milli, Relaxed);
            }
        }
    }

    /// Take one retry from the budget at `now_ms`; false when it is spent.
    pub fn try_withdraw(&self, now_ms: u64) -> bool {
        if self.per_second_milli > 0 {
            let last = self.last_refill_ms.swap(now_ms, Relaxed);
            let add = now_ms.saturating_sub(last) as i64 * self.per_second_milli / 1000;
            if add > 0 {
                self.balance_milli.fetch_add(add, Relaxed);
                self.balance_milli.fetch_min(self.cap_milli, Relaxed);
            }
        }
        self.balance_milli
            .fetch_update(Relaxed, Relaxed, |b| (b >= 1000).then_some(b - 1000))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_percent_of_requests() {
        let b = RetryBudget::new(20, 0, 0);
        assert!(!b.try_withdraw(0), "no requests yet, no retries");
        let mut allowed = 0;
        for _ in 0..100 {
            b.deposit();
            if b.try_withdraw(0) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 20);
    }

    #[test]
    fn budget_refills_with_time_and_is_capped() {
        let b = RetryBudget::new(0, 5, 0);
        let mut n = 0;
        while b.try_withdraw(0) {
            n += 1;
        }
        assert_eq!(n, 5, "one second's worth up front");
        assert!(!b.try_withdraw(100), "0.5 retries accrued");
        assert!(b.try_withdraw(300), "1.5 accrued by now");
        let mut burst = 0;
        while b.try_withdraw(10_000_000) {
            burst += 1;
        }
        assert_eq!(burst, 150, "capped at 100 + 10 s of min_per_second");
    }
}
