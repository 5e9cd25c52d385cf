use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use minirec_data::PreparedDataset;
use minirec_model::decode::ItemIndex;
use minirec_model::load::{default_dtype, load_model, pick_device};
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

fn subset_ids(path: &PathBuf) -> Result<Vec<u64>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut ids = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        let id = v.get("sample_id").and_then(|x| x.as_u64());
        ids.push(
            id.with_context(|| format!("{}:{}: no integer sample_id", path.display(), i + 1))?,
        );
    }
    if ids.is_empty() {
        bail!("{}: no samples", path.display());
    }
    Ok(ids)
}

pub fn run(a: RlArgs, progress: bool) -> Result<()> {
    let ds = PreparedDataset::load(&a.data)?;
    let device = pick_device(a.cpu)?;
    let dtype = default_dtype(&device);
    let mut loaded = load_model(&a.init, &device, dtype)?;
    loaded.model.merge_adapters()?;
    let reference = match a.kl_ref {
        Some(_) => {
            let mut r = load_model(&a.init, &device, dtype)?;
            r.model.merge_adapters()?;
            Some(r.model)
        }
        None => None,
    };
    let samples: Vec<&minirec_data::Sample> = match &a.subset {
        Some(p) => subset_ids(p)?
            .into_iter()
            .map(|id| {
                ds.train
                    .get(id as usize)
                    .with_context(|| format!("sample_id {id} is not in the train split"))
            })
            .collect::<Result<_>>()?,
        None => {
            let mut v: Vec<&minirec_data::Sample> = ds.train.iter().collect();
            v.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(a.seed));
            v
        }
    };
    let titles = ds.catalog.titles().to_vec();
    let index = ItemIndex::build(&loaded.tokenizer, &titles, |t| ds.prompt.response(t))?;
    let prompts = prompts_for(&ds, &samples, &loaded.tokenizer)?;
    let valid_samples: Vec<&minirec_data::Sample> = ds.valid.iter().take(a.eval_samples).collect();
    let valid = prompts_for(&ds, &valid_samples, &loaded.tokenizer)?;
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
        lora: lora.clone(),
        ..Default::default()
    };
    let vars = trainable(
        &mut loaded.model,
        &SftConfig {
            lora,
            seed: a.seed,
            ..Default::default()
        },
    )?;
    let base = std::fs::canonicalize(&a.init)
        .unwrap_or(a.init.clone())
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
        &cfg,
        &a.out,
        &base,
        a.resume,
        progress,
    )
    .with_context(|| format!("RL into {}", a.out.display()))?;
    super::write_run_manifest(
        &a.out,
        "rl",
        serde_json::json!({"config": cfg, "data": a.data, "init": a.init, "subset": a.subset, "prompts": prompts.len()}),
        serde_json::to_value(&summary)?,
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
