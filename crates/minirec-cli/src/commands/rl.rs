use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use minirec_data::PreparedDataset;
use minirec_model::decode::ItemIndex;
use minirec_model::load::{default_dtype, pick_device};
use minirec_model::lora::LoraConfig;
use minirec_train::rl::{prompts_for, train, RlConfig};
use minirec_train::sft::trainable;
use minirec_train::SftConfig;
use rand::seq::SliceRandom;
use rand::SeedableRng;

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
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long)]
    resume: bool,
    #[arg(long)]
    cpu: bool,
}

pub fn run(a: RlArgs, progress: bool) -> Result<()> {
    let ds = PreparedDataset::load(&a.data)?;
    let samples: Vec<&minirec_data::Sample> = match &a.subset {
        Some(p) => subset_samples(&ds, p)?,
        None => {
            let mut v: Vec<&minirec_data::Sample> = ds.train.iter().collect();
            v.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(a.seed));
            v
        }
    };
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
        ..Default::default()
    };
    let summary = train_rl(
        &ds,
        &a.data,
        &a.init,
        &samples,
        &cfg,
        a.eval_samples,
        &a.out,
        a.subset.as_deref(),
        a.resume,
        a.cpu,
        progress,
    )?;
    println!(
        "rl: {} steps, mean reward {:.3} (first quarter) -> {:.3} (last quarter), rollout {:.1} s, update {:.1} s -> {}",
        summary.steps,
        summary.first_rewards,
        summary.last_rewards,
        summary.rollout_s,
        summary.update_s,
        summary.output.display()
    );
    Ok(())
}

/// The train samples a subset file names, in its order.
pub fn subset_samples<'a>(
    ds: &'a PreparedDataset,
    path: &std::path::Path,
) -> Result<Vec<&'a minirec_data::Sample>> {
    minirec_select::read_subset(path)?
        .into_iter()
        .map(|id| {
            ds.train.get(id as usize).with_context(|| {
                format!(
                    "{}: sample_id {id} is not in the train split ({} samples)",
                    path.display(),
                    ds.train.len()
                )
            })
        })
        .collect()
}

/// RL from `init` on `samples` (in order) into `out`, with a manifest; the shared core of `rl` and `run`.
#[allow(clippy::too_many_arguments)]
pub fn train_rl(
    ds: &PreparedDataset,
    data: &std::path::Path,
    init: &std::path::Path,
    samples: &[&minirec_data::Sample],
    cfg: &RlConfig,
    eval_samples: usize,
    out: &std::path::Path,
    subset: Option<&std::path::Path>,
    resume: bool,
    cpu: bool,
    progress: bool,
) -> Result<minirec_train::rl::RlSummary> {
    let device = pick_device(cpu)?;
    let dtype = default_dtype(&device);
    let mut loaded = super::model_arg::load_llm(init, "initial policy", &device, dtype)?;
    let reference = match cfg.kl_ref_beta {
        Some(_) => Some(super::model_arg::load_llm(init, "reference model", &device, dtype)?.model),
        None => None,
    };
    let titles = ds.catalog.titles().to_vec();
    let index = ItemIndex::build(&loaded.tokenizer, &titles, |t| ds.prompt.response(t))?;
    let prompts = prompts_for(ds, samples, &loaded.tokenizer)?;
    let valid_samples: Vec<&minirec_data::Sample> = ds.valid.iter().take(eval_samples).collect();
    let valid = prompts_for(ds, &valid_samples, &loaded.tokenizer)?;
    let vars = trainable(
        &mut loaded.model,
        &SftConfig {
            lora: cfg.lora.clone(),
            seed: cfg.seed,
            ..Default::default()
        },
    )?;
    let base = std::fs::canonicalize(init)
        .unwrap_or(init.to_path_buf())
        .display()
        .to_string();
    let (summary, _) = train(
        &mut loaded.model,
        &loaded.tokenizer,
        vars,
        &index,
        &prompts,
        &valid,
        reference.as_ref(),
        cfg,
        out,
        &base,
        resume,
        progress,
    )
    .with_context(|| format!("RL into {}", out.display()))?;
    super::write_run_manifest(
        out,
        "rl",
        serde_json::json!({"config": cfg, "data": data, "init": init, "subset": subset, "prompts": prompts.len()}),
        serde_json::to_value(&summary)?,
    )?;
    Ok(summary)
}
