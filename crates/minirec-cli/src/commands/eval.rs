use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use minirec_data::{PreparedDataset, Split};
use minirec_eval::{parse_ks, score_predictions_file, MetricsReport, Prediction, RankingMetrics};
use minirec_model::decode::{beam_search, ItemIndex};
use minirec_model::load::{default_dtype, pick_device};

#[derive(Args)]
pub struct EvalArgs {
    /// Predictions to score: JSON Lines {"target": "...", "ranked": ["...", ...]}, best first.
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// A model or run to evaluate on --data: an LLM (trie-constrained beam search over every title) or a
    /// `minirec baseline` run (every item scored, ranked by title).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The prepared dataset (with --model).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value = "test")]
    split: Split,
    /// Beam width: the number of ranked titles per sample.
    #[arg(long, default_value_t = 20)]
    beam: usize,
    /// Prompts decoded together.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Evaluate only the first N samples of the split.
    #[arg(long, conflicts_with = "sample")]
    limit: Option<usize>,
    /// Evaluate a seeded random subset of N samples of the split (the same N and seed give the same samples,
    /// so every system is scored on one fixed subset).
    #[arg(long)]
    sample: Option<usize>,
    #[arg(long, default_value_t = 42)]
    sample_seed: u64,
    /// Also write the ranked titles per sample (the predictions format) here, a batch at a time.
    #[arg(long)]
    predictions_out: Option<PathBuf>,
    /// Continue the --predictions-out file of an interrupted evaluation: its samples are kept, the rest ranked.
    #[arg(long, requires = "predictions_out")]
    resume: bool,
    #[arg(long)]
    cpu: bool,
    /// Cut-offs K for HR@K and NDCG@K.
    #[arg(long, default_value = "5,10,20")]
    k: String,
    /// Write the metrics as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(a: EvalArgs, progress: bool) -> Result<()> {
    let ks = parse_ks(&a.k).map_err(|e| anyhow::anyhow!("--k: {e}"))?;
    let report = match (&a.predictions, &a.model) {
        (Some(p), None) => score_predictions_file(p, &ks)?,
        (None, Some(m)) => {
            let data = a
                .data
                .as_ref()
                .context("--model needs --data (a prepared dataset)")?;
            evaluate_model(&a, m, data, &ks, progress)?
        }
        (Some(_), Some(_)) => bail!("give either --predictions or --model, not both"),
        (None, None) => bail!("give --predictions FILE, or --model PATH with --data DIR"),
    };
    print!("{}", report.table());
    if report.lists_with_repeats > 0 {
        tracing::warn!(
            "{} ranked lists repeated a title; repeats were dropped before ranking",
            report.lists_with_repeats
        );
    }
    if let Some(out) = &a.json {
        minirec_data::fsutil::write_json_atomic(out, &report.to_json())
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// Ranks every title for each sample of the split with beam search and scores the lists.
fn evaluate_model(
    a: &EvalArgs,
    model: &Path,
    data: &Path,
    ks: &[usize],
    progress: bool,
) -> Result<MetricsReport> {
    let ds = PreparedDataset::load(data)?;
    let split = ds.split(a.split);
    let picked = pick_samples(split.len(), a.limit, a.sample, a.sample_seed);
    if picked.is_empty() {
        bail!("the {} split of {} is empty", a.split, data.display());
    }
    let samples: Vec<(usize, &minirec_data::Sample)> =
        picked.iter().map(|&i| (i, &split[i])).collect();
    let samples = by_prompt_length(&ds, samples);
    if super::baseline::is_run(model) {
        let only: Vec<minirec_data::Sample> = samples.iter().map(|(_, s)| (*s).clone()).collect();
        let (report, ranked) = super::baseline::evaluate_run(model, &ds, &only, ks, a.cpu)?;
        if let Some(p) = &a.predictions_out {
            minirec_data::fsutil::write_jsonl_atomic(
                p,
                samples.iter().zip(ranked).map(|((i, s), r)| Prediction {
                    target: ds.target_title(s).to_string(),
                    ranked: r,
                    sample: Some(*i),
                }),
            )?;
        }
        return Ok(report);
    }
    let device = pick_device(a.cpu)?;
    let loaded = super::model_arg::load_llm(model, "model", &device, default_dtype(&device))?;
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
        },
        a.predictions_out.as_deref(),
        a.resume,
        progress,
    )
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

/// How an evaluation ranks: the beam width (titles per list), prompts decoded together, the cut-offs scored.
pub struct BeamJob<'a> {
    pub beam: usize,
    pub batch: usize,
    pub ks: &'a [usize],
}

/// The predictions an interrupted evaluation already wrote to `path`, checked against `samples` (the same
/// samples, in the same order); a last line cut off mid-write is dropped from the file.
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
    let mut done = Vec::new();
    for (k, line) in text.lines().enumerate() {
        let p: Prediction = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a prediction", path.display(), k + 1))?;
        let want = samples.get(k).map(|(i, s)| (*i, ds.target_title(s)));
        if want != Some((p.sample.unwrap_or(usize::MAX), p.target.as_str())) {
            bail!(
                "{}:{}: holds sample {:?} ({:?}), but this evaluation's sample {} is {:?}: it is another \
                 evaluation's file; remove it or drop --resume",
                path.display(),
                k + 1,
                p.sample,
                p.target,
                k + 1,
                want
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
    let rest = &samples[done.len()..];
    let titles = ds.catalog.titles().to_vec();
    let index = ItemIndex::build(tok, &titles, |t| ds.prompt.response(t))?;
    let pb = if progress {
        indicatif::ProgressBar::new(samples.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    pb.set_position(done.len() as u64);
    for sams in rest.chunks(job.batch.max(1)) {
        let prompts: Vec<String> = sams
            .iter()
            .map(|(_, s)| ds.prompt.render(ds.history_titles(s)))
            .collect();
        let ranked = beam_search(model, &index, &tok.encode_batch(&prompts)?, job.beam)?;
        let mut lines = Vec::new();
        for (r, (i, s)) in ranked.iter().zip(sams) {
            let list: Vec<String> = r.iter().map(|x| titles[x.title as usize].clone()).collect();
            let p = Prediction {
                target: ds.target_title(s).to_string(),
                ranked: list,
                sample: Some(*i),
            };
            metrics.add(&p.target, &p.ranked);
            serde_json::to_writer(&mut lines, &p)?;
            lines.push(b'\n');
        }
        // One write per batch, so a kill leaves whole batches (and at most one cut line, dropped on resume).
        if let Some(f) = w.as_mut() {
            f.write_all(&lines)?;
        }
        pb.inc(sams.len() as u64);
    }
    pb.finish_and_clear();
    if let Some(f) = w {
        f.sync_all()?;
    }
    Ok(metrics.report())
}
