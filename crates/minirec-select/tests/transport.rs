//! The exact optimal-transport solver against brute force, and its duals against the LP's optimality
//! conditions (feasibility, complementary slackness, equal objectives: together a certificate of optimality).

use minirec_select::transport::{emd_uniform, Simplex, Transport};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn lcm(a: usize, b: usize) -> usize {
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    a / x * b
}

/// Uniform measures of `rows` and `cols` points are `l = lcm` unit atoms each after splitting every row into
/// l/rows and every column into l/cols copies; an optimal plan between equal-size uniform measures is a
/// permutation (Birkhoff), so the optimum is the best assignment over all l! permutations, divided by l.
fn brute_force(cost: &[f64], rows: usize, cols: usize) -> f64 {
    let l = lcm(rows, cols);
    let c = |a: usize, b: usize| cost[(a / (l / rows)) * cols + b / (l / cols)];
    let mut perm: Vec<usize> = (0..l).collect();
    let mut best = f64::INFINITY;
    permute(&mut perm, 0, &mut |p| {
        let s: f64 = p.iter().enumerate().map(|(a, &b)| c(a, b)).sum();
        best = best.min(s);
    });
    best / l as f64
}

fn permute(p: &mut Vec<usize>, k: usize, f: &mut dyn FnMut(&[usize])) {
    if k == p.len() {
        f(p);
        return;
    }
    for i in k..p.len() {
        p.swap(k, i);
        permute(p, k + 1, f);
        p.swap(k, i);
    }
}

/// Checks primal feasibility, dual feasibility, complementary slackness and equal objectives.
fn assert_certificate(t: &Transport, cost: &[f64], rows: usize, cols: usize) {
    let tol = 1e-9;
    let mut row_mass = vec![0.0; rows];
    let mut col_mass = vec![0.0; cols];
    let mut primal = 0.0;
    for &(i, j, p) in &t.plan {
        assert!(p > 0.0);
        row_mass[i] += p;
        col_mass[j] += p;
        primal += p * cost[i * cols + j];
        let slack = cost[i * cols + j] - t.u[i] - t.v[j];
        assert!(
            slack.abs() < tol,
            "cell ({i},{j}) carries mass with slack {slack}"
        );
    }
    for m in &row_mass {
        assert!((m - 1.0 / rows as f64).abs() < tol, "row mass {m}");
    }
    for m in &col_mass {
        assert!((m - 1.0 / cols as f64).abs() < tol, "column mass {m}");
    }
    for i in 0..rows {
        for j in 0..cols {
            let slack = cost[i * cols + j] - t.u[i] - t.v[j];
            assert!(slack > -tol, "dual infeasible at ({i},{j}): {slack}");
        }
    }
    let dual = t.u.iter().sum::<f64>() / rows as f64 + t.v.iter().sum::<f64>() / cols as f64;
    assert!((primal - t.cost).abs() < tol);
    assert!(
        (dual - t.cost).abs() < tol,
        "dual {dual} vs primal {}",
        t.cost
    );
    let (mu, mv) = (
        t.u.iter().sum::<f64>() / rows as f64,
        t.v.iter().sum::<f64>() / cols as f64,
    );
    assert!((mu - mv).abs() < tol, "duals not centred: {mu} vs {mv}");
}

fn random_costs(rng: &mut ChaCha8Rng, n: usize, ties: bool) -> Vec<f64> {
    (0..n)
        .map(|_| {
            if ties {
                rng.random_range(0..3) as f64
            } else {
                rng.random::<f64>()
            }
        })
        .collect()
}

#[test]
fn matches_brute_force_on_small_problems() {
    let shapes = [
        (1, 1),
        (1, 5),
        (5, 1),
        (2, 2),
        (2, 3),
        (3, 2),
        (2, 4),
        (4, 2),
        (3, 3),
        (3, 6),
        (6, 3),
        (4, 4),
        (2, 8),
        (8, 4),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for &(rows, cols) in &shapes {
        for trial in 0..6 {
            // Integer costs with ties give the degenerate pivots that cycle without Cunningham's rule.
            let cost = random_costs(&mut rng, rows * cols, trial % 2 == 0);
            let t = emd_uniform(&cost, rows, cols).unwrap();
            let want = brute_force(&cost, rows, cols);
            assert!(
                (t.cost - want).abs() < 1e-9,
                "{rows}×{cols} trial {trial}: {} vs brute force {want}",
                t.cost
            );
            assert_certificate(&t, &cost, rows, cols);
        }
    }
}

#[test]
fn larger_problems_are_certified_optimal() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for &(rows, cols, ties) in &[
        (40, 57, false),
        (64, 64, true),
        (30, 90, false),
        (97, 13, true),
    ] {
        let cost = random_costs(&mut rng, rows * cols, ties);
        let t = emd_uniform(&cost, rows, cols).unwrap();
        assert_certificate(&t, &cost, rows, cols);
    }
}

#[test]
fn a_warm_start_after_a_row_change_gives_the_cold_optimum() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (rows, cols) = (24, 37);
    let mut cost = random_costs(&mut rng, rows * cols, false);
    let mut warm = Simplex::new(cost.clone(), rows, cols).unwrap();
    warm.solve().unwrap();
    for step in 0..10 {
        let row = (step * 5) % rows;
        let new: Vec<f64> = (0..cols).map(|_| rng.random::<f64>()).collect();
        cost[row * cols..(row + 1) * cols].copy_from_slice(&new);
        let before = warm.clone().solve().unwrap().pivots;
        warm.replace_row(row, &new).unwrap();
        let w = warm.solve().unwrap();
        let cold = emd_uniform(&cost, rows, cols).unwrap();
        assert!((w.cost - cold.cost).abs() < 1e-12, "step {step}");
        assert_certificate(&w, &cost, rows, cols);
        assert!(
            w.pivots - before < cold.pivots,
            "the warm start should take fewer pivots"
        );
    }
}

#[test]
fn bad_input_is_refused() {
    assert!(emd_uniform(&[1.0, 2.0, 3.0], 2, 2).is_err());
    assert!(emd_uniform(&[], 0, 3).is_err());
    let err = emd_uniform(&[0.0, f64::NAN, 1.0, 2.0], 2, 2).unwrap_err();
    assert!(err.to_string().contains("row 0 column 1"), "{err}");
    let mut s = Simplex::new(vec![0.5; 4], 2, 2).unwrap();
    s.solve().unwrap();
    assert!(s.replace_row(2, &[0.0, 0.0]).is_err());
    assert!(s.replace_row(0, &[0.0]).is_err());
    assert!(s.replace_row(0, &[0.0, 7.0]).is_err(), "beyond the bound");
}
