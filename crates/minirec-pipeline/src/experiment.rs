//! The experiment file read by `minirec run`: every stage's settings, with defaults for all but the data and
//! the model. Unknown keys are errors (a typo must not silently fall back to a default).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// The run directory; relative paths are taken from the experiment file's folder.
    pub out: PathBuf,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Force the CPU even where a GPU is present.
    #[serde(default)]
    pub cpu: bool,
    /// Keep an SFT or RL stage's `checkpoints/` once its model is exported. Off by default: the runner skips an
    /// exported stage, so they would never be read again, and a full SmolLM2-135M row's two are 3.2 GB.
    #[serde(default)]
    pub keep_checkpoints: bool,
    pub data: DataSection,
    pub model: ModelSection,
    #[serde(default)]
    pub sft: SftSection,
    #[serde(default)]
    pub select: SelectSection,
    #[serde(default)]
    pub rl: RlSection,
    #[serde(default)]
    pub eval: EvalSection,
    #[serde(default)]
    pub baselines: BaselineSection,
}

fn default_seed() -> u64 {
    42
}

/// One of: an already prepared dataset, D3 CSV files, or the embedded demo shop.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub prepared: Option<PathBuf>,
    pub d3_train: Option<PathBuf>,
    pub d3_valid: Option<PathBuf>,
    pub d3_test: Option<PathBuf>,
    pub d3_info: Option<PathBuf>,
    /// d3 without `d3_valid`: hold back every k-th training sample as the validation split.
    pub hold_out_every: Option<usize>,
    /// Prompt preset (generic, games, toys, books, industrial).
    #[serde(default = "default_domain")]
    pub domain: String,
    /// Generate the embedded demo shop with this many users.
    pub demo_users: Option<usize>,
}

fn default_domain() -> String {
    "generic".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A GGUF file, HF directory, adapter or run directory.
    pub path: Option<PathBuf>,
    /// Or a preset shape trained from scratch with a word-level tokenizer over the catalog (e.g. "tiny-64").
    pub preset: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftSection {
    /// Skip SFT (the model is already fine-tuned).
    pub skip: bool,
    pub epochs: usize,
    pub lr: f64,
    pub batch_size: usize,
    pub lora_rank: Option<usize>,
    pub max_train: Option<usize>,
    /// Batches accumulated per optimiser step.
    pub grad_accum: usize,
    /// Validate every N optimiser steps (0: at each epoch's end); the best weights are kept.
    pub valid_every: usize,
    /// Validations without a better loss before stopping.
    pub patience: usize,
    pub checkpoint_every: usize,
    /// Recompute each layer in backward (CPU): a fraction of the memory for about one more forward pass.
    pub recompute: bool,
    /// Mixed precision on the CPU's bf16 units: products of trainable weights in bf16, everything else f32
    /// (`minirec sft --bf16-mixed`; BENCHMARKS.md).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub bf16_mixed: bool,
}

impl Default for SftSection {
    fn default() -> Self {
        SftSection {
            skip: false,
            epochs: 1,
            lr: 3e-4,
            batch_size: 8,
            lora_rank: None,
            max_train: None,
            grad_accum: 1,
            valid_every: 0,
            patience: 1,
            checkpoint_every: 200,
            recompute: false,
            bf16_mixed: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SelectSection {
    pub methods: Vec<String>,
    pub sizes: Vec<usize>,
    /// MiniRec ablations at the first size: any of no-learnability, no-representativeness, no-diversity,
    /// no-curriculum.
    pub ablations: Vec<String>,
    /// Also train RL on every training sample (the "Full" row).
    pub full: bool,
    pub lambda: f32,
    pub groups: usize,
    pub mu: f32,
    pub sigma: f32,
    pub rollouts: usize,
    pub space: String,
    pub proxy: Option<PathBuf>,
    /// Score and select with this model instead of the SFT model (transfer, MiniRec §5.3): the subsets then
    /// train the experiment's own model.
    pub model: Option<PathBuf>,
    pub proxy_samples: usize,
    pub proxy_sft_epochs: usize,
    pub proxy_rl_steps: usize,
    pub proxy_rl_lr: f64,
    /// GORACS's λ, swap budget and candidates per side (`[select.goracs]`).
    pub goracs: minirec_select::goracs::GoracsConfig,
    /// The selection's scoring pass and the proxy's rollouts on bf16 weights (AVX512_BF16 / AMX; as
    /// `--bf16-weights`); bf16 scores are cached apart from f32 ones.
    pub bf16_weights: bool,
}

impl Default for SelectSection {
    fn default() -> Self {
        SelectSection {
            methods: vec!["minirec".into(), "random".into()],
            sizes: vec![1024],
            ablations: Vec::new(),
            full: true,
            lambda: 1.0,
            groups: 4,
            mu: 0.5,
            sigma: 0.25,
            rollouts: 8,
            space: "hidden".into(),
            proxy: None,
            model: None,
            proxy_samples: 256,
            proxy_sft_epochs: 0,
            proxy_rl_steps: 64,
            proxy_rl_lr: 1e-5,
            goracs: Default::default(),
            bf16_weights: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RlSection {
    /// Passes over each training set (subset or full): the same budget of epochs for every method.
    pub epochs: f64,
    /// Cap on steps per RL run (0: none), for quick runs.
    pub max_steps: usize,
    pub prompts_per_step: usize,
    pub rollouts: usize,
    pub keep: usize,
    pub lr: f64,
    pub lora_rank: Option<usize>,
    /// "riser" (default), "grpo" (all RISER components off), "riser-demos", "riser-no-dedup", "riser-no-mask",
    /// "riser-no-klcov", "riser-no-simpo" (`variant::VARIANTS`): which trainer(s) to run. With a selection
    /// table, the first one trains the subsets and the others the full set only (RISER Table 2).
    pub variants: Vec<String>,
    pub eval_every: usize,
    pub kl_cov_ratio: f64,
    /// Sequences per forward/backward pass of an update (memory, not the update, depends on it); default 8
    /// on the CPU, 32 on a GPU.
    pub micro_batch: Option<usize>,
    /// Optimiser steps per rollout batch (PPO-style; clipping and KL-Cov act from the second on).
    pub updates_per_batch: usize,
    /// Steps between RL checkpoints (0: none): a run cut off resumes from the last one. Each full SmolLM2-135M
    /// checkpoint is 1.6 GB (two are kept) and takes seconds, so runs of a few dozen minutes a step use a few.
    pub checkpoint_every: usize,
    /// The "riser-demos" variant (In-Context RLVR): K demonstrations before the prompt of R of the m rollouts,
    /// drawn at random per batch ("random") or retrieved by MiniLM similarity ("similar", needs
    /// `demo_encoder`).
    pub demos: usize,
    pub demo_rollouts: usize,
    pub demo_select: minirec_train::demos::DemoSelect,
    pub demo_encoder: Option<PathBuf>,
    /// Mixed precision in the updates on the CPU's bf16 units (`rl --bf16-mixed`); rollouts stay f32.
    pub bf16_mixed: bool,
}

impl Default for RlSection {
    fn default() -> Self {
        RlSection {
            epochs: 1.0,
            max_steps: 0,
            prompts_per_step: 4,
            rollouts: 20,
            keep: 16,
            lr: 1e-6,
            lora_rank: None,
            variants: vec!["riser".into()],
            eval_every: 0,
            kl_cov_ratio: 5e-3,
            micro_batch: None,
            updates_per_batch: 2,
            checkpoint_every: 50,
            demos: 1,
            demo_rollouts: 15,
            demo_select: Default::default(),
            demo_encoder: None,
            bf16_mixed: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalSection {
    pub split: String,
    pub beam: usize,
    pub batch: usize,
    /// Only the first N samples of the split.
    pub limit: Option<usize>,
    /// A seeded random subset of N samples of the split, the same for every row (instead of `limit`).
    pub sample: Option<usize>,
    pub sample_seed: u64,
    /// Rows also scored on the whole split (`sft`, or an RL row's name such as `full-riser`), written as
    /// `eval/NAME.whole.json`: the rows whose differences a subset cannot resolve.
    pub whole: Vec<String>,
    /// Every evaluation holds the model's frozen weights also in bf16 on the CPU's bf16 units, as the CLI's
    /// `--bf16-weights` does (≈ 1.6× faster beam search on AVX512_BF16; no effect without such units). Kept in
    /// the file so that a resumed run cannot mix arithmetics within one row.
    pub bf16_weights: bool,
    /// Batches decoded at once on the CPU, each on its share of the threads (`minirec eval --lanes`): the
    /// same lists, 1.14× the prompts per second with 2 on 2 cores.
    pub lanes: usize,
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection {
            split: "test".into(),
            beam: 20,
            batch: 32,
            limit: None,
            sample: None,
            sample_seed: 42,
            whole: Vec::new(),
            bf16_weights: false,
            lanes: 1,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BaselineSection {
    /// Any of sasrec, gru4rec, caser, pop (pop gets no "*" text-initialised variant).
    pub models: Vec<String>,
    pub epochs: usize,
    /// Also the "*" variants (needs `encoder` or MINIREC_MINILM_DIR).
    pub text_init: bool,
    pub encoder: Option<PathBuf>,
}

impl Default for BaselineSection {
    fn default() -> Self {
        BaselineSection {
            models: Vec::new(),
            epochs: 200,
            text_init: false,
            encoder: None,
        }
    }
}

impl Experiment {
    /// Reads and checks an experiment file; relative paths become relative to its folder.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut e: Experiment = toml::from_str(&text).map_err(|err| {
            let line = err
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(0);
            anyhow::anyhow!("{}:{line}: {}", path.display(), err.message().trim())
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut e.out);
        for p in [
            &mut e.data.prepared,
            &mut e.data.d3_train,
            &mut e.data.d3_valid,
            &mut e.data.d3_test,
            &mut e.data.d3_info,
            &mut e.model.path,
            &mut e.select.proxy,
            &mut e.select.model,
            &mut e.baselines.encoder,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
        e.check()
            .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
        Ok(e)
    }

    pub fn check(&self) -> Result<()> {
        let d = &self.data;
        let sources = [
            d.prepared.is_some(),
            d.d3_train.is_some() || d.d3_test.is_some() || d.d3_info.is_some(),
            d.demo_users.is_some(),
        ];
        if sources.iter().filter(|&&x| x).count() != 1 {
            bail!("[data] needs exactly one of: prepared = DIR; d3_train/d3_test/d3_info (+ d3_valid); demo_users = N");
        }
        if (d.d3_train.is_some() || d.d3_test.is_some() || d.d3_info.is_some())
            && (d.d3_train.is_none() || d.d3_test.is_none() || d.d3_info.is_none())
        {
            bail!("[data] D3 input needs d3_train, d3_test and d3_info");
        }
        if d.hold_out_every.is_some() && (d.d3_valid.is_some() || d.d3_train.is_none()) {
            bail!("[data] hold_out_every holds back part of d3_train as validation: it needs d3_train and no d3_valid");
        }
        if self.model.path.is_some() == self.model.preset.is_some() {
            bail!("[model] needs exactly one of path = ... or preset = ...");
        }
        if self.model.preset.is_some() && self.sft.skip {
            bail!("[model] preset trains from scratch: [sft] skip = true makes no sense with it");
        }
        for m in &self.select.methods {
            m.parse::<minirec_select::Method>()?;
        }
        for a in &self.select.ablations {
            if ![
                "no-learnability",
                "no-representativeness",
                "no-diversity",
                "no-curriculum",
            ]
            .contains(&a.as_str())
            {
                bail!("[select] unknown ablation {a:?} (no-learnability, no-representativeness, no-diversity, no-curriculum)");
            }
        }
        if self.select.sizes.is_empty() && !self.select.methods.is_empty() {
            bail!("[select] sizes is empty");
        }
        for v in &self.rl.variants {
            crate::variant::check(v)?;
        }
        if self.rl.variants.iter().any(|v| v == "riser-demos") {
            let r = &self.rl;
            if r.demos == 0 || r.demo_rollouts == 0 || r.demo_rollouts > r.rollouts {
                bail!(
                    "[rl] riser-demos needs demos ≥ 1 and demo_rollouts between 1 and rollouts ({}), got {} and {}",
                    r.rollouts,
                    r.demos,
                    r.demo_rollouts
                );
            }
            if r.demo_select == minirec_train::demos::DemoSelect::Similar
                && r.demo_encoder.is_none()
            {
                bail!("[rl] demo_select = \"similar\" needs demo_encoder (a MiniLM directory)");
            }
        }
        if self.rl.epochs.is_nan() || self.rl.epochs <= 0.0 {
            bail!("[rl] epochs must be positive");
        }
        if self.rl.micro_batch == Some(0) || self.rl.updates_per_batch == 0 {
            bail!("[rl] micro_batch and updates_per_batch must be at least 1");
        }
        for b in &self.baselines.models {
            b.parse::<minirec_baselines::Kind>()?;
        }
        if !["hidden", "param"].contains(&self.select.space.as_str()) {
            bail!("[select] space must be \"hidden\" or \"param\"");
        }
        if self.eval.sample.is_some() && self.eval.limit.is_some() {
            bail!("[eval] give limit (the first N samples) or sample (a seeded subset of N), not both");
        }
        if self.eval.lanes == 0 {
            bail!("[eval] lanes = 0: at least 1 (batches decoded at once)");
        }
        for w in &self.eval.whole {
            let rl_row = self
                .rl
                .variants
                .iter()
                .any(|v| w.ends_with(&format!("-{v}")));
            if w != "sft" && !rl_row {
                bail!("[eval] whole: {w:?} names no row (\"sft\", or an RL row such as \"full-riser\")");
            }
        }
        self.eval
            .split
            .parse::<minirec_data::Split>()
            .map_err(|e| anyhow::anyhow!("[eval] split: {e}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses_and_resolves_paths() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/industrial.toml");
        let e = Experiment::load(&p).unwrap();
        assert!(e.out.starts_with(p.parent().unwrap()));
        assert_eq!(e.select.methods.len(), 6);
        assert_eq!(e.select.ablations.len(), 4);
        assert_eq!(e.rl.variants, vec!["riser", "grpo"]);
        assert!(e.data.d3_info.unwrap().ends_with("industrial/info.txt"));
        let p = p.with_file_name("industrial-cpu.toml");
        let e = Experiment::load(&p).unwrap();
        assert_eq!(
            (e.eval.sample, e.data.hold_out_every),
            (Some(2000), Some(20))
        );
        assert_eq!((e.sft.grad_accum, e.sft.valid_every), (2, 45));
        assert_eq!(e.eval.whole.len(), 3);
        assert!(e.eval.bf16_weights);
        assert!(e.select.methods.iter().any(|m| m == "goracs"));
        assert_eq!((e.select.goracs.lambda, e.select.goracs.swaps), (0.1, 100));
        assert_eq!(e.rl.variants, vec!["grpo", "riser", "riser-no-simpo"]);
        e.check().unwrap();
    }

    /// `industrial-cpu.toml` continues the run of `industrial-cpu-sft-epoch.toml` (its SFT and RL rows are
    /// seeded from it, `benches/cpu/tables_session.sh seed-rows`), which is only sound while both files train
    /// the same weights.
    #[test]
    fn the_issue_file_trains_what_the_sft_epoch_file_trained() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let load = |f: &str| Experiment::load(&dir.join(f)).unwrap();
        let (all, first) = (
            load("industrial-cpu.toml"),
            load("industrial-cpu-sft-epoch.toml"),
        );
        fn json<T: Serialize>(v: &T) -> serde_json::Value {
            serde_json::to_value(v).unwrap()
        }
        assert_eq!(json(&all.data), json(&first.data));
        assert_eq!(json(&all.model), json(&first.model));
        assert_eq!(json(&all.sft), json(&first.sft));
        assert_eq!(json(&all.rl), json(&first.rl));
        assert_eq!(json(&all.eval), json(&first.eval));
        assert_eq!((all.seed, all.cpu), (first.seed, first.cpu));
    }

    /// A typo in any shipped file (a variant, a method) is found here, not hours into a run.
    #[test]
    fn every_shipped_experiment_file_passes_its_checks() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                let e =
                    Experiment::load(&p).unwrap_or_else(|err| panic!("{}: {err:#}", p.display()));
                e.check()
                    .unwrap_or_else(|err| panic!("{}: {err:#}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 4, "{n} files");
    }

    #[test]
    fn defaults_fill_everything_but_data_and_model() {
        let e: Experiment =
            toml::from_str("out = \"o\"\n[data]\ndemo_users = 50\n[model]\npreset = \"tiny\"\n")
                .unwrap();
        e.check().unwrap();
        assert_eq!(e.seed, 42);
        assert_eq!(e.rl.rollouts, 20);
        assert_eq!(e.select.sizes, vec![1024]);
        let bad: Experiment = toml::from_str(
            "out = \"o\"\n[data]\ndemo_users = 50\n[model]\npreset = \"tiny\"\n[select]\nmethods = [\"best\"]\n",
        )
        .unwrap();
        assert!(bad.check().unwrap_err().to_string().contains("best"));
    }

    #[test]
    fn mixed_precision_is_read_and_left_out_of_the_record_when_off() {
        let base = "out = \"o\"\n[data]\ndemo_users = 50\n[model]\npreset = \"tiny\"\n[sft]\n";
        let on: Experiment = toml::from_str(&format!("{base}bf16_mixed = true\n")).unwrap();
        let off: Experiment = toml::from_str(base).unwrap();
        assert!(on.sft.bf16_mixed && !off.sft.bf16_mixed);
        // Runs recorded before the key existed keep the same experiment.json.
        let json = |e: &Experiment| serde_json::to_string(&e.sft).unwrap();
        assert!(!json(&off).contains("bf16_mixed") && json(&on).contains("\"bf16_mixed\":true"));
    }
}
