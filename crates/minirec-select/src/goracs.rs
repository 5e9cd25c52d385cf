//! GORACS (related-methods.md §3): a subset S whose uniform measure is close, in optimal-transport distance,
//! to the validation set's, while favouring samples with large gradient norms. Its objective (POO) is the
//! exact EMD between uniform μ_S and μ_V under the cost
//!   c_ij = d_ij / max d − λ·g_i / max g,  min-max scaled to [0, 1] over the whole matrix,
//! with d_ij = ‖e_i − e_j‖ between a training and a validation embedding and g_i a training sample's gradient
//! norm. ITRA optimises it: a greedy start (facility location on c), then swaps of one member for one outsider,
//! the candidates pruned by an estimate built from the OT row duals (Thm 4.3), each swap checked with an exact
//! EMD and the first improving one accepted.

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SelectError};
use crate::matrix::Matrix;
use crate::transport::Simplex;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GoracsConfig {
    /// λ: the weight of the gradient-norm term (the authors' 0.1 for sequential recommendation).
    pub lambda: f32,
    /// At most this many accepted swaps (`max_iters`).
    pub swaps: usize,
    /// Members and outsiders kept by the pruning on each side (`cut_num`).
    pub candidates: usize,
}

impl Default for GoracsConfig {
    fn default() -> Self {
        GoracsConfig {
            lambda: 0.1,
            swaps: 100,
            candidates: 30,
        }
    }
}

/// What ITRA found, with its trace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Itra {
    /// Chosen training rows.
    pub picks: Vec<usize>,
    /// POO after the greedy start and at the end.
    pub greedy_poo: f64,
    pub poo: f64,
    /// POO after each accepted swap (starting with the greedy value).
    pub curve: Vec<f64>,
    pub swaps: usize,
    /// Exact EMDs computed for swap candidates.
    pub trials: usize,
    pub pivots: usize,
}

/// The GORACS cost matrix, training rows × validation columns.
pub fn cost_matrix(
    train: &Matrix,
    valid: &Matrix,
    grads: &[f32],
    lambda: f32,
    device: &Device,
) -> Result<Matrix> {
    if train.dim != valid.dim {
        return Err(SelectError::Invalid(format!(
            "GORACS: training embeddings have {} dimensions, validation ones {}",
            train.dim, valid.dim
        )));
    }
    if grads.len() != train.rows {
        return Err(SelectError::Invalid(format!(
            "GORACS: {} gradient norms for {} training samples",
            grads.len(),
            train.rows
        )));
    }
    if valid.rows == 0 {
        return Err(SelectError::Invalid(
            "GORACS needs validation samples (a valid split, or hold_out_every when preparing)"
                .into(),
        ));
    }
    if let Some(i) = grads.iter().position(|g| !g.is_finite() || *g < 0.0) {
        return Err(SelectError::Invalid(format!(
            "GORACS: training sample {i} has gradient norm {}",
            grads[i]
        )));
    }
    let mut dist = distances(train, valid, device)?;
    let dmax = dist.data.iter().fold(0.0f32, |m, &d| m.max(d));
    let gmax = grads.iter().fold(0.0f32, |m, &g| m.max(g));
    let cols = valid.rows;
    dist.data
        .par_chunks_mut(cols)
        .zip(grads.par_iter())
        .for_each(|(row, &g)| {
            let gn = if gmax > 0.0 { g / gmax } else { 0.0 };
            for d in row.iter_mut() {
                *d = if dmax > 0.0 { *d / dmax } else { 0.0 } - lambda * gn;
            }
        });
    let (lo, hi) = dist
        .data
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &c| {
            (l.min(c), h.max(c))
        });
    let span = hi - lo;
    dist.data
        .par_iter_mut()
        .for_each(|c| *c = if span > 0.0 { (*c - lo) / span } else { 0.0 });
    Ok(dist)
}

/// Euclidean distances between every training and validation row, through one matrix product per block.
fn distances(train: &Matrix, valid: &Matrix, device: &Device) -> Result<Matrix> {
    let v = valid.to_tensor(device)?;
    let v2 = v.sqr()?.sum_keepdim(1)?.t()?;
    let mut out = Vec::with_capacity(train.rows * valid.rows);
    let block = (1 << 24) / valid.rows.max(1);
    for start in (0..train.rows).step_by(block.max(1)) {
        let n = block.min(train.rows - start);
        let t = Tensor::from_slice(
            &train.data[start * train.dim..(start + n) * train.dim],
            (n, train.dim),
            device,
        )?;
        let t2 = t.sqr()?.sum_keepdim(1)?;
        let d2 = t2
            .broadcast_add(&v2)?
            .sub(&(t.matmul(&v.t()?)? * 2.0)?)?
            .relu()?
            .sqrt()?;
        out.extend(d2.flatten_all()?.to_vec1::<f32>()?);
    }
    Matrix::new(train.rows, valid.rows, out)
}

/// ITRA's first stage: greedy facility location, Σ_j min_{i∈S} c_ij, from the empty set. When more training
/// rows are some column's nearest than the budget, it goes on past `size` until exactly `size` members are some
/// column's nearest member and keeps those (the authors' rule); otherwise it stops at `size`.
pub fn greedy(cost: &Matrix, size: usize) -> Result<Vec<usize>> {
    let (rows, cols) = (cost.rows, cost.dim);
    if size == 0 || size > rows {
        return Err(SelectError::Invalid(format!(
            "GORACS: the budget must be between 1 and the {rows} training samples, got {size}"
        )));
    }
    let keep_nearest = nearest_members(cost, &(0..rows).collect::<Vec<_>>()).len() > size;
    let mut best = vec![f32::INFINITY; cols];
    let mut taken = vec![false; rows];
    let mut members = Vec::with_capacity(size);
    loop {
        if members.len() >= size {
            if !keep_nearest {
                return Ok(members);
            }
            let near = nearest_members(cost, &members);
            if near.len() >= size || members.len() == rows {
                return Ok(near.into_iter().take(size).collect());
            }
        }
        let (e, _) = (0..rows)
            .into_par_iter()
            .filter(|&i| !taken[i])
            .map(|i| {
                let s: f32 = cost.row(i).iter().zip(&best).map(|(&c, &m)| c.min(m)).sum();
                (i, s)
            })
            .reduce(
                || (usize::MAX, f32::INFINITY),
                |a, b| {
                    if b.1 < a.1 || (b.1 == a.1 && b.0 < a.0) {
                        b
                    } else {
                        a
                    }
                },
            );
        taken[e] = true;
        members.push(e);
        for (m, &c) in best.iter_mut().zip(cost.row(e)) {
            *m = m.min(c);
        }
    }
}

/// The members that are some column's nearest (lowest cost; ties to the earliest member), in member order.
fn nearest_members(cost: &Matrix, members: &[usize]) -> Vec<usize> {
    let mut arg = vec![0usize; cost.dim];
    let mut low = vec![f32::INFINITY; cost.dim];
    for (k, &i) in members.iter().enumerate() {
        for (j, &c) in cost.row(i).iter().enumerate() {
            if c < low[j] {
                low[j] = c;
                arg[j] = k;
            }
        }
    }
    let mut hit = vec![false; members.len()];
    arg.iter().for_each(|&k| hit[k] = true);
    members
        .iter()
        .zip(hit)
        .filter_map(|(&i, h)| h.then_some(i))
        .collect()
}

/// The Thm 4.3 estimate F_i for every training row, given the members and their OT row duals u (per member):
/// with c' = c − u on member rows, f_ij = min over members of c'_kj (the second minimum where i is column j's
/// unique minimiser), R = ⌈|V|/|S|⌉, y_i = the R-th largest of c_ij − f_ij over j, and
/// F_i = mean_j min(c_ij − f_ij − y_i, 0) + y_i/|S|. Low F marks an outsider worth adding, high F a member
/// worth removing.
pub fn swap_scores(cost: &Matrix, members: &[usize], u: &[f64]) -> Vec<f64> {
    let (rows, cols, s) = (cost.rows, cost.dim, members.len());
    let mut min1 = vec![f64::INFINITY; cols];
    let mut min2 = vec![f64::INFINITY; cols];
    let mut arg = vec![usize::MAX; cols];
    let mut ties = vec![0usize; cols];
    for (k, &i) in members.iter().enumerate() {
        for (j, &c) in cost.row(i).iter().enumerate() {
            let x = c as f64 - u[k];
            if x < min1[j] {
                min2[j] = min1[j];
                min1[j] = x;
                arg[j] = i;
                ties[j] = 1;
            } else if x == min1[j] {
                ties[j] += 1;
                min2[j] = x;
            } else if x < min2[j] {
                min2[j] = x;
            }
        }
    }
    let r = cols.div_ceil(s).clamp(1, cols);
    (0..rows)
        .into_par_iter()
        .map(|i| {
            let mut diff: Vec<f64> = (0..cols)
                .map(|j| {
                    let f = if arg[j] == i && ties[j] == 1 && min2[j].is_finite() {
                        min2[j]
                    } else {
                        min1[j]
                    };
                    cost.row(i)[j] as f64 - f
                })
                .collect();
            let mut sorted = diff.clone();
            let (_, &mut y, _) = sorted.select_nth_unstable_by(r - 1, |a, b| b.total_cmp(a));
            diff.iter_mut().for_each(|d| *d = (*d - y).min(0.0));
            diff.iter().sum::<f64>() / cols as f64 + y / s as f64
        })
        .collect()
}

fn rows_f64(cost: &Matrix, members: &[usize]) -> Vec<f64> {
    members
        .iter()
        .flat_map(|&i| cost.row(i).iter().map(|&c| c as f64))
        .collect()
}

/// ITRA: the greedy start, then pruned swaps each checked with an exact, warm-started EMD.
pub fn itra(cost: &Matrix, size: usize, cfg: &GoracsConfig, progress: bool) -> Result<Itra> {
    let mut members = greedy(cost, size)?;
    let cols = cost.dim;
    let mut solver = Simplex::new(rows_f64(cost, &members), members.len(), cols)?;
    let mut t = solver.solve()?;
    let greedy_poo = t.cost;
    let mut curve = vec![t.cost];
    let (mut swaps, mut trials) = (0, 0);
    let pb = crate::bar(progress, cfg.swaps as u64, "GORACS swaps");
    while swaps < cfg.swaps && members.len() < cost.rows {
        let f = swap_scores(cost, &members, &t.u);
        let (inner, outer) = candidates(&f, &members, cfg.candidates);
        let pairs: Vec<(usize, usize)> = inner
            .iter()
            .flat_map(|&slot| outer.iter().map(move |&o| (slot, o)))
            .collect();
        let solved = std::sync::atomic::AtomicUsize::new(0);
        // Candidates are tried in parallel, but the first improving one *in order* is taken, as a sequential
        // search would: the result does not depend on the thread count.
        let accepted = pairs.par_iter().find_map_first(|&(slot, o)| {
            let mut trial = solver.clone();
            let new: Vec<f64> = cost.row(o).iter().map(|&c| c as f64).collect();
            let r = trial.replace_row(slot, &new).and_then(|_| trial.solve());
            solved.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match r {
                Ok(r) if r.cost < t.cost - 1e-12 * t.cost.abs().max(1.0) => {
                    Some(Ok((slot, o, trial, r)))
                }
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            }
        });
        trials += solved.into_inner();
        let accepted = accepted.transpose()?;
        let Some((slot, o, trial, r)) = accepted else {
            break;
        };
        members[slot] = o;
        solver = trial;
        t = r;
        curve.push(t.cost);
        swaps += 1;
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(Itra {
        picks: members,
        greedy_poo,
        poo: t.cost,
        curve,
        swaps,
        trials,
        pivots: t.pivots,
    })
}

/// Member slots by F, highest first, and outsiders by F, lowest first, `k` of each.
fn candidates(f: &[f64], members: &[usize], k: usize) -> (Vec<usize>, Vec<usize>) {
    let mut inside = vec![false; f.len()];
    members.iter().for_each(|&i| inside[i] = true);
    let mut slots: Vec<usize> = (0..members.len()).collect();
    slots.sort_by(|&a, &b| f[members[b]].total_cmp(&f[members[a]]).then(a.cmp(&b)));
    slots.truncate(k);
    let mut out: Vec<usize> = (0..f.len()).filter(|&i| !inside[i]).collect();
    out.sort_by(|&a, &b| f[a].total_cmp(&f[b]).then(a.cmp(&b)));
    out.truncate(k);
    (slots, out)
}

/// POO of an arbitrary subset: the exact EMD of its rows of `cost` to the uniform validation measure.
pub fn poo(cost: &Matrix, members: &[usize]) -> Result<f64> {
    Ok(
        Simplex::new(rows_f64(cost, members), members.len(), cost.dim)?
            .solve()?
            .cost,
    )
}
