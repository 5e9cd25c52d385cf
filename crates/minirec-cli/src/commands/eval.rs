use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use minirec_data::Split;
use minirec_eval::{
    intervals_json, intervals_table, mean_intervals, parse_ks, read_predictions,
    score_predictions_file,
};
use minirec_pipeline::baseline::{seed_std, BaselineEval};
use minirec_pipeline::eval::{evaluate_model, EvalJob};

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
    /// Batches decoded at once on the CPU, each on its share of the threads (2 on 2 cores: 1.14× the prompts
    /// per second of one batch on both; the same lists).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    lanes: u64,
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
    /// Bootstrap resamples for each metric's 95% interval, printed when the per-sample lists are at hand
    /// (--predictions, or --model with --predictions-out); 0: none.
    #[arg(long, default_value_t = 1000)]
    resamples: usize,
    #[arg(long, default_value_t = 42)]
    bootstrap_seed: u64,
}

pub fn run(a: EvalArgs, progress: bool) -> Result<()> {
    let ks = parse_ks(&a.k).map_err(|e| anyhow::anyhow!("--k: {e}"))?;
    let (report, baseline) = match (&a.predictions, &a.model) {
        (Some(p), None) => (score_predictions_file(p, &ks)?, None),
        (None, Some(m)) => {
            let data = a
                .data
                .as_ref()
                .context("--model needs --data (a prepared dataset)")?;
            let job = EvalJob {
                split: a.split,
                beam: a.beam,
                batch: a.batch,
                limit: a.limit,
                sample: a.sample,
                sample_seed: a.sample_seed,
                ks: ks.clone(),
                predictions_out: a.predictions_out.clone(),
                resume: a.resume,
                cpu: a.cpu,
                lanes: a.lanes as usize,
            };
            let e = evaluate_model(m, data, &job, progress)?;
            (e.report, e.baseline)
        }
        (Some(_), Some(_)) => bail!("give either --predictions or --model, not both"),
        (None, None) => bail!("give --predictions FILE, or --model PATH with --data DIR"),
    };
    // Each metric's own interval needs the per-sample lists: the file scored, or the one just written.
    let lists = a.predictions.as_ref().or(a.predictions_out.as_ref());
    let intervals = match lists {
        Some(p) if a.resamples > 0 && baseline.is_none() => Some(mean_intervals(
            &read_predictions(p)?,
            &ks,
            a.resamples,
            a.bootstrap_seed,
        )),
        _ => None,
    };
    match &intervals {
        Some(iv) => print!(
            "{}",
            intervals_table(report.n, &ks, iv, a.resamples, a.bootstrap_seed)
        ),
        None => print!("{}", report.table()),
    }
    if let Some(b) = &baseline {
        print!("{}", baseline_tables(b));
    }
    if report.lists_with_repeats > 0 {
        tracing::warn!(
            "{} ranked lists repeated a title; repeats were dropped before ranking",
            report.lists_with_repeats
        );
    }
    if let Some(out) = &a.json {
        let mut json = report.to_json();
        if let Some(iv) = &intervals {
            json["intervals"] = intervals_json(iv, a.resamples, a.bootstrap_seed);
        }
        if let Some(b) = &baseline {
            json["item_level"] = b.items.to_json();
            json["seeds"] = seeds_json(b);
        }
        minirec_data::fsutil::write_json_atomic(out, &json)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// A classic model's item-level metrics and, for several seeds, mean ± std at both levels.
fn baseline_tables(b: &BaselineEval) -> String {
    let mut s =
        String::from("item-level (each item id on its own; the table above counts titles):\n");
    s.push_str(&b.items.table());
    if b.seeds.len() > 1 {
        s.push_str(&format!("over {} seeds, mean ± std:\n", b.seeds.len()));
        for (level, items) in [("title", false), ("item", true)] {
            for m in b.titles.as_map().keys() {
                let mean = if items { &b.items } else { &b.titles }
                    .get(m)
                    .unwrap_or(0.0);
                s.push_str(&format!(
                    "  {level:<5} {m:<8} {mean:.4} ± {:.4}\n",
                    seed_std(b, items, m)
                ));
            }
        }
    }
    s
}

/// Each seed's metrics, and the standard deviations over them: `{"42": {...}, ..., "std": {...}}`.
fn seeds_json(b: &BaselineEval) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (seed, t, i) in &b.seeds {
        let mut v = t.to_json();
        v["item_level"] = i.to_json();
        m.insert(seed.map_or("single".into(), |s| s.to_string()), v);
    }
    let mut std = serde_json::Map::new();
    for k in b.titles.as_map().keys() {
        std.insert(k.clone(), seed_std(b, false, k).into());
        std.insert(format!("item_{k}"), seed_std(b, true, k).into());
    }
    m.insert("std".into(), std.into());
    m.into()
}
