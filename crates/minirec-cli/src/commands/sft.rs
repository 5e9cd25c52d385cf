use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use minirec_data::PreparedDataset;
use minirec_model::load::{default_dtype, pick_device};
use minirec_model::lora::LoraConfig;
use minirec_pipeline::sft::{train_sft, SftJob};
use minirec_train::sft::SftConfig;

#[derive(Args)]
pub struct SftArgs {
    /// A prepared dataset (`minirec prepare`).
    #[arg(long)]
    data: PathBuf,
    /// The model to fine-tune: GGUF file, HF directory, adapter or run directory.
    #[arg(long)]
    model: PathBuf,
    /// The run directory to write (checkpoints, log, and the model or adapter).
    #[arg(long)]
    out: PathBuf,
    /// LoRA rank; without it, every weight is trained.
    #[arg(long)]
    lora_rank: Option<usize>,
    #[arg(long, default_value_t = 16.0)]
    lora_alpha: f64,
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    #[arg(long)]
    max_steps: Option<usize>,
    #[arg(long, default_value_t = 3e-4)]
    lr: f64,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Validations without a better validation loss before stopping.
    #[arg(long, default_value_t = 1)]
    patience: usize,
    /// Validate every N optimiser steps (and at the end) instead of at each epoch's end, for early stopping
    /// inside one long epoch; the best weights are the ones exported.
    #[arg(long, default_value_t = 0)]
    valid_every: usize,
    /// Validation samples scored each time (the first ones of the split).
    #[arg(long, default_value_t = 512)]
    max_valid: usize,
    #[arg(long, default_value_t = 200)]
    checkpoint_every: usize,
    /// Use at most this many training samples (the first ones).
    #[arg(long)]
    max_train: Option<usize>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Batch samples of similar length (faster: less padding; it lowered the demo model's quality, BENCHMARKS.md).
    #[arg(long)]
    length_buckets: bool,
    /// Recompute each layer in backward instead of keeping its intermediates (CPU): SmolLM2-135M's batch-8
    /// SFT in a fraction of the memory, for about one more forward pass (BENCHMARKS.md).
    #[arg(long)]
    recompute: bool,
    /// Mixed precision on the CPU's bf16 units (Intel AMX, AVX512_BF16 on AMD Zen 4): products of trainable
    /// weights round their operands to bf16; weights, gradients, sums and the optimiser stay f32
    /// (BENCHMARKS.md). Full weights only: with LoRA, or without such units, it trains in f32 and says so.
    #[arg(long)]
    bf16_mixed: bool,
    /// Continue from the newest checkpoint in --out.
    #[arg(long)]
    resume: bool,
    #[arg(long)]
    cpu: bool,
}

pub fn run(a: SftArgs, progress: bool) -> Result<()> {
    let ds = PreparedDataset::load(&a.data)?;
    let device = pick_device(a.cpu)?;
    let mut loaded =
        minirec_pipeline::model::load_llm(&a.model, "model", &device, default_dtype(&device))?;
    let cfg = SftConfig {
        epochs: a.epochs,
        max_steps: a.max_steps,
        lr: a.lr,
        batch_size: a.batch_size,
        grad_accum: a.grad_accum,
        patience: a.patience,
        valid_every: a.valid_every,
        max_valid: a.max_valid,
        checkpoint_every: a.checkpoint_every,
        seed: a.seed,
        lora: a.lora_rank.map(|r| LoraConfig {
            r,
            alpha: a.lora_alpha,
            dropout: 0.0,
            ..Default::default()
        }),
        length_buckets: a.length_buckets,
        recompute: a.recompute,
        bf16_mixed: a.bf16_mixed,
        ..Default::default()
    };
    let base = std::fs::canonicalize(&a.model)
        .unwrap_or(a.model.clone())
        .display()
        .to_string();
    let job = SftJob {
        cfg,
        max_train: a.max_train,
        out: &a.out,
        base,
        data: &a.data,
        resume: a.resume,
    };
    let summary = train_sft(&mut loaded.model, &loaded.tokenizer, &ds, &job, progress)?;
    println!(
        "sft: {} steps, {} epochs, train loss {:.4}, best valid loss {}, {:.2} samples/s, {:.0} tokens/s -> {}",
        summary.steps,
        summary.epochs_run,
        summary.final_train_loss,
        summary
            .best_valid_loss
            .map(|v| format!("{v:.4}"))
            .unwrap_or_else(|| "-".into()),
        summary.samples_per_s,
        summary.tokens_per_s,
        summary.output.display()
    );
    Ok(())
}
