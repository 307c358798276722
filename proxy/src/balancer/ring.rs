//! Consistent hashing ring for `ip_hash`: virtual nodes per member, hashed with a fixed seed so
//! every worker, instance and restart maps a client to the same backend, and removing one of N
//! members moves only the clients that were on it.

use super::Slot;

/// Virtual nodes per unit of weight.
pub const POINTS_PER_WEIGHT: u32 = 160;
/// Fixed seed for all of Sluice's hashing: identical across processes and releases.
pub const HASH_SEED: u64 = 0x51_u64 << 56 | 0x00c0_ffee_1ce5_eed5;

/// FNV-1a over `bytes` starting from [`HASH_SEED`], finished with a splitmix64 mix so nearby
/// inputs (127.0.0.2, 127.0.0.3) land far apart on the ring.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h = HASH_SEED ^ 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

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
