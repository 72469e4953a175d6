//! Seeded randomness. Every series gets its own generator derived from
//! (seed, series index, metric index) alone, so a series is the same bytes
//! whichever shard produces it and however the output is interleaved.

use rand::{RngCore, SeedableRng};
use rand_pcg::Pcg64Mcg;

pub struct Rng(Pcg64Mcg);

/// SplitMix64's finaliser: spreads nearby inputs over the whole range so
/// neighbouring series do not get correlated streams.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64, a: u64, b: u64) -> Rng {
        let s = mix(mix(mix(seed) ^ a) ^ b.rotate_left(32));
        Rng(Pcg64Mcg::seed_from_u64(s))
    }

    #[inline]
    pub fn u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, n)` (Lemire's multiply-shift; the bias is below
    /// 2^-40 for the ranges used here, irrelevant for synthetic data).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.u64() as u128 * n as u128) >> 64) as u64
    }

    /// True with probability `p` (0..=1).
    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)) < p
    }

    #[inline]
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// Picks an item in proportion to its weight.
    pub fn weighted<T: Copy>(&mut self, w: &Weighted<T>) -> T {
        let mut r = self.below(w.total);
        for &(item, weight) in w.items {
            if r < weight as u64 {
                return item;
            }
            r -= weight as u64;
        }
        w.items[w.items.len() - 1].0
    }
}

/// `(item, weight)` pairs with their total computed at compile time.
pub struct Weighted<T: 'static> {
    pub items: &'static [(T, u32)],
    total: u64,
}

impl<T> Weighted<T> {
    /// `items` must not be empty.
    pub const fn new(items: &'static [(T, u32)]) -> Weighted<T> {
        let mut total = 0;
        let mut i = 0;
        while i < items.len() {
            total += items[i].1 as u64;
            i += 1;
        }
        Weighted { items, total }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_inputs_same_stream_different_inputs_differ() {
        let a: Vec<u64> = (0..4).map(|_| Rng::new(1, 2, 3).u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(Rng::new(1, 2, 3).u64(), Rng::new(1, 3, 2).u64());
        assert_ne!(Rng::new(1, 2, 3).u64(), Rng::new(2, 2, 3).u64());
    }

    #[test]
    fn weighted_follows_weights() {
        let mut r = Rng::new(9, 0, 0);
        static ITEMS: Weighted<&str> = Weighted::new(&[("a", 90), ("b", 10)]);
        let items = &ITEMS;
        let n = 20_000;
        let a = (0..n).filter(|_| r.weighted(items) == "a").count();
        let frac = a as f64 / n as f64;
        assert!((0.88..0.92).contains(&frac), "{frac}");
    }
}
