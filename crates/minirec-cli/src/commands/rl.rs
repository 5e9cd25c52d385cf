use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use minirec_data::PreparedDataset;
use minirec_model::lora::LoraConfig;
use minirec_pipeline::rl::{train_rl, training_order, RlJob};
use minirec_train::demos::DemoSelect;
use minirec_train::rl::RlConfig;

#[derive(Args)]
pub struct RlArgs {
    /// A prepared dataset; RL prompts come from its train split.
    #[arg(long)]
    data: PathBuf,
    /// The starting policy: an SFT run directory or any model path.
    #[arg(long)]
    init: PathBuf,
    /// The run directory to write.
    #[arg(long)]
    out: PathBuf,
    /// A selection (JSONL with `sample_id`, in training order); without it, the train split shuffled.
    #[arg(long)]
    subset: Option<PathBuf>,
    #[arg(long)]
    no_dedup: bool,
    #[arg(long)]
    no_mask: bool,
    #[arg(long)]
    no_kl_cov: bool,
    #[arg(long)]
    no_simpo: bool,
    /// Add the classic KL penalty to the initial policy with this β (vanilla GRPO baseline).
    #[arg(long)]
    kl_ref: Option<f64>,
    #[arg(long, default_value_t = 100)]
    max_steps: usize,
    #[arg(long, default_value_t = 4)]
    prompts_per_step: usize,
    #[arg(long, default_value_t = 20)]
    rollouts: usize,
    #[arg(long, default_value_t = 16)]
    keep: usize,
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Sequences per forward/backward pass of an update: lower it if memory runs out (the update is the same).
    /// Default: 8 on the CPU, 32 on a GPU.
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    micro_batch: Option<usize>,
    /// Optimiser steps per rollout batch, each on a share of it, all against the rollout-time log-probabilities
    /// (PPO/verl style: clipping and KL-Cov's penalty act from the second update of a batch on).
    #[arg(long, default_value_t = 2, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    updates_per_batch: usize,
    /// Run every sequence whole instead of each group's prompt once (TRL's way; same losses, ~5× the tokens):
    /// for comparisons.
    #[arg(long)]
    per_sequence: bool,
    /// Mixed precision in the updates on the CPU's bf16 units (Intel AMX, AVX512_BF16): products of trainable
    /// weights round their operands to bf16; rollouts, weights, gradients and the optimiser stay f32
    /// (BENCHMARKS.md). Full weights only: with LoRA, or without such units, it trains in f32 and says so.
    #[arg(long)]
    bf16_mixed: bool,
    #[arg(long, default_value_t = 1e-6)]
    lr: f64,
    /// Certainty-mask decay d (Eq. 6).
    #[arg(long, default_value_t = 0.6)]
    mask_decay: f32,
    #[arg(long, default_value_t = 5.0)]
    simpo_beta: f64,
    #[arg(long, default_value_t = 0.7)]
    simpo_gamma_ratio: f64,
    /// LoRA rank; without it, every weight is trained.
    #[arg(long)]
    lora_rank: Option<usize>,
    #[arg(long, default_value_t = 50)]
    checkpoint_every: usize,
    /// Validation HR@1 every this many steps (0: never).
    #[arg(long, default_value_t = 25)]
    eval_every: usize,
    /// Validation samples scored each time (the first ones of the valid split).
    #[arg(long, default_value_t = 128)]
    eval_samples: usize,
    /// In-Context RLVR: K demonstrations (other training samples: a history's prompt and its next title)
    /// before the prompt of --demo-rollouts R of the m rollouts. Evaluation never sees them.
    #[arg(long, default_value_t = 0)]
    demos: usize,
    #[arg(long, default_value_t = 0)]
    demo_rollouts: usize,
    /// random: drawn once per batch and shared by its prompts (the authors' way); similar: each prompt's
    /// nearest training samples by MiniLM embedding of the histories (needs --demo-encoder).
    #[arg(long, value_enum, default_value = "random")]
    demo_select: DemoSelectArg,
    /// The all-MiniLM-L6-v2 directory (config.json, model.safetensors, tokenizer.json) for --demo-select similar.
    #[arg(long)]
    demo_encoder: Option<PathBuf>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long)]
    resume: bool,
    #[arg(long)]
    cpu: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DemoSelectArg {
    Random,
    Similar,
}

pub fn run(a: RlArgs, progress: bool) -> Result<()> {
    let ds = PreparedDataset::load(&a.data)?;
    let samples = training_order(&ds, a.subset.as_deref(), a.seed)?;
    let lora = a.lora_rank.map(|r| LoraConfig {
        r,
        alpha: 2.0 * r as f64,
        dropout: 0.0,
        ..Default::default()
    });
    let cfg = RlConfig {
        max_steps: a.max_steps,
        prompts_per_step: a.prompts_per_step,
        rollouts: a.rollouts,
        keep: a.keep,
        temperature: a.temperature,
        micro_batch: a.micro_batch,
        updates_per_batch: a.updates_per_batch,
        share_prompts: !a.per_sequence,
        bf16_mixed: a.bf16_mixed,
        lr: a.lr,
        dedup: !a.no_dedup,
        mask_decay: (!a.no_mask).then_some(a.mask_decay),
        kl_cov: !a.no_kl_cov,
        simpo: !a.no_simpo,
        simpo_beta: a.simpo_beta,
        simpo_gamma_ratio: a.simpo_gamma_ratio,
        kl_ref_beta: a.kl_ref,
        checkpoint_every: a.checkpoint_every,
        eval_every: a.eval_every,
        seed: a.seed,
        lora,
        demos: a.demos,
        demo_rollouts: a.demo_rollouts,
        demo_select: match a.demo_select {
            DemoSelectArg::Random => DemoSelect::Random,
            DemoSelectArg::Similar => DemoSelect::Similar,
        },
        ..Default::default()
    };
    let job = RlJob {
        data: &a.data,
        init: &a.init,
        out: &a.out,
        subset: a.subset.as_deref(),
        eval_samples: a.eval_samples,
        resume: a.resume,
        cpu: a.cpu,
        demo_encoder: a.demo_encoder.as_deref(),
    };
    let summary = train_rl(&ds, &samples, &cfg, &job, progress)?;
    println!(
        "rl: {} steps, mean reward {:.3} (first quarter) -> {:.3} (last quarter), rollout {:.1} s, update {:.1} s -> {}",
        summary.steps,
        summary.first_rewards,
        summary.last_rewards,
        summary.rollout_s,
        summary.update_s,
        summary.output.display()
    );
    if let Some(t) = minirec_pipeline::rl_training::summarize_run(&a.out, cfg.prompts_per_step)? {
        println!("rl: {t}");
    }
    Ok(())
}
