//! `report.md`: the experiment's tables (the RISER Table 2 analogue, the MiniRec Table 2 analogue, the
//! differences with their bootstrap intervals, stage times) and its reward and entropy curves.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use minirec_data::PreparedDataset;
use minirec_eval::MetricsReport;

use crate::experiment::Experiment;
use crate::runner::{RlSet, StageTimes};

/// Trailing moving average over `k` points.
fn moving_average(pts: &[(f64, f64)], k: usize) -> Vec<(f64, f64)> {
    (0..pts.len())
        .map(|i| {
            let from = (i + 1).saturating_sub(k.max(1));
            let w = &pts[from..=i];
            (
                pts[i].0,
                w.iter().map(|p| p.1).sum::<f64>() / w.len() as f64,
            )
        })
        .collect()
}

/// A metrics JSON written by an evaluation, if it exists and parses.
pub(crate) fn read_metrics(path: &Path) -> Option<MetricsReport> {
    let v: serde_json::Value = minirec_data::fsutil::read_json(path).ok()?;
    MetricsReport::from_json(&v)
}

/// A row of the metric tables: the six means, the row's own NDCG@10 and HR@10 intervals, then `extra`.
fn metrics_row(
    name: &str,
    r: Option<&MetricsReport>,
    ci: &[String; 2],
    extra: &[String],
) -> String {
    let g = |k: &str| {
        r.and_then(|r| r.get(k))
            .map(|v| format!("{v:.4}"))
            .unwrap_or_else(|| "–".into())
    };
    let mut row = format!(
        "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
        g("ndcg@5"),
        g("ndcg@10"),
        g("ndcg@20"),
        g("hr@5"),
        g("hr@10"),
        g("hr@20"),
        ci[0],
        ci[1]
    );
    for x in extra {
        write!(row, " {x} |").expect("string");
    }
    row
}

const HEADER: &str =
    "| NDCG@5 | NDCG@10 | NDCG@20 | HR@5 | HR@10 | HR@20 | NDCG@10 [95%] | HR@10 [95%] |";
/// The rule under `| name {HEADER}`.
const RULE: &str = "|---|---|---|---|---|---|---|---|---|";

/// Row `name`'s own NDCG@10 and HR@10 intervals (bootstrap of the mean, 1,000 resamples, the experiment's
/// seed) from its per-sample lists (`eval/{name}.predictions.jsonl`); "–" until they hold `r`'s samples.
fn interval_cells(e: &Experiment, name: &str, r: Option<&MetricsReport>) -> [String; 2] {
    let lists = e.out.join("eval").join(format!("{name}.predictions.jsonl"));
    let p = match (r, minirec_eval::read_predictions(&lists)) {
        (Some(r), Ok(p)) if p.len() as u64 == r.n => p,
        _ => return ["–".into(), "–".into()],
    };
    let iv = minirec_eval::mean_intervals(&p, &[10], 1000, e.seed);
    let cell = |m: &str| {
        iv.iter()
            .find(|x| x.metric == m)
            .map_or("–".into(), |x| format!("[{:.4}, {:.4}]", x.low, x.high))
    };
    [cell("ndcg@10"), cell("hr@10")]
}

fn secs(t: Option<f64>) -> String {
    t.map(|s| format!("{s:.0} s")).unwrap_or_else(|| "–".into())
}

/// Wall time of every finished stage (summed over the invocations that ran it), then the time spent so far in
/// stages no invocation has finished (outside the total).
fn stage_times_section(times: &StageTimes, unfinished: &[(String, f64)]) -> String {
    let mut rows = String::new();
    let mut total = 0.0;
    for (stage, s) in times.iter() {
        total += s;
        writeln!(rows, "| {stage} | {s:.0} | {:.2} |", s / 3600.0).expect("string");
    }
    if rows.is_empty() && unfinished.is_empty() {
        return rows;
    }
    writeln!(rows, "| total | {total:.0} | {:.2} |", total / 3600.0).expect("string");
    for (stage, s) in unfinished {
        writeln!(
            rows,
            "| {stage} (unfinished, so far) | {s:.0} | {:.2} |",
            s / 3600.0
        )
        .expect("string");
    }
    format!("## Wall time per stage\n\n| stage | seconds | hours |\n|---|---|---|\n{rows}\n")
}

/// The rows `[eval] whole` names, on every sample of the split: the table whose differences the subset cannot
/// resolve. A row whose whole-split evaluation is unfinished reads "–".
fn whole_split_section(e: &Experiment, ds: &PreparedDataset) -> Result<String> {
    if e.eval.whole.is_empty() {
        return Ok(String::new());
    }
    let len = crate::runner::eval_split(e, ds)?.len() as u64;
    let dir = e.out.join("eval");
    let mut md = format!(
        "## The whole {} split ({len} samples)\n\n| model {HEADER}\n{RULE}\n",
        e.eval.split
    );
    for name in &e.eval.whole {
        let r = read_metrics(&dir.join(format!("{name}.whole.json"))).filter(|r| r.n == len);
        let whole = format!("{name}.whole");
        let ci = interval_cells(e, &whole, r.as_ref());
        writeln!(md, "{}", metrics_row(name, r.as_ref(), &ci, &[]))?;
    }
    md.push('\n');
    Ok(md)
}

/// The plain-GRPO row of the same set as a RISER row ("full-riser" -> "full-grpo").
fn grpo_peer(row: &str) -> Option<String> {
    row.strip_suffix("-riser").map(|set| format!("{set}-grpo"))
}

/// Paired-bootstrap differences (1,000 resamples, seeded) of each RL row against SFT, of each selection row
/// against Random of the same size, and of the whole-split rows against SFT's, from the predictions files.
fn significance_section(
    e: &Experiment,
    sets: &[RlSet],
    results: &BTreeMap<String, MetricsReport>,
    main_variant: &str,
) -> Result<String> {
    let mut pairs: Vec<(String, String)> = results
        .keys()
        .filter(|k| *k != "sft" && !k.starts_with("baseline:"))
        .map(|k| ("sft".to_string(), k.clone()))
        .collect();
    for set in sets
        .iter()
        .filter(|s| s.method != "random" && s.ablation.is_none())
    {
        if let Some(size) = set.size {
            let reference = format!("random-{size}-{main_variant}");
            pairs.push((reference, format!("{}-{main_variant}", set.label)));
        }
    }
    for w in e.eval.whole.iter().filter(|w| *w != "sft") {
        pairs.push(("sft.whole".into(), format!("{w}.whole")));
        if let Some(grpo) = grpo_peer(w).filter(|g| e.eval.whole.contains(g)) {
            pairs.push((format!("{grpo}.whole"), format!("{w}.whole")));
        }
    }
    // RISER against plain GRPO on the same set: the claim of RISER's Table 2.
    for k in results.keys() {
        if let Some(grpo) = grpo_peer(k).filter(|g| results.contains_key(g)) {
            pairs.push((grpo, k.clone()));
        }
    }
    // What changes one thing in RISER (demonstrations, a component off) against RISER on the same set.
    for k in results.keys() {
        if let Some((set, v)) = k.split_once("-riser-") {
            let v = format!("riser-{v}");
            if let Some(r) = crate::variant::reference(&v) {
                pairs.push((format!("{set}-{r}"), k.clone()));
            }
        }
    }
    let dir = e.out.join("eval");
    let file = |n: &str| dir.join(format!("{n}.predictions.jsonl"));
    // Only finished evaluations: the lists of one still running (or growing to a larger sample) hold other
    // samples than its reference's.
    let finished = |n: &str| match n.strip_suffix(".whole") {
        Some(_) => read_metrics(&dir.join(format!("{n}.json"))).is_some(),
        None => results.contains_key(n),
    };
    let mut rows = String::new();
    for (a, b) in pairs
        .iter()
        .filter(|(a, b)| finished(a) && finished(b) && file(a).is_file() && file(b).is_file())
    {
        let c = crate::compare::compare_files(&file(a), &file(b), &[10, 20], 1000, e.seed)?;
        let cell = |m: &str| {
            c.metrics
                .iter()
                .find(|d| d.metric == m)
                .map_or("–".into(), |d| {
                    let mark = if d.resolved() { " **resolved**" } else { "" };
                    format!("{:+.4} [{:+.4}, {:+.4}]{mark}", d.diff, d.low, d.high)
                })
        };
        let top = crate::compare::target_shares_of_files(&file(a), &file(b), 10, 1)?;
        writeln!(
            rows,
            "| {b} | {a} | {} | {} | {} | {} | {} |",
            c.n,
            cell("ndcg@10"),
            cell("hr@10"),
            cell("hr@20"),
            largest_share(&top)
        )?;
    }
    if rows.is_empty() {
        return Ok(String::new());
    }
    Ok(format!(
        "## Differences with 95% intervals (paired bootstrap, 1,000 resamples, seed {})\n\n\
         Row minus reference on the same samples; **resolved**: the interval excludes 0. \
         `minirec compare eval/A.predictions.jsonl eval/B.predictions.jsonl` gives every cut-off. The last \
         column is the one target item whose test samples carry the most of ΔNDCG@10 (its share, its samples): RL \
         on a few hundred prompts moves the items it rewarded, and one item can carry a whole difference \
         (`minirec compare --by-target N` lists more).\n\n\
         | row | reference | samples | ΔNDCG@10 | ΔHR@10 | ΔHR@20 | largest item share of ΔNDCG@10 |\n\
         |---|---|---|---|---|---|---|\n{rows}\n",
        e.seed
    ))
}

/// "+0.0038: AcuRite 00613 Humidity Monitor with… (88 samples)".
fn largest_share(t: &minirec_eval::TargetShares) -> String {
    let Some(top) = t.top.first().filter(|s| s.contribution != 0.0) else {
        return "– (no item moved it)".into();
    };
    let title: String = if top.target.chars().count() > 40 {
        top.target.chars().take(40).collect::<String>() + "…"
    } else {
        top.target.clone()
    };
    format!(
        "{:+.4}: {} ({} samples)",
        top.contribution,
        title.replace('|', "\\|"),
        top.samples
    )
}

pub(crate) fn write_report(
    e: &Experiment,
    ds: &PreparedDataset,
    sets: &[RlSet],
    results: &BTreeMap<String, MetricsReport>,
    times: &StageTimes,
) -> Result<String> {
    let mut md = String::new();
    let n_eval = results.get("sft").map(|r| r.n).unwrap_or(0);
    let model = match (&e.model.path, &e.model.preset) {
        (Some(p), _) => p.display().to_string(),
        (_, Some(p)) => format!("{p} (from scratch)"),
        _ => String::new(),
    };
    writeln!(md, "# minirec experiment report\n")?;
    writeln!(
        md,
        "Data: {} items / {} titles; train {}, valid {}, test {}. Model: {model}. Seed {}. \
         Evaluation: {} split ({n_eval} samples), all-ranking by trie-constrained beam search (width {}{}).\n\
         RL: {} epoch(s) over each training set{}, {} prompts/step, {} rollouts kept to {}, lr {:e}.\n",
        ds.catalog.len(),
        ds.catalog.num_titles(),
        ds.train.len(),
        ds.valid.len(),
        ds.test.len(),
        e.seed,
        e.eval.split,
        e.eval.beam,
        if e.eval.bf16_weights {
            "; frozen weights in bf16"
        } else {
            ""
        },
        e.rl.epochs,
        step_cap(e.rl.max_steps),
        e.rl.prompts_per_step,
        e.rl.rollouts,
        e.rl.keep,
        e.rl.lr,
    )?;
    let main_variant =
        e.rl.variants
            .first()
            .cloned()
            .unwrap_or_else(|| "riser".into());
    // Selection methods (MiniRec Table 2); an experiment without methods trains on the full set only.
    let sizes: &[usize] = if e.select.methods.is_empty() {
        &[]
    } else {
        &e.select.sizes
    };
    for &size in sizes {
        writeln!(
            md,
            "## RL on {size} selected samples vs all ({main_variant})\n"
        )?;
        writeln!(
            md,
            "| training set {HEADER} selection | RL |\n{RULE}---|---|"
        )?;
        for set in sets
            .iter()
            .filter(|s| s.size == Some(size) && s.ablation.is_none())
        {
            let name = format!("{}-{main_variant}", set.label);
            let extra = [
                secs(times.get(&format!("select:{}", set.label))),
                secs(times.get(&format!("rl:{name}"))),
            ];
            let r = results.get(&name);
            let ci = interval_cells(e, &name, r);
            writeln!(md, "{}", metrics_row(&set.method, r, &ci, &extra))?;
        }
        if e.select.full {
            let name = format!("full-{main_variant}");
            let extra = ["–".to_string(), secs(times.get(&format!("rl:{name}")))];
            let (r, label) = (results.get(&name), format!("full ({})", ds.train.len()));
            let ci = interval_cells(e, &name, r);
            writeln!(md, "{}", metrics_row(&label, r, &ci, &extra))?;
        }
        let ci = interval_cells(e, "sft", results.get("sft"));
        let none = ["–".into(), "–".into()];
        writeln!(
            md,
            "{}\n",
            metrics_row("SFT only", results.get("sft"), &ci, &none)
        )?;
    }
    // Ablations (MiniRec Table 4).
    if let (Some(&size), false) = (e.select.sizes.first(), e.select.ablations.is_empty()) {
        writeln!(md, "## MiniRec ablations ({size} samples)\n")?;
        writeln!(md, "| variant {HEADER}\n{RULE}")?;
        let base = format!("minirec-{size}-{main_variant}");
        let rows = std::iter::once(("MiniRec".to_string(), base)).chain(
            e.select.ablations.iter().map(|ab| {
                let title = format!("w/o {}", ab.trim_start_matches("no-"));
                (title, format!("minirec-{size}-{ab}-{main_variant}"))
            }),
        );
        for (title, name) in rows {
            let r = results.get(&name);
            writeln!(
                md,
                "{}",
                metrics_row(&title, r, &interval_cells(e, &name, r), &[])
            )?;
        }
        writeln!(md)?;
    }
    // Trainers (RISER Table 2): whichever of GRPO and RISER ran on the full set (or both on one subset),
    // beside SFT.
    if !sets.is_empty() && (e.select.full || e.rl.variants.len() > 1) {
        writeln!(
            md,
            "## Trainers on {}\n",
            if e.select.full {
                "all training samples"
            } else {
                "the selected samples"
            }
        )?;
        writeln!(md, "| model {HEADER}\n{RULE}")?;
        let sft = results.get("sft");
        writeln!(
            md,
            "{}",
            metrics_row("SFT", sft, &interval_cells(e, "sft", sft), &[])
        )?;
        let label = if e.select.full {
            "full".to_string()
        } else {
            sets.first().map(|s| s.label.clone()).unwrap_or_default()
        };
        for (v, title) in crate::variant::VARIANTS
            .iter()
            .filter(|(v, _)| e.rl.variants.iter().any(|x| x == v))
        {
            let name = format!("{label}-{v}");
            let r = results.get(&name);
            writeln!(
                md,
                "{}",
                metrics_row(title, r, &interval_cells(e, &name, r), &[])
            )?;
        }
        writeln!(md)?;
    }
    md.push_str(&whole_split_section(e, ds)?);
    md.push_str(&significance_section(e, sets, results, &main_variant)?);
    md.push_str(&stage_times_section(
        times,
        &crate::stage_times::unfinished(&e.out),
    ));
    // Classic baselines (RISER Table 1).
    if !e.baselines.models.is_empty() {
        writeln!(
            md,
            "## Classic sequential recommenders (same split, same metrics)\n"
        )?;
        writeln!(md, "| model {HEADER} training |\n{RULE}---|")?;
        for (k, r) in results.iter().filter(|(k, _)| k.starts_with("baseline:")) {
            let name = k.trim_start_matches("baseline:");
            let label = name.replace("-text", "*");
            let ci = interval_cells(e, &format!("baseline-{name}"), Some(r));
            writeln!(
                md,
                "{}",
                metrics_row(&label, Some(r), &ci, &[secs(times.get(k))])
            )?;
        }
        writeln!(md)?;
    }
    // The runs' RL logs, for the training table and the curves.
    let logs: Vec<(String, PathBuf)> = results
        .keys()
        .filter(|k| *k != "sft" && !k.starts_with("baseline:"))
        .map(|k| (k.clone(), e.out.join("rl").join(k).join("rl_log.jsonl")))
        .filter(|(_, p)| p.is_file())
        .collect();
    md.push_str(&crate::rl_training::rl_training_section(
        &logs,
        e.rl.prompts_per_step,
    )?);
    // Curves.
    let mut curves = String::new();
    for dir in results
        .keys()
        .filter(|k| *k != "sft" && !k.starts_with("baseline:"))
    {
        let svg = Path::new("rl").join(dir).join("rl_mean_reward.svg");
        if e.out.join(&svg).is_file() {
            writeln!(
                curves,
                "- {dir}: [reward]({}) · [entropy]({})",
                svg.display(),
                Path::new("rl").join(dir).join("rl_entropy.svg").display()
            )?;
        }
    }
    if !curves.is_empty() {
        // All runs on one chart per metric, smoothed over 8 steps so the methods can be told apart.
        writeln!(md, "## Training curves\n")?;
        for (key, file, label) in [
            ("mean_reward", "rewards.svg", "mean reward per rollout"),
            ("entropy", "entropy.svg", "entropy estimate"),
        ] {
            let series: Vec<(String, Vec<(f64, f64)>)> =
                minirec_train::plot::series_from_logs(&logs, key)
                    .into_iter()
                    .map(|(n, pts)| (n, moving_average(&pts, 8)))
                    .collect();
            minirec_train::plot::multi_line_chart(&e.out.join(file), label, key, &series)?;
            writeln!(md, "![{label}]({file})\n")?;
        }
        writeln!(md, "Per run:\n\n{curves}")?;
    }
    minirec_data::fsutil::write_atomic(&e.out.join("report.md"), |w| {
        std::io::Write::write_all(w, md.as_bytes())
    })?;
    Ok(md)
}

/// The report's note of `[rl] max_steps` when it caps the runs.
fn step_cap(max_steps: usize) -> String {
    match max_steps {
        0 => String::new(),
        n => format!(" (at most {n} step{})", if n == 1 { "" } else { "s" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rows_own_interval_comes_from_its_lists_once_they_hold_every_sample() {
        let dir = tempfile::tempdir().unwrap();
        let toml = "out = \"o\"\n[data]\ndemo_users = 50\n[model]\npreset = \"tiny\"\n";
        let mut e: Experiment = toml::from_str(toml).unwrap();
        e.out = dir.path().to_path_buf();
        std::fs::create_dir_all(dir.path().join("eval")).unwrap();
        let lists = dir.path().join("eval/sft.predictions.jsonl");
        // Hits at ranks 1 and 12 and two misses: NDCG@10 per sample 1, 0, 0, 0.
        let ranked: Vec<String> = (0..20).map(|i| format!("\"t{i}\"")).collect();
        let line = |target: &str| {
            format!(
                "{{\"target\":\"{target}\",\"ranked\":[{}]}}\n",
                ranked.join(",")
            )
        };
        std::fs::write(
            &lists,
            [line("t0"), line("t11"), line("x"), line("y")].concat(),
        )
        .unwrap();
        let r = minirec_eval::score_predictions_file(&lists, &[10]).unwrap();
        let expect = minirec_eval::bootstrap_interval(&[1.0, 0.0, 0.0, 0.0], 1000, e.seed);
        let ci = interval_cells(&e, "sft", Some(&r));
        assert_eq!(ci[0], format!("[{:.4}, {:.4}]", expect.0, expect.1));
        assert_eq!(ci[0], ci[1], "HR@10 has the same per-sample values here");
        // Metrics of more samples than the lists hold (an evaluation still growing), or no lists: no interval.
        let grown = MetricsReport { n: 5, ..r.clone() };
        assert_eq!(interval_cells(&e, "sft", Some(&grown)), ["–", "–"]);
        assert_eq!(interval_cells(&e, "full-grpo", Some(&r)), ["–", "–"]);
        assert_eq!(interval_cells(&e, "sft", None), ["–", "–"]);
    }

    #[test]
    fn the_stage_table_totals_finished_stages_and_lists_unfinished_ones_apart() {
        let dir = tempfile::tempdir().unwrap();
        let mut times = StageTimes::load(dir.path());
        assert_eq!(stage_times_section(&times, &[]), "");
        times.record(dir.path(), "sft", 3600.0).unwrap();
        times.record(dir.path(), "eval:sft", 1800.0).unwrap();
        let md = stage_times_section(&times, &[("rl:full-riser".into(), 900.0)]);
        assert!(md.contains("| total | 5400 | 1.50 |"), "{md}");
        assert!(
            md.contains("| rl:full-riser (unfinished, so far) | 900 | 0.25 |"),
            "{md}"
        );
        let total_at = md.find("| total |").unwrap();
        assert!(md.find("unfinished").unwrap() > total_at, "{md}");
    }
}
