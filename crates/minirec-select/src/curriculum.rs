//! Curriculum scheduling (MiniRec §4.5): a random partition of the subset into K groups, each sorted by r̄
//! descending (easiest first); training visits group 0, then group 1, …

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Returns (position in `picks`, group) in training order.
pub fn curriculum(rbar: &[f32], groups: usize, seed: u64) -> Vec<(usize, usize)> {
    let n = rbar.len();
    let k = groups.clamp(1, n.max(1));
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut out = Vec::with_capacity(n);
    for g in 0..k {
        // Group sizes differ by at most one.
        let (from, to) = (g * n / k, (g + 1) * n / k);
        let mut part = order[from..to].to_vec();
        part.sort_by(|&a, &b| rbar[b].total_cmp(&rbar[a]).then(a.cmp(&b)));
        out.extend(part.into_iter().map(|i| (i, g)));
    }
    out
}
