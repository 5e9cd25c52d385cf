//! A start-up estimate of a training step's peak memory, so that a batch the machine cannot hold stops the run
//! at once with what to lower, instead of an OOM kill hours in.
//!
//! The estimate counts what candle keeps for backward per token and layer (each op's output) and the fixed
//! cost of weights, gradients and AdamW's moments, with a factor for the backward pass's transient
//! gradients. Calibrated on SmolLM2-135M at batch 8 × 222 tokens (BENCHMARKS.md, session 5): live heap 7.53 GB
//! with LoRA r 8, 6.28 GB for full fine-tuning; the estimate is 8.0 and 6.3 GB (tested within 25%). With
//! layers recomputed (session 8): 1.51 and 2.83 GB measured, 1.26 and 2.77 GB estimated.

use minirec_model::ModelConfig;

use crate::error::{Result, TrainError};

/// Backward's transient gradients on top of the kept activations (measured ≈ 1.5×).
const BACKWARD_FACTOR: f64 = 1.5;

/// Bytes candle keeps per token for backward (f32), across all layers.
pub fn activation_bytes_per_token(cfg: &ModelConfig, lora: bool) -> f64 {
    let (h, kv, i) = (
        cfg.hidden_size as f64,
        (cfg.num_kv_heads * cfg.head_dim) as f64,
        cfg.intermediate_size as f64,
    );
    // Outputs of the seven projections; a LoRA layer below its fold keeps three (base, low-rank, sum).
    let per_linear = if lora { 3.0 } else { 1.0 };
    let projections = per_linear * (2.0 * h + 2.0 * kv + 2.0 * i + h);
    // Norms, RoPE, contiguous copies for attention, its output, residual sums and SiLU·mul.
    let rest = 8.0 * h + 3.0 * kv + i;
    4.0 * (projections + rest) * cfg.num_layers as f64
}

/// Parameters of the model described by `cfg`.
pub fn parameter_count(cfg: &ModelConfig) -> f64 {
    let (h, kv, i) = (
        cfg.hidden_size as f64,
        (cfg.num_kv_heads * cfg.head_dim) as f64,
        cfg.intermediate_size as f64,
    );
    let embed = cfg.vocab_size as f64 * h;
    let layer = 2.0 * h * h + 2.0 * h * kv + 3.0 * h * i + 2.0 * h;
    let head = if cfg.tie_word_embeddings { 0.0 } else { embed };
    embed + head + layer * cfg.num_layers as f64 + h
}

/// How a training pass keeps what its backward needs.
#[derive(Debug, Clone, Copy)]
pub struct Kept {
    pub lora: bool,
    /// Layers recomputed in backward: each keeps its input, and one layer's intermediates live at a time.
    pub recompute: bool,
}

/// Peak bytes of one forward/backward pass over `rows` token positions (padding included), `predicted` of
/// them scored over the vocabulary.
pub fn step_peak_bytes(cfg: &ModelConfig, kept: Kept, rows: usize, predicted: usize) -> f64 {
    let weights = 4.0 * parameter_count(cfg);
    // Full fine-tuning adds a gradient and AdamW's two moments per weight.
    let fixed = if kept.lora { weights } else { 4.0 * weights };
    let logits = 4.0 * 4.0 * (predicted * cfg.vocab_size) as f64;
    let all_layers = activation_bytes_per_token(cfg, kept.lora);
    let per_token = if kept.recompute {
        let inputs = 4.0 * (cfg.hidden_size * cfg.num_layers) as f64;
        inputs + all_layers / cfg.num_layers as f64
    } else {
        all_layers
    };
    let acts = per_token * rows as f64;
    fixed + BACKWARD_FACTOR * (acts + logits)
}

/// The memory this process may still take: `MemAvailable` from /proc/meminfo (None elsewhere).
pub fn available_bytes() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

/// Stops with `advice` when `need` bytes exceed what the machine has (`MINIREC_NO_MEMORY_CHECK=1` skips it).
pub fn check_fits(what: &str, need: f64, available: Option<f64>, advice: &str) -> Result<()> {
    if fits(need, available) {
        return Ok(());
    }
    match available {
        Some(have) => Err(TrainError::Invalid(format!(
            "{what} needs about {:.1} GB at its peak and the machine has {:.1} GB available: {advice} \
             (MINIREC_NO_MEMORY_CHECK=1 skips this check)",
            need / 1e9,
            have / 1e9
        ))),
        None => Ok(()),
    }
}

/// Whether `need` bytes fit in what is available (always, when unknown or when MINIREC_NO_MEMORY_CHECK is set).
pub fn fits(need: f64, available: Option<f64>) -> bool {
    std::env::var_os("MINIREC_NO_MEMORY_CHECK").is_some()
        || available.is_none_or(|have| need <= have)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smollm2() -> ModelConfig {
        minirec_model::load::preset_config("smollm2-135m", 49_152).unwrap()
    }

    #[test]
    fn estimate_matches_the_measured_smollm2_batches() {
        // Batch 8 of real Industrial samples, padded to 222 tokens; ≈ 32 response tokens a sample.
        let (rows, predicted) = (8 * 222, 8 * 32);
        // Live-heap peaks measured with MINIREC_MEMTRACE, in bytes: (lora, recompute, peak). The recomputed
        // ones are session 8's, over 8–12 steps of the same batches.
        let measured = [
            (true, false, 7.53e9),
            (false, false, 6.28e9),
            (true, true, 1.51e9),
            (false, true, 2.83e9),
        ];
        for (lora, recompute, peak) in measured {
            let est = step_peak_bytes(&smollm2(), Kept { lora, recompute }, rows, predicted);
            assert!(
                (est - peak).abs() < 0.25 * peak,
                "lora={lora} recompute={recompute}: estimate {:.2} GB vs {:.2} measured",
                est / 1e9,
                peak / 1e9
            );
        }
        assert!((parameter_count(&smollm2()) / 1e6 - 134.5).abs() < 1.0);
    }

    #[test]
    fn a_batch_too_big_stops_with_what_to_lower() {
        let e = check_fits("SFT batch", 30e9, Some(20e9), "lower --batch-size").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("30.0 GB") && msg.contains("20.0 GB") && msg.contains("--batch-size"),
            "{msg}"
        );
        assert!(check_fits("SFT batch", 10e9, Some(20e9), "x").is_ok());
        assert!(check_fits("SFT batch", 10e9, None, "x").is_ok());
    }
}
