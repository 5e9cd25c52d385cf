//! The proactive-recommendation experiment (ProRL, issue 15): SFT of the LLM on paths, then each RL arm (naive
//! PG, +SRC, +PSAE, ProRL) from the SFT model with a frozen SASRec as the user, each evaluated by beam search
//! over paths and scored by a separate GRU4Rec. Stages whose outputs exist are skipped, so a rerun continues.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use minirec_baselines::seqrec::SeqRec;
use minirec_data::PreparedDataset;
use minirec_eval::{bootstrap_interval, paired_mean_diff, seeded_subset};
use minirec_model::load::{default_dtype, pick_device};
use minirec_model::TextTokenizer;
use minirec_train::proactive::eval::{evaluate, QueryEval};
use minirec_train::proactive::paths::{build_paths, eval_pairs, PathSample};
use minirec_train::proactive::policy::{beam_paths, PathIndex, PathPrompt, PathQuery};
use minirec_train::proactive::reward::UserModel;
use minirec_train::proactive::rl::{self, ProRlConfig, ProRlPrompt};
use minirec_train::sft::{export, trainable, Example, SftConfig};
use serde::{Deserialize, Serialize};

/// A trained `minirec baseline` model as ProRL's user (item rows: catalog index + 1, row 0 pads at −∞).
pub struct SeqRecUser(pub SeqRec);

impl UserModel for SeqRecUser {
    fn scores(&self, histories: &[Vec<u32>]) -> minirec_train::Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(histories.len());
        for chunk in histories.chunks(256) {
            let s = self
                .0
                .score_all(chunk)
                .map_err(|e| minirec_train::TrainError::Invalid(format!("user model: {e}")))?;
            out.extend(s.to_vec2::<f32>()?);
        }
        Ok(out)
    }
}

/// What to run and where.
pub struct ProactiveJob<'a> {
    pub data: &'a Path,
    pub model: &'a Path,
    /// `minirec baseline` runs: the simulator (SASRec) and the evaluator (GRU4Rec).
    pub user: &'a Path,
    pub evaluator: &'a Path,
    pub out: &'a Path,
    pub max_len: usize,
    pub max_history: usize,
    pub sft_samples: usize,
    pub sft: SftConfig,
    pub rl_prompts: usize,
    pub rl: ProRlConfig,
    pub arms: Vec<String>,
    pub eval_samples: usize,
    pub beam: usize,
    pub seed: u64,
    pub cpu: bool,
}

/// Each arm's evaluation summary (means with bootstrap intervals) as written to `results.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmResult {
    pub arm: String,
    pub n: usize,
    pub metrics: Vec<(String, f64, f64, f64)>,
    pub train_seconds: f64,
    pub eval_seconds: f64,
}

fn load_user(dir: &Path, ds: &PreparedDataset, device: &Device, role: &str) -> Result<SeqRecUser> {
    let (m, cfg) = minirec_baselines::train::load_run(dir, device)
        .with_context(|| format!("loading the {role} from {}", dir.display()))?;
    cfg.check_catalog(ds, dir)
        .with_context(|| format!("the {role} was trained on another catalog"))?;
    Ok(SeqRecUser(m))
}

/// The catalog title index of an item id.
fn title_of(ds: &PreparedDataset, id: &str) -> Result<u32> {
    let item = ds
        .catalog
        .index_of(id)
        .with_context(|| format!("item {id:?} is not in the catalog"))?;
    Ok(ds.catalog.title_index_of_item(item))
}

fn row_of(ds: &PreparedDataset, id: &str) -> Result<u32> {
    Ok(ds.catalog.index_of(id).context("item not in the catalog")? + 1)
}

/// The generator's query and the user model's rows of a sample.
fn prompt_of(
    ds: &PreparedDataset,
    pp: &PathPrompt,
    tok: &TextTokenizer,
    s: &PathSample,
) -> Result<ProRlPrompt> {
    let history: Vec<&str> = s
        .history
        .iter()
        .map(|h| ds.catalog.title_of_id(h).context("item not in the catalog"))
        .collect::<Result<_>>()?;
    let target = ds
        .catalog
        .title_of_id(&s.target)
        .context("item not in the catalog")?;
    let prompt = tok.encode_batch(&[pp.render(history, target)])?.remove(0);
    let mut banned: Vec<u32> = s
        .history
        .iter()
        .map(|h| title_of(ds, h))
        .collect::<Result<_>>()?;
    banned.push(title_of(ds, &s.target)?);
    Ok(ProRlPrompt {
        query: PathQuery { prompt, banned },
        history: s
            .history
            .iter()
            .map(|h| row_of(ds, h))
            .collect::<Result<_>>()?,
        target: row_of(ds, &s.target)?,
    })
}

/// The samples of each stage: SFT paths and its validation paths, RL prompts, evaluation pairs.
struct TaskData {
    sft: Vec<PathSample>,
    valid: Vec<PathSample>,
    rl: Vec<PathSample>,
    eval: Vec<PathSample>,
}

fn task_data(ds: &PreparedDataset, job: &ProactiveJob) -> Result<TaskData> {
    let all = build_paths(&ds.train, job.max_len, job.max_history, job.seed);
    let order = seeded_subset(all.len(), all.len(), job.seed ^ 0x9e37);
    let mut shuffled: Vec<PathSample> = order.into_iter().map(|i| all[i].clone()).collect();
    let need = job.sft_samples + 32 + job.rl_prompts;
    if shuffled.len() < need {
        bail!(
            "{} paths can be built from the train split, the job needs {need} (SFT {} + 32 validation + RL {})",
            shuffled.len(),
            job.sft_samples,
            job.rl_prompts
        );
    }
    let rest = shuffled.split_off(job.sft_samples);
    let sft = shuffled;
    let valid = rest[..32].to_vec();
    let rl = rest[32..32 + job.rl_prompts].to_vec();
    let pairs = eval_pairs(&ds.test);
    let cut = |s: &PathSample| PathSample {
        history: s.history[s.history.len().saturating_sub(job.max_history)..].to_vec(),
        ..s.clone()
    };
    let eval = seeded_subset(pairs.len(), job.eval_samples, job.seed)
        .into_iter()
        .map(|i| cut(&pairs[i]))
        .collect();
    Ok(TaskData {
        sft,
        valid,
        rl,
        eval,
    })
}

fn examples(
    ds: &PreparedDataset,
    pp: &PathPrompt,
    pi: &PathIndex,
    tok: &TextTokenizer,
    samples: &[PathSample],
) -> Result<Vec<Example>> {
    samples
        .iter()
        .map(|s| {
            let p = prompt_of(ds, pp, tok, s)?;
            let titles: Vec<u32> = s
                .path
                .iter()
                .map(|i| title_of(ds, i))
                .collect::<Result<_>>()?;
            Ok(Example {
                prompt: p.query.prompt,
                response: pi.response(&titles, true),
            })
        })
        .collect()
}

/// Runs every stage that has no output yet; returns each arm's result (SFT first).
pub fn run_proactive(job: &ProactiveJob, progress: bool) -> Result<Vec<ArmResult>> {
    for arm in &job.arms {
        arm_config(&job.rl, arm)?;
    }
    let ds = PreparedDataset::load(job.data)?;
    let device = pick_device(job.cpu)?;
    let dtype = default_dtype(&device);
    let user = load_user(job.user, &ds, &device, "user model")?;
    let evaluator = load_user(job.evaluator, &ds, &device, "evaluator")?;
    let data = task_data(&ds, job)?;
    std::fs::create_dir_all(job.out).with_context(|| format!("creating {}", job.out.display()))?;
    minirec_data::fsutil::write_json_atomic(
        &job.out.join("tasks.json"),
        &serde_json::json!({"sft": data.sft.len(), "valid": data.valid.len(), "rl": data.rl.len(),
            "eval": data.eval.len(), "max_len": job.max_len, "eval_sample": data.eval.first()}),
    )?;
    let rows: Vec<u32> = (0..ds.catalog.num_titles() as u32)
        .map(|t| ds.catalog.items_with_title(t)[0] + 1)
        .collect();
    let pp = PathPrompt {
        template: &ds.prompt,
        max_len: job.max_len,
    };
    let sft_dir = job.out.join("sft");
    let sft_secs = train_sft_paths(job, &ds, &pp, &data, &sft_dir, &device, dtype, progress)?;
    let mut results = vec![eval_stage(
        job,
        &ds,
        &pp,
        &data,
        &sft_dir.join("model"),
        "sft",
        sft_secs,
        &evaluator,
        &rows,
        &device,
        dtype,
    )?];
    for arm in &job.arms {
        let cfg = arm_config(&job.rl, arm)?;
        let dir = job.out.join(format!("rl-{arm}"));
        let secs = train_arm(
            job,
            &ds,
            &pp,
            &data,
            &sft_dir.join("model"),
            &dir,
            &cfg,
            &user,
            &rows,
            &device,
            dtype,
        )?;
        results.push(eval_stage(
            job,
            &ds,
            &pp,
            &data,
            &dir.join("model"),
            arm,
            secs,
            &evaluator,
            &rows,
            &device,
            dtype,
        )?);
    }
    write_report(job, &results)?;
    Ok(results)
}

fn arm_config(base: &ProRlConfig, arm: &str) -> Result<ProRlConfig> {
    let (src, psae) = match arm {
        "naive-pg" => (false, false),
        "src" => (true, false),
        "psae" => (false, true),
        "prorl" => (true, true),
        other => bail!("unknown arm {other:?}: naive-pg, src, psae or prorl"),
    };
    Ok(ProRlConfig {
        src,
        psae,
        ..base.clone()
    })
}

#[allow(clippy::too_many_arguments)]
fn train_sft_paths(
    job: &ProactiveJob,
    ds: &PreparedDataset,
    pp: &PathPrompt,
    data: &TaskData,
    dir: &Path,
    device: &Device,
    dtype: candle_core::DType,
    progress: bool,
) -> Result<f64> {
    let done = dir.join("done.json");
    if done.exists() {
        let v: serde_json::Value = minirec_data::fsutil::read_json(&done)?;
        tracing::info!("proactive: SFT done in {}", dir.display());
        return Ok(v["seconds"].as_f64().unwrap_or(f64::NAN));
    }
    let t0 = Instant::now();
    let mut loaded = crate::model::load_llm(job.model, "model", device, dtype)?;
    let tok = &loaded.tokenizer;
    let pi = PathIndex::build(tok, &ds.prompt, ds.catalog.titles())?;
    let tr = examples(ds, pp, &pi, tok, &data.sft)?;
    let va = examples(ds, pp, &pi, tok, &data.valid)?;
    let vars = trainable(&mut loaded.model, &job.sft)?;
    let base = job.model.display().to_string();
    let summary = minirec_train::sft::train(
        &mut loaded.model,
        &loaded.tokenizer,
        vars,
        &tr,
        &va,
        &job.sft,
        dir,
        &base,
        true,
        progress,
    )
    .with_context(|| format!("SFT on paths into {}", dir.display()))?;
    let secs = t0.elapsed().as_secs_f64();
    minirec_data::fsutil::write_json_atomic(
        &done,
        &serde_json::json!({"seconds": secs, "summary": summary, "config": job.sft}),
    )?;
    Ok(secs)
}

#[allow(clippy::too_many_arguments)]
fn train_arm(
    job: &ProactiveJob,
    ds: &PreparedDataset,
    pp: &PathPrompt,
    data: &TaskData,
    init: &Path,
    dir: &Path,
    cfg: &ProRlConfig,
    user: &SeqRecUser,
    rows: &[u32],
    device: &Device,
    dtype: candle_core::DType,
) -> Result<f64> {
    let done = dir.join("done.json");
    if done.exists() {
        let v: serde_json::Value = minirec_data::fsutil::read_json(&done)?;
        return Ok(v["seconds"].as_f64().unwrap_or(f64::NAN));
    }
    let t0 = Instant::now();
    let mut loaded = crate::model::load_llm(init, "initial policy", device, dtype)?;
    let reference =
        crate::model::load_llm_for_inference(init, "reference model", device, dtype)?.model;
    let pi = PathIndex::build(&loaded.tokenizer, &ds.prompt, ds.catalog.titles())?;
    let prompts: Vec<ProRlPrompt> = data
        .rl
        .iter()
        .map(|s| prompt_of(ds, pp, &loaded.tokenizer, s))
        .collect::<Result<_>>()?;
    let vars = trainable(&mut loaded.model, &SftConfig::default())?;
    rl::train(
        &mut loaded.model,
        vars,
        Some(&reference),
        &pi,
        user,
        rows,
        &prompts,
        cfg,
        dir,
    )
    .with_context(|| format!("ProRL arm {} into {}", cfg.arm(), dir.display()))?;
    export(
        &mut loaded.model,
        &loaded.tokenizer,
        None,
        &job.model.display().to_string(),
        dir,
    )?;
    let secs = t0.elapsed().as_secs_f64();
    minirec_data::fsutil::write_json_atomic(
        &done,
        &serde_json::json!({"seconds": secs, "config": cfg}),
    )?;
    Ok(secs)
}

const METRICS: [&str; 3] = ["ioi", "ior", "ctr"];

/// Per-query values of every reported metric: IoI/IoR/CTR @1 and @beam, and the best path's length.
fn per_query(evals: &[QueryEval], beam: usize) -> Vec<(String, Vec<f64>)> {
    let mut out = Vec::new();
    for k in [1, beam] {
        for (i, m) in METRICS.iter().enumerate() {
            let v = evals
                .iter()
                .map(|q| q.at(k, |p| [p.ioi, p.ior, p.ctr][i]))
                .collect();
            out.push((format!("{m}@{k}"), v));
        }
    }
    out.push((
        "length".into(),
        evals
            .iter()
            .map(|q| q.paths.first().map_or(0.0, |p| p.len as f64))
            .collect(),
    ));
    out
}

#[allow(clippy::too_many_arguments)]
fn eval_stage(
    job: &ProactiveJob,
    ds: &PreparedDataset,
    pp: &PathPrompt,
    data: &TaskData,
    model_dir: &Path,
    arm: &str,
    train_seconds: f64,
    evaluator: &SeqRecUser,
    rows: &[u32],
    device: &Device,
    dtype: candle_core::DType,
) -> Result<ArmResult> {
    let file = job.out.join(format!("eval-{arm}.jsonl"));
    let summary_file = job.out.join(format!("eval-{arm}.json"));
    if summary_file.exists() {
        return Ok(minirec_data::fsutil::read_json(&summary_file)?);
    }
    let t0 = Instant::now();
    let loaded = crate::model::load_llm_for_inference(model_dir, arm, device, dtype)?;
    let tok = &loaded.tokenizer;
    let pi = PathIndex::build(tok, &ds.prompt, ds.catalog.titles())?;
    let prompts: Vec<ProRlPrompt> = data
        .eval
        .iter()
        .map(|s| prompt_of(ds, pp, tok, s))
        .collect::<Result<_>>()?;
    let mut evals = Vec::with_capacity(prompts.len());
    let mut lines = String::new();
    for chunk in prompts.chunks(4) {
        let qs: Vec<PathQuery> = chunk
            .iter()
            .map(|p| PathQuery {
                prompt: p.query.prompt.clone(),
                banned: p.query.banned.clone(),
            })
            .collect();
        let paths = beam_paths(&loaded.model, &pi, &qs, job.beam, job.max_len)?;
        let h: Vec<Vec<u32>> = chunk.iter().map(|p| p.history.clone()).collect();
        let t: Vec<u32> = chunk.iter().map(|p| p.target).collect();
        let e = evaluate(evaluator, &h, &t, &paths, rows)?;
        for (p, q) in paths.iter().zip(&e) {
            let titles: Vec<Vec<&str>> = p
                .iter()
                .map(|x| x.titles.iter().map(|&t| ds.catalog.title(t)).collect())
                .collect();
            lines.push_str(&serde_json::to_string(
                &serde_json::json!({"paths": titles, "metrics": q.paths}),
            )?);
            lines.push('\n');
        }
        evals.extend(e);
        tracing::info!("proactive eval {arm}: {}/{}", evals.len(), prompts.len());
    }
    std::fs::write(&file, lines).with_context(|| format!("writing {}", file.display()))?;
    let metrics = per_query(&evals, job.beam)
        .into_iter()
        .map(|(name, v)| {
            let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
            let (lo, hi) = bootstrap_interval(&v, 1000, job.seed);
            (name, mean, lo, hi)
        })
        .collect();
    let r = ArmResult {
        arm: arm.to_string(),
        n: evals.len(),
        metrics,
        train_seconds,
        eval_seconds: t0.elapsed().as_secs_f64(),
    };
    minirec_data::fsutil::write_json_atomic(&summary_file, &r)?;
    minirec_data::fsutil::write_json_atomic(
        &job.out.join(format!("eval-{arm}.per-query.json")),
        &per_query(&evals, job.beam),
    )?;
    Ok(r)
}

/// `report.md`: each arm's means with intervals, and paired differences against SFT.
fn write_report(job: &ProactiveJob, results: &[ArmResult]) -> Result<()> {
    let names: Vec<String> = results[0].metrics.iter().map(|m| m.0.clone()).collect();
    let mut s = format!(
        "# Proactive paths (ProRL) — {} evaluation pairs, beam {}, up to {} steps\n\n| arm | {} | train s | eval s |\n|---|{}---|---|\n",
        results[0].n,
        job.beam,
        job.max_len,
        names.join(" | "),
        "---|".repeat(names.len())
    );
    for r in results {
        let cells: Vec<String> = r
            .metrics
            .iter()
            .map(|(_, m, lo, hi)| format!("{m:.3} [{lo:.3}, {hi:.3}]"))
            .collect();
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} |\n",
            r.arm,
            cells.join(" | "),
            r.train_seconds,
            r.eval_seconds
        ));
    }
    let per = |arm: &str| -> Result<Vec<(String, Vec<f64>)>> {
        minirec_data::fsutil::read_json(&job.out.join(format!("eval-{arm}.per-query.json")))
            .map_err(Into::into)
    };
    let base = per("sft")?;
    s.push_str(&format!(
        "\nPaired differences against SFT (bootstrap, 1,000 resamples, seed {}; * = interval excludes 0):\n\n| arm | {} |\n|---|{}\n",
        job.seed,
        names.join(" | "),
        "---|".repeat(names.len())
    ));
    for r in results.iter().skip(1) {
        let other = per(&r.arm)?;
        let cells: Vec<String> = base
            .iter()
            .zip(&other)
            .map(|((name, a), (_, b))| {
                let d = paired_mean_diff(name, a, b, 1000, job.seed).map_err(anyhow::Error::msg)?;
                Ok(format!(
                    "{:+.3} [{:+.3}, {:+.3}]{}",
                    d.diff,
                    d.low,
                    d.high,
                    if d.resolved() { "*" } else { "" }
                ))
            })
            .collect::<Result<_>>()?;
        s.push_str(&format!("| {} | {} |\n", r.arm, cells.join(" | ")));
    }
    let path: PathBuf = job.out.join("report.md");
    std::fs::write(&path, s).with_context(|| format!("writing {}", path.display()))?;
    minirec_data::fsutil::write_json_atomic(&job.out.join("results.json"), &results)?;
    println!("{}", std::fs::read_to_string(&path)?);
    Ok(())
}
