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
    #[arg(long)]
    limit: Option<usize>,
    /// Also write the ranked titles per sample (the predictions format) here.
    #[arg(long)]
    predictions_out: Option<PathBuf>,
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
    let samples = ds.split(a.split);
    let samples = &samples[..a.limit.unwrap_or(samples.len()).min(samples.len())];
    if samples.is_empty() {
        bail!("the {} split of {} is empty", a.split, data.display());
    }
    if super::baseline::is_run(model) {
        let (report, ranked) = super::baseline::evaluate_run(model, &ds, samples, ks, a.cpu)?;
        if let Some(p) = &a.predictions_out {
            minirec_data::fsutil::write_jsonl_atomic(
                p,
                samples.iter().zip(ranked).map(|(s, r)| Prediction {
                    target: ds.target_title(s).to_string(),
                    ranked: r,
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
    let out = match &a.predictions_out {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    rank_samples(
        &loaded.model,
        &loaded.tokenizer,
        &ds,
        samples,
        a.beam,
        a.batch,
        ks,
        out,
        progress,
    )
}

/// Beam-searches every title for each sample and scores the ranked lists; writes them to `out` if given.
#[allow(clippy::too_many_arguments)]
pub fn rank_samples(
    model: &minirec_model::Decoder,
    tok: &minirec_model::TextTokenizer,
    ds: &PreparedDataset,
    samples: &[minirec_data::Sample],
    beam: usize,
    batch: usize,
    ks: &[usize],
    mut out: Option<std::io::BufWriter<std::fs::File>>,
    progress: bool,
) -> Result<MetricsReport> {
    let titles = ds.catalog.titles().to_vec();
    let index = ItemIndex::build(tok, &titles, |t| ds.prompt.response(t))?;
    let prompts: Vec<String> = samples
        .iter()
        .map(|s| ds.prompt.render(ds.history_titles(s)))
        .collect();
    let ids = tok.encode_batch(&prompts)?;
    let mut metrics = RankingMetrics::new(ks);
    let pb = if progress {
        indicatif::ProgressBar::new(samples.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    for (chunk, sams) in ids.chunks(batch.max(1)).zip(samples.chunks(batch.max(1))) {
        let ranked = beam_search(model, &index, chunk, beam)?;
        for (r, s) in ranked.iter().zip(sams) {
            let list: Vec<String> = r.iter().map(|x| titles[x.title as usize].clone()).collect();
            let target = ds.target_title(s).to_string();
            metrics.add(&target, &list);
            if let Some(w) = out.as_mut() {
                serde_json::to_writer(
                    &mut *w,
                    &Prediction {
                        target,
                        ranked: list,
                    },
                )?;
                w.write_all(b"\n")?;
            }
        }
        pb.inc(sams.len() as u64);
    }
    pb.finish_and_clear();
    if let Some(mut w) = out {
        w.flush()?;
    }
    Ok(metrics.report())
}
