//! The proxy policy for learnability (MiniRec §4.2): the model trained on a few random training samples —
//! SFT (optional epochs) then GRPO + RISER — so that r̄ reflects what RL can reach, not the initial model.

use std::path::Path;

use minirec_data::{PreparedDataset, Sample};
use minirec_model::decode::ItemIndex;
use minirec_model::{Decoder, TextTokenizer};
use minirec_train::rl::{prompts_for, RlConfig};
use minirec_train::sft::{encode_samples, trainable, SftConfig};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SelectError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Random training samples the proxy learns from.
    pub samples: usize,
    /// SFT epochs on them before RL (0: RL only, e.g. when the model is already fine-tuned).
    pub sft_epochs: usize,
    pub sft_lr: f64,
    pub rl: RlConfig,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            samples: 256,
            sft_epochs: 1,
            sft_lr: 1e-4,
            rl: RlConfig {
                // One pass over the 256 samples at 4 prompts per step.
                max_steps: 64,
                checkpoint_every: 0,
                eval_every: 0,
                ..Default::default()
            },
        }
    }
}

/// Trains `model` in place into the proxy, writing its runs under `dir` (`sft/`, `rl/`).
#[allow(clippy::too_many_arguments)]
pub fn train_proxy(
    model: &mut Decoder,
    tok: &TextTokenizer,
    ds: &PreparedDataset,
    index: &ItemIndex,
    cfg: &ProxyConfig,
    seed: u64,
    dir: &Path,
    progress: bool,
) -> Result<()> {
    if cfg.samples == 0 {
        return Err(SelectError::Invalid(
            "the proxy needs at least one sample".into(),
        ));
    }
    let mut pool: Vec<&Sample> = ds.train.iter().collect();
    pool.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    pool.truncate(cfg.samples);
    if cfg.sft_epochs > 0 {
        let owned: Vec<Sample> = pool.iter().map(|s| (*s).clone()).collect();
        let tr = encode_samples(ds, &owned, tok)?;
        let valid: Vec<Sample> = ds.valid.iter().take(128).cloned().collect();
        let va = encode_samples(ds, &valid, tok)?;
        let sft = SftConfig {
            epochs: cfg.sft_epochs,
            lr: cfg.sft_lr,
            checkpoint_every: 0,
            seed,
            ..Default::default()
        };
        let vars = trainable(model, &sft)?;
        minirec_train::sft::train(
            model,
            tok,
            vars,
            &tr,
            &va,
            &sft,
            &dir.join("sft"),
            "proxy",
            false,
            progress,
        )?;
        model.merge_adapters()?;
    }
    let prompts = prompts_for(ds, &pool, tok)?;
    let vars = trainable(model, &SftConfig::default())?;
    let rl = RlConfig {
        seed,
        ..cfg.rl.clone()
    };
    minirec_train::rl::train(
        model,
        tok,
        vars,
        index,
        &prompts,
        &[],
        None,
        None,
        &rl,
        &dir.join("rl"),
        "proxy",
        false,
        progress,
    )?;
    model.merge_adapters()?;
    // The proxy only samples from here on: frozen, its weights can take the bf16 kernel (`[select]
    // bf16_weights`); left trainable, the rollouts over every training sample ran in f32, 2.1× slower
    // (BENCHMARKS.md).
    model.freeze()?;
    Ok(())
}
