//! Supervised fine-tuning: next-token NLL on the response tokens only; AdamW with warm-up and cosine decay;
//! global-norm clipping; gradient accumulation; validation loss each epoch with early stopping; full or LoRA
//! fine-tuning; atomic checkpoints every N steps and `resume` from the newest.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Tensor, Var};
use indicatif::{ProgressBar, ProgressStyle};
use minirec_data::{PreparedDataset, Sample};
use minirec_model::lora::{add_lora, save_adapter, save_hf_dir, LoraConfig};
use minirec_model::{Decoder, TextTokenizer};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::error::{Result, TrainError};
pub use crate::logprobs::token_logprobs;
use crate::optim::{lr_at, AdamW};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SftConfig {
    pub epochs: usize,
    /// Stop after this many optimiser steps (counting from the start of the run).
    pub max_steps: Option<usize>,
    pub lr: f64,
    pub warmup_ratio: f64,
    pub min_lr_ratio: f64,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub max_grad_norm: f64,
    pub weight_decay: f64,
    /// Validations without a better validation loss before stopping.
    pub patience: usize,
    /// Validate every this many optimiser steps (and at the end) instead of at each epoch's end: early stopping
    /// inside a single long epoch. 0: at each epoch's end.
    #[serde(default)]
    pub valid_every: usize,
    /// Validation examples used per evaluation (the first ones of the split).
    pub max_valid: usize,
    pub checkpoint_every: usize,
    pub seed: u64,
    /// LoRA instead of full fine-tuning.
    pub lora: Option<LoraConfig>,
    /// Batch samples of similar length (within windows of 32 shuffled batches), so batches pad little. Off by
    /// default: faster, but it cost the demo model 0.045 NDCG@10 (BENCHMARKS.md).
    #[serde(default)]
    pub length_buckets: bool,
    /// Recompute each layer in backward instead of keeping its intermediates (CPU): a fraction of the
    /// memory for about one more forward pass (BENCHMARKS.md).
    #[serde(default)]
    pub recompute: bool,
    /// Mixed precision on the CPU's bf16 units (AMX, AVX512_BF16): products of trainable weights round their
    /// operands to bf16, while weights, gradients, sums and the optimiser stay f32 (BENCHMARKS.md). Without
    /// such units it trains in f32 and says so. Left out of the config when off, so older runs keep their key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bf16_mixed: bool,
    /// Stop abruptly after this step, without a checkpoint or export (simulates a crash; for resume tests).
    #[serde(skip)]
    pub interrupt_after: Option<usize>,
}

impl Default for SftConfig {
    fn default() -> Self {
        SftConfig {
            epochs: 3,
            max_steps: None,
            lr: 3e-4,
            warmup_ratio: 0.03,
            min_lr_ratio: 0.0,
            batch_size: 8,
            grad_accum: 1,
            max_grad_norm: 1.0,
            weight_decay: 0.0,
            patience: 1,
            valid_every: 0,
            max_valid: 512,
            checkpoint_every: 200,
            seed: 42,
            lora: None,
            length_buckets: false,
            recompute: false,
            bf16_mixed: false,
            interrupt_after: None,
        }
    }
}

/// Batches per length-sorting window: wide enough to find similar lengths, narrow enough to keep the order random.
const BUCKET_WINDOW: usize = 32;

/// The epoch's sample order, cut into consecutive batches of `batch`: shuffled (the same for the same seed and
/// epoch, so a resumed run continues it), then, with `buckets`, sorted by length inside windows of
/// `BUCKET_WINDOW` batches with each window's full batches in shuffled order (a short last batch stays last).
fn epoch_order(
    train: &[Example],
    batch: usize,
    seed: u64,
    epoch: usize,
    buckets: bool,
) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(epoch as u64));
    let mut order: Vec<usize> = (0..train.len()).collect();
    order.shuffle(&mut rng);
    if !buckets || batch <= 1 {
        return order;
    }
    let mut out = Vec::with_capacity(order.len());
    for window in order.chunks(batch * BUCKET_WINDOW) {
        let mut w = window.to_vec();
        w.sort_by_key(|&i| train[i].prompt.len() + train[i].response.len());
        let mut batches: Vec<&[usize]> = w.chunks(batch).collect();
        let short = match batches.last() {
            Some(b) if b.len() < batch => batches.pop(),
            _ => None,
        };
        batches.shuffle(&mut rng);
        batches
            .into_iter()
            .chain(short)
            .for_each(|b| out.extend_from_slice(b));
    }
    out
}

/// A tokenised training example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub prompt: Vec<u32>,
    pub response: Vec<u32>,
}

/// A word-level tokenizer over a dataset's titles and its prompt's wording: what a model trained from scratch on
/// that dataset reads (every title and prompt word is in the vocabulary).
pub fn catalog_tokenizer(ds: &PreparedDataset) -> Result<TextTokenizer> {
    let wording = ds.prompt.render(["x"]);
    Ok(TextTokenizer::word_level(
        ds.catalog
            .titles()
            .iter()
            .map(String::as_str)
            .chain([wording.as_str()]),
    )?)
}

/// Tokenises samples: the prompt of the history, and the target's response text.
pub fn encode_samples(
    ds: &PreparedDataset,
    samples: &[Sample],
    tok: &TextTokenizer,
) -> Result<Vec<Example>> {
    let prompts: Vec<String> = samples
        .iter()
        .map(|s| ds.prompt.render(ds.history_titles(s)))
        .collect();
    let responses: Vec<String> = samples
        .iter()
        .map(|s| ds.prompt.response(ds.target_title(s)))
        .collect();
    let p = tok.encode_batch(&prompts)?;
    let r = tok.encode_batch(&responses)?;
    Ok(p.into_iter()
        .zip(r)
        .map(|(prompt, response)| Example { prompt, response })
        .collect())
}

/// Mean NLL of the response tokens of a batch (differentiable unless `no_grad`).
pub fn batch_nll(model: &Decoder, batch: &[&Example], no_grad: bool) -> Result<Tensor> {
    let pairs: Vec<(&[u32], &[u32])> = batch
        .iter()
        .map(|e| (e.prompt.as_slice(), e.response.as_slice()))
        .collect();
    Ok((token_logprobs(model, &pairs, no_grad)?.mean_all()? * -1.0)?)
}

/// Mean response NLL over examples, in batches, without gradients.
pub fn eval_nll(model: &Decoder, examples: &[Example], batch: usize) -> Result<f64> {
    let (mut total, mut n) = (0f64, 0usize);
    for chunk in examples.chunks(batch.max(1)) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let tokens: usize = chunk.iter().map(|e| e.response.len()).sum();
        let l = batch_nll(model, &refs, true)?.to_scalar::<f32>()? as f64;
        total += l * tokens as f64;
        n += tokens;
    }
    Ok(if n == 0 { f64::NAN } else { total / n as f64 })
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoopState {
    pub step: usize,
    pub epoch: usize,
    /// Optimiser steps already taken in `epoch`.
    pub step_in_epoch: usize,
    pub best_valid: Option<f64>,
    /// Validations in a row without a better loss (named when validation ran once an epoch).
    pub bad_epochs: usize,
    pub done: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SftSummary {
    pub steps: usize,
    pub epochs_run: usize,
    pub final_train_loss: f64,
    pub best_valid_loss: Option<f64>,
    pub valid_losses: Vec<f64>,
    pub stopped_early: bool,
    pub samples_per_s: f64,
    /// Real (unpadded) prompt and response tokens per second of training.
    #[serde(default)]
    pub tokens_per_s: f64,
    pub output: PathBuf,
}

/// Writes the trained model into `run`: the adapter in PEFT format (`adapter/`, pointing at `base`) for LoRA,
/// else an HF directory with the tokenizer (`model/`). Returns the path written.
pub fn export(
    model: &mut Decoder,
    tok: &TextTokenizer,
    lora: Option<&LoraConfig>,
    base: &str,
    run: &Path,
) -> Result<PathBuf> {
    Ok(match lora {
        Some(l) => {
            let dir = run.join("adapter");
            save_adapter(model, l, base, &dir)?;
            dir
        }
        None => {
            let dir = run.join("model");
            save_hf_dir(model, Some(tok), &dir)?;
            dir
        }
    })
}

/// The trainable variables: LoRA adapters (added here) or every weight. With `--bf16-weights`, LoRA's frozen
/// bases are also packed in bf16 for the training passes (`Decoder::pack_frozen_bf16`).
pub fn trainable(model: &mut Decoder, cfg: &SftConfig) -> Result<Vec<(String, Var)>> {
    Ok(match &cfg.lora {
        Some(l) => {
            let vars = add_lora(model, l, cfg.seed)?;
            let bytes = model.pack_frozen_bf16()?;
            if bytes > 0 {
                tracing::info!(
                    "LoRA bases also in bf16 for training passes ({:.0} MB)",
                    bytes as f64 / 1e6
                );
            }
            vars
        }
        None => model.make_all_trainable()?,
    })
}

/// Whether to recompute layers in backward: as asked, or because the worst batch (every row padded to the
/// longest example) would not fit without it on the CPU. Stops before training when it fits neither way.
fn check_memory(model: &Decoder, train: &[Example], cfg: &SftConfig) -> Result<bool> {
    let longest = train
        .iter()
        .map(|e| e.prompt.len() + e.response.len())
        .max()
        .unwrap_or(0);
    let response = train.iter().map(|e| e.response.len()).max().unwrap_or(0);
    let b = cfg.batch_size.min(train.len());
    let need = |recompute| {
        let kept = crate::memory::Kept {
            lora: cfg.lora.is_some(),
            recompute,
        };
        crate::memory::step_peak_bytes(&model.cfg, kept, b * longest, b * response)
    };
    let cpu = model.device().is_cpu();
    let have = crate::memory::available_bytes();
    let what = format!("an SFT batch of {b} samples padded to {longest} tokens");
    // bf16 bases keep each adapter on its low-rank path (no fold), whose per-layer outputs take more memory
    // than the recomputation costs time: with recomputation LoRA r 8 at batch 8 measured 0.51 against 0.47
    // samples/s, 2.0 against 10.3 GB (BENCHMARKS.md).
    let recompute = (cfg.recompute || model.bf16_trains()) && cpu;
    if !recompute && cpu && !crate::memory::fits(need(false), have) {
        tracing::warn!("{what} does not fit in memory as it is: recomputing layers in backward");
        crate::memory::check_fits(&what, need(true), have, LOWER_BATCH)?;
        return Ok(true);
    }
    let advice = if cpu && !recompute {
        "pass --recompute, or lower --batch-size and raise --grad-accum to keep the effective batch"
    } else {
        LOWER_BATCH
    };
    crate::memory::check_fits(&what, need(recompute), have, advice)?;
    Ok(recompute)
}

/// Turns mixed precision on or off as asked, and says which: a run asked for it on a CPU without bf16 units
/// trains in f32, and so does a LoRA run, whose trainable weights are only its small adapters (the frozen
/// base reaches the bf16 units through `--bf16-weights` instead). Returns whether it is on.
pub(crate) fn mixed_precision(model: &mut Decoder, asked: bool, lora: bool) -> bool {
    if asked && lora {
        tracing::warn!(
            "mixed precision multiplies trainable full weights; with LoRA only the adapters train, so it is \
             off (--bf16-weights multiplies the frozen base on the bf16 units)"
        );
        model.set_mixed_bf16(false);
        return false;
    }
    let on = model.set_mixed_bf16(asked);
    match (asked, on) {
        (true, true) => tracing::info!(
            "mixed precision: trainable weights multiply in bf16 on {}",
            minirec_model::kernels::bf16::kernel().map_or("?", |k| k.name())
        ),
        (true, false) => {
            tracing::warn!(
                "mixed precision asked for, but this device has no bf16 kernel: training in f32"
            )
        }
        _ => {}
    }
    on
}

const LOWER_BATCH: &str = "lower --batch-size and raise --grad-accum to keep the effective batch";

/// The training log inside a run directory.
const LOG: &str = "train_log.jsonl";

/// Scores the validation split, logs it, keeps the best weights in `best.safetensors`, and marks the run done
/// once `patience` validations in a row brought no better loss. Nothing happens without validation samples.
fn validate(
    model: &Decoder,
    vars: &[(String, Var)],
    valid: &[Example],
    cfg: &SftConfig,
    run: &Path,
    st: &mut LoopState,
    log: &mut std::fs::File,
) -> Result<()> {
    if valid.is_empty() {
        return Ok(());
    }
    let v = eval_nll(
        model,
        &valid[..valid.len().min(cfg.max_valid)],
        cfg.batch_size,
    )?;
    let line = serde_json::json!({"step": st.step, "epoch": st.epoch, "valid_loss": v});
    writeln!(log, "{line}").map_err(|e| TrainError::io(run.join(LOG), e))?;
    tracing::info!("step {} (epoch {}): valid loss {v:.4}", st.step, st.epoch);
    if st.best_valid.is_none_or(|b| v < b) {
        st.best_valid = Some(v);
        st.bad_epochs = 0;
        checkpoint::save_vars(vars, &run.join("best.safetensors"))?;
    } else {
        st.bad_epochs += 1;
        st.done = st.bad_epochs >= cfg.patience;
    }
    Ok(())
}

/// Runs SFT into `run`. `base` names the base model in exported adapters. With `resume`, continues from the
/// newest checkpoint in `run` (same data, config and seed give the same weights as an uninterrupted run).
#[allow(clippy::too_many_arguments)]
pub fn train(
    model: &mut Decoder,
    tok: &TextTokenizer,
    vars: Vec<(String, Var)>,
    train: &[Example],
    valid: &[Example],
    cfg: &SftConfig,
    run: &Path,
    base: &str,
    resume: bool,
    progress: bool,
) -> Result<SftSummary> {
    if train.is_empty() {
        return Err(TrainError::Invalid("no training examples".into()));
    }
    if cfg.batch_size == 0 || cfg.grad_accum == 0 || cfg.epochs == 0 {
        return Err(TrainError::Invalid(
            "batch size, accumulation and epochs must be at least 1".into(),
        ));
    }
    let recompute = check_memory(model, train, cfg)?;
    model.set_recompute(recompute);
    mixed_precision(model, cfg.bf16_mixed, cfg.lora.is_some());
    std::fs::create_dir_all(run).map_err(|e| TrainError::io(run, e))?;
    let per_step = cfg.batch_size * cfg.grad_accum;
    let steps_per_epoch = train.len().div_ceil(per_step);
    let total = cfg
        .max_steps
        .unwrap_or(usize::MAX)
        .min(cfg.epochs * steps_per_epoch);
    let warmup = (total as f64 * cfg.warmup_ratio).round() as usize;
    let mut opt = AdamW::with_weight_decay(vars, cfg.weight_decay)?;
    let mut st = LoopState {
        step: 0,
        epoch: 0,
        step_in_epoch: 0,
        best_valid: None,
        bad_epochs: 0,
        done: false,
    };
    let mut last_good = String::from("(none yet)");
    let mut resumed_from = None;
    if resume {
        match checkpoint::restore_training(run, &mut opt, |s: &LoopState| s.step)? {
            Some((dir, s)) => {
                let finished = s.done || s.epoch >= cfg.epochs || s.step >= total;
                if finished {
                    println!("sft: {} already finished at step {}", run.display(), s.step);
                } else {
                    tracing::info!("resuming from {} (step {})", dir.display(), s.step);
                }
                last_good = dir.display().to_string();
                resumed_from = Some(dir);
                st = s;
            }
            None => tracing::warn!(
                "--resume: no checkpoint in {}; starting from the beginning",
                run.display()
            ),
        }
    }
    if !(st.done || st.epoch >= cfg.epochs || st.step >= total) {
        let need = crate::disk::run_needs(&opt.vars, cfg.checkpoint_every, run);
        crate::disk::ensure_room(run, need, "sft: this run's checkpoints and export")?;
    }
    let log_path = run.join(LOG);
    let mut log = checkpoint::open_log(&log_path, resumed_from.as_deref())?;
    let pb = if progress {
        ProgressBar::new(total as u64)
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template("sft [{bar:30}] {pos}/{len} {msg} ({eta})")
            .expect("template")
            .progress_chars("=> "),
    );
    pb.set_position(st.step as u64);
    let t0 = Instant::now();
    let (mut seen, mut seen_tokens) = (0usize, 0usize);
    let save_ckpt = |opt: &AdamW, st: &LoopState| -> Result<PathBuf> {
        checkpoint::save_training(run, st.step, st, opt, &[&log_path])
    };
    while !st.done && st.epoch < cfg.epochs && st.step < total {
        let order = epoch_order(
            train,
            cfg.batch_size,
            cfg.seed,
            st.epoch,
            cfg.length_buckets,
        );
        while st.step_in_epoch < steps_per_epoch && st.step < total {
            let mut acc = opt.accumulator();
            let mut loss_sum = 0f64;
            let mut step_tokens = 0usize;
            for a in 0..cfg.grad_accum {
                let from = (st.step_in_epoch * cfg.grad_accum + a) * cfg.batch_size;
                if from >= order.len() {
                    break;
                }
                let idx = &order[from..(from + cfg.batch_size).min(order.len())];
                let batch: Vec<&Example> = idx.iter().map(|&i| &train[i]).collect();
                let loss = batch_nll(model, &batch, false)?;
                let l = loss.to_scalar::<f32>()?;
                if !l.is_finite() {
                    pb.abandon();
                    return Err(TrainError::NonFinite {
                        step: st.step,
                        loss: l,
                        last_good,
                    });
                }
                loss_sum += l as f64;
                seen += batch.len();
                step_tokens += batch
                    .iter()
                    .map(|e| e.prompt.len() + e.response.len())
                    .sum::<usize>();
                opt.accumulate(&mut acc, &model.backward(&loss)?)?;
            }
            let micro = acc.micro_batches.max(1);
            let lr = lr_at(st.step, cfg.lr, warmup, total, cfg.min_lr_ratio);
            let norm = opt.step(acc, lr, cfg.max_grad_norm)?;
            if !norm.is_finite() {
                pb.abandon();
                return Err(TrainError::NonFinite {
                    step: st.step,
                    loss: f32::NAN,
                    last_good,
                });
            }
            let last_loss = loss_sum / micro as f64;
            st.step += 1;
            st.step_in_epoch += 1;
            let line = serde_json::json!({"step": st.step, "epoch": st.epoch, "loss": last_loss, "lr": lr,
                "grad_norm": norm, "tokens": step_tokens, "seconds": t0.elapsed().as_secs_f64()});
            seen_tokens += step_tokens;
            writeln!(log, "{line}").map_err(|e| TrainError::io(&log_path, e))?;
            pb.set_position(st.step as u64);
            pb.set_message(format!("loss {last_loss:.4}"));
            let last = st.step >= total
                || (st.step_in_epoch >= steps_per_epoch && st.epoch + 1 >= cfg.epochs);
            if cfg.valid_every > 0 && (st.step.is_multiple_of(cfg.valid_every) || last) {
                validate(model, &opt.vars, valid, cfg, run, &mut st, &mut log)?;
                if st.done {
                    break;
                }
            }
            if cfg.checkpoint_every > 0 && st.step.is_multiple_of(cfg.checkpoint_every) {
                last_good = save_ckpt(&opt, &st)?.display().to_string();
            }
            if cfg.interrupt_after == Some(st.step) {
                pb.abandon();
                return Err(TrainError::Interrupted { step: st.step });
            }
        }
        if st.done {
            break;
        }
        if st.step_in_epoch >= steps_per_epoch {
            if cfg.valid_every == 0 {
                validate(model, &opt.vars, valid, cfg, run, &mut st, &mut log)?;
            }
            st.epoch += 1;
            st.step_in_epoch = 0;
        }
    }
    save_ckpt(&opt, &st)?;
    pb.finish_and_clear();
    crate::plot::charts_from_log(&log_path, run, "sft", &["loss", "valid_loss"])?;
    let best = run.join("best.safetensors");
    if st.best_valid.is_some() && best.exists() {
        checkpoint::load_vars(&opt.vars, &best)?;
    }
    model.set_recompute(false);
    let output = export(model, tok, cfg.lora.as_ref(), base, run)?;
    let secs = t0.elapsed().as_secs_f64();
    // From the log, so a resumed run reports the whole run, not the part since it resumed.
    let lines = checkpoint::read_log(&log_path)?;
    let field = |k: &'static str| lines.iter().filter_map(move |v| v.get(k)?.as_f64());
    Ok(SftSummary {
        steps: st.step,
        epochs_run: st.epoch,
        final_train_loss: field("loss").next_back().unwrap_or(f64::NAN),
        best_valid_loss: st.best_valid,
        valid_losses: field("valid_loss").collect(),
        stopped_early: st.done,
        samples_per_s: seen as f64 / secs.max(1e-9),
        tokens_per_s: seen_tokens as f64 / secs.max(1e-9),
        output,
    })
}
