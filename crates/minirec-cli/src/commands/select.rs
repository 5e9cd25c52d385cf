//! `minirec select`: MiniRec or a baseline picks `--size` training samples for RL and writes them, in training
//! order, with their scores. The proxy model for learnability is trained here unless `--proxy` names one.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use minirec_data::PreparedDataset;
use minirec_pipeline::select::{select_into, SelectJob};
use minirec_select::pipeline::{SelectOptions, Space};
use minirec_select::proxy::ProxyConfig;
use minirec_select::Method;

#[derive(Args)]
pub struct SelectArgs {
    #[arg(long)]
    pub data: PathBuf,
    /// The (SFT) model whose hidden states and HVPs score the samples; not needed for `random`.
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long, default_value = "minirec")]
    pub method: Method,
    #[arg(long)]
    pub size: usize,
    /// The subset file (JSONL, training order). Every sample's scores go beside it (`.scores.jsonl`).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1.0)]
    pub lambda: f32,
    /// Curriculum groups K.
    #[arg(long, default_value_t = 4)]
    pub groups: usize,
    #[arg(long, default_value_t = 0.5)]
    pub mu: f32,
    #[arg(long, default_value_t = 0.25)]
    pub sigma: f32,
    #[arg(long)]
    pub no_learnability: bool,
    #[arg(long)]
    pub no_representativeness: bool,
    #[arg(long)]
    pub no_diversity: bool,
    #[arg(long)]
    pub no_curriculum: bool,
    /// Representativeness space: the final hidden state, or the output layer's parameters (projected).
    #[arg(long, value_enum, default_value = "hidden")]
    pub space: SpaceArg,
    /// A trained proxy for learnability; without it one is trained from --model on --proxy-samples samples.
    #[arg(long)]
    pub proxy: Option<PathBuf>,
    #[arg(long, default_value_t = 256)]
    pub proxy_samples: usize,
    #[arg(long, default_value_t = 1)]
    pub proxy_sft_epochs: usize,
    #[arg(long, default_value_t = 64)]
    pub proxy_rl_steps: usize,
    #[arg(long, default_value_t = 1e-5)]
    pub proxy_rl_lr: f64,
    /// Proxy rollouts per sample (N).
    #[arg(long, default_value_t = 8)]
    pub rollouts: usize,
    /// Where scores, rewards and the proxy are cached for re-use by other methods and sizes
    /// (default: `select-cache/` beside --out).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// A DEALRec surrogate (a `minirec baseline --model sasrec` run); trained on the fly if absent.
    #[arg(long)]
    pub surrogate: Option<PathBuf>,
    /// GORACS: the weight λ of the gradient-norm term in its cost.
    #[arg(long, default_value_t = 0.1)]
    pub goracs_lambda: f32,
    /// GORACS: at most this many accepted swaps after the greedy start.
    #[arg(long, default_value_t = 100)]
    pub goracs_swaps: usize,
    /// GORACS: members and outsiders kept by the pruning, per side, for each swap search.
    #[arg(long, default_value_t = 30)]
    pub goracs_candidates: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long)]
    pub cpu: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum SpaceArg {
    Hidden,
    Param,
}

impl SelectArgs {
    pub fn options(&self) -> SelectOptions {
        let mut o = SelectOptions {
            rollouts: self.rollouts,
            space: match self.space {
                SpaceArg::Hidden => Space::Hidden,
                SpaceArg::Param => Space::Param,
            },
            goracs: minirec_select::goracs::GoracsConfig {
                lambda: self.goracs_lambda,
                swaps: self.goracs_swaps,
                candidates: self.goracs_candidates,
            },
            ..Default::default()
        };
        o.minirec.lambda = self.lambda;
        o.minirec.groups = self.groups;
        o.minirec.mu = self.mu;
        o.minirec.sigma = self.sigma;
        o.minirec.learnability = !self.no_learnability;
        o.minirec.representativeness = !self.no_representativeness;
        o.minirec.diversity = !self.no_diversity;
        o.minirec.curriculum = !self.no_curriculum;
        o
    }

    pub fn proxy_config(&self) -> ProxyConfig {
        let mut p = ProxyConfig {
            samples: self.proxy_samples,
            sft_epochs: self.proxy_sft_epochs,
            ..Default::default()
        };
        p.rl.max_steps = self.proxy_rl_steps;
        p.rl.lr = self.proxy_rl_lr;
        p
    }

    /// The job this command line describes.
    pub fn job(&self) -> SelectJob {
        SelectJob {
            data: self.data.clone(),
            model: self.model.clone(),
            method: self.method,
            size: self.size,
            out: self.out.clone(),
            cache: self.cache.clone(),
            proxy: self.proxy.clone(),
            surrogate: self.surrogate.clone(),
            seed: self.seed,
            cpu: self.cpu,
            options: self.options(),
            proxy_config: self.proxy_config(),
        }
    }
}

pub fn run(a: SelectArgs, progress: bool) -> Result<()> {
    let ds = PreparedDataset::load(&a.data)?;
    let summary = select_into(&a.job(), &ds, progress)?;
    println!("{summary}");
    Ok(())
}
