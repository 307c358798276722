//! The four algorithms as pure functions over a state and a clock, used by the embedded store.
//! The Lua scripts in `redis.rs` do exactly the same arithmetic on the Redis server's clock, so a
//! limit behaves the same whichever store answers.

use std::collections::VecDeque;

use crate::config::{Algorithm, LimitPolicy};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is within the limit.
    pub allowed: bool,
    /// The limit that applied.
    pub limit: u64,
    /// Requests left in the current window after this one.
    pub remaining: u64,
    /// Milliseconds until the window (or bucket) is fully reset.
    pub reset_ms: u64,
    /// When denied: milliseconds until a request would be allowed.
    pub retry_after_ms: u64,
}

/// Per-key state of one algorithm.
#[derive(Debug, Clone)]
pub enum State {
    /// `fixed_window`: window start and count.
    Fixed {
        /// Start of the counted window.
        start: u64,
        /// Requests counted in it.
        count: u64,
    },
    /// `sliding_window`: current window start, its count, the previous window's count.
    Sliding {
        /// Start of the current window.
        start: u64,
        /// Requests in the current window.
        cur: u64,
        /// Requests in the previous window.
        prev: u64,
    },
    /// `sliding_window_log`: times of the requests in the last window.
    Log(VecDeque<u64>),
    /// `gcra`: theoretical arrival time.
    Gcra {
        /// When the bucket would be empty again, in ms.
        tat: f64,
    },
}

impl State {
    /// When this state can be forgotten (every request it counted has left the window).
    pub fn expires_at(&self, policy: &LimitPolicy) -> u64 {
        match self {
            State::Fixed { start, .. } => start + policy.window_ms,
            State::Sliding { start, .. } => start + 2 * policy.window_ms,
            State::Log(times) => times.back().map_or(0, |t| t + policy.window_ms),
            State::Gcra { tat } => tat.ceil() as u64,
        }
    }
}

/// Check (and, when allowed, count) one request at `now` ms.
pub fn check(state: &mut Option<State>, policy: &LimitPolicy, now: u64) -> Decision {
    let (limit, window) = (policy.limit, policy.window_ms);
    let deny = |reset_ms: u64, retry: u64| Decision {
        allowed: false,
        limit,
        remaining: 0,
        reset_ms,
        retry_after_ms: retry.max(1),
    };
    let allow = |remaining: u64, reset_ms: u64| Decision {
        allowed: true,
        limit,
        remaining,
        reset_ms,
        retry_after_ms: 0,
    };
    match policy.algorithm {
        Algorithm::FixedWindow => {
            let start = now - now % window;
            let count = match state {
                Some(State::Fixed { start: s, count }) if *s == start => *count,
                _ => 0,
            };
            let reset = start + window - now;
            if count >= limit {
                return deny(reset, reset);
            }
            *state = Some(State::Fixed {
                start,
                count: count + 1,
            });
            allow(limit - count - 1, reset)
        }
        Algorithm::SlidingWindow => {
            let start = now - now % window;
            let (cur, prev) = match state {
                Some(State::Sliding {
                    start: s,
                    cur,
                    prev,
                }) if *s == start => (*cur, *prev),
                Some(State::Sliding { start: s, cur, .. }) if *s + window == start => (0, *cur),
                _ => (0, 0),
            };
            let elapsed = now - start;
            let weighted = prev as f64 * (window - elapsed) as f64 / window as f64 + cur as f64;
            let reset = window - elapsed;
            if weighted + 1.0 > limit as f64 {
                // When the previous window's weight has decayed enough for one more request.
                let retry = if cur + 1 > limit || prev == 0 {
                    reset
                } else {
                    let need = (weighted + 1.0 - limit as f64) / prev as f64 * window as f64;
                    (need.ceil() as u64).min(reset)
                };
                return deny(reset, retry);
            }
            *state = Some(State::Sliding {
                start,
                cur: cur + 1,
                prev,
            });
            allow((limit as f64 - weighted - 1.0).floor() as u64, reset)
        }
        Algorithm::SlidingWindowLog => {
            let mut times = match state.take() {
                Some(State::Log(t)) => t,
                _ => VecDeque::new(),
            };
            while times.front().is_some_and(|&t| t + window <= now) {
                times.pop_front();
            }
            let reset = times.front().map_or(window, |&t| t + window - now);
            let d = if times.len() as u64 >= limit {
                deny(reset, reset)
            } else {
                times.push_back(now);
                let reset = times.front().map_or(window, |&t| t + window - now);
                allow(limit - times.len() as u64, reset)
            };
            *state = Some(State::Log(times));
            d
        }
        Algorithm::Gcra => {
            let emission = window as f64 / limit as f64;
            let tolerance = emission * policy.burst as f64;
            let now_f = now as f64;
            let tat = match state {
                Some(State::Gcra { tat }) if *tat > now_f => *tat,
                _ => now_f,
            };
            let new_tat = tat + emission;
            let allow_at = new_tat - tolerance;
            if allow_at > now_f {
                return deny(
                    (tat - now_f).ceil() as u64,
                    (allow_at - now_f).ceil() as u64,
                );
            }
            *state = Some(State::Gcra { tat: new_tat });
            let remaining = ((tolerance - (new_tat - now_f)) / emission)
                .floor()
                .max(0.0) as u64;
            allow(remaining, (new_tat - now_f).ceil() as u64)
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A policy with `burst = limit` (also used by `ratelimit::tests`).
    pub(in crate::ratelimit) fn policy(
        algorithm: Algorithm,
        limit: u64,
        window_ms: u64,
    ) -> LimitPolicy {
        LimitPolicy {
            algorithm,
            limit,
            window_ms,
            burst: limit,
        }
    }

    fn run(p: &LimitPolicy, times: &[u64]) -> Vec<bool> {
        let mut s = None;
        times.iter().map(|&t| check(&mut s, p, t).allowed).collect()
    }

    #[test]
    fn fixed_window_counts_per_window() {
        let p = policy(Algorithm::FixedWindow, 3, 1000);
        assert_eq!(
            run(&p, &[10_000, 10_100, 10_200, 10_300, 10_999, 11_000]),
            [true, true, true, false, false, true]
        );
        let mut s = None;
        let d = check(&mut s, &p, 10_250);
        assert_eq!((d.remaining, d.reset_ms), (2, 750));
    }

    #[test]
    fn sliding_window_log_is_exact() {
        let p = policy(Algorithm::SlidingWindowLog, 3, 1000);
        // Three in the first half-second, then nothing allowed until the first leaves.
        assert_eq!(
            run(&p, &[0, 100, 200, 900, 999, 1000, 1050, 1100, 1150]),
            [true, true, true, false, false, true, false, true, false]
        );
        let mut s = None;
        check(&mut s, &p, 0);
        check(&mut s, &p, 100);
        check(&mut s, &p, 200);
        let d = check(&mut s, &p, 500);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ms, 500, "when the request at 0 leaves");
    }

    #[test]
    fn sliding_window_weighs_the_previous_window() {
        let p = policy(Algorithm::SlidingWindow, 10, 1000);
        let mut s = None;
        for i in 0..10 {
            assert!(check(&mut s, &p, 500 + i).allowed);
        }
        assert!(!check(&mut s, &p, 600).allowed);
        // At 1500, half of the previous 10 still counts: 5 more fit.
        let allowed = (0..10)
            .filter(|i| check(&mut s, &p, 1500 + i).allowed)
            .count();
        assert_eq!(allowed, 5);
        // Two windows later nothing is remembered.
        assert!(check(&mut s, &p, 3100).allowed);
    }

    #[test]
    fn gcra_allows_the_burst_then_the_rate() {
        let p = LimitPolicy {
            algorithm: Algorithm::Gcra,
            limit: 10,
            window_ms: 1000,
            burst: 3,
        };
        let mut s = None;
        let burst: Vec<_> = (0..5).map(|_| check(&mut s, &p, 0).allowed).collect();
        assert_eq!(burst, [true, true, true, false, false]);
        let d = check(&mut s, &p, 0);
        assert_eq!(d.retry_after_ms, 100, "one emission interval");
        assert!(check(&mut s, &p, 100).allowed);
        assert!(!check(&mut s, &p, 150).allowed);
        assert!(check(&mut s, &p, 200).allowed);
    }

    #[test]
    fn states_expire_after_their_window() {
        let p = policy(Algorithm::FixedWindow, 3, 1000);
        let mut s = None;
        check(&mut s, &p, 1500);
        assert_eq!(s.as_ref().unwrap().expires_at(&p), 2000);
    }
}
