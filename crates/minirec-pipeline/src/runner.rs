//! The experiment runner (`minirec run experiment.toml`): prepare → SFT → evaluate → select (methods × sizes,
//! ablations) → RL on each subset (and on everything) → evaluate, plus optional classic baselines, in one run
//! directory. A stage whose
//! output exists is skipped, an interrupted RL run resumes from its last checkpoint, and `report.md` is
//! rewritten from whatever results exist at the end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::DType;
use minirec_data::{PrepareOptions, PreparedDataset, Split};
use minirec_eval::MetricsReport;
use minirec_model::load::{default_dtype, pick_device, preset_config, random_model};
use minirec_train::sft::SftConfig;

use crate::experiment::Experiment;
use crate::manifest::exported;
use crate::stage_times::StageClock;
pub(crate) use crate::stage_times::StageTimes;

/// An RL training set: a selection file, or every training sample.
pub(crate) struct RlSet {
    pub(crate) label: String,
    pub(crate) method: String,
    pub(crate) size: Option<usize>,
    pub(crate) ablation: Option<String>,
    pub(crate) subset: Option<PathBuf>,
}

/// The RL training sets in the order they run: every training sample (with `[select] full`), each method at
/// each size, then MiniRec's ablations at the first size. Selection files live in `sel_dir`.
pub(crate) fn rl_sets(e: &Experiment, sel_dir: &Path) -> Vec<RlSet> {
    let mut sets = Vec::new();
    if e.select.full {
        sets.push(RlSet {
            label: "full".into(),
            method: "full".into(),
            size: None,
            ablation: None,
            subset: None,
        });
    }
    let mut add = |method: &str, size: usize, ablation: Option<&String>| {
        let label = match ablation {
            Some(ab) => format!("{method}-{size}-{ab}"),
            None => format!("{method}-{size}"),
        };
        sets.push(RlSet {
            subset: Some(sel_dir.join(format!("{label}.jsonl"))),
            label,
            method: method.to_string(),
            size: Some(size),
            ablation: ablation.cloned(),
        });
    };
    for m in &e.select.methods {
        for &size in &e.select.sizes {
            add(m, size, None);
        }
    }
    if let Some(&size) = e.select.sizes.first() {
        for ab in &e.select.ablations {
            add("minirec", size, Some(ab));
        }
    }
    sets
}

/// The trainers each set is trained with: the file's first variant trains every set (the selection table's
/// trainer); the others compare trainers, so they run on the full set only, when there is one.
pub(crate) fn set_variants<'a>(e: &'a Experiment, set: &RlSet) -> Vec<&'a str> {
    e.rl.variants
        .iter()
        .enumerate()
        .filter(|(i, _)| *i == 0 || set.subset.is_none() || !e.select.full)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Every LLM row of the report: SFT, then each set with each of its trainers.
pub(crate) fn row_names(e: &Experiment, sets: &[RlSet]) -> Vec<String> {
    let mut rows = vec!["sft".to_string()];
    for set in sets {
        rows.extend(
            set_variants(e, set)
                .into_iter()
                .map(|v| format!("{}-{v}", set.label)),
        );
    }
    rows
}

/// Whether row `name`'s evaluations are finished: its metrics on the `[eval]` samples, and on the whole split
/// when `[eval] whole` names it. Such a row needs no model.
pub(crate) fn row_finished(e: &Experiment, ds: &PreparedDataset, name: &str) -> bool {
    let whole = e.eval.whole.iter().any(|w| w == name);
    finished_metrics(e, ds, name, false).is_some()
        && (!whole || finished_metrics(e, ds, &format!("{name}.whole"), true).is_some())
}

/// Row `name`'s metrics if its evaluation covers every sample the experiment asks for now: metrics of a
/// smaller `[eval] sample` (the file grew it) are not finished; that evaluation continues from its lists.
pub(crate) fn finished_metrics(
    e: &Experiment,
    ds: &PreparedDataset,
    name: &str,
    whole: bool,
) -> Option<MetricsReport> {
    let r = crate::report::read_metrics(&e.out.join("eval").join(format!("{name}.json")))?;
    (r.n as usize == eval_size(e, ds, whole).ok()?).then_some(r)
}

/// How many samples the evaluation ranks: the `[eval]` subset, or with `whole` the entire split.
pub(crate) fn eval_size(e: &Experiment, ds: &PreparedDataset, whole: bool) -> Result<usize> {
    let len = eval_split(e, ds)?.len();
    Ok(if whole {
        len
    } else {
        crate::eval::pick_samples(len, e.eval.limit, e.eval.sample, e.eval.sample_seed).len()
    })
}

/// The SFT model, which exists whenever a row is unfinished (the runner trains it then).
fn sft_path(sft_model: &Option<PathBuf>) -> PathBuf {
    sft_model
        .clone()
        .expect("the SFT stage runs while any row is unfinished")
}

/// A run directory holds one seed's stages: a run with another seed (`--seed`, or an edited file) would skip
/// the stages the first one finished and mix the two in one table.
fn check_same_seed(e: &Experiment) -> Result<()> {
    let path = e.out.join("experiment.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let recorded: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    match recorded.get("seed").and_then(|s| s.as_u64()) {
        Some(old) if old != e.seed => anyhow::bail!(
            "{} was run with seed {old}, and this run has seed {}: its finished stages would be taken as this \
             seed's. Write this seed's run elsewhere (--out DIR)",
            e.out.display(),
            e.seed
        ),
        _ => Ok(()),
    }
}

/// Runs the whole experiment and returns the report's text.
pub fn run_experiment(e: &Experiment, progress: bool) -> Result<String> {
    let out = &e.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    check_same_seed(e)?;
    minirec_data::fsutil::write_json_atomic(&out.join("experiment.json"), e)?;
    let mut times = StageTimes::load(out);

    // 1. Data.
    let data_dir = prepare_stage(e, progress)?;
    let ds = PreparedDataset::load(&data_dir)?;
    println!(
        "data: {} items, {} titles; train {}, valid {}, test {}",
        ds.catalog.len(),
        ds.catalog.num_titles(),
        ds.train.len(),
        ds.valid.len(),
        ds.test.len()
    );

    // 2. SFT, then its evaluation. A run restored from its compact outputs on a new machine (the finished rows'
    //    metrics and lists, no weights) redoes the SFT only while some row still needs a model, and first
    //    checks that the new SFT model ranks as the recorded one did.
    let sets = rl_sets(e, &out.join("select"));
    let unfinished = row_names(e, &sets)
        .into_iter()
        .filter(|r| !row_finished(e, &ds, r))
        .count();
    let sft_model = if unfinished == 0 {
        println!("every row's evaluation is finished: no model is needed");
        None
    } else {
        let (model, trained_now) = sft_stage(e, &ds, &data_dir, &mut times, progress)?;
        if trained_now {
            crate::reproduce::check_sft_lists(e, &ds, &model, progress)?;
        }
        Some(model)
    };
    // Rows with a model on disk, for a later row whose model is byte-for-byte one of theirs.
    let mut twins: Vec<(String, PathBuf)> = sft_model
        .iter()
        .map(|m| ("sft".into(), m.clone()))
        .collect();
    let mut results: BTreeMap<String, MetricsReport> = BTreeMap::new();
    let sft = eval_stage(
        e,
        &ds,
        sft_model.as_deref(),
        "sft",
        &twins,
        &mut times,
        progress,
    )?;
    results.insert("sft".into(), sft);

    // 3. RL on each training set with each trainer, then its evaluation: the full set's trainers first
    //    (RISER Table 2), then each selection, made just before its RL, so finished rows land early. A row
    //    whose evaluation is finished needs neither its selection nor its RL again.
    for set in &sets {
        let rows: Vec<(&str, String)> = set_variants(e, set)
            .into_iter()
            .map(|v| (v, format!("{}-{v}", set.label)))
            .collect();
        let pending = rows.iter().any(|(_, name)| !row_finished(e, &ds, name));
        if let (Some(path), Some(size), true) = (&set.subset, set.size, pending) {
            select_stage(
                e,
                &ds,
                &data_dir,
                &e.select
                    .model
                    .clone()
                    .unwrap_or_else(|| sft_path(&sft_model)),
                &set.method,
                size,
                set.ablation.as_deref(),
                path,
                &mut times,
                progress,
            )?;
        }
        for (variant, name) in rows {
            let model = if row_finished(e, &ds, &name) {
                // A finished row may be seeded from another file's run: it must be this file's row.
                let samples = crate::rl::training_order(&ds, set.subset.as_deref(), e.seed)
                    .ok()
                    .map(|s| s.len());
                crate::rl_settings::check_recorded(e, set, samples, variant, &name)?;
                None
            } else {
                let sft = sft_path(&sft_model);
                Some(rl_stage(
                    e, &ds, &data_dir, &sft, set, variant, &name, &mut times, progress,
                )?)
            };
            let r = eval_stage(
                e,
                &ds,
                model.as_deref(),
                &name,
                &twins,
                &mut times,
                progress,
            )?;
            twins.extend(model.map(|m| (name.clone(), m)));
            results.insert(name, r);
        }
    }

    // 5. Classic baselines.
    for kind in &e.baselines.models {
        let mut variants = vec![false];
        // The popularity ranking has no embeddings to initialise from text.
        if e.baselines.text_init && kind.as_str() != "pop" {
            variants.push(true);
        }
        for text in variants {
            let name = format!("{kind}{}", if text { "-text" } else { "" });
            let r = baseline_stage(e, &ds, &data_dir, kind, text, &name, &mut times, progress)?;
            results.insert(format!("baseline:{name}"), r);
        }
    }

    let report = crate::report::write_report(e, &ds, &sets, &results, &times)?;
    Ok(report)
}

/// The report of whatever rows have finished, without training or evaluating anything: a run in progress (or
/// cut off) shows its table so far. Unfinished rows read "–".
pub fn report_so_far(e: &Experiment) -> Result<String> {
    let data_dir = prepare_stage(e, false)?;
    let ds = PreparedDataset::load(&data_dir)?;
    let sets = rl_sets(e, &e.out.join("select"));
    let eval = e.out.join("eval");
    let mut results: BTreeMap<String, MetricsReport> = BTreeMap::new();
    for name in row_names(e, &sets) {
        if let Some(r) = finished_metrics(e, &ds, &name, false) {
            results.insert(name, r);
        }
    }
    for kind in &e.baselines.models {
        for suffix in ["", "-text"] {
            let name = format!("{kind}{suffix}");
            if let Some(r) =
                crate::report::read_metrics(&eval.join(format!("baseline-{name}.json")))
            {
                results.insert(format!("baseline:{name}"), r);
            }
        }
    }
    let report = crate::report::write_report(e, &ds, &sets, &results, &StageTimes::load(&e.out))?;
    println!("report so far: {} finished row(s)", results.len());
    Ok(report)
}

pub(crate) fn prepare_stage(e: &Experiment, progress: bool) -> Result<PathBuf> {
    if let Some(p) = &e.data.prepared {
        return Ok(p.clone());
    }
    let dir = e.out.join("data");
    if dir.join("manifest.json").is_file() {
        println!("data: {} exists, skipping preparation", dir.display());
        return Ok(dir);
    }
    let mut opts = PrepareOptions::new(&dir);
    opts.force = true;
    opts.progress = progress;
    opts.prompt = crate::prepare::prompt_template(&e.data.domain, None)?;
    opts.hold_out_every = e.data.hold_out_every;
    let stats = if let Some(users) = e.data.demo_users {
        let files = minirec_data::demo::write(&e.out.join("raw"), users, e.seed)?;
        minirec_data::prepare_generic(&files, &opts)?
    } else {
        let files = minirec_data::D3Files {
            info: e.data.d3_info.clone().expect("checked"),
            train: e.data.d3_train.clone().expect("checked"),
            valid: e.data.d3_valid.clone(),
            test: e.data.d3_test.clone().expect("checked"),
        };
        minirec_data::prepare_d3(&files, &opts)?
    };
    crate::prepare::print_stats(&dir, &stats);
    Ok(dir)
}

fn sft_stage(
    e: &Experiment,
    ds: &PreparedDataset,
    data_dir: &Path,
    times: &mut StageTimes,
    progress: bool,
) -> Result<(PathBuf, bool)> {
    if e.sft.skip {
        return Ok((e.model.path.clone().expect("checked"), false));
    }
    let run = e.out.join("sft");
    if let Some(p) = exported(&run) {
        println!("sft: {} exists, skipping", p.display());
        drop_checkpoints(e, &run, "sft")?;
        return Ok((p, false));
    }
    let device = pick_device(e.cpu)?;
    let (mut model, tok, base) = match (&e.model.path, &e.model.preset) {
        (Some(p), _) => {
            let l = crate::model::load_llm(p, "model", &device, default_dtype(&device))?;
            (l.model, l.tokenizer, p.display().to_string())
        }
        (None, Some(preset)) => {
            let tok = minirec_train::sft::catalog_tokenizer(ds)?;
            let cfg = preset_config(preset, tok.vocab_size())?;
            let dtype = if device.is_cpu() {
                DType::F32
            } else {
                default_dtype(&device)
            };
            let m = random_model(cfg, dtype, &device, e.seed)?;
            println!(
                "model: {preset} from scratch, {} parameters, word-level vocabulary of {}",
                m.cfg.num_parameters(),
                tok.vocab_size()
            );
            (m, tok, format!("{preset}-random"))
        }
        _ => unreachable!("checked"),
    };
    let cfg = SftConfig {
        epochs: e.sft.epochs,
        lr: e.sft.lr,
        batch_size: e.sft.batch_size,
        grad_accum: e.sft.grad_accum,
        valid_every: e.sft.valid_every,
        patience: e.sft.patience,
        checkpoint_every: e.sft.checkpoint_every,
        recompute: e.sft.recompute,
        bf16_mixed: e.sft.bf16_mixed,
        seed: e.seed,
        lora: e.sft.lora_rank.map(|r| minirec_model::lora::LoraConfig {
            r,
            alpha: 2.0 * r as f64,
            dropout: 0.0,
            ..Default::default()
        }),
        ..Default::default()
    };
    let clock = StageClock::start(&e.out, "sft");
    let job = crate::sft::SftJob {
        cfg,
        max_train: e.sft.max_train,
        out: &run,
        base,
        data: data_dir,
        resume: run.join("checkpoints").join("latest").is_file(),
    };
    let s = crate::sft::train_sft(&mut model, &tok, ds, &job, progress)?;
    let secs = clock.stop()?;
    times.record(&e.out, "sft", secs)?;
    drop_checkpoints(e, &run, "sft")?;
    println!(
        "sft: {} steps, {:.1} s, best valid loss {}",
        s.steps,
        secs,
        s.best_valid_loss
            .map(|v| format!("{v:.4}"))
            .unwrap_or_else(|| "– (empty valid split)".into())
    );
    Ok((s.output, true))
}

/// The split `[eval] split` names.
pub(crate) fn eval_split<'a>(
    e: &Experiment,
    ds: &'a PreparedDataset,
) -> Result<&'a [minirec_data::Sample]> {
    let split: Split = e
        .eval
        .split
        .parse()
        .map_err(|m: String| anyhow::anyhow!(m))?;
    Ok(ds.split(split))
}

/// The evaluation's samples with their split positions: the `[eval]` subset, or with `whole` the entire split.
pub(crate) fn eval_samples<'a>(
    e: &Experiment,
    ds: &'a PreparedDataset,
    whole: bool,
) -> Result<Vec<(usize, &'a minirec_data::Sample)>> {
    let s = eval_split(e, ds)?;
    let picked =
        crate::eval::pick_samples(s.len(), e.eval.limit, e.eval.sample, e.eval.sample_seed);
    if picked.is_empty() {
        anyhow::bail!("the {} split is empty: nothing to evaluate", e.eval.split);
    }
    let of = |v: Vec<usize>| {
        crate::eval::by_prompt_length(ds, v.into_iter().map(|i| (i, &s[i])).collect())
    };
    let mut out = of(picked.clone());
    if whole {
        // The subset first, then the rest: the whole-split evaluation starts from the subset's lists.
        let inside: std::collections::HashSet<usize> = picked.into_iter().collect();
        out.extend(of((0..s.len()).filter(|i| !inside.contains(i)).collect()));
    }
    Ok(out)
}

/// Evaluates `model` as row `name` on the `[eval]` samples, and on the whole split too when `[eval] whole`
/// names the row. Finished evaluations are read back; an interrupted one continues from its predictions file.
fn eval_stage(
    e: &Experiment,
    ds: &PreparedDataset,
    model: Option<&Path>,
    name: &str,
    twins: &[(String, PathBuf)],
    times: &mut StageTimes,
    progress: bool,
) -> Result<MetricsReport> {
    let r = eval_one(e, ds, model, name, false, twins, times, progress)?;
    if e.eval.whole.iter().any(|w| w == name) {
        let dir = e.out.join("eval");
        let (part, all) = (
            dir.join(format!("{name}.predictions.jsonl")),
            dir.join(format!("{name}.whole.predictions.jsonl")),
        );
        if !all.exists() {
            // The subset's samples open the whole split's list: rank only the rest.
            std::fs::copy(&part, &all)
                .with_context(|| format!("copying {} to {}", part.display(), all.display()))?;
        }
        eval_one(
            e,
            ds,
            model,
            &format!("{name}.whole"),
            true,
            twins,
            times,
            progress,
        )?;
    }
    Ok(r)
}

#[allow(clippy::too_many_arguments)]
fn eval_one(
    e: &Experiment,
    ds: &PreparedDataset,
    model: Option<&Path>,
    name: &str,
    whole: bool,
    twins: &[(String, PathBuf)],
    times: &mut StageTimes,
    progress: bool,
) -> Result<MetricsReport> {
    let dir = e.out.join("eval");
    let json = dir.join(format!("{name}.json"));
    if let Some(r) = finished_metrics(e, ds, name, whole) {
        return Ok(r);
    }
    let model =
        model.with_context(|| format!("row {name}: no model and no finished evaluation"))?;
    std::fs::create_dir_all(&dir)?;
    let stage = format!("eval:{name}");
    let clock = StageClock::start(&e.out, &stage);
    if let Some(twin) = evaluated_twin(e, ds, model, name, whole, twins)? {
        crate::twin::copy_evaluation(&dir, &twin, name)?;
        times.record(&e.out, &stage, clock.stop()?)?;
        println!("eval {name}: its model is byte-for-byte row {twin}'s; {twin}'s lists taken, nothing ranked");
        return finished_metrics(e, ds, name, whole)
            .with_context(|| format!("row {name}: the lists copied from {twin} do not read back"));
    }
    let samples = eval_samples(e, ds, whole)?;
    let loaded = load_for_eval(e, model)?;
    let pred = dir.join(format!("{name}.predictions.jsonl"));
    check_continued_lists(e, ds, &loaded, name, &pred, progress)?;
    let job = crate::eval::BeamJob {
        beam: e.eval.beam,
        batch: e.eval.batch,
        ks: &[5, 10, 20],
        lanes: e.eval.lanes,
    };
    let r = crate::eval::rank_samples(
        &loaded.model,
        &loaded.tokenizer,
        ds,
        &samples,
        &job,
        Some(&pred),
        true,
        progress,
    )?;
    // An evaluation continued to more samples adds to the time its finished part recorded.
    let before = times.get(&stage).unwrap_or(0.0);
    times.record(&e.out, &stage, before + clock.stop()?)?;
    minirec_data::fsutil::write_json_atomic(&json, &r.to_json())?;
    println!(
        "eval {name}: NDCG@10 {:.4}, HR@10 {:.4} ({} samples)",
        r.get("ndcg@10").unwrap_or(f64::NAN),
        r.get("hr@10").unwrap_or(f64::NAN),
        samples.len()
    );
    Ok(r)
}

/// The first row in `twins` whose model has `model`'s bytes and whose evaluation (of the same samples) is
/// finished, when the lists this row already holds are that row's too: its name, with `.whole` for the whole
/// split.
fn evaluated_twin(
    e: &Experiment,
    ds: &PreparedDataset,
    model: &Path,
    name: &str,
    whole: bool,
    twins: &[(String, PathBuf)],
) -> Result<Option<String>> {
    for (row, path) in twins {
        let twin = if whole {
            format!("{row}.whole")
        } else {
            row.clone()
        };
        if twin == name || finished_metrics(e, ds, &twin, whole).is_none() || !path.exists() {
            continue;
        }
        if crate::twin::same_model(model, path)? {
            let dir = e.out.join("eval");
            let (mine, theirs) = (
                dir.join(format!("{name}.predictions.jsonl")),
                dir.join(format!("{twin}.predictions.jsonl")),
            );
            return Ok(crate::twin::agrees_with(&mine, &theirs)?.then_some(twin));
        }
    }
    Ok(None)
}

/// An evaluation that continues lists already written (an interrupted run, a grown `[eval] sample`, the whole
/// split after the subset) first checks that the model it has now ranks their first batch identically: after
/// a new machine retrained the row, or a changed file, the lists would otherwise mix two models.
fn check_continued_lists(
    e: &Experiment,
    ds: &PreparedDataset,
    loaded: &minirec_model::load::LoadedModel,
    name: &str,
    pred: &Path,
    progress: bool,
) -> Result<()> {
    let written = std::fs::read(pred).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
    if written == 0 {
        return Ok(());
    }
    let n = crate::reproduce::check_recorded_lists(e, ds, loaded, pred, progress).map_err(|why| {
        anyhow::anyhow!(
            "row {name}: its model now does not reproduce the lists its evaluation already holds ({why:#}); \
             remove {} to evaluate this model from the start",
            pred.display()
        )
    })?;
    println!(
        "eval {name}: continues its {written} lists; the model ranks the first {n} identically"
    );
    Ok(())
}

/// `model` loaded for ranking, with the experiment's `[eval] bf16_weights` (the process-wide flag is restored).
pub(crate) fn load_for_eval(
    e: &Experiment,
    model: &Path,
) -> Result<minirec_model::load::LoadedModel> {
    use minirec_model::kernels::bf16;
    let device = pick_device(e.cpu)?;
    let asked = bf16::asked();
    bf16::set_wanted(asked || e.eval.bf16_weights);
    let loaded =
        crate::model::load_llm_for_inference(model, "model", &device, default_dtype(&device));
    bf16::set_wanted(asked);
    loaded
}

#[allow(clippy::too_many_arguments)]
fn select_stage(
    e: &Experiment,
    ds: &PreparedDataset,
    data_dir: &Path,
    sft_model: &Path,
    method: &str,
    size: usize,
    ablation: Option<&str>,
    path: &Path,
    times: &mut StageTimes,
    progress: bool,
) -> Result<()> {
    if path.is_file() {
        println!("select: {} exists, skipping", path.display());
        return Ok(());
    }
    let s = &e.select;
    let mut options = minirec_select::pipeline::SelectOptions {
        rollouts: s.rollouts,
        space: if s.space == "param" {
            minirec_select::pipeline::Space::Param
        } else {
            minirec_select::pipeline::Space::Hidden
        },
        goracs: s.goracs.clone(),
        ..Default::default()
    };
    let m = &mut options.minirec;
    (m.lambda, m.groups, m.mu, m.sigma) = (s.lambda, s.groups, s.mu, s.sigma);
    m.learnability = ablation != Some("no-learnability");
    m.representativeness = ablation != Some("no-representativeness");
    m.diversity = ablation != Some("no-diversity");
    m.curriculum = ablation != Some("no-curriculum");
    let mut proxy_config = minirec_select::proxy::ProxyConfig {
        samples: s.proxy_samples,
        sft_epochs: s.proxy_sft_epochs,
        ..Default::default()
    };
    proxy_config.rl.max_steps = s.proxy_rl_steps;
    proxy_config.rl.lr = s.proxy_rl_lr;
    let job = crate::select::SelectJob {
        data: data_dir.to_path_buf(),
        model: Some(sft_model.to_path_buf()),
        method: method.parse()?,
        size: size.min(ds.train.len()),
        out: path.to_path_buf(),
        cache: Some(e.out.join("select").join("cache")),
        proxy: s.proxy.clone(),
        surrogate: None,
        seed: e.seed,
        cpu: e.cpu,
        options,
        proxy_config,
    };
    let label = path
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    let stage = format!("select:{label}");
    let clock = StageClock::start(&e.out, &stage);
    let line = {
        use minirec_model::kernels::bf16;
        let asked = bf16::asked();
        bf16::set_wanted(asked || s.bf16_weights);
        let line = crate::select::select_into(&job, ds, progress);
        bf16::set_wanted(asked);
        line?
    };
    times.record(&e.out, &stage, clock.stop()?)?;
    println!("{line}");
    Ok(())
}

/// Removes an exported stage's `checkpoints/` unless `keep_checkpoints`: the runner never resumes a stage whose
/// model is exported. A stage without an exported model keeps them, since they are how it resumes.
fn drop_checkpoints(e: &Experiment, run: &Path, stage: &str) -> Result<()> {
    let dir = run.join("checkpoints");
    if e.keep_checkpoints || exported(run).is_none() || !dir.is_dir() {
        return Ok(());
    }
    let bytes = minirec_train::disk::dir_bytes(&dir);
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    println!(
        "{stage}: removed its checkpoints ({:.2} GB; the model is exported; `keep_checkpoints = true` keeps them)",
        bytes as f64 / 1e9
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn rl_stage(
    e: &Experiment,
    ds: &PreparedDataset,
    data_dir: &Path,
    sft_model: &Path,
    set: &RlSet,
    variant: &str,
    name: &str,
    times: &mut StageTimes,
    progress: bool,
) -> Result<PathBuf> {
    let run = e.out.join("rl").join(name);
    if let Some(p) = exported(&run) {
        println!("rl {name}: {} exists, skipping", p.display());
        drop_checkpoints(e, &run, &format!("rl {name}"))?;
        return Ok(p);
    }
    let samples = crate::rl::training_order(ds, set.subset.as_deref(), e.seed)?;
    let cfg = crate::rl_settings::rl_config(e, samples.len(), variant);
    let resume = run.join("checkpoints").join("latest").is_file();
    let clock = StageClock::start(&e.out, &format!("rl:{name}"));
    let job = crate::rl::RlJob {
        data: data_dir,
        init: sft_model,
        out: &run,
        subset: set.subset.as_deref(),
        eval_samples: 128,
        resume,
        cpu: e.cpu,
        demo_encoder: e.rl.demo_encoder.as_deref(),
    };
    let s = crate::rl::train_rl(ds, &samples, &cfg, &job, progress)?;
    let secs = clock.stop()?;
    times.record(&e.out, &format!("rl:{name}"), secs)?;
    drop_checkpoints(e, &run, &format!("rl {name}"))?;
    println!(
        "rl {name}: {} steps on {} samples, reward {:.3} -> {:.3}, {:.1} s",
        s.steps,
        samples.len(),
        s.first_rewards,
        s.last_rewards,
        secs
    );
    Ok(s.output)
}

#[allow(clippy::too_many_arguments)]
fn baseline_stage(
    e: &Experiment,
    ds: &PreparedDataset,
    data_dir: &Path,
    kind: &str,
    text: bool,
    name: &str,
    times: &mut StageTimes,
    progress: bool,
) -> Result<MetricsReport> {
    let json = e.out.join("eval").join(format!("baseline-{name}.json"));
    if let Some(r) = crate::report::read_metrics(&json) {
        return Ok(r);
    }
    let run = e.out.join("baselines").join(name);
    if !crate::baseline::is_run(&run) {
        let mut job =
            crate::baseline::BaselineJob::new(kind.parse()?, data_dir.to_path_buf(), run.clone());
        job.epochs = e.baselines.epochs;
        job.text_init = text;
        job.encoder = e.baselines.encoder.clone();
        job.seeds = vec![e.seed];
        job.resume = run.join("checkpoints").join("latest").is_file();
        job.cpu = e.cpu;
        let stage = format!("baseline:{name}");
        let clock = StageClock::start(&e.out, &stage);
        println!("{}", crate::baseline::train_baseline(&job, progress)?);
        times.record(&e.out, &stage, clock.stop()?)?;
    }
    let samples: Vec<minirec_data::Sample> = eval_samples(e, ds, false)?
        .into_iter()
        .map(|(_, s)| s.clone())
        .collect();
    let r = crate::baseline::evaluate_run(&run, ds, &samples, &[5, 10, 20], e.cpu)?.titles;
    std::fs::create_dir_all(e.out.join("eval"))?;
    minirec_data::fsutil::write_json_atomic(&json, &r.to_json())?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experiment(variants: &[&str], full: bool) -> Experiment {
        let mut e: Experiment = toml::from_str(
            "out = \"run\"\n[data]\ndemo_users = 10\n[model]\npreset = \"tiny-64\"\n\
             [select]\nmethods = [\"random\"]\nsizes = [64]\n",
        )
        .unwrap();
        e.rl.variants = variants.iter().map(|v| v.to_string()).collect();
        e.select.full = full;
        e
    }

    #[test]
    fn the_first_variant_trains_the_subsets_and_the_rest_the_full_set_only() {
        let e = experiment(&["grpo", "riser"], true);
        let sets = rl_sets(&e, Path::new("sel"));
        assert_eq!(
            row_names(&e, &sets),
            ["sft", "full-grpo", "full-riser", "random-64-grpo"]
        );
        // Without a full set every trainer trains every subset.
        let e = experiment(&["riser", "grpo"], false);
        let sets = rl_sets(&e, Path::new("sel"));
        assert_eq!(
            row_names(&e, &sets),
            ["sft", "random-64-riser", "random-64-grpo"]
        );
    }

    /// A stage's checkpoints go once its model is exported (unless kept); an unfinished stage keeps them.
    #[test]
    fn checkpoints_go_only_once_the_model_is_exported() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("rl/row");
        let step = run.join("checkpoints/step-00000004");
        std::fs::create_dir_all(&step).unwrap();
        std::fs::write(step.join("trainable.safetensors"), [0u8; 1000]).unwrap();
        let mut e = experiment(&["grpo"], false);
        drop_checkpoints(&e, &run, "rl row").unwrap();
        assert!(
            step.is_dir(),
            "an unfinished run lost the checkpoints it resumes from"
        );

        std::fs::create_dir_all(run.join("model")).unwrap();
        std::fs::write(run.join("model/config.json"), "{}").unwrap();
        std::fs::write(run.join("manifest.json"), "{}").unwrap();
        e.keep_checkpoints = true;
        drop_checkpoints(&e, &run, "rl row").unwrap();
        assert!(step.is_dir(), "keep_checkpoints = true");

        e.keep_checkpoints = false;
        drop_checkpoints(&e, &run, "rl row").unwrap();
        assert!(!run.join("checkpoints").exists());
        assert!(run.join("model/config.json").is_file());
        assert_eq!(minirec_train::disk::dir_bytes(&run), 4);
    }
}
