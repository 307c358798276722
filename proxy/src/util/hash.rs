//! Sluice's one hash function, seeded the same in every process and release: `ip_hash` rings,
//! slow-start draws and the embedded rate-limit store's shards all use it.

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
