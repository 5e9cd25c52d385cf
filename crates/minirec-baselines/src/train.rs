//! Training (Adam, dimension 64, batch 256 as RISER App. C) with cross-entropy over every item, BCE on k
//! sampled negatives or BPR; early stopping on validation NDCG@10 under the same title-level all-ranking
//! protocol as the LLM, atomic per-epoch checkpoints and exact `--resume`. The popularity baseline is counted,
//! not trained.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use minirec_data::{PreparedDataset, Sample};
use minirec_eval::{MetricsReport, RankingMetrics};
use minirec_train::checkpoint;
use minirec_train::optim::{AdamW, AdamWConfig};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{BaselineError, Result};
use crate::nn::{softplus, Dropout};
use crate::seqrec::{Kind, ModelShape, SeqRec};

/// The training objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Loss {
    /// Softmax cross-entropy over every item (RecBole's default).
    Ce,
    /// Binary cross-entropy: the target against k uniformly sampled negatives (Kang & McAuley).
    Bce,
    /// Bayesian personalised ranking: −log σ(s⁺ − s⁻), averaged over k sampled negatives.
    Bpr,
}

impl std::str::FromStr for Loss {
    type Err = BaselineError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ce" => Ok(Loss::Ce),
            "bce" => Ok(Loss::Bce),
            "bpr" => Ok(Loss::Bpr),
            _ => Err(BaselineError::Invalid(format!(
                "unknown loss {s:?} (ce, bce, bpr)"
            ))),
        }
    }
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Loss::Ce => "ce",
            Loss::Bce => "bce",
            Loss::Bpr => "bpr",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Defaults to BCE when absent: the loss runs were saved with before there was a choice.
    pub loss: Loss,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// Sampled negatives per positive.
    pub negatives: usize,
    /// Epochs without a better validation NDCG@10 before stopping.
    pub patience: usize,
    /// Validation samples ranked after each epoch (the first ones).
    pub max_valid: usize,
    pub seed: u64,
    /// Stop abruptly after this epoch without finishing (simulates a crash; for resume tests).
    #[serde(skip)]
    pub interrupt_after: Option<usize>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            loss: Loss::Bce,
            epochs: 100,
            batch_size: 256,
            lr: 1e-3,
            negatives: 1,
            patience: 5,
            max_valid: 2000,
            seed: 42,
            interrupt_after: None,
        }
    }
}

/// A sample as item rows: the history (oldest first) and the target.
#[derive(Debug, Clone, PartialEq)]
pub struct RowSample {
    pub history: Vec<u32>,
    pub target: u32,
}

/// Maps samples to item rows (catalog index + 1; 0 pads). Errors name an unknown item.
pub fn encode(ds: &PreparedDataset, samples: &[Sample]) -> Result<Vec<RowSample>> {
    let row = |id: &str| -> Result<u32> {
        ds.catalog
            .index_of(id)
            .map(|i| i + 1)
            .ok_or_else(|| BaselineError::Invalid(format!("item {id:?} is not in the catalog")))
    };
    samples
        .iter()
        .map(|s| {
            Ok(RowSample {
                history: s.history.iter().map(|h| row(h)).collect::<Result<_>>()?,
                target: row(&s.target)?,
            })
        })
        .collect()
}

/// The training samples and the early-stopping ones: the valid split, or — when it is empty — the newest tenth
/// of the training split held out.
pub fn train_valid(ds: &PreparedDataset) -> Result<(Vec<Sample>, Vec<Sample>, bool)> {
    if !ds.valid.is_empty() {
        return Ok((ds.train.clone(), ds.valid.clone(), false));
    }
    if ds.train.len() < 10 {
        return Err(BaselineError::Invalid(
            "too few training samples to hold out a validation tenth".into(),
        ));
    }
    let mut by_time: Vec<Sample> = ds.train.clone();
    by_time.sort_by_key(|s| s.timestamp);
    let cut = by_time.len() - by_time.len() / 10;
    let valid = by_time.split_off(cut);
    Ok((by_time, valid, true))
}

/// One sample's ranking: titles best first, each once, and item rows best first (both at most `k`).
pub struct Ranked {
    pub titles: Vec<String>,
    pub rows: Vec<u32>,
}

/// Every sample's ranking over all items.
pub fn rank(
    model: &SeqRec,
    ds: &PreparedDataset,
    samples: &[RowSample],
    k: usize,
    batch: usize,
) -> Result<Vec<Ranked>> {
    let mut out = Vec::with_capacity(samples.len());
    for chunk in samples.chunks(batch.max(1)) {
        let hist: Vec<Vec<u32>> = chunk.iter().map(|s| s.history.clone()).collect();
        let scores: Vec<Vec<f32>> = model.score_all(&hist)?.to_vec2()?;
        for row in scores {
            let mut idx: Vec<u32> = (1..row.len() as u32).collect();
            idx.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
            let mut seen = std::collections::HashSet::new();
            let mut titles = Vec::with_capacity(k);
            for &r in &idx {
                let t = ds.catalog.title_of_item(r - 1);
                if seen.insert(t) {
                    titles.push(t.to_string());
                    if titles.len() == k {
                        break;
                    }
                }
            }
            idx.truncate(k);
            out.push(Ranked { titles, rows: idx });
        }
    }
    Ok(out)
}

/// Ranked titles (best first, each once, at most `k`) for each sample.
pub fn rank_titles(
    model: &SeqRec,
    ds: &PreparedDataset,
    samples: &[RowSample],
    k: usize,
    batch: usize,
) -> Result<Vec<Vec<String>>> {
    Ok(rank(model, ds, samples, k, batch)?
        .into_iter()
        .map(|r| r.titles)
        .collect())
}

/// A model's metrics on samples: at the title level (the LLM's metric: items sharing a title count as one)
/// and at the item-id level (the classic protocol), with each sample's ranked titles.
pub struct Evaluation {
    pub titles: MetricsReport,
    pub items: MetricsReport,
    pub ranked: Vec<Vec<String>>,
}

pub fn evaluate_levels(
    model: &SeqRec,
    ds: &PreparedDataset,
    samples: &[Sample],
    ks: &[usize],
) -> Result<Evaluation> {
    let rows = encode(ds, samples)?;
    let k = ks.iter().copied().max().unwrap_or(20);
    let ranked = rank(model, ds, &rows, k, 512)?;
    let mut by_title = RankingMetrics::new(ks);
    let mut by_item = RankingMetrics::new(ks);
    for ((s, row), r) in samples.iter().zip(&rows).zip(&ranked) {
        by_title.add(ds.target_title(s), &r.titles);
        by_item.add_rank(r.rows.iter().position(|&x| x == row.target));
    }
    Ok(Evaluation {
        titles: by_title.report(),
        items: by_item.report(),
        ranked: ranked.into_iter().map(|r| r.titles).collect(),
    })
}

/// Title-level metrics of the model on samples.
pub fn evaluate(
    model: &SeqRec,
    ds: &PreparedDataset,
    samples: &[Sample],
    ks: &[usize],
) -> Result<(MetricsReport, Vec<Vec<String>>)> {
    let e = evaluate_levels(model, ds, samples, ks)?;
    Ok((e.titles, e.ranked))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct State {
    epoch: usize,
    step: usize,
    best_ndcg: f64,
    best_epoch: usize,
    bad_epochs: usize,
    done: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub loss: f64,
    pub valid_ndcg10: f64,
    pub valid_hr10: f64,
    pub seconds: f64,
    pub samples_per_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub best_valid_ndcg10: f64,
    pub train_samples: usize,
    pub valid_samples: usize,
    pub valid_held_out_from_train: bool,
    pub train_s: f64,
    pub samples_per_s: f64,
    pub output: PathBuf,
}

/// The run directory's description of the model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    pub shape: ModelShape,
    pub train: TrainConfig,
    pub text_init: Option<String>,
    /// Catalog size and first/last item ids: a run only evaluates on the catalog it was trained on.
    pub items: usize,
    pub first_item: String,
    pub last_item: String,
}

impl RunConfig {
    pub fn check_catalog(&self, ds: &PreparedDataset, run: &Path) -> Result<()> {
        let c = &ds.catalog;
        let n = c.len();
        if n != self.items
            || n == 0
            || c.id(0) != self.first_item
            || c.id(n as u32 - 1) != self.last_item
        {
            return Err(BaselineError::File {
                path: run.to_path_buf(),
                msg: format!(
                    "trained on a catalog of {} items ({}..{}), but the dataset has {n}",
                    self.items, self.first_item, self.last_item
                ),
            });
        }
        Ok(())
    }
}

pub fn is_baseline_run(dir: &Path) -> bool {
    dir.join("baseline.json").is_file()
}

/// Loads a trained baseline run (its best weights).
pub fn load_run(dir: &Path, device: &Device) -> Result<(SeqRec, RunConfig)> {
    let cfg: RunConfig = minirec_data::fsutil::read_json(&dir.join("baseline.json"))?;
    let model = SeqRec::new(cfg.shape.clone(), None, 0, device)?;
    checkpoint::load_vars(&model.params.vars, &dir.join("model.safetensors"))?;
    Ok((model, cfg))
}

/// Separates the dropout stream from the shuffling and negative-sampling ones of the same seed.
const DROPOUT_STREAM: u64 = 0xd40f_0a7e_5eed;

/// One batch's loss. Negatives are drawn uniformly from every item but the target, as in SASRec's code.
fn batch_loss(
    model: &SeqRec,
    cfg: &TrainConfig,
    hist: &[Vec<u32>],
    pos: &[u32],
    rng: &mut ChaCha8Rng,
    drop: &mut Dropout,
) -> Result<Tensor> {
    let rep = model.represent_train(hist, drop)?;
    if cfg.loss == Loss::Ce {
        return cross_entropy(model, &rep, pos);
    }
    let n_rows = model.shape.num_rows as u32;
    let sp = model.score_pairs(&rep, pos)?;
    let mut loss = match cfg.loss {
        Loss::Bce => softplus(&sp.neg()?)?.mean_all()?,
        _ => Tensor::zeros((), candle_core::DType::F32, &model.device)?,
    };
    for _ in 0..cfg.negatives {
        let neg: Vec<u32> = pos
            .iter()
            .map(|&p| loop {
                let r = rng.random_range(1..n_rows);
                if r != p || n_rows == 2 {
                    break r;
                }
            })
            .collect();
        let sn = model.score_pairs(&rep, &neg)?;
        let term = match cfg.loss {
            Loss::Bce => softplus(&sn)?,
            _ => softplus(&(sn - &sp)?)?,
        };
        loss = (loss + (term.mean_all()? / cfg.negatives as f64)?)?;
    }
    Ok(loss)
}

/// Mean −log softmax(rep·Eᵀ)[target] over every item row but the padding one.
pub fn cross_entropy(model: &SeqRec, rep: &Tensor, pos: &[u32]) -> Result<Tensor> {
    let n = model.shape.num_rows;
    let mut pad = vec![0f32; n];
    pad[0] = -1e9;
    let logits = model
        .score_reps(rep)?
        .broadcast_add(&Tensor::from_vec(pad, n, &model.device)?)?;
    // The row maximum is a constant shift: detached, it keeps exp() in range without changing the gradient.
    let max = logits.max_keepdim(1)?.detach();
    let lse = (logits.broadcast_sub(&max)?.exp()?.sum_keepdim(1)?.log()? + &max)?;
    let idx = Tensor::from_slice(pos, (pos.len(), 1), &model.device)?;
    let target = logits.gather(&idx, 1)?;
    Ok((lse - target)?.mean_all()?)
}

/// The popularity baseline: each item's score is how often it is a target among the training samples
/// (all of them: there is nothing to stop early), ties broken by catalog order when ranked.
fn count_targets(model: &SeqRec, rows: &[RowSample]) -> Result<()> {
    let mut counts = vec![0f32; model.shape.num_rows];
    for r in rows {
        counts[r.target as usize] += 1.0;
    }
    let var = model
        .params
        .get("pop")
        .ok_or_else(|| BaselineError::Invalid("not a popularity model".into()))?;
    var.set(&Tensor::from_vec(
        counts,
        model.shape.num_rows,
        &model.device,
    )?)?;
    Ok(())
}

/// Counts the popularity model into `run`: its scores, its description, a summary with no epochs.
fn train_pop(
    model: &SeqRec,
    ds: &PreparedDataset,
    run_cfg: &RunConfig,
    run: &Path,
    valid_samples: usize,
    held_out: bool,
) -> Result<TrainSummary> {
    let t = Instant::now();
    let rows = encode(ds, &ds.train)?;
    count_targets(model, &rows)?;
    checkpoint::save_vars(&model.params.vars, &run.join("model.safetensors"))?;
    minirec_data::fsutil::write_json_atomic(&run.join("baseline.json"), run_cfg)?;
    let secs = t.elapsed().as_secs_f64();
    Ok(TrainSummary {
        epochs_run: 0,
        best_epoch: 0,
        best_valid_ndcg10: 0.0,
        train_samples: rows.len(),
        valid_samples,
        valid_held_out_from_train: held_out,
        train_s: secs,
        samples_per_s: rows.len() as f64 / secs.max(1e-9),
        output: run.join("model.safetensors"),
    })
}

/// Trains `model` into `run`. `text_init` names the encoder used for the initial item table, if any.
#[allow(clippy::too_many_arguments)]
pub fn train(
    model: &SeqRec,
    ds: &PreparedDataset,
    cfg: &TrainConfig,
    text_init: Option<&str>,
    run: &Path,
    resume: bool,
    progress: bool,
) -> Result<TrainSummary> {
    if cfg.batch_size == 0 || cfg.epochs == 0 || cfg.negatives == 0 {
        return Err(BaselineError::Invalid(
            "batch size, epochs and negatives must be at least 1".into(),
        ));
    }
    std::fs::create_dir_all(run).map_err(|e| BaselineError::io(run, e))?;
    let (train_s, valid_s, held_out) = train_valid(ds)?;
    let train_rows = encode(ds, &train_s)?;
    if train_rows.is_empty() {
        return Err(BaselineError::Invalid("no training samples".into()));
    }
    let valid_s: Vec<Sample> = valid_s.into_iter().take(cfg.max_valid.max(1)).collect();
    let c = &ds.catalog;
    let run_cfg = RunConfig {
        shape: model.shape.clone(),
        train: cfg.clone(),
        text_init: text_init.map(str::to_string),
        items: c.len(),
        first_item: c.id(0).to_string(),
        last_item: c.id(c.len() as u32 - 1).to_string(),
    };
    if model.shape.kind == Kind::Pop {
        return train_pop(model, ds, &run_cfg, run, valid_s.len(), held_out);
    }
    let mut opt = AdamW::new(model.params.vars.clone(), AdamWConfig::default())?;
    let mut st = State {
        epoch: 0,
        step: 0,
        best_ndcg: -1.0,
        best_epoch: 0,
        bad_epochs: 0,
        done: false,
    };
    let mut resumed_from = None;
    if resume {
        if let Some((dir, s)) = checkpoint::restore_training(run, &mut opt, |s: &State| s.step)? {
            if s.done || s.epoch >= cfg.epochs {
                println!(
                    "baseline: {} already finished at epoch {}",
                    run.display(),
                    s.epoch
                );
            } else {
                tracing::info!("resuming from {} (epoch {})", dir.display(), s.epoch);
            }
            resumed_from = Some(dir);
            st = s;
        } else {
            tracing::warn!(
                "--resume: no checkpoint in {}; starting afresh",
                run.display()
            );
        }
    }
    let log_path = run.join("train_log.jsonl");
    let mut log = checkpoint::open_log(&log_path, resumed_from.as_deref())?;
    let pb = crate::bar(progress, cfg.epochs as u64, "baseline epochs");
    pb.set_position(st.epoch as u64);
    while !st.done && st.epoch < cfg.epochs {
        let t = Instant::now();
        let mut order: Vec<usize> = (0..train_rows.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(
            cfg.seed ^ ((st.epoch as u64) << 20),
        ));
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_add(1 + st.epoch as u64));
        let mut drop = Dropout::new(
            model.shape.dropout,
            (cfg.seed ^ DROPOUT_STREAM).wrapping_add(st.epoch as u64),
        );
        let (mut loss_sum, mut batches) = (0f64, 0usize);
        for chunk in order.chunks(cfg.batch_size) {
            let hist: Vec<Vec<u32>> = chunk
                .iter()
                .map(|&i| train_rows[i].history.clone())
                .collect();
            let pos: Vec<u32> = chunk.iter().map(|&i| train_rows[i].target).collect();
            let loss = batch_loss(model, cfg, &hist, &pos, &mut rng, &mut drop)?;
            let lv = loss.to_scalar::<f32>()?;
            if !lv.is_finite() {
                return Err(BaselineError::Invalid(format!(
                    "non-finite loss at epoch {} step {}",
                    st.epoch, st.step
                )));
            }
            let grads = loss.backward()?;
            let mut acc = opt.accumulator();
            opt.accumulate(&mut acc, &grads)?;
            opt.step(acc, cfg.lr, 0.0)?;
            loss_sum += lv as f64;
            batches += 1;
            st.step += 1;
        }
        let (report, _) = evaluate(model, ds, &valid_s, &[10])?;
        let ndcg = report.get("ndcg@10").unwrap_or(0.0);
        let secs = t.elapsed().as_secs_f64();
        st.epoch += 1;
        if ndcg > st.best_ndcg {
            st.best_ndcg = ndcg;
            st.best_epoch = st.epoch;
            st.bad_epochs = 0;
            checkpoint::save_vars(&opt.vars, &run.join("best.safetensors"))?;
        } else {
            st.bad_epochs += 1;
            st.done = st.bad_epochs >= cfg.patience;
        }
        let entry = EpochLog {
            epoch: st.epoch,
            loss: loss_sum / batches.max(1) as f64,
            valid_ndcg10: ndcg,
            valid_hr10: report.get("hr@10").unwrap_or(0.0),
            seconds: secs,
            samples_per_s: train_rows.len() as f64 / secs.max(1e-9),
        };
        writeln!(
            log,
            "{}",
            serde_json::to_string(&entry).expect("serialises")
        )
        .map_err(|e| BaselineError::io(&log_path, e))?;
        pb.set_message(format!("loss {:.4} ndcg@10 {ndcg:.4}", entry.loss));
        pb.inc(1);
        checkpoint::save_training(run, st.epoch, &st, &opt, &[&log_path])?;
        if cfg.interrupt_after == Some(st.epoch) {
            return Err(BaselineError::Invalid(format!(
                "interrupted after epoch {}",
                st.epoch
            )));
        }
    }
    pb.finish_and_clear();
    let best = run.join("best.safetensors");
    if best.exists() {
        checkpoint::load_vars(&opt.vars, &best)?;
    }
    checkpoint::save_vars(&opt.vars, &run.join("model.safetensors"))?;
    minirec_data::fsutil::write_json_atomic(&run.join("baseline.json"), &run_cfg)?;
    // The whole run's epochs from the log, so a resumed run reports what an uninterrupted one would.
    let epochs_logged = checkpoint::read_log(&log_path)?;
    let train_s_total: f64 = epochs_logged
        .iter()
        .filter_map(|v| v.get("seconds")?.as_f64())
        .sum();
    let trained = epochs_logged.len() * train_rows.len();
    Ok(TrainSummary {
        epochs_run: st.epoch,
        best_epoch: st.best_epoch,
        best_valid_ndcg10: st.best_ndcg,
        train_samples: train_rows.len(),
        valid_samples: valid_s.len(),
        valid_held_out_from_train: held_out,
        train_s: train_s_total,
        samples_per_s: trained as f64 / train_s_total.max(1e-9),
        output: run.join("model.safetensors"),
    })
}
