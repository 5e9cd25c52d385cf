//! Evaluation of a model on a split: which samples (the first N, a seeded subset, or all), in which order,
//! ranked by trie-constrained beam search (an LLM) or by scoring every item (a classic baseline run), with
//! the ranked lists appended to a predictions file a batch at a time so that a killed evaluation resumes.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use minirec_data::{PreparedDataset, Split};
use minirec_eval::{MetricsReport, Prediction, RankingMetrics};
use minirec_model::decode::{beam_search, ItemIndex};
use minirec_model::load::{default_dtype, pick_device};

/// What `evaluate_model` evaluates, and how.
pub struct EvalJob {
    pub split: Split,
    pub beam: usize,
    pub batch: usize,
    /// Only the first N samples of the split.
    pub limit: Option<usize>,
    /// A seeded subset of N samples (instead of `limit`).
    pub sample: Option<usize>,
    pub sample_seed: u64,
    pub ks: Vec<usize>,
    /// Where the ranked lists go, a batch at a time.
    pub predictions_out: Option<PathBuf>,
    /// Keep the lists already in `predictions_out` and rank the rest.
    pub resume: bool,
    pub cpu: bool,
    /// Batches decoded at once on the CPU (`BeamJob::lanes`).
    pub lanes: usize,
}

/// An evaluation's metrics; for a classic baseline also its item-level metrics and per-seed results.
pub struct Evaluated {
    /// Title-level metrics (for a multi-seed baseline run: the means over its seeds).
    pub report: MetricsReport,
    pub baseline: Option<crate::baseline::BaselineEval>,
}

/// Ranks every title for each chosen sample of the split of the prepared dataset `data` and scores the
/// lists; `model` is an LLM or a `minirec baseline` run.
pub fn evaluate_model(model: &Path, data: &Path, a: &EvalJob, progress: bool) -> Result<Evaluated> {
    let ks = &a.ks;
    let ds = PreparedDataset::load(data)?;
    let split = ds.split(a.split);
    let picked = pick_samples(split.len(), a.limit, a.sample, a.sample_seed);
    if picked.is_empty() {
        bail!("the {} split of {} is empty", a.split, data.display());
    }
    let samples: Vec<(usize, &minirec_data::Sample)> =
        picked.iter().map(|&i| (i, &split[i])).collect();
    let samples = by_prompt_length(&ds, samples);
    if crate::baseline::is_run(model) {
        let only: Vec<minirec_data::Sample> = samples.iter().map(|(_, s)| (*s).clone()).collect();
        let e = crate::baseline::evaluate_run(model, &ds, &only, ks, a.cpu)?;
        if let Some(p) = &a.predictions_out {
            minirec_data::fsutil::write_jsonl_atomic(
                p,
                samples.iter().zip(&e.ranked).map(|((i, s), r)| Prediction {
                    target: ds.target_title(s).to_string(),
                    ranked: r.clone(),
                    sample: Some(*i),
                }),
            )?;
        }
        return Ok(Evaluated {
            report: e.titles.clone(),
            baseline: Some(e),
        });
    }
    let device = pick_device(a.cpu)?;
    let loaded =
        crate::model::load_llm_for_inference(model, "model", &device, default_dtype(&device))?;
    tracing::info!(
        "evaluating {} on {} {} samples",
        loaded.description,
        samples.len(),
        a.split
    );
    rank_samples(
        &loaded.model,
        &loaded.tokenizer,
        &ds,
        &samples,
        &BeamJob {
            beam: a.beam,
            batch: a.batch,
            ks,
            lanes: a.lanes,
        },
        a.predictions_out.as_deref(),
        a.resume,
        progress,
    )
    .map(|report| Evaluated {
        report,
        baseline: None,
    })
}

/// The split positions to evaluate: the first `limit`, or a seeded subset of `sample`, or all of them.
pub fn pick_samples(
    len: usize,
    limit: Option<usize>,
    sample: Option<usize>,
    seed: u64,
) -> Vec<usize> {
    match (limit, sample) {
        (_, Some(n)) => minirec_eval::seeded_subset(len, n, seed),
        (Some(n), None) => (0..n.min(len)).collect(),
        (None, None) => (0..len).collect(),
    }
}

/// The samples shortest prompt first (ties in split order): a batch of similar lengths pads little in the
/// prefill (batches of 16 real Industrial prompts padded to their longest wasted about a quarter of it). The
/// order is a function of the samples alone, so a resumed evaluation meets the same order; results pair by
/// the `sample` index, not by line.
pub fn by_prompt_length<'a>(
    ds: &PreparedDataset,
    mut samples: Vec<(usize, &'a minirec_data::Sample)>,
) -> Vec<(usize, &'a minirec_data::Sample)> {
    samples.sort_by_cached_key(|(i, s)| (ds.prompt.render(ds.history_titles(s)).len(), *i));
    samples
}

/// How an evaluation ranks: the beam width (titles per list), prompts decoded together, the cut-offs scored, and
/// on the CPU how many batches are decoded at once (`lanes`, each on its share of the threads; 1 on a GPU).
pub struct BeamJob<'a> {
    pub beam: usize,
    pub batch: usize,
    pub ks: &'a [usize],
    pub lanes: usize,
}

/// The predictions an earlier evaluation already wrote to `path`, each of a sample among `samples` (its
/// target checked), in the file's order: an interrupted evaluation of the same samples, or one of a smaller
/// seeded subset that this one extends (a seeded subset's first draws are the smaller subset). A last line cut
/// off mid-write is dropped from the file.
fn finished_predictions(
    path: &Path,
    samples: &[(usize, &minirec_data::Sample)],
    ds: &PreparedDataset,
) -> Result<Vec<Prediction>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let text = std::str::from_utf8(&bytes[..whole])
        .with_context(|| format!("{}: not UTF-8", path.display()))?;
    let mut wanted: HashMap<usize, &str> = samples
        .iter()
        .map(|(i, s)| (*i, ds.target_title(s)))
        .collect();
    let mut done = Vec::new();
    for (k, line) in text.lines().enumerate() {
        let p: Prediction = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a prediction", path.display(), k + 1))?;
        // Each sample once: a sample taken already is no longer wanted.
        let target = p.sample.and_then(|i| wanted.remove(&i));
        if target != Some(p.target.as_str()) {
            bail!(
                "{}:{}: holds sample {:?} ({:?}), which this evaluation does not rank{}: it is another \
                 evaluation's file; remove it or drop --resume",
                path.display(),
                k + 1,
                p.sample,
                p.target,
                match target {
                    Some(t) => format!(" with that target (its target is {t:?})"),
                    None => " (or has ranked already)".into(),
                }
            );
        }
        done.push(p);
    }
    if whole < bytes.len() {
        let f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.set_len(whole as u64)?;
    }
    Ok(done)
}

/// Beam-searches every title for each sample (its split position and the sample) and scores the ranked
/// lists. With `out`, each batch's lists are appended there as it finishes; with `resume`, the lists already in
/// `out` are kept and only the remaining samples ranked, so a killed evaluation loses one batch at most.
#[allow(clippy::too_many_arguments)]
pub fn rank_samples(
    model: &minirec_model::Decoder,
    tok: &minirec_model::TextTokenizer,
    ds: &PreparedDataset,
    samples: &[(usize, &minirec_data::Sample)],
    job: &BeamJob,
    out: Option<&Path>,
    resume: bool,
    progress: bool,
) -> Result<MetricsReport> {
    let mut metrics = RankingMetrics::new(job.ks);
    let done = match (out, resume) {
        (Some(p), true) => finished_predictions(p, samples, ds)?,
        _ => Vec::new(),
    };
    for p in &done {
        metrics.add(&p.target, &p.ranked);
    }
    if !done.is_empty() {
        tracing::info!(
            "resuming: {} of {} samples already ranked",
            done.len(),
            samples.len()
        );
    }
    let mut w = match out {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(resume)
                .write(true)
                .truncate(!resume)
                .open(p)
                .with_context(|| format!("opening {}", p.display()))?,
        ),
        None => None,
    };
    let ranked_already: HashSet<usize> = done.iter().filter_map(|p| p.sample).collect();
    let rest: Vec<(usize, &minirec_data::Sample)> = samples
        .iter()
        .filter(|(i, _)| !ranked_already.contains(i))
        .copied()
        .collect();
    let titles = ds.catalog.titles().to_vec();
    let index = ItemIndex::build(tok, &titles, |t| ds.prompt.response(t))?;
    let pb = if progress {
        indicatif::ProgressBar::new(samples.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    pb.set_position(done.len() as u64);
    let batches: Vec<&[(usize, &minirec_data::Sample)]> = rest.chunks(job.batch.max(1)).collect();
    let rank = |sams: &&[(usize, &minirec_data::Sample)]| -> Result<Vec<Prediction>> {
        let prompts: Vec<String> = sams
            .iter()
            .map(|(_, s)| ds.prompt.render(ds.history_titles(s)))
            .collect();
        let ranked = beam_search(model, &index, &tok.encode_batch(&prompts)?, job.beam)?;
        Ok(ranked
            .iter()
            .zip(sams.iter())
            .map(|(r, (i, s))| Prediction {
                target: ds.target_title(s).to_string(),
                ranked: r.iter().map(|x| titles[x.title as usize].clone()).collect(),
                sample: Some(*i),
            })
            .collect())
    };
    let lanes = if model.device().is_cpu() {
        job.lanes.max(1)
    } else {
        1
    };
    let threads = (candle_core::utils::get_num_threads() / lanes).max(1);
    crate::lanes::in_order(&batches, lanes, threads, rank, |preds| {
        let mut lines = Vec::new();
        for p in &preds {
            metrics.add(&p.target, &p.ranked);
            serde_json::to_writer(&mut lines, p)?;
            lines.push(b'\n');
        }
        // One write per batch, so a kill leaves whole batches (and at most one cut line, dropped on resume).
        if let Some(f) = w.as_mut() {
            f.write_all(&lines)?;
        }
        pb.inc(preds.len() as u64);
        Ok(())
    })?;
    pb.finish_and_clear();
    if let Some(f) = w {
        f.sync_all()?;
    }
    Ok(metrics.report())
}
