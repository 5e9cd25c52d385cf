//! The fixed evaluation subset: the same seeded sample of a split for every system compared.

/// `n` distinct indices of `0..len`, drawn with a seeded generator and returned in increasing order (so a
/// subset evaluates in split order and pairs line by line). `n ≥ len` gives every index.
pub fn seeded_subset(len: usize, n: usize, seed: u64) -> Vec<usize> {
    if n >= len {
        return (0..len).collect();
    }
    // A partial Fisher–Yates shuffle: the first n places of a seeded permutation.
    let mut idx: Vec<usize> = (0..len).collect();
    let mut rng = SplitMix64(seed);
    for i in 0..n {
        let j = i + (rng.next() % (len - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(n);
    idx.sort_unstable();
    idx
}

/// SplitMix64 (Steele, Lea and Flood 2014): a small generator whose streams depend on the seed only, so the
/// subset stays the same across versions and platforms.
pub(crate) struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is below 2⁻⁴⁰ for the sizes used here.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_are_distinct_sorted_seeded_and_spread() {
        let a = seeded_subset(4533, 2000, 42);
        assert_eq!(a.len(), 2000);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert!(*a.last().unwrap() < 4533);
        assert_eq!(a, seeded_subset(4533, 2000, 42));
        assert_ne!(a, seeded_subset(4533, 2000, 43));
        // Spread over the split, not its head: about half in each half.
        let low = a.iter().filter(|&&i| i < 4533 / 2).count();
        assert!((900..1100).contains(&low), "{low}");
        assert_eq!(seeded_subset(5, 9, 1), vec![0, 1, 2, 3, 4]);
        assert!(seeded_subset(5, 0, 1).is_empty());
    }

    #[test]
    fn splitmix_matches_the_reference_stream() {
        // First outputs of SplitMix64 seeded with 1234567 (the reference C implementation).
        let mut r = SplitMix64(1234567);
        assert_eq!(r.next(), 6457827717110365317);
        assert_eq!(r.next(), 3203168211198807973);
    }
}
