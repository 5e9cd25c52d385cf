use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use minirec_pipeline::proactive::{run_proactive, ProactiveJob};
use minirec_train::proactive::rl::ProRlConfig;
use minirec_train::SftConfig;

#[derive(Args)]
pub struct ProactiveArgs {
    /// A prepared dataset: paths come from its train split, evaluation pairs from its test split.
    #[arg(long)]
    data: PathBuf,
    /// The LLM to fine-tune into a path generator (any model path).
    #[arg(long)]
    model: PathBuf,
    /// A `minirec baseline` run (SASRec) that acts as the user during RL.
    #[arg(long)]
    user: PathBuf,
    /// A `minirec baseline` run (GRU4Rec) that scores the evaluation's paths.
    #[arg(long)]
    evaluator: PathBuf,
    /// The experiment directory (stages already in it are skipped).
    #[arg(long)]
    out: PathBuf,
    /// Most titles in a path (L_max).
    #[arg(long, default_value_t = 3)]
    max_len: usize,
    #[arg(long, default_value_t = 10)]
    max_history: usize,
    /// Path samples SFT trains on (one epoch each).
    #[arg(long, default_value_t = 256)]
    sft_samples: usize,
    #[arg(long, default_value_t = 1)]
    sft_epochs: usize,
    #[arg(long, default_value_t = 3e-4)]
    sft_lr: f64,
    /// RL prompts ((history, target) pairs of training users) and the arms to train from the SFT model.
    #[arg(long, default_value_t = 64)]
    rl_prompts: usize,
    #[arg(long, value_delimiter = ',', default_value = "naive-pg,src,psae,prorl")]
    arms: Vec<String>,
    #[arg(long, default_value_t = 16)]
    rl_steps: usize,
    #[arg(long, default_value_t = 4)]
    prompts_per_step: usize,
    /// Rollouts per prompt (m).
    #[arg(long, default_value_t = 16)]
    rollouts: usize,
    #[arg(long, default_value_t = 1e-5)]
    rl_lr: f64,
    #[arg(long, default_value_t = 0.01)]
    beta: f64,
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Weights of CTR, IoI and IoR in the step reward.
    #[arg(long, default_value_t = 1.0)]
    w_ctr: f64,
    #[arg(long, default_value_t = 1.0)]
    w_ioi: f64,
    #[arg(long, default_value_t = 1.0)]
    w_ior: f64,
    /// Evaluation pairs (a seeded subset of the test split) and the path beam width (metrics @1 and @beam).
    #[arg(long, default_value_t = 128)]
    eval_samples: usize,
    #[arg(long, default_value_t = 5)]
    beam: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long)]
    cpu: bool,
}

pub fn run(a: ProactiveArgs, progress: bool) -> Result<()> {
    let job = ProactiveJob {
        data: &a.data,
        model: &a.model,
        user: &a.user,
        evaluator: &a.evaluator,
        out: &a.out,
        max_len: a.max_len,
        max_history: a.max_history,
        sft_samples: a.sft_samples,
        sft: SftConfig {
            epochs: a.sft_epochs,
            lr: a.sft_lr,
            seed: a.seed,
            checkpoint_every: 10,
            ..Default::default()
        },
        rl_prompts: a.rl_prompts,
        rl: ProRlConfig {
            steps: a.rl_steps,
            prompts_per_step: a.prompts_per_step,
            rollouts: a.rollouts,
            temperature: a.temperature,
            max_len: a.max_len,
            lr: a.rl_lr,
            beta: a.beta,
            w_ctr: a.w_ctr,
            w_ioi: a.w_ioi,
            w_ior: a.w_ior,
            seed: a.seed,
            ..Default::default()
        },
        arms: a.arms.clone(),
        eval_samples: a.eval_samples,
        beam: a.beam,
        seed: a.seed,
        cpu: a.cpu,
    };
    run_proactive(&job, progress)?;
    Ok(())
}
