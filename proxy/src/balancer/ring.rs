//! Consistent hashing ring for `ip_hash`: virtual nodes per member, hashed with a fixed seed so
//! every worker, instance and restart maps a client to the same backend, and removing one of N
//! members moves only the clients that were on it.

use super::Slot;
use crate::util::hash::hash64;

/// Virtual nodes per unit of weight.
pub const POINTS_PER_WEIGHT: u32 = 160;
/// A sorted ring of `(point, member index)`.
#[derive(Debug)]
pub struct HashRing {
    points: Vec<(u64, u32)>,
}

impl HashRing {
    /// Build the ring for `slots`; each member gets `weight * POINTS_PER_WEIGHT` points derived
    /// from its configured address, so a member's points do not depend on the others.
    pub fn new(slots: &[Slot]) -> Self {
        let mut points = Vec::new();
        let mut buf = Vec::new();
        for (idx, s) in slots.iter().enumerate() {
            for i in 0..s.weight.saturating_mul(POINTS_PER_WEIGHT) {
                buf.clear();
                buf.extend_from_slice(s.key.as_bytes());
                buf.push(b'#');
                buf.extend_from_slice(&i.to_le_bytes());
                points.push((hash64(&buf), idx as u32));
            }
        }
        points.sort_unstable();
        HashRing { points }
    }

    /// The owner of `hash`, or the next eligible member clockwise when it is not eligible.
    pub fn select(&self, hash: u64, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.points.len();
        let start = self.points.partition_point(|p| p.0 < hash);
        (0..n)
            .map(|k| self.points[(start + k) % n].1 as usize)
            .find(|&i| eligible(i))
    }
}
