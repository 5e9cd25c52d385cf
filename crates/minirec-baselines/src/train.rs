//! Training with BCE on sampled negatives (RISER App. C: Adam, dimension 64, batch 256), early stopping on
//! validation NDCG@10 under the same title-level all-ranking protocol as the LLM, atomic per-epoch checkpoints
//! and exact `--resume`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use minirec_data::{PreparedDataset, Sample};
use minirec_eval::{MetricsReport, RankingMetrics};
use minirec_train::checkpoint;
use minirec_train::optim::{AdamW, AdamWConfig};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{BaselineError, Result};
use crate::nn::softplus;
use crate::seqrec::{ModelShape, SeqRec};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
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

/// Ranked titles (best first, each once, at most `k`) for each sample.
pub fn rank_titles(
    model: &SeqRec,
    ds: &PreparedDataset,
    samples: &[RowSample],
    k: usize,
    batch: usize,
) -> Result<Vec<Vec<String>>> {
    let mut out = Vec::with_capacity(samples.len());
    for chunk in samples.chunks(batch.max(1)) {
        let hist: Vec<Vec<u32>> = chunk.iter().map(|s| s.history.clone()).collect();
        let scores: Vec<Vec<f32>> = model.score_all(&hist)?.to_vec2()?;
        for row in scores {
            let mut idx: Vec<u32> = (1..row.len() as u32).collect();
            idx.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
            let mut seen = std::collections::HashSet::new();
            let mut list = Vec::with_capacity(k);
            for r in idx {
                let t = ds.catalog.title_of_item(r - 1);
                if seen.insert(t) {
                    list.push(t.to_string());
                    if list.len() == k {
                        break;
                    }
                }
            }
            out.push(list);
        }
    }
    Ok(out)
}

/// Title-level metrics of the model on samples.
pub fn evaluate(
    model: &SeqRec,
    ds: &PreparedDataset,
    samples: &[Sample],
    ks: &[usize],
) -> Result<(MetricsReport, Vec<Vec<String>>)> {
    let rows = encode(ds, samples)?;
    let k = ks.iter().copied().max().unwrap_or(20);
    let ranked = rank_titles(model, ds, &rows, k, 512)?;
    let mut m = RankingMetrics::new(ks);
    for (s, r) in samples.iter().zip(&ranked) {
        m.add(ds.target_title(s), r);
    }
    Ok((m.report(), ranked))
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
    let n_rows = model.shape.num_rows as u32;
    let pb = crate::bar(progress, cfg.epochs as u64, "baseline epochs");
    pb.set_position(st.epoch as u64);
    while !st.done && st.epoch < cfg.epochs {
        let t = Instant::now();
        let mut order: Vec<usize> = (0..train_rows.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(
            cfg.seed ^ ((st.epoch as u64) << 20),
        ));
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_add(1 + st.epoch as u64));
        let (mut loss_sum, mut batches) = (0f64, 0usize);
        for chunk in order.chunks(cfg.batch_size) {
            let hist: Vec<Vec<u32>> = chunk
                .iter()
                .map(|&i| train_rows[i].history.clone())
                .collect();
            let pos: Vec<u32> = chunk.iter().map(|&i| train_rows[i].target).collect();
            let rep = model.represent(&hist)?;
            let sp = model.score_pairs(&rep, &pos)?;
            let mut loss = softplus(&sp.neg()?)?.mean_all()?;
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
                loss = (loss + (softplus(&sn)?.mean_all()? / cfg.negatives as f64)?)?;
            }
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
