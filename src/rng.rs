//! A tiny deterministic pseudo-random generator (SplitMix64).
//!
//! The simulator needs reproducible data for a given seed, and retry jitter
//! needs cheap, unpredictable-enough numbers; neither needs cryptographic
//! quality, so this avoids pulling in a random-number crate.

#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// Seeded from the clock and the thread, for jitter.
    pub fn from_entropy() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        Rng(h.finish())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            items.get(self.below(items.len() as u64) as usize)
        }
    }
}

/// A stable 64-bit hash of a string, for decisions that must repeat
/// (e.g. which URLs a "sticky" simulator fault hits).
pub fn stable_hash(seed: u64, s: &str) -> u64 {
    let mut rng = Rng::new(seed ^ 0xA076_1D64_78BD_642F);
    let mut acc = rng.next_u64();
    for b in s.bytes() {
        acc = (acc ^ b as u64).wrapping_mul(0x0100_0000_01B3);
    }
    Rng::new(acc).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            assert!(x < 10);
            let u = a.unit();
            b.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert_eq!(stable_hash(1, "abc"), stable_hash(1, "abc"));
        assert_ne!(stable_hash(1, "abc"), stable_hash(1, "abd"));
    }
}
