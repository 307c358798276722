//! The strategy names a pool's config picks from (`strategy = "..."`), parsed once at load.

use serde::Serialize;

/// How a pool picks a backend for each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Exact rotation.
    RoundRobin,
    /// Smooth weighted round-robin (nginx's algorithm).
    Weighted,
    /// Fewest in-flight requests relative to weight.
    LeastConn,
    /// Consistent hash of the client IP (sticky).
    IpHash,
    /// Weighted random.
    Random,
    /// Power of two random choices on in-flight count, peak-EWMA latency tie-break.
    P2c,
}

impl Strategy {
    /// Every accepted name, for error messages.
    pub const NAMES: &'static str = "round_robin | weighted | least_conn | ip_hash | random | p2c";

    /// Parse a config name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "round_robin" => Strategy::RoundRobin,
            "weighted" => Strategy::Weighted,
            "least_conn" => Strategy::LeastConn,
            "ip_hash" => Strategy::IpHash,
            "random" => Strategy::Random,
            "p2c" => Strategy::P2c,
            _ => return None,
        })
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::Weighted => "weighted",
            Strategy::LeastConn => "least_conn",
            Strategy::IpHash => "ip_hash",
            Strategy::Random => "random",
            Strategy::P2c => "p2c",
        }
    }
}
