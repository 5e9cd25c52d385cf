//! `minirec bench goracs`: wall time of GORACS's phases (cost matrix, greedy start, swap search with exact
//! EMDs) for a budget out of training sets of several sizes, on clustered random embeddings of the model's
//! width, or on a selection cache's real embeddings and gradient norms (`--cache`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Device;
use clap::Args;
use minirec_select::goracs::{cost_matrix, greedy, itra, GoracsConfig};
use minirec_select::pipeline::ScoreCache;
use minirec_select::Matrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Args)]
pub struct GoracsBenchArgs {
    /// Training-set sizes (random embeddings).
    #[arg(long, value_delimiter = ',', default_value = "5000,100000")]
    train: Vec<usize>,
    /// Validation samples (the OT target).
    #[arg(long, default_value_t = 226)]
    valid: usize,
    /// Embedding width (SmolLM2-135M's hidden size).
    #[arg(long, default_value_t = 576)]
    dim: usize,
    #[arg(long, default_value_t = 1024)]
    size: usize,
    #[arg(long, default_value_t = 0.1)]
    lambda: f32,
    #[arg(long, default_value_t = 100)]
    swaps: usize,
    #[arg(long, default_value_t = 30)]
    candidates: usize,
    /// A selection cache (`select/cache` of a run): time GORACS on its embeddings and GraNd norms instead.
    #[arg(long)]
    cache: Option<PathBuf>,
}

/// `n` points around 64 random centres, with heavy-tailed gradient norms.
fn clustered(n: usize, dim: usize, centres: &Matrix, rng: &mut ChaCha8Rng) -> (Matrix, Vec<f32>) {
    let mut data = Vec::with_capacity(n * dim);
    let mut grads = Vec::with_capacity(n);
    for _ in 0..n {
        let c = centres.row(rng.random_range(0..centres.rows));
        data.extend(c.iter().map(|&x| x + 0.3 * (rng.random::<f32>() - 0.5)));
        grads.push((-rng.random::<f32>().max(1e-6).ln()).powf(1.5));
    }
    (Matrix::new(n, dim, data).expect("sized"), grads)
}

pub fn run(a: GoracsBenchArgs) -> Result<()> {
    let cfg = GoracsConfig {
        lambda: a.lambda,
        swaps: a.swaps,
        candidates: a.candidates,
    };
    let mut cases: Vec<(String, Matrix, Matrix, Vec<f32>)> = Vec::new();
    if let Some(dir) = &a.cache {
        let key = std::fs::read_to_string(dir.join("llm_scores.key"))
            .with_context(|| format!("{}: no scores cached", dir.display()))?;
        let cache = ScoreCache::new(Some(dir), &key);
        let s = cache
            .load_scores()?
            .context("the cache's scores do not load")?;
        let v = cache
            .load_matrix("valid_hidden")?
            .context("the cache has no validation embeddings (run select --method goracs once)")?;
        cases.push((format!("cache {}", dir.display()), s.hidden, v, s.grand));
    } else {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let centres = Matrix::new(
            64,
            a.dim,
            (0..64 * a.dim)
                .map(|_| rng.random::<f32>() * 2.0 - 1.0)
                .collect(),
        )?;
        let (valid, _) = clustered(a.valid, a.dim, &centres, &mut rng);
        for &n in &a.train {
            let (t, g) = clustered(n, a.dim, &centres, &mut rng);
            cases.push((format!("random, N = {n}"), t, valid.clone(), g));
        }
    }
    println!("| data | N | |V| | m | cost matrix | greedy | ITRA (greedy + swaps) | swaps | EMDs | POO greedy → final |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, train, valid, grads) in cases {
        let m = a.size.min(train.rows);
        let t = Instant::now();
        let cost = cost_matrix(&train, &valid, &grads, cfg.lambda, &Device::Cpu)?;
        let t_cost = t.elapsed().as_secs_f64();
        let t = Instant::now();
        greedy(&cost, m)?;
        let t_greedy = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let out = itra(&cost, m, &cfg, true)?;
        let t_itra = t.elapsed().as_secs_f64();
        println!(
            "| {name} | {} | {} | {m} | {t_cost:.2} s | {t_greedy:.2} s | {t_itra:.2} s | {} | {} | {:.5} → {:.5} |",
            train.rows, valid.rows, out.swaps, out.trials, out.greedy_poo, out.poo
        );
    }
    Ok(())
}
