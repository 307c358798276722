//! Failover rules: which failures are retried (nginx's `next_upstream` classes). The retry
//! budget is the pool's (`balancer::RetryBudget`).

use pingora::{Error, ErrorType};

use crate::config::NextUpstream;

/// What went wrong with one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Refused, reset or closed before a response.
    Error,
    /// A malformed response head (nginx's `invalid_header`).
    InvalidHeader,
    /// Connect, read or write timeout.
    Timeout,
    /// The backend answered with this (retryable) status.
    Status(u16),
}

impl Failure {
    /// Classify a Pingora error from connecting or proxying.
    pub fn of(e: &Error) -> Failure {
        match e.etype() {
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                Failure::Timeout
            }
            ErrorType::HTTPStatus(code) => Failure::Status(*code),
            ErrorType::InvalidHTTPHeader => Failure::InvalidHeader,
            _ => Failure::Error,
        }
    }

    /// Whether `next` asks for this failure to be retried.
    pub fn retried_by(self, next: &NextUpstream) -> bool {
        match self {
            Failure::Error => next.error,
            Failure::InvalidHeader => next.invalid_header,
            Failure::Timeout => next.timeout,
            Failure::Status(code) => next.status(code),
        }
    }

    /// A short fixed label for logs.
    pub fn label(self) -> &'static str {
        match self {
            Failure::Error => "error",
            Failure::InvalidHeader => "invalid_header",
            Failure::Timeout => "timeout",
            Failure::Status(_) => "status",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_next_upstream() {
        let mut n = NextUpstream::default();
        n.set("http_503");
        assert!(Failure::Status(503).retried_by(&n));
        assert!(!Failure::Status(502).retried_by(&n));
        assert!(!Failure::Error.retried_by(&n));
        assert!(Failure::Timeout.retried_by(&NextUpstream::DEFAULT));
        let e = Error::new(ErrorType::ConnectTimedout);
        assert_eq!(Failure::of(&e), Failure::Timeout);
        assert_eq!(
            Failure::of(&Error::new(ErrorType::ConnectRefused)),
            Failure::Error
        );
        let garbage = Failure::of(&Error::new(ErrorType::InvalidHTTPHeader));
        assert_eq!(garbage, Failure::InvalidHeader);
        assert!(!garbage.retried_by(&NextUpstream::DEFAULT), "as nginx");
        n.set("invalid_header");
        assert!(garbage.retried_by(&n));
    }
}
