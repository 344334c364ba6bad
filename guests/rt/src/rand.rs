//! A seeded pseudo-random number generator (xorshift64*), so a randomized test guest
//! replays exactly from the seed it prints.
//!
//! Not for anything secret: the sequence is fully determined by the seed.

/// Marsaglia's xorshift64 followed by a multiplication (Vigna, "An experimental
/// exploration of Marsaglia's xorshift generators, scrambled", 2016): period 2^64 - 1.
#[derive(Debug, Clone)]
pub struct XorShift64Star {
    state: u64,
}

/// The multiplier of xorshift64*.
const MULTIPLIER: u64 = 0x2545_f491_4f6c_dd1d;

impl XorShift64Star {
    /// A generator started from `seed`. Xorshift has no zero state, so seed 0 is mapped
    /// to a fixed non-zero state (every seed still gives its own sequence).
    pub fn new(seed: u64) -> Self {
        let state = if seed == 0 { MULTIPLIER } else { seed };
        XorShift64Star { state }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(MULTIPLIER)
    }

    /// A number in `0..bound` (0 when `bound` is 0), by multiply-and-shift, whose bias
    /// of at most bound / 2^64 is negligible here.
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// A number in `range` (its start when the range is empty).
    pub fn in_range(&mut self, range: core::ops::Range<u64>) -> u64 {
        range.start + self.below(range.end.saturating_sub(range.start))
    }

    /// True with probability 1 / `n` (always when `n` <= 1).
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n.max(1)) == 0
    }

    /// One element of `items`, `None` when it is empty.
    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len() as u64) as usize)
    }
}
