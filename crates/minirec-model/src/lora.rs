//! LoRA adapters saved and loaded in PEFT's format (`adapter_model.safetensors` + `adapter_config.json`), so an
//! adapter trained here loads with `peft.PeftModel.from_pretrained`, and merged weights saved as an HF directory.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::layers::Lora;
use crate::model::Decoder;
use crate::tokenizer::TextTokenizer;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// Module names as PEFT writes them: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj.
    pub target_modules: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            r: 8,
            alpha: 16.0,
            dropout: 0.05,
            target_modules: [
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

fn targets(name: &str, cfg: &LoraConfig) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    cfg.target_modules.iter().any(|t| t == last)
}

/// Adds fresh adapters (A uniform in ±1/√in as PEFT's Kaiming init gives, B zero, so the model is unchanged)
/// to the target modules. Returns the trainable variables by PEFT key.
pub fn add_lora(model: &mut Decoder, cfg: &LoraConfig, seed: u64) -> Result<Vec<(String, Var)>> {
    if cfg.r == 0 {
        return Err(ModelError::Invalid("LoRA rank must be at least 1".into()));
    }
    if model.f32_dropped() {
        return Err(ModelError::Invalid(
            "adding LoRA adapters: this model was loaded for inference and keeps its frozen weights in bf16 only"
                .into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dev = model.device().clone();
    let mut vars = Vec::new();
    let scale = cfg.alpha / cfg.r as f64;
    let mut hit = 0;
    for (name, lin) in model.linears_mut() {
        if !targets(&name, cfg) {
            continue;
        }
        hit += 1;
        let (out_d, in_d) = (lin.out_dim(), lin.in_dim());
        let bound = 1.0 / (in_d as f32).sqrt();
        let a: Vec<f32> = (0..cfg.r * in_d)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        let a = Var::from_tensor(&Tensor::from_vec(a, (cfg.r, in_d), &dev)?)?;
        let b = Var::zeros((out_d, cfg.r), DType::F32, &dev)?;
        vars.push((format!("base_model.model.{name}.lora_A.weight"), a.clone()));
        vars.push((format!("base_model.model.{name}.lora_B.weight"), b.clone()));
        lin.lora = Some(Lora { a, b, scale });
    }
    if hit == 0 {
        return Err(ModelError::Invalid(format!(
            "no module matches target_modules {:?}",
            cfg.target_modules
        )));
    }
    Ok(vars)
}

fn peft_config(cfg: &LoraConfig, base: &str) -> serde_json::Value {
    serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": cfg.r,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "target_modules": cfg.target_modules,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "base_model_name_or_path": base,
        "modules_to_save": null,
        "use_rslora": false,
        "use_dora": false,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "revision": null
    })
}

/// Writes `adapter_model.safetensors` and `adapter_config.json` into `dir`.
pub fn save_adapter(model: &mut Decoder, cfg: &LoraConfig, base: &str, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|err| ModelError::Io {
        path: dir.to_path_buf(),
        err,
    })?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, lin) in model.linears_mut() {
        if let Some(l) = &lin.lora {
            tensors.insert(
                format!("base_model.model.{name}.lora_A.weight"),
                l.a.as_tensor().to_dtype(DType::F32)?,
            );
            tensors.insert(
                format!("base_model.model.{name}.lora_B.weight"),
                l.b.as_tensor().to_dtype(DType::F32)?,
            );
        }
    }
    if tensors.is_empty() {
        return Err(ModelError::Invalid(
            "the model has no adapters to save".into(),
        ));
    }
    let st = dir.join("adapter_model.safetensors");
    let tmp = dir.join(".adapter_model.safetensors.tmp");
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, &st).map_err(|err| ModelError::Io {
        path: st.clone(),
        err,
    })?;
    let cfg_path = dir.join("adapter_config.json");
    let text = serde_json::to_string_pretty(&peft_config(cfg, base)).expect("json");
    std::fs::write(&cfg_path, text).map_err(|err| ModelError::Io {
        path: cfg_path,
        err,
    })?;
    Ok(())
}

/// Reads a PEFT adapter directory and attaches it to the model (as trainable variables).
pub fn load_adapter(model: &mut Decoder, dir: &Path) -> Result<(LoraConfig, Vec<(String, Var)>)> {
    let cfg_path = dir.join("adapter_config.json");
    let v = crate::error::read_json_file(&cfg_path)?;
    if v.get("peft_type").and_then(|x| x.as_str()) != Some("LORA") {
        return Err(ModelError::file(
            &cfg_path,
            "not a LoRA adapter (peft_type is not LORA)",
        ));
    }
    let modules = match v.get("target_modules") {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        _ => return Err(ModelError::file(&cfg_path, "no target_modules")),
    };
    let cfg = LoraConfig {
        r: v.get("r")
            .and_then(|x| x.as_u64())
            .ok_or_else(|| ModelError::file(&cfg_path, "no r"))? as usize,
        alpha: v.get("lora_alpha").and_then(|x| x.as_f64()).unwrap_or(8.0),
        dropout: v
            .get("lora_dropout")
            .and_then(|x| x.as_f64())
            .unwrap_or(0.0),
        target_modules: modules,
    };
    let st = dir.join("adapter_model.safetensors");
    let dev = model.device().clone();
    let tensors = candle_core::safetensors::load(&st, &dev)
        .map_err(|e| ModelError::file(&st, e.to_string()))?;
    let scale = cfg.alpha / cfg.r as f64;
    let mut vars = Vec::new();
    for (name, lin) in model.linears_mut() {
        let ka = format!("base_model.model.{name}.lora_A.weight");
        let kb = format!("base_model.model.{name}.lora_B.weight");
        match (tensors.get(&ka), tensors.get(&kb)) {
            (Some(a), Some(b)) => {
                let a = Var::from_tensor(&a.to_dtype(DType::F32)?)?;
                let b = Var::from_tensor(&b.to_dtype(DType::F32)?)?;
                vars.push((ka, a.clone()));
                vars.push((kb, b.clone()));
                lin.lora = Some(Lora { a, b, scale });
            }
            (None, None) if !targets(&name, &cfg) => {}
            _ => {
                return Err(ModelError::MissingTensor {
                    name: ka,
                    source_desc: st.display().to_string(),
                })
            }
        }
    }
    Ok((cfg, vars))
}

/// Writes the model (adapters merged in) as an HF directory: config.json, model.safetensors and, if given,
/// tokenizer.json.
pub fn save_hf_dir(model: &Decoder, tok: Option<&TextTokenizer>, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|err| ModelError::Io {
        path: dir.to_path_buf(),
        err,
    })?;
    let tensors: HashMap<String, Tensor> = model
        .named_tensors()?
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_dtype(DType::F32)?.contiguous()?)))
        .collect::<Result<_>>()?;
    let st = dir.join("model.safetensors");
    let tmp = dir.join(".model.safetensors.tmp");
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, &st).map_err(|err| ModelError::Io {
        path: st.clone(),
        err,
    })?;
    let cfg_path = dir.join("config.json");
    let text = serde_json::to_string_pretty(&model.cfg.to_hf_json()).expect("json");
    std::fs::write(&cfg_path, text).map_err(|err| ModelError::Io {
        path: cfg_path,
        err,
    })?;
    if let Some(t) = tok {
        t.save(&dir.join("tokenizer.json"))?;
    }
    Ok(())
}
