//! One selection job end to end: the scores a method needs (cached on disk, so several methods and sizes share
//! them), then the method itself, with the wall time of each phase.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use minirec_data::PreparedDataset;
use minirec_model::decode::ItemIndex;
use minirec_model::{Decoder, TextTokenizer};
use minirec_train::rl::prompts_for;
use minirec_train::sft::encode_samples;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SelectError};
use crate::features::{llm_scores, llm_scores_resumable, LlmScores, Projection};
use crate::matrix::Matrix;
use crate::methods::{self, Method, MiniRecConfig};
use crate::subset::SubsetRow;

/// Where d_i lives for representativeness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Space {
    /// The final hidden state (DESIGN.md's default).
    Hidden,
    /// The output layer's parameters, randomly projected to `k1·k2` dimensions.
    Param,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SelectOptions {
    pub minirec: MiniRecConfig,
    /// Proxy rollouts per sample (N in Eq. 6).
    pub rollouts: usize,
    pub temperature: f32,
    /// Prompts per rollout call and samples per scoring forward pass.
    pub rollout_batch: usize,
    pub score_batch: usize,
    pub space: Space,
    /// Projection sizes for `Space::Param`.
    pub proj_k1: usize,
    pub proj_k2: usize,
    pub kmeans_iters: usize,
    /// DEALRec: strata for coverage-centric sampling, and the weight of the effort score.
    pub strata: usize,
    pub dealrec_lambda: f32,
    pub goracs: crate::goracs::GoracsConfig,
}

impl Default for SelectOptions {
    fn default() -> Self {
        SelectOptions {
            minirec: MiniRecConfig::default(),
            rollouts: 8,
            temperature: 1.0,
            rollout_batch: 32,
            score_batch: 16,
            space: Space::Hidden,
            proj_k1: 64,
            proj_k2: 32,
            kmeans_iters: 20,
            strata: 50,
            dealrec_lambda: 1.0,
            goracs: Default::default(),
        }
    }
}

/// What each method needs.
pub fn needs_llm_scores(m: Method) -> bool {
    m != Method::Random
}

pub fn needs_rewards(m: Method, cfg: &MiniRecConfig) -> bool {
    m == Method::Minirec && cfg.needs_rewards()
}

/// Phase timings, seconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings {
    pub scoring_s: f64,
    pub rollouts_s: f64,
    pub surrogate_s: f64,
    pub select_s: f64,
    /// GORACS: scoring the validation split (its embeddings).
    #[serde(default)]
    pub valid_scoring_s: f64,
    /// Phases read back from the cache instead of computed.
    pub cached: Vec<String>,
}

/// Scores cached in a directory, keyed by what produced them.
pub struct ScoreCache {
    dir: Option<PathBuf>,
    key: String,
}

impl ScoreCache {
    /// `key` names the model (and data) the scores come from; a cache made for another key is ignored.
    pub fn new(dir: Option<&Path>, key: &str) -> Self {
        ScoreCache {
            dir: dir.map(Path::to_path_buf),
            key: key.to_string(),
        }
    }

    fn path(&self, what: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(what))
    }

    /// The cache for what the scoring model computes. A scorer holding bf16 copies of its weights
    /// (`[select] bf16_weights`) gets its own scores, under the key plus " scoring=bf16": bf16 hidden states
    /// differ from f32 ones in their last digits, and a selection should not mix the two.
    pub fn for_scorer(&self, scorer: Option<&Decoder>) -> ScoreCache {
        let bf16 = scorer.is_some_and(Decoder::holds_bf16);
        ScoreCache {
            dir: self.dir.clone(),
            key: match bf16 {
                true => format!("{} scoring=bf16", self.key),
                false => self.key.clone(),
            },
        }
    }

    /// Whether `what` was made for this cache's key.
    pub fn key_ok(&self, what: &str) -> bool {
        self.path(&format!("{what}.key"))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .is_some_and(|k| k == self.key)
    }

    /// Marks `what` as made for this cache's key.
    pub fn write_key(&self, what: &str) -> Result<()> {
        if let Some(p) = self.path(&format!("{what}.key")) {
            minirec_data::fsutil::write_atomic(&p, |w| w.write_all(self.key.as_bytes()))?;
        }
        Ok(())
    }

    pub fn load_scores(&self) -> Result<Option<LlmScores>> {
        let Some(p) = self.path("llm_scores.safetensors") else {
            return Ok(None);
        };
        if !p.exists() || !self.key_ok("llm_scores") {
            return Ok(None);
        }
        read_llm_scores(&p).map(Some)
    }

    pub fn save_scores(&self, s: &LlmScores) -> Result<()> {
        let Some(p) = self.path("llm_scores.safetensors") else {
            return Ok(());
        };
        write_llm_scores(&p, s)?;
        self.write_key("llm_scores")
    }

    /// The scores an interrupted scoring pass under `key` finished (`llm_scores.partial.safetensors`), if any.
    pub fn load_scores_partial(&self, key: &str) -> Result<Option<LlmScores>> {
        let (Some(p), Some(k)) = (
            self.path("llm_scores.partial.safetensors"),
            self.path("llm_scores.partial.key"),
        ) else {
            return Ok(None);
        };
        if !p.exists() || std::fs::read_to_string(&k).ok().as_deref() != Some(key) {
            return Ok(None);
        }
        read_llm_scores(&p).map(Some)
    }

    /// Replaces the partial scores with `s` (the file first, then its key, each atomically).
    pub fn save_scores_partial(&self, key: &str, s: &LlmScores) -> Result<()> {
        let (Some(p), Some(k)) = (
            self.path("llm_scores.partial.safetensors"),
            self.path("llm_scores.partial.key"),
        ) else {
            return Ok(());
        };
        write_llm_scores(&p, s)?;
        minirec_data::fsutil::write_atomic(&k, |w| w.write_all(key.as_bytes()))?;
        Ok(())
    }

    /// Removes the partial scores once the whole pass is saved.
    pub fn remove_scores_partial(&self) -> Result<()> {
        for what in ["llm_scores.partial.safetensors", "llm_scores.partial.key"] {
            if let Some(p) = self.path(what).filter(|p| p.exists()) {
                std::fs::remove_file(&p).map_err(|e| SelectError::io(&p, e))?;
            }
        }
        Ok(())
    }

    /// A matrix cached as `what.safetensors` for this key.
    pub fn load_matrix(&self, what: &str) -> Result<Option<Matrix>> {
        let Some(p) = self.path(&format!("{what}.safetensors")) else {
            return Ok(None);
        };
        if !p.exists() || !self.key_ok(what) {
            return Ok(None);
        }
        let t = candle_core::safetensors::load(&p, &Device::Cpu)?;
        let m = t
            .get("m")
            .ok_or_else(|| SelectError::Invalid(format!("{}: no tensor m", p.display())))?;
        Ok(Some(Matrix::from_tensor(m)?))
    }

    pub fn save_matrix(&self, what: &str, m: &Matrix) -> Result<()> {
        let Some(p) = self.path(&format!("{what}.safetensors")) else {
            return Ok(());
        };
        let dir = p.parent().expect("a file in a directory");
        std::fs::create_dir_all(dir).map_err(|e| SelectError::io(dir, e))?;
        let t = HashMap::from([("m".to_string(), m.to_tensor(&Device::Cpu)?)]);
        let tmp = p.with_extension("tmp");
        candle_core::safetensors::save(&t, &tmp)?;
        std::fs::rename(&tmp, &p).map_err(|e| SelectError::io(&p, e))?;
        self.write_key(what)
    }

    pub fn load_vec(&self, what: &str) -> Result<Option<Vec<f32>>> {
        let Some(p) = self.path(&format!("{what}.json")) else {
            return Ok(None);
        };
        if !p.exists() || !self.key_ok(what) {
            return Ok(None);
        }
        let v: Vec<f32> = minirec_data::fsutil::read_json(&p)?;
        Ok(Some(v))
    }

    pub fn save_vec(&self, what: &str, v: &[f32]) -> Result<()> {
        if let Some(p) = self.path(&format!("{what}.json")) {
            minirec_data::fsutil::write_json_atomic(&p, &v)?;
            self.write_key(what)?;
        }
        Ok(())
    }

    /// The values an interrupted computation of `what` under `key` finished (`what.partial.jsonl`: the key's
    /// line, then one line of values per finished part); empty without such a file, or when it was made under
    /// another key. A last line cut off mid-write is ignored.
    pub fn load_partial(&self, what: &str, key: &str) -> Result<Vec<f32>> {
        let Some(p) = self.path(&format!("{what}.partial.jsonl")) else {
            return Ok(Vec::new());
        };
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(SelectError::io(&p, e)),
        };
        let mut lines = text.split_inclusive('\n').filter(|l| l.ends_with('\n'));
        if lines
            .next()
            .and_then(|l| serde_json::from_str::<String>(l).ok())
            .as_deref()
            != Some(key)
        {
            std::fs::remove_file(&p).map_err(|e| SelectError::io(&p, e))?;
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for line in lines {
            let Ok(part) = serde_json::from_str::<Vec<f32>>(line) else {
                break;
            };
            out.extend(part);
        }
        Ok(out)
    }

    /// Appends one finished part of `what`'s values under `key` (the file starts with the key).
    pub fn append_partial(&self, what: &str, key: &str, values: &[f32]) -> Result<()> {
        let Some(p) = self.path(&format!("{what}.partial.jsonl")) else {
            return Ok(());
        };
        let io = |e| SelectError::io(&p, e);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(io)?;
        }
        let fresh = !p.exists();
        let mut line = Vec::new();
        if fresh {
            line.extend(
                serde_json::to_string(key)
                    .expect("a string serialises")
                    .bytes(),
            );
            line.push(b'\n');
        }
        line.extend(
            serde_json::to_string(values)
                .expect("numbers serialise")
                .bytes(),
        );
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(io)?;
        // One write per part, so a kill leaves whole lines and at most one cut line.
        f.write_all(&line).map_err(io)
    }

    /// Removes `what`'s partial file once its values are complete.
    pub fn remove_partial(&self, what: &str) -> Result<()> {
        if let Some(p) = self.path(&format!("{what}.partial.jsonl")) {
            if p.exists() {
                std::fs::remove_file(&p).map_err(|e| SelectError::io(&p, e))?;
            }
        }
        Ok(())
    }
}

fn read_llm_scores(p: &Path) -> Result<LlmScores> {
    let t = candle_core::safetensors::load(p, &Device::Cpu)?;
    let get = |k: &str| -> Result<Tensor> {
        t.get(k)
            .cloned()
            .ok_or_else(|| SelectError::Invalid(format!("{}: no tensor {k}", p.display())))
    };
    let vec = |k: &str| -> Result<Vec<f32>> { Ok(get(k)?.to_vec1()?) };
    Ok(LlmScores {
        hidden: Matrix::from_tensor(&get("hidden")?)?,
        grad: Matrix::from_tensor(&get("grad")?)?,
        hvp: Matrix::from_tensor(&get("hvp")?)?,
        param_hvp: t.get("param_hvp").map(Matrix::from_tensor).transpose()?,
        nll: vec("nll")?,
        el2n: vec("el2n")?,
        grand: vec("grand")?,
    })
}

fn write_llm_scores(p: &Path, s: &LlmScores) -> Result<()> {
    let dev = Device::Cpu;
    let mut t: HashMap<String, Tensor> = HashMap::new();
    t.insert("hidden".into(), s.hidden.to_tensor(&dev)?);
    t.insert("grad".into(), s.grad.to_tensor(&dev)?);
    t.insert("hvp".into(), s.hvp.to_tensor(&dev)?);
    if let Some(ph) = &s.param_hvp {
        t.insert("param_hvp".into(), ph.to_tensor(&dev)?);
    }
    for (k, v) in [("nll", &s.nll), ("el2n", &s.el2n), ("grand", &s.grand)] {
        t.insert(k.into(), Tensor::from_slice(v, v.len(), &dev)?);
    }
    let dir = p.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir).map_err(|e| SelectError::io(dir, e))?;
    let tmp = p.with_extension("tmp");
    candle_core::safetensors::save(&t, &tmp)?;
    std::fs::rename(&tmp, p).map_err(|e| SelectError::io(p, e))
}

/// The models a job may use. `scorer` gives features, HVPs, EL2N and GraNd; `proxy` gives r̄.
pub struct Models<'a> {
    pub tok: &'a TextTokenizer,
    pub scorer: Option<&'a Decoder>,
    pub proxy: Option<&'a Decoder>,
    pub index: Option<&'a ItemIndex>,
}

/// The scores of every training sample behind one selection (written to `scores.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SampleScore {
    pub sample_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r_bar: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nll: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub el2n: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grand: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub influence: Option<f32>,
}

pub struct Outcome {
    pub rows: Vec<SubsetRow>,
    pub scores: Vec<SampleScore>,
    pub timings: Timings,
    /// GORACS's trace (POO before and after the swaps, swaps, EMDs solved).
    pub goracs: Option<crate::goracs::Itra>,
}

/// A surrogate's influence score per training sample (DEALRec); supplied by the caller.
pub type InfluenceFn<'a> = &'a dyn Fn(&PreparedDataset) -> Result<Vec<f32>>;

#[allow(clippy::too_many_arguments)]
pub fn select(
    ds: &PreparedDataset,
    models: &Models,
    method: Method,
    size: usize,
    opts: &SelectOptions,
    seed: u64,
    cache: &ScoreCache,
    influence: Option<InfluenceFn>,
    progress: bool,
) -> Result<Outcome> {
    let ids: Vec<u64> = ds.train.iter().map(|s| s.id).collect();
    let n = ids.len();
    if size == 0 || size > n {
        return Err(SelectError::Invalid(format!(
            "--size must be between 1 and the {n} training samples, got {size}"
        )));
    }
    if method == Method::Goracs && ds.valid.is_empty() {
        return Err(SelectError::Invalid(
            "goracs needs validation samples: prepare the data with a validation split \
             (--valid FILE or --hold-out-every N)"
                .into(),
        ));
    }
    let mut timings = Timings::default();
    let mut scores: Vec<SampleScore> = ids
        .iter()
        .map(|&sample_id| SampleScore {
            sample_id,
            r_bar: None,
            l: None,
            r: None,
            nll: None,
            el2n: None,
            grand: None,
            influence: None,
        })
        .collect();
    let llm = if needs_llm_scores(method) {
        let want_param = method == Method::Minirec
            && opts.minirec.representativeness
            && opts.space == Space::Param;
        let cache = cache.for_scorer(models.scorer);
        let cached = cache
            .load_scores()?
            .filter(|s| s.hidden.rows == n && (!want_param || s.param_hvp.is_some()));
        Some(match cached {
            Some(s) => {
                timings.cached.push("scoring".into());
                s
            }
            None => {
                let model = models.scorer.ok_or_else(|| {
                    SelectError::Invalid(format!("{method} needs a model (--model)"))
                })?;
                let t = Instant::now();
                let ex = encode_samples(ds, &ds.train, models.tok)?;
                let proj = if want_param {
                    Some(Projection::new(model, opts.proj_k1, opts.proj_k2, seed)?)
                } else {
                    None
                };
                // A run stopped during this pass (≈ half an hour for SmolLM2-135M on 2 cores) continues from
                // the scores it saved.
                // "shortest first": parts saved before the pass ran in length order are in data order.
                let key = format!(
                    "{} batch={} proj={:?} shortest first",
                    cache.key,
                    opts.score_batch,
                    proj.as_ref().map(|_| (opts.proj_k1, opts.proj_k2, seed))
                );
                let done = cache.load_scores_partial(&key)?;
                let s = llm_scores_resumable(
                    model,
                    &ex,
                    opts.score_batch,
                    proj.as_ref(),
                    done,
                    &mut |part| cache.save_scores_partial(&key, part),
                    progress,
                )?;
                timings.scoring_s = t.elapsed().as_secs_f64();
                cache.save_scores(&s)?;
                cache.remove_scores_partial()?;
                s
            }
        })
    } else {
        None
    };
    if let Some(s) = &llm {
        for (i, sc) in scores.iter_mut().enumerate() {
            sc.nll = Some(s.nll[i]);
            sc.el2n = Some(s.el2n[i]);
            sc.grand = Some(s.grand[i]);
        }
    }
    let rbar = if needs_rewards(method, &opts.minirec) {
        Some(match cache.load_vec("rewards")?.filter(|v| v.len() == n) {
            Some(v) => {
                timings.cached.push("rollouts".into());
                v
            }
            None => {
                let (proxy, index) = match (models.proxy, models.index) {
                    (Some(p), Some(i)) => (p, i),
                    _ => {
                        return Err(SelectError::Invalid(
                            "learnability needs a proxy model and the item index".into(),
                        ))
                    }
                };
                let t = Instant::now();
                let samples: Vec<&minirec_data::Sample> = ds.train.iter().collect();
                let prompts = prompts_for(ds, &samples, models.tok)?;
                // A run stopped during the rollouts (they take most of a selection) keeps each finished call's
                // values in a partial file and resumes from it.
                let key = format!(
                    "{} rollouts={} temperature={} batch={} seed={seed}",
                    cache.key, opts.rollouts, opts.temperature, opts.rollout_batch
                );
                let done = cache.load_partial("rewards", &key)?;
                let v = crate::learnability::mean_rewards(
                    proxy,
                    index,
                    &prompts,
                    opts.rollouts,
                    opts.temperature,
                    opts.rollout_batch,
                    seed,
                    done,
                    &mut |b| cache.append_partial("rewards", &key, b),
                    progress,
                )?;
                timings.rollouts_s = t.elapsed().as_secs_f64();
                cache.save_vec("rewards", &v)?;
                cache.remove_partial("rewards")?;
                v
            }
        })
    } else {
        None
    };
    let valid_hidden = if method == Method::Goracs {
        let tv = Instant::now();
        let v = valid_embeddings(ds, models, cache, opts.score_batch, progress)?;
        if v.1 {
            timings.cached.push("valid scoring".into());
        } else {
            timings.valid_scoring_s = tv.elapsed().as_secs_f64();
        }
        Some(v.0)
    } else {
        None
    };
    let mut goracs = None;
    let t = Instant::now();
    let device = models
        .scorer
        .map(|m| m.device().clone())
        .unwrap_or(Device::Cpu);
    let rows = match method {
        Method::Random => methods::select_random(&ids, size, seed)?,
        Method::Kmeans => {
            let s = llm.as_ref().expect("scored");
            methods::select_kmeans(
                &ids,
                &s.hidden,
                size,
                opts.kmeans_iters,
                seed,
                &device,
                progress,
            )?
        }
        Method::Grand => methods::select_top(
            &ids,
            &llm.as_ref().expect("scored").grand,
            size,
            method,
            seed,
        )?,
        Method::El2n => methods::select_top(
            &ids,
            &llm.as_ref().expect("scored").el2n,
            size,
            method,
            seed,
        )?,
        Method::Dealrec => {
            let f = influence.ok_or_else(|| {
                SelectError::Invalid("DEALRec needs its surrogate's influence scores".into())
            })?;
            let ts = Instant::now();
            let inf = match cache.load_vec("influence")?.filter(|v| v.len() == n) {
                Some(v) => {
                    timings.cached.push("surrogate".into());
                    v
                }
                None => {
                    let v = f(ds)?;
                    cache.save_vec("influence", &v)?;
                    v
                }
            };
            timings.surrogate_s = ts.elapsed().as_secs_f64();
            if inf.len() != n {
                return Err(SelectError::Invalid(format!(
                    "{} influence scores for {n} samples",
                    inf.len()
                )));
            }
            let effort = crate::matrix::min_max(&llm.as_ref().expect("scored").grand);
            let infn = crate::matrix::min_max(&inf);
            let score: Vec<f32> = infn
                .iter()
                .zip(&effort)
                .map(|(a, b)| a + opts.dealrec_lambda * b)
                .collect();
            for (sc, &i) in scores.iter_mut().zip(&inf) {
                sc.influence = Some(i);
            }
            methods::select_stratified(&ids, &score, size, opts.strata, method, seed)?
        }
        Method::Goracs => {
            let s = llm.as_ref().expect("scored");
            let valid = valid_hidden.as_ref().expect("scored");
            let cost = crate::goracs::cost_matrix(
                &s.hidden,
                valid,
                &s.grand,
                opts.goracs.lambda,
                &device,
            )?;
            let (rows, trace) =
                methods::select_goracs(&ids, &cost, &s.grand, size, &opts.goracs, seed, progress)?;
            goracs = Some(trace);
            rows
        }
        Method::Minirec => {
            let s = llm.as_ref().expect("scored");
            let d = match opts.space {
                Space::Hidden => &s.hvp,
                Space::Param => s.param_hvp.as_ref().unwrap_or(&s.hvp),
            };
            let cfg = MiniRecConfig {
                size,
                seed,
                ..opts.minirec.clone()
            };
            if cfg.learnability {
                let (_, l) = crate::learnability::learnability(
                    rbar.as_deref().expect("computed"),
                    cfg.mu,
                    cfg.sigma,
                );
                scores.iter_mut().zip(l).for_each(|(sc, l)| sc.l = Some(l));
            }
            if cfg.representativeness {
                let (_, r) = crate::features::representativeness(d);
                scores.iter_mut().zip(r).for_each(|(sc, r)| sc.r = Some(r));
            }
            methods::select_minirec(
                &cfg,
                &ids,
                &s.hidden,
                Some(d),
                rbar.as_deref(),
                &device,
                progress,
            )?
        }
    };
    if let Some(r) = &rbar {
        scores
            .iter_mut()
            .zip(r)
            .for_each(|(sc, &v)| sc.r_bar = Some(v));
    }
    timings.select_s = t.elapsed().as_secs_f64() - timings.surrogate_s;
    Ok(Outcome {
        rows,
        scores,
        timings,
        goracs,
    })
}

/// The validation samples' final hidden states (GORACS's μ_V), cached; and whether they came from the cache.
fn valid_embeddings(
    ds: &PreparedDataset,
    models: &Models,
    cache: &ScoreCache,
    batch: usize,
    progress: bool,
) -> Result<(Matrix, bool)> {
    let cache = cache.for_scorer(models.scorer);
    if let Some(m) = cache
        .load_matrix("valid_hidden")?
        .filter(|m| m.rows == ds.valid.len())
    {
        return Ok((m, true));
    }
    let model = models
        .scorer
        .ok_or_else(|| SelectError::Invalid("goracs needs a model (--model)".into()))?;
    let ex = encode_samples(ds, &ds.valid, models.tok)?;
    let m = llm_scores(model, &ex, batch, None, progress)?.hidden;
    cache.save_matrix("valid_hidden", &m)?;
    Ok((m, false))
}

/// Writes every training sample's scores as JSONL (atomically).
pub fn write_scores(path: &Path, scores: &[SampleScore]) -> Result<()> {
    minirec_data::fsutil::write_jsonl_atomic(path, scores)?;
    Ok(())
}
