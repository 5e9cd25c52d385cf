//! Opening a model from a path a user gives: a GGUF file, an HF directory (config.json, safetensors,
//! tokenizer.json), a PEFT adapter directory (its base found through `base_model_name_or_path`), or a run
//! directory holding one of those under `model/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::config::{Family, ModelConfig};
use crate::error::{ModelError, Result};
use crate::lora;
use crate::model::Decoder;
use crate::tokenizer::TextTokenizer;
use crate::weights::{load_gguf, load_hf_dir, Weights};

pub struct LoadedModel {
    pub model: Decoder,
    pub tokenizer: TextTokenizer,
    /// What was loaded, for logs and manifests.
    pub description: String,
}

/// The compute device: CUDA when built with it and a GPU is present (unless `cpu`), else the CPU.
pub fn pick_device(cpu: bool) -> Result<Device> {
    if !cpu && candle_core::utils::cuda_is_available() {
        let device = Device::new_cuda(0)?;
        tune_cuda(&device);
        return Ok(device);
    }
    Ok(Device::Cpu)
}

/// Single-stream settings for speed: no per-allocation event tracking (cudarc records two events on every
/// allocation for multi-stream safety that one stream does not need), and a memory pool that keeps freed
/// memory instead of returning it to the driver at every synchronisation (the decoder synchronises once a
/// step, and each step reallocates the same large temporaries).
#[cfg(feature = "cuda")]
fn tune_cuda(device: &Device) {
    use candle_core::cuda_backend::cudarc::driver::sys;
    if let Device::Cuda(d) = device {
        // SAFETY: called once, right after the device is created and before any tensor exists on it.
        unsafe { d.disable_event_tracking() };
        let stream = d.cuda_stream();
        let ctx = stream.context();
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        let mut threshold: u64 = u64::MAX;
        // SAFETY: plain driver calls on the context's own device with valid out-pointers.
        let ok = unsafe {
            ctx.bind_to_thread().is_ok()
                && sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device())
                    == sys::CUresult::CUDA_SUCCESS
                && sys::cuMemPoolSetAttribute(
                    pool,
                    sys::CUmemPool_attribute_enum::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                    &mut threshold as *mut u64 as *mut std::ffi::c_void,
                ) == sys::CUresult::CUDA_SUCCESS
        };
        if !ok {
            tracing::warn!("could not configure the CUDA memory pool; continuing with defaults");
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn tune_cuda(_device: &Device) {}

/// bf16 on GPU, f32 on CPU (DESIGN.md).
pub fn default_dtype(device: &Device) -> DType {
    if device.is_cuda() {
        DType::BF16
    } else {
        DType::F32
    }
}

fn is_gguf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .map(|_| &magic == b"GGUF")
        .unwrap_or(false)
}

/// What a model path leads to, resolved the same way for every command that takes a model.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    Gguf(PathBuf),
    /// An HF directory: config.json, safetensors, tokenizer.json.
    HfDir(PathBuf),
    /// A PEFT LoRA adapter directory and the base it names (itself any model path).
    Adapter {
        dir: PathBuf,
        base: PathBuf,
    },
}

/// A resolved model path: the source, and the run directory it was found in, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedModel {
    pub source: ModelSource,
    pub run: Option<PathBuf>,
}

impl std::fmt::Display for ResolvedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            ModelSource::Gguf(p) => write!(f, "GGUF {}", p.display())?,
            ModelSource::HfDir(p) => write!(f, "HF directory {}", p.display())?,
            ModelSource::Adapter { dir, base } => {
                write!(f, "LoRA adapter {} on {}", dir.display(), base.display())?
            }
        }
        if let Some(r) = &self.run {
            write!(f, " (from run {})", r.display())?;
        }
        Ok(())
    }
}

/// The model a training run exported (`model/`, `adapter/` or `model.gguf` inside `run`), if any.
pub fn run_export(run: &Path) -> Option<PathBuf> {
    ["model", "adapter", "model.gguf"]
        .iter()
        .map(|d| run.join(d))
        .find(|p| {
            p.join("config.json").is_file()
                || p.join("adapter_config.json").is_file()
                || (p.is_file() && is_gguf(p))
        })
}

/// Resolves a model path: a GGUF file, an HF directory, a PEFT adapter directory (its base found through
/// `base_model_name_or_path`, relative to the adapter), or a run directory of any training stage (SFT, RL,
/// the selection proxy) holding one of those.
pub fn resolve_model(path: &Path) -> Result<ResolvedModel> {
    let plain = |source| ResolvedModel { source, run: None };
    if path.is_file() {
        if !is_gguf(path) {
            return Err(ModelError::file(
                path,
                "not a GGUF file (give a .gguf file or an HF model directory)",
            ));
        }
        return Ok(plain(ModelSource::Gguf(path.to_path_buf())));
    }
    if !path.is_dir() {
        return Err(ModelError::file(path, "no such model file or directory"));
    }
    if path.join("config.json").exists() {
        return Ok(plain(ModelSource::HfDir(path.to_path_buf())));
    }
    if path.join("adapter_config.json").exists() {
        let cfg_path = path.join("adapter_config.json");
        let v = crate::error::read_json_file(&cfg_path)?;
        let base = v
            .get("base_model_name_or_path")
            .and_then(|b| b.as_str())
            .ok_or_else(|| ModelError::file(&cfg_path, "no base_model_name_or_path"))?;
        let base = PathBuf::from(base);
        let base = if base.is_relative() {
            path.join(&base)
        } else {
            base
        };
        return Ok(plain(ModelSource::Adapter {
            dir: path.to_path_buf(),
            base,
        }));
    }
    if let Some(inner) = run_export(path) {
        let mut r = resolve_model(&inner)?;
        r.run = Some(path.to_path_buf());
        return Ok(r);
    }
    if path.join("checkpoints").is_dir() {
        return Err(ModelError::file(
            path,
            "a training run that has not exported a model yet (only checkpoints/): finish it with --resume",
        ));
    }
    Err(ModelError::file(
        path,
        "not a model: expected a .gguf file, an HF directory (config.json), a LoRA adapter (adapter_config.json) or a run directory with model/ or adapter/",
    ))
}

/// Loads a model from any path `resolve_model` accepts. Adapters come merged into the weights (a chain of
/// them, as LoRA SFT followed by LoRA RL leaves, in order), so the model is ready to run or to train afresh.
pub fn load_model(path: &Path, device: &Device, dtype: DType) -> Result<LoadedModel> {
    let resolved = resolve_model(path)?;
    let description = resolved.to_string();
    let mut loaded = match resolved.source {
        ModelSource::Gguf(p) => {
            let (cfg, w, content) = load_gguf(&p, device)?;
            let tokenizer = TextTokenizer::from_gguf(&content)?;
            let model = Decoder::from_weights(cfg, &w, dtype, device)?;
            LoadedModel {
                model,
                tokenizer,
                description: String::new(),
            }
        }
        ModelSource::HfDir(p) => {
            let (cfg, w) = load_hf_dir(&p, device)?;
            let tok_path = p.join("tokenizer.json");
            if !tok_path.exists() {
                return Err(ModelError::file(
                    &p,
                    "the model directory has no tokenizer.json",
                ));
            }
            let tokenizer = TextTokenizer::from_file(&tok_path)?;
            let model = Decoder::from_weights(cfg, &w, dtype, device)?;
            LoadedModel {
                model,
                tokenizer,
                description: String::new(),
            }
        }
        ModelSource::Adapter { dir, base } => {
            let mut loaded = load_model(&base, device, dtype)?;
            lora::load_adapter(&mut loaded.model, &dir)?;
            loaded.model.merge_adapters()?;
            loaded.description = format!("{description}; base: {}", loaded.description);
            return Ok(loaded);
        }
    };
    loaded.description = description;
    Ok(loaded)
}

/// Standard shapes for benchmarks and smoke tests, with a given vocabulary size.
pub fn preset_config(name: &str, vocab_size: usize) -> Result<ModelConfig> {
    let (family, hidden, inter, layers, heads, kv, theta, tie) = match name {
        "smollm2-135m" => (Family::Llama, 576, 1536, 30, 9, 3, 100_000.0, true),
        "smollm2-360m" => (Family::Llama, 960, 2560, 32, 15, 5, 100_000.0, true),
        "qwen2-0.5b" => (Family::Qwen2, 896, 4864, 24, 14, 2, 1_000_000.0, true),
        "qwen2-1.5b" => (Family::Qwen2, 1536, 8960, 28, 12, 2, 1_000_000.0, true),
        // Tiny Llama-family shapes for tests and the embedded demo.
        "tiny" => (Family::Llama, 32, 64, 2, 4, 2, 100_000.0, true),
        "tiny-64" => (Family::Llama, 64, 128, 2, 4, 2, 100_000.0, true),
        other => {
            return Err(ModelError::Invalid(format!(
                "unknown preset {other:?} (smollm2-135m, smollm2-360m, qwen2-0.5b, qwen2-1.5b, tiny, tiny-64)"
            )))
        }
    };
    Ok(ModelConfig {
        family,
        vocab_size,
        hidden_size: hidden,
        intermediate_size: inter,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: kv,
        head_dim: hidden / heads,
        rms_norm_eps: 1e-6,
        rope_theta: theta,
        max_position_embeddings: if name.starts_with("tiny") { 512 } else { 8192 },
        tie_word_embeddings: tie,
        attention_bias: family == Family::Qwen2,
        activation: crate::config::Activation::Silu,
        query_pre_attn_scalar: None,
        attn_logit_softcapping: None,
        final_logit_softcapping: None,
        sliding_window: None,
        sliding_layers: vec![false; layers],
        bos_token_id: None,
        eos_token_id: None,
    })
}

/// A randomly initialised model (normal, std 0.02; norms at one), the same for the same seed: drawn on the
/// host from a seeded generator on the CPU (candle's CPU generator cannot be seeded), by the device's seeded
/// generator on a GPU.
pub fn random_model(cfg: ModelConfig, dtype: DType, device: &Device, seed: u64) -> Result<Decoder> {
    use rand::SeedableRng;
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let h = cfg.hidden_size;
    let q = cfg.num_heads * cfg.head_dim;
    let kv = cfg.num_kv_heads * cfg.head_dim;
    let on_host = !device.is_cuda() || device.set_seed(seed).is_err();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut rnd = |name: String, shape: (usize, usize)| -> Result<()> {
        let w = if on_host {
            Tensor::from_vec(normal(&mut rng, shape.0 * shape.1, 0.02), shape, device)?
        } else {
            Tensor::randn(0f32, 0.02, shape, device)?
        };
        t.insert(name, w.to_dtype(dtype)?);
        Ok(())
    };
    rnd("model.embed_tokens.weight".into(), (cfg.vocab_size, h))?;
    for i in 0..cfg.num_layers {
        let p = format!("model.layers.{i}");
        rnd(format!("{p}.self_attn.q_proj.weight"), (q, h))?;
        rnd(format!("{p}.self_attn.k_proj.weight"), (kv, h))?;
        rnd(format!("{p}.self_attn.v_proj.weight"), (kv, h))?;
        rnd(format!("{p}.self_attn.o_proj.weight"), (h, q))?;
        rnd(
            format!("{p}.mlp.gate_proj.weight"),
            (cfg.intermediate_size, h),
        )?;
        rnd(
            format!("{p}.mlp.up_proj.weight"),
            (cfg.intermediate_size, h),
        )?;
        rnd(
            format!("{p}.mlp.down_proj.weight"),
            (h, cfg.intermediate_size),
        )?;
    }
    if !cfg.tie_word_embeddings {
        rnd("lm_head.weight".into(), (cfg.vocab_size, h))?;
    }
    let ones = |n: usize| Tensor::ones(n, dtype, device);
    let zeros = |n: usize| Tensor::zeros(n, dtype, device);
    let gemma = cfg.family == Family::Gemma2;
    let norm = |n: usize| if gemma { zeros(n) } else { ones(n) };
    for i in 0..cfg.num_layers {
        let p = format!("model.layers.{i}");
        t.insert(format!("{p}.input_layernorm.weight"), norm(h)?);
        t.insert(format!("{p}.post_attention_layernorm.weight"), norm(h)?);
        if gemma {
            t.insert(format!("{p}.pre_feedforward_layernorm.weight"), norm(h)?);
            t.insert(format!("{p}.post_feedforward_layernorm.weight"), norm(h)?);
        }
        if cfg.attention_bias {
            for (n, d) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
                t.insert(format!("{p}.self_attn.{n}.bias"), zeros(d)?);
            }
        }
    }
    t.insert("model.norm.weight".into(), norm(h)?);
    Decoder::from_weights(cfg, &Weights::new(t, "random init"), dtype, device)
}

/// `n` draws from N(0, std²) by the Box–Muller transform.
fn normal(rng: &mut impl rand::Rng, n: usize, std: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
        let u2: f32 = rng.random();
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let a = 2.0 * std::f32::consts::PI * u2;
        out.push(r * a.cos());
        out.push(r * a.sin());
    }
    out.truncate(n);
    out
}
