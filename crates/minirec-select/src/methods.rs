//! The selection methods, each turning per-sample scores into subset rows in training order.

use candle_core::Device;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SelectError};
use crate::matrix::{min_max, Matrix};
use crate::subset::SubsetRow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Minirec,
    Random,
    Kmeans,
    Grand,
    El2n,
    Dealrec,
    Goracs,
}

impl Method {
    pub const ALL: [Method; 7] = [
        Method::Minirec,
        Method::Random,
        Method::Kmeans,
        Method::Grand,
        Method::El2n,
        Method::Dealrec,
        Method::Goracs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::Minirec => "minirec",
            Method::Random => "random",
            Method::Kmeans => "kmeans",
            Method::Grand => "grand",
            Method::El2n => "el2n",
            Method::Dealrec => "dealrec",
            Method::Goracs => "goracs",
        }
    }
}

impl std::str::FromStr for Method {
    type Err = SelectError;
    fn from_str(s: &str) -> Result<Self> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s.to_ascii_lowercase())
            .ok_or_else(|| {
                SelectError::Invalid(format!(
                    "unknown selection method {s:?} (minirec, random, kmeans, grand, el2n, dealrec, goracs)"
                ))
            })
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MiniRecConfig {
    pub size: usize,
    /// λ in V = D·(L + λR).
    pub lambda: f32,
    /// μ and σ of the learnability Gaussian (Eq. 5).
    pub mu: f32,
    pub sigma: f32,
    /// Curriculum groups K.
    pub groups: usize,
    pub learnability: bool,
    pub representativeness: bool,
    pub diversity: bool,
    pub curriculum: bool,
    pub seed: u64,
}

impl Default for MiniRecConfig {
    fn default() -> Self {
        MiniRecConfig {
            size: 1024,
            lambda: 1.0,
            mu: 0.5,
            sigma: 0.25,
            groups: 4,
            learnability: true,
            representativeness: true,
            diversity: true,
            curriculum: true,
            seed: 42,
        }
    }
}

impl MiniRecConfig {
    /// Whether proxy rollouts (r̄) are needed: for L, and for the curriculum's order.
    pub fn needs_rewards(&self) -> bool {
        self.learnability || self.curriculum
    }
}

fn check(ids: &[u64], rows: usize, m: usize) -> Result<()> {
    if ids.len() != rows {
        return Err(SelectError::Invalid(format!(
            "{} sample ids for {rows} scored samples",
            ids.len()
        )));
    }
    if m == 0 || m > rows {
        return Err(SelectError::Invalid(format!(
            "subset size must be between 1 and the {rows} training samples, got {m}"
        )));
    }
    Ok(())
}

/// MiniRec (Algorithm 1). `hvp` is needed with representativeness on, `rbar` with learnability or curriculum.
pub fn select_minirec(
    cfg: &MiniRecConfig,
    ids: &[u64],
    hidden: &Matrix,
    hvp: Option<&Matrix>,
    rbar: Option<&[f32]>,
    device: &Device,
    progress: bool,
) -> Result<Vec<SubsetRow>> {
    check(ids, hidden.rows, cfg.size)?;
    let n = ids.len();
    let rbar = match (cfg.needs_rewards(), rbar) {
        (true, Some(r)) if r.len() == n => Some(r),
        (true, _) => {
            return Err(SelectError::Invalid(
                "learnability and the curriculum need one proxy reward per sample".into(),
            ))
        }
        (false, _) => None,
    };
    let l = match (cfg.learnability, rbar) {
        (true, Some(r)) => Some(crate::learnability::learnability(r, cfg.mu, cfg.sigma).1),
        _ => None,
    };
    let r = if cfg.representativeness {
        let h = hvp.ok_or_else(|| {
            SelectError::Invalid("representativeness needs the HVP features".into())
        })?;
        if h.rows != n {
            return Err(SelectError::Invalid(format!(
                "{} HVP rows for {n} samples",
                h.rows
            )));
        }
        Some(crate::features::representativeness(h).1)
    } else {
        None
    };
    let q: Vec<f32> = (0..n)
        .map(|i| match (&l, &r) {
            (None, None) => 1.0,
            _ => l.as_ref().map_or(0.0, |l| l[i]) + cfg.lambda * r.as_ref().map_or(0.0, |r| r[i]),
        })
        .collect();
    let picks = crate::greedy::greedy(hidden, &q, cfg.size, cfg.diversity, device, progress)?;
    let mut rows: Vec<SubsetRow> = picks
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let mut row = SubsetRow::new(ids[p.index], k, "minirec");
            row.r_bar = rbar.map(|r| r[p.index]);
            row.l = l.as_ref().map(|l| l[p.index]);
            row.r = r.as_ref().map(|r| r[p.index]);
            row.d = cfg.diversity.then_some(p.d);
            row.v = Some(p.v);
            row
        })
        .collect();
    if cfg.curriculum {
        let rb: Vec<f32> = rows.iter().map(|r| r.r_bar.unwrap_or(0.0)).collect();
        let order = crate::curriculum::curriculum(&rb, cfg.groups, cfg.seed);
        rows = order
            .into_iter()
            .map(|(i, g)| {
                let mut row = rows[i].clone();
                row.group = g;
                row
            })
            .collect();
    }
    Ok(rows)
}

fn shuffled(mut rows: Vec<SubsetRow>, seed: u64) -> Vec<SubsetRow> {
    rows.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x5eed));
    rows
}

/// Random: m samples drawn uniformly, in random order.
pub fn select_random(ids: &[u64], m: usize, seed: u64) -> Result<Vec<SubsetRow>> {
    check(ids, ids.len(), m)?;
    let mut idx: Vec<usize> = (0..ids.len()).collect();
    // Stream 1 of the seed: the full set trains in the order of a plain shuffle with the same seed (stream 0),
    // so with the same RL step cap a Random subset drawn from that stream would train on exactly the Full
    // row's first prompts.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(1);
    idx.shuffle(&mut rng);
    Ok(idx[..m]
        .iter()
        .enumerate()
        .map(|(k, &i)| SubsetRow::new(ids[i], k, "random"))
        .collect())
}

/// KMeans: the sample nearest each of m centroids of the features, trained in random order.
pub fn select_kmeans(
    ids: &[u64],
    features: &Matrix,
    m: usize,
    iters: usize,
    seed: u64,
    device: &Device,
    progress: bool,
) -> Result<Vec<SubsetRow>> {
    check(ids, features.rows, m)?;
    let picks = crate::kmeans::kmeans_select(features, m, iters, seed, device, progress)?;
    let rows = picks
        .into_iter()
        .enumerate()
        .map(|(k, (i, d))| {
            let mut row = SubsetRow::new(ids[i], k, "kmeans");
            row.score = Some(d);
            row
        })
        .collect();
    Ok(shuffled(rows, seed))
}

/// The m highest-scoring samples (GraNd, EL2N, DEALRec's score without strata), trained in random order.
pub fn select_top(
    ids: &[u64],
    scores: &[f32],
    m: usize,
    method: Method,
    seed: u64,
) -> Result<Vec<SubsetRow>> {
    check(ids, scores.len(), m)?;
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(SelectError::Invalid(format!(
            "{method}: sample {} has a non-finite score",
            ids[i]
        )));
    }
    let mut idx: Vec<usize> = (0..ids.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let rows = idx[..m]
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let mut row = SubsetRow::new(ids[i], k, method.name());
            row.score = Some(scores[i]);
            row
        })
        .collect();
    Ok(shuffled(rows, seed))
}

/// Coverage-centric stratified sampling (CCS, used by DEALRec): scores split into `strata` equal-width bins;
/// the budget is spread over bins from the smallest up, each bin giving at most what it holds and the rest
/// passed on; inside a bin samples are drawn at random.
pub fn select_stratified(
    ids: &[u64],
    scores: &[f32],
    m: usize,
    strata: usize,
    method: Method,
    seed: u64,
) -> Result<Vec<SubsetRow>> {
    check(ids, scores.len(), m)?;
    let norm = min_max(scores);
    let k = strata.max(1);
    let mut bins: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (i, &s) in norm.iter().enumerate() {
        bins[((s * k as f32) as usize).min(k - 1)].push(i);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    bins.retain(|b| !b.is_empty());
    bins.sort_by_key(Vec::len);
    let mut budget = m;
    let mut chosen = Vec::with_capacity(m);
    let nb = bins.len();
    for (done, mut bin) in bins.into_iter().enumerate() {
        let share = budget / (nb - done);
        let take = share.min(bin.len());
        bin.shuffle(&mut rng);
        chosen.extend_from_slice(&bin[..take]);
        budget -= take;
    }
    if chosen.len() < m {
        let taken: std::collections::HashSet<usize> = chosen.iter().copied().collect();
        let mut rest: Vec<usize> = (0..ids.len()).filter(|i| !taken.contains(i)).collect();
        rest.shuffle(&mut rng);
        chosen.extend_from_slice(&rest[..m - chosen.len()]);
    }
    let rows = chosen
        .into_iter()
        .enumerate()
        .map(|(k, i)| {
            let mut row = SubsetRow::new(ids[i], k, method.name());
            row.score = Some(scores[i]);
            row
        })
        .collect();
    Ok(shuffled(rows, seed))
}

/// GORACS: ITRA's subset of the cost matrix (training rows × validation columns), trained in random order;
/// each row's score is its normalised gradient norm, the term POO rewards.
pub fn select_goracs(
    ids: &[u64],
    cost: &crate::Matrix,
    grads: &[f32],
    m: usize,
    cfg: &crate::goracs::GoracsConfig,
    seed: u64,
    progress: bool,
) -> Result<(Vec<SubsetRow>, crate::goracs::Itra)> {
    check(ids, cost.rows, m)?;
    let out = crate::goracs::itra(cost, m, cfg, progress)?;
    let gmax = grads.iter().fold(0.0f32, |a, &g| a.max(g));
    let rows = out
        .picks
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let mut row = SubsetRow::new(ids[i], k, "goracs");
            row.score = Some(if gmax > 0.0 { grads[i] / gmax } else { 0.0 });
            row
        })
        .collect();
    Ok((shuffled(rows, seed), out))
}
