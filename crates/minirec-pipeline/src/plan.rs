//! `minirec run FILE --plan`: every stage of an experiment in the order the runner takes them, which are
//! finished (with their recorded wall time), which are part done, and how long the rest should take at the
//! rates this run's own finished stages of the same kind measured. Trains and evaluates nothing.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use minirec_data::PreparedDataset;

use crate::experiment::Experiment;
use crate::runner::{eval_size, finished_metrics, rl_sets, row_finished, set_variants, RlSet};
use crate::stage_times::{unfinished, StageTimes};

/// What a stage's time scales with, so that finished stages give a rate for the others.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Sft,
    /// A selection by this method: the methods' costs differ by hours (the first to need the LLM's scores
    /// computes the shared caches; Random takes milliseconds).
    Select(String),
    /// An RL run of this trainer; its units are steps.
    Rl(String),
    /// An evaluation; its units are ranked samples.
    Eval,
    Baseline,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Done,
    /// The rows it serves are finished, so the runner skips it.
    NotNeeded,
    Part,
    ToDo,
}

#[derive(Debug)]
struct Stage {
    name: String,
    kind: Kind,
    state: State,
    /// Steps or samples in all, and how many are done (0 where the stage has no such unit).
    units: usize,
    units_done: usize,
}

/// The plan as a table, with the totals on its first line.
pub fn plan(e: &Experiment) -> Result<String> {
    let data_dir = crate::runner::prepare_stage(e, false)?;
    let ds = PreparedDataset::load(&data_dir)?;
    let times = StageTimes::load(&e.out);
    let stages = stages(e, &ds, &times)?;
    let running: BTreeMap<String, f64> = unfinished(&e.out).into_iter().collect();
    Ok(render(e, &stages, &times, &running))
}

/// The stages in the runner's order (SFT, its evaluation, then each training set's selection, RL and
/// evaluation, then the classic baselines).
fn stages(e: &Experiment, ds: &PreparedDataset, times: &StageTimes) -> Result<Vec<Stage>> {
    let mut out = Vec::new();
    let sets = rl_sets(e, &e.out.join("select"));
    let rows_left = crate::runner::row_names(e, &sets)
        .iter()
        .any(|r| !row_finished(e, ds, r));
    if !e.sft.skip {
        let done = crate::manifest::exported(&e.out.join("sft")).is_some();
        out.push(simple("sft", Kind::Sft, done, !rows_left));
    }
    eval_stages(e, ds, "sft", &mut out)?;
    for set in sets {
        let rows: Vec<(&str, String)> = set_variants(e, &set)
            .into_iter()
            .map(|v| (v, format!("{}-{v}", set.label)))
            .collect();
        let pending = rows.iter().any(|(_, r)| !row_finished(e, ds, r));
        if let (Some(path), Some(_)) = (&set.subset, set.size) {
            let name = format!("select:{}", set.label);
            let kind = Kind::Select(set.method.clone());
            out.push(simple(&name, kind, path.is_file(), !pending));
        }
        for (variant, row) in rows {
            out.push(rl_stage(
                e,
                &set,
                variant,
                &row,
                row_finished(e, ds, &row),
                times,
            ));
            eval_stages(e, ds, &row, &mut out)?;
        }
    }
    for kind in &e.baselines.models {
        let text = e.baselines.text_init && kind.as_str() != "pop";
        for name in std::iter::once(kind.clone()).chain(text.then(|| format!("{kind}-text"))) {
            let done = e
                .out
                .join("eval")
                .join(format!("baseline-{name}.json"))
                .is_file();
            out.push(simple(
                &format!("baseline:{name}"),
                Kind::Baseline,
                done,
                false,
            ));
        }
    }
    Ok(out)
}

fn simple(name: &str, kind: Kind, done: bool, not_needed: bool) -> Stage {
    let state = match (done, not_needed) {
        (true, _) => State::Done,
        (false, true) => State::NotNeeded,
        (false, false) => State::ToDo,
    };
    Stage {
        name: name.into(),
        kind,
        state,
        units: 0,
        units_done: 0,
    }
}

/// Row `row`'s RL run: its steps from the file's settings, those logged so far from its `rl_log.jsonl`. A run
/// whose model is gone (a row restored or seeded without weights) is finished when its log and time are.
fn rl_stage(
    e: &Experiment,
    set: &RlSet,
    variant: &str,
    row: &str,
    row_done: bool,
    times: &StageTimes,
) -> Stage {
    let run = e.out.join("rl").join(row);
    let samples = set.size.unwrap_or(usize::MAX / 2);
    let steps = crate::rl_settings::rl_config(e, samples, variant).max_steps;
    let logged = log_lines(&run.join("rl_log.jsonl"));
    let name = format!("rl:{row}");
    let recorded = logged >= steps && times.get(&name).is_some();
    let state = if crate::manifest::exported(&run).is_some() || recorded {
        State::Done
    } else if row_done {
        State::NotNeeded
    } else if logged > 0 {
        State::Part
    } else {
        State::ToDo
    };
    Stage {
        name,
        kind: Kind::Rl(variant.to_string()),
        state,
        units: steps,
        units_done: logged.min(steps),
    }
}

/// Row `row`'s evaluation on the `[eval]` samples, and on the whole split when `[eval] whole` names it.
fn eval_stages(
    e: &Experiment,
    ds: &PreparedDataset,
    row: &str,
    out: &mut Vec<Stage>,
) -> Result<()> {
    let whole = e.eval.whole.iter().any(|w| w == row);
    for (name, is_whole) in [(row.to_string(), false), (format!("{row}.whole"), true)] {
        if is_whole && !whole {
            continue;
        }
        let n = eval_size(e, ds, is_whole)?;
        let lists = e.out.join("eval").join(format!("{name}.predictions.jsonl"));
        let ranked = log_lines(&lists).min(n);
        let state = if finished_metrics(e, ds, &name, is_whole).is_some() {
            State::Done
        } else if ranked > 0 {
            State::Part
        } else {
            State::ToDo
        };
        out.push(Stage {
            name: format!("eval:{name}"),
            kind: Kind::Eval,
            state,
            units: n,
            units_done: if state == State::Done { n } else { ranked },
        });
    }
    Ok(())
}

/// Lines of a JSON Lines file (0 when it does not exist).
fn log_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0)
}

/// Seconds per unit (or per stage, for kinds without units) measured by this run's finished stages.
#[derive(Debug, Default)]
struct Rates(BTreeMap<String, (f64, f64)>);

impl Rates {
    fn key(kind: &Kind) -> String {
        match kind {
            Kind::Rl(v) => format!("rl:{v}"),
            Kind::Select(m) => format!("select:{m}"),
            other => format!("{other:?}"),
        }
    }

    /// Sums each kind's seconds and units over the finished stages. An evaluation's units are the samples it
    /// ranked itself (a whole-split row starts from its subset's lists). A stage a hundred times faster than
    /// its kind's median took another row's lists (a model byte-for-byte that row's) and measures nothing.
    fn measure(stages: &[Stage], times: &StageTimes) -> Self {
        let subset_n: BTreeMap<&str, usize> = stages
            .iter()
            .filter(|s| s.kind == Kind::Eval && !s.name.ends_with(".whole"))
            .map(|s| (s.name.as_str(), s.units))
            .collect();
        let mut by_kind: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for s in stages.iter().filter(|s| s.state == State::Done) {
            let Some(secs) = times.get(&s.name) else {
                continue;
            };
            let units = match (&s.kind, s.name.strip_suffix(".whole")) {
                (Kind::Eval, Some(sub)) => s
                    .units
                    .saturating_sub(subset_n.get(sub).copied().unwrap_or(0)),
                (Kind::Eval | Kind::Rl(_), _) => s.units,
                _ => 1,
            };
            if units > 0 {
                by_kind
                    .entry(Self::key(&s.kind))
                    .or_default()
                    .push((secs, units as f64));
            }
        }
        let mut r = Rates::default();
        for (kind, measured) in by_kind {
            let mut per_unit: Vec<f64> = measured.iter().map(|(s, u)| s / u).collect();
            per_unit.sort_by(f64::total_cmp);
            let median = per_unit[per_unit.len() / 2];
            let kept = measured.iter().filter(|(s, u)| s / u >= median / 100.0);
            let sum = kept.fold((0.0, 0.0), |(a, b), (s, u)| (a + s, b + u));
            r.0.insert(kind, sum);
        }
        r
    }

    /// Seconds per unit of `kind`, if a finished stage measured it.
    fn per_unit(&self, kind: &Kind) -> Option<f64> {
        self.0.get(&Self::key(kind)).map(|(s, u)| s / u)
    }

    /// The estimated seconds left of a stage, if its kind was measured.
    fn left(&self, s: &Stage) -> Option<f64> {
        let rate = self.per_unit(&s.kind)?;
        Some(match s.kind {
            Kind::Rl(_) | Kind::Eval => rate * s.units.saturating_sub(s.units_done) as f64,
            _ => rate,
        })
    }
}

fn render(
    e: &Experiment,
    stages: &[Stage],
    times: &StageTimes,
    running: &BTreeMap<String, f64>,
) -> String {
    let rates = Rates::measure(stages, times);
    let (mut spent, mut left, mut unknown, mut open) = (0.0, 0.0, 0usize, 0usize);
    let mut rows = Vec::new();
    for s in stages {
        let (state, recorded, estimate) = match s.state {
            State::Done => {
                let t = times.get(&s.name);
                spent += t.unwrap_or(0.0);
                (
                    "done".to_string(),
                    t.map(secs).unwrap_or_else(|| "–".into()),
                    String::new(),
                )
            }
            State::NotNeeded => (
                "not needed (its rows are finished)".into(),
                String::new(),
                String::new(),
            ),
            State::Part | State::ToDo => {
                open += 1;
                let est = rates.left(s);
                match est {
                    Some(t) => left += t,
                    None => unknown += 1,
                }
                let state = match s.state {
                    State::Part => {
                        format!("{} of {} {}", s.units_done, s.units, unit_name(&s.kind))
                    }
                    _ => "to do".into(),
                };
                let so_far = running.get(&s.name).map(|t| format!("{} so far", secs(*t)));
                (
                    state,
                    so_far.unwrap_or_default(),
                    est.map_or("?".into(), |t| format!("≈ {}", secs(t))),
                )
            }
        };
        rows.push(format!(
            "| {} | {state} | {recorded} | {estimate} |",
            s.name
        ));
    }
    let mut text = format!(
        "plan of {}: {} stages, {} done ({} recorded), {open} left: ≈ {} at this run's own rates{}\n\n",
        e.out.display(),
        stages.len(),
        stages.iter().filter(|s| s.state == State::Done).count(),
        hours(spent),
        hours(left),
        match unknown {
            0 => String::new(),
            n => format!(", plus {n} stage(s) of a kind not measured yet (?)"),
        }
    );
    text.push_str("| stage | state | seconds | left |\n|---|---|---|---|\n");
    text.push_str(&rows.join("\n"));
    text.push_str("\n\nRates (this run's finished stages): ");
    let measured: Vec<String> = rates
        .0
        .iter()
        .map(|(k, (s, u))| match k.as_str() {
            "Eval" => format!("evaluation {:.2} s a sample", s / u),
            k if k.starts_with("rl:") => format!("{k} {:.1} s a step", s / u),
            k if k.starts_with("select:") => format!("{k} {} a selection", secs(s / u)),
            k => format!("{} {} a stage", k.to_lowercase(), secs(s / u)),
        })
        .collect();
    text.push_str(&if measured.is_empty() {
        "none yet".into()
    } else {
        measured.join("; ")
    });
    text.push('\n');
    text.push_str(&disk_line(e, stages));
    text
}

/// Free disk at the run directory against what the RL stages left will write.
fn disk_line(e: &Experiment, stages: &[Stage]) -> String {
    let rl_left = stages
        .iter()
        .filter(|s| matches!(s.kind, Kind::Rl(_)) && matches!(s.state, State::ToDo | State::Part))
        .count();
    // The SFT model's weights stand for every full-weight RL run's; a LoRA run's adapters are small.
    let weights = if e.rl.lora_rank.is_none() {
        safetensors_bytes(&e.out.join("sft").join("model"))
    } else {
        0
    };
    disk_text(
        &e.out,
        minirec_train::disk::free_bytes(&e.out),
        rl_left,
        weights,
    )
}

/// Each RL run peaks while it writes a checkpoint beside the two it keeps (each the weights and two optimiser
/// moments: 3 × the weights), drops them once it exports, and leaves its exported weights behind.
fn disk_text(out: &Path, free: Option<u64>, rl_left: usize, weights: u64) -> String {
    use minirec_train::disk::human_bytes;
    let Some(free) = free else {
        return String::new();
    };
    let mut text = format!("Disk: {} free in {}", human_bytes(free), out.display());
    if rl_left > 0 && weights > 0 {
        let peak = (minirec_train::checkpoint::KEEP as u64 + 1) * 3 * weights + weights;
        let need = peak + (rl_left as u64 - 1) * weights;
        text.push_str(&format!(
            "; the {rl_left} RL run(s) left need ≈ {} (≈ {} at one run's peak, then {} for each exported model){}",
            human_bytes(need),
            human_bytes(peak),
            human_bytes(weights),
            if need > free {
                ": not enough, free space before running"
            } else {
                ""
            }
        ));
    }
    text.push('\n');
    text
}

fn safetensors_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|f| f.path().extension().is_some_and(|x| x == "safetensors"))
        .filter_map(|f| f.metadata().ok().map(|m| m.len()))
        .sum()
}

fn unit_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Rl(_) => "steps logged",
        Kind::Eval => "samples ranked",
        _ => "",
    }
}

fn secs(t: f64) -> String {
    format!("{:.0} s", t)
}

fn hours(t: f64) -> String {
    if t < 3600.0 {
        format!("{:.0} min", t / 60.0)
    } else {
        format!("{:.1} h", t / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(name: &str, kind: Kind, state: State, units: usize, done: usize) -> Stage {
        Stage {
            name: name.into(),
            kind,
            state,
            units,
            units_done: done,
        }
    }

    #[test]
    fn rates_come_from_finished_stages_of_the_same_kind() {
        let grpo = || Kind::Rl("grpo".into());
        let stages = vec![
            stage("eval:sft", Kind::Eval, State::Done, 2000, 2000),
            // The whole split continues the subset's 2,000 lists: 2,533 ranked in 2,533 s.
            stage("eval:sft.whole", Kind::Eval, State::Done, 4533, 4533),
            stage("rl:full-grpo", grpo(), State::Done, 32, 32),
            stage(
                "rl:full-riser",
                Kind::Rl("riser".into()),
                State::Part,
                32,
                12,
            ),
            stage("rl:random-256-grpo", grpo(), State::Part, 32, 8),
            stage("eval:twin", Kind::Eval, State::Done, 2000, 2000),
            stage("eval:random-256-grpo", Kind::Eval, State::ToDo, 2000, 0),
            stage(
                "select:random-256",
                Kind::Select("random".into()),
                State::Done,
                0,
                0,
            ),
            stage(
                "select:minirec-256",
                Kind::Select("minirec".into()),
                State::ToDo,
                0,
                0,
            ),
        ];
        let times: StageTimes = serde_json::from_value(serde_json::json!({
            "eval:sft": 1500.0, "eval:sft.whole": 2533.0, "rl:full-grpo": 960.0, "eval:twin": 0.1,
            "select:random-256": 0.02
        }))
        .unwrap();
        let r = Rates::measure(&stages, &times);
        // (1,500 + 2,533) s over 2,000 + 2,533 samples; the twin's 0.1 s measures nothing.
        assert!((r.per_unit(&Kind::Eval).unwrap() - 4033.0 / 4533.0).abs() < 1e-12);
        assert_eq!(r.per_unit(&grpo()), Some(30.0));
        assert_eq!(
            r.left(&stages[4]),
            Some(24.0 * 30.0),
            "24 steps left at 30 s"
        );
        assert_eq!(r.left(&stages[3]), None, "no RISER run finished");
        // Random's milliseconds say nothing of MiniRec's selection.
        assert_eq!(r.left(&stages[7]), Some(0.02));
        assert_eq!(r.left(&stages[8]), None, "no MiniRec selection finished");
        let text = render_for_test(&stages, &times);
        assert!(
            text.contains("| rl:random-256-grpo | 8 of 32 steps logged |  | ≈ 720 s |"),
            "{text}"
        );
        assert!(
            text.contains("| rl:full-riser | 12 of 32 steps logged |  | ? |"),
            "{text}"
        );
        assert!(text.contains("4 left"), "{text}");
        assert!(
            text.contains("2 stage(s) of a kind not measured yet"),
            "{text}"
        );
        assert!(text.contains("rl:grpo 30.0 s a step"), "{text}");
    }

    /// 10 full-weight RL runs of a 0.54 GB model: one peaks at 3 checkpoints of 1.62 GB and its export, the
    /// nine others leave their exports.
    #[test]
    fn the_disk_line_counts_each_runs_peak_and_exports() {
        let out = Path::new("/runs/x");
        let w = 540_000_000;
        let text = disk_text(out, Some(54_000_000_000), 10, w);
        assert_eq!(
            text,
            "Disk: 54.00 GB free in /runs/x; the 10 RL run(s) left need ≈ 10.26 GB (≈ 5.40 GB at one \
             run's peak, then 540.0 MB for each exported model)\n"
        );
        assert!(disk_text(out, Some(8_000_000_000), 10, w).contains(": not enough, free space"));
        assert_eq!(
            disk_text(out, Some(1_000_000_000), 0, w),
            "Disk: 1.00 GB free in /runs/x\n",
            "nothing left to train"
        );
        assert_eq!(
            disk_text(out, None, 3, w),
            "",
            "a filesystem that cannot say"
        );
    }

    fn render_for_test(stages: &[Stage], times: &StageTimes) -> String {
        let e: Experiment =
            toml::from_str("out = \"x\"\n[data]\ndemo_users = 10\n[model]\npreset = \"tiny-64\"\n")
                .unwrap();
        render(&e, stages, times, &BTreeMap::new())
    }
}
