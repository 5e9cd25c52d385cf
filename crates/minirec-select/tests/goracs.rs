//! GORACS: the cost matrix by hand, the greedy start and the swap estimate against direct transcriptions of
//! their definitions, and ITRA's swaps against exhaustive search.

use candle_core::Device;
use minirec_select::goracs::{cost_matrix, greedy, itra, poo, swap_scores, GoracsConfig};
use minirec_select::Matrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(rows: usize, dim: usize, seed: u64) -> Matrix {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Matrix::new(
        rows,
        dim,
        (0..rows * dim).map(|_| rng.random::<f32>()).collect(),
    )
    .unwrap()
}

#[test]
fn the_cost_matrix_matches_a_hand_computation() {
    // Training points 0 and 3 on a line, validation points 0 and 1; gradient norms 1 and 2, λ = 0.5.
    let train = Matrix::new(2, 1, vec![0.0, 3.0]).unwrap();
    let valid = Matrix::new(2, 1, vec![0.0, 1.0]).unwrap();
    let c = cost_matrix(&train, &valid, &[1.0, 2.0], 0.5, &Device::Cpu).unwrap();
    // d / max d = [[0, 1/3], [1, 2/3]]; minus 0.5·g/max g = [0.25, 0.5] per row:
    // [[-0.25, 0.0833], [0.5, 0.1667]]; min-max over [-0.25, 0.5].
    let raw = [-0.25, 1.0 / 3.0 - 0.25, 0.5, 2.0 / 3.0 - 0.5];
    for (got, r) in c.data.iter().zip(raw) {
        let want = (r + 0.25) / 0.75;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}

#[test]
fn the_cost_matrix_refuses_bad_input() {
    let t = random(3, 4, 1);
    let v = random(2, 4, 2);
    let dev = Device::Cpu;
    assert!(cost_matrix(&t, &random(2, 5, 3), &[1.0; 3], 0.1, &dev).is_err());
    assert!(cost_matrix(&t, &v, &[1.0; 2], 0.1, &dev).is_err());
    assert!(cost_matrix(&t, &Matrix::zeros(0, 4), &[1.0; 3], 0.1, &dev).is_err());
    let err = cost_matrix(&t, &v, &[1.0, f32::NAN, 1.0], 0.1, &dev).unwrap_err();
    assert!(err.to_string().contains("sample 1"), "{err}");
}

/// Σ_j min over `set` of c_ij, written out.
fn coverage(cost: &Matrix, set: &[usize]) -> f32 {
    (0..cost.dim)
        .map(|j| {
            set.iter()
                .map(|&i| cost.row(i)[j])
                .fold(f32::INFINITY, f32::min)
        })
        .sum()
}

#[test]
fn the_greedy_start_adds_the_row_that_lowers_coverage_most() {
    let cost = random(40, 9, 5);
    let picks = greedy(&cost, 6).unwrap();
    assert_eq!(picks.len(), 6);
    for k in 0..picks.len() {
        let before = &picks[..k];
        let best = (0..cost.rows)
            .filter(|i| !before.contains(i))
            .map(|i| {
                let mut s = before.to_vec();
                s.push(i);
                (i, coverage(&cost, &s))
            })
            .fold(
                (usize::MAX, f32::INFINITY),
                |a, b| if b.1 < a.1 { b } else { a },
            );
        assert_eq!(picks[k], best.0, "pick {k}");
    }
}

#[test]
fn with_more_columns_than_the_budget_every_member_is_some_columns_nearest() {
    let cost = random(60, 25, 6);
    let picks = greedy(&cost, 8).unwrap();
    assert_eq!(picks.len(), 8);
    for &i in &picks {
        let nearest =
            (0..cost.dim).any(|j| picks.iter().all(|&k| cost.row(i)[j] <= cost.row(k)[j]));
        assert!(nearest, "member {i} is no column's nearest");
    }
    assert!(greedy(&cost, 0).is_err());
    assert!(greedy(&cost, 61).is_err());
}

/// F_i from its definition, one row at a time.
fn naive_scores(cost: &Matrix, members: &[usize], u: &[f64]) -> Vec<f64> {
    let (cols, s) = (cost.dim, members.len());
    let r = cols.div_ceil(s);
    (0..cost.rows)
        .map(|i| {
            let diff: Vec<f64> = (0..cols)
                .map(|j| {
                    let vals: Vec<(usize, f64)> = members
                        .iter()
                        .zip(u)
                        .map(|(&k, &uk)| (k, cost.row(k)[j] as f64 - uk))
                        .collect();
                    let low = vals.iter().map(|v| v.1).fold(f64::INFINITY, f64::min);
                    let at_low: Vec<usize> =
                        vals.iter().filter(|v| v.1 == low).map(|v| v.0).collect();
                    let f = if at_low == [i] && s > 1 {
                        vals.iter()
                            .filter(|v| v.0 != i)
                            .map(|v| v.1)
                            .fold(f64::INFINITY, f64::min)
                    } else {
                        low
                    };
                    cost.row(i)[j] as f64 - f
                })
                .collect();
            let mut sorted = diff.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let y = sorted[r - 1];
            diff.iter().map(|d| (d - y).min(0.0)).sum::<f64>() / cols as f64 + y / s as f64
        })
        .collect()
}

#[test]
fn the_swap_estimate_matches_its_definition() {
    let cost = random(30, 11, 8);
    let members = vec![3, 17, 5, 22];
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let u: Vec<f64> = (0..members.len())
        .map(|_| rng.random::<f64>() - 0.5)
        .collect();
    let got = swap_scores(&cost, &members, &u);
    let want = naive_scores(&cost, &members, &u);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() < 1e-12, "row {i}: {g} vs {w}");
    }
}

#[test]
fn itra_lowers_poo_with_every_swap_and_ends_where_no_swap_helps() {
    let cost = random(14, 10, 12);
    let cfg = GoracsConfig {
        lambda: 0.1,
        swaps: 1000,
        candidates: 100, // everything: the search is exhaustive
    };
    let out = itra(&cost, 4, &cfg, false).unwrap();
    let start = greedy(&cost, 4).unwrap();
    assert!((out.greedy_poo - poo(&cost, &start).unwrap()).abs() < 1e-12);
    assert!((out.poo - poo(&cost, &out.picks).unwrap()).abs() < 1e-12);
    assert_eq!(out.curve.len(), out.swaps + 1);
    assert!(out.curve.windows(2).all(|w| w[1] < w[0]), "{:?}", out.curve);
    let mut distinct = out.picks.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4);
    // A local optimum: no member-for-outsider swap lowers the exact POO.
    for slot in 0..4 {
        for o in (0..cost.rows).filter(|o| !out.picks.contains(o)) {
            let mut s = out.picks.clone();
            s[slot] = o;
            assert!(
                poo(&cost, &s).unwrap() >= out.poo - 1e-12,
                "swap {slot}->{o} helps"
            );
        }
    }
}

#[test]
fn itra_without_swaps_is_the_greedy_start_and_is_deterministic() {
    let cost = random(50, 12, 13);
    let none = GoracsConfig {
        swaps: 0,
        ..Default::default()
    };
    let a = itra(&cost, 7, &none, false).unwrap();
    assert_eq!(a.picks, greedy(&cost, 7).unwrap());
    assert_eq!(a.poo, a.greedy_poo);
    let cfg = GoracsConfig::default();
    let b = itra(&cost, 7, &cfg, false).unwrap();
    let c = itra(&cost, 7, &cfg, false).unwrap();
    assert_eq!(b.picks, c.picks);
    assert!(b.poo <= a.poo);
}
