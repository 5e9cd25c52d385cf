use std::path::PathBuf;

use anyhow::Result;
use candle_core::{DType, Device};
use clap::Args;
use minirec_model::lora::save_hf_dir;

#[derive(Args)]
pub struct ConvertArgs {
    /// A GGUF file, an HF directory, a LoRA adapter directory, or a run directory.
    #[arg(long)]
    model: PathBuf,
    /// The HF directory to write (config.json, model.safetensors in f32, tokenizer.json).
    #[arg(long)]
    out: PathBuf,
}

/// Writes any model minirec can load as a plain HF directory (GGUF dequantised, adapters merged), so Python
/// tools can load it; the tokenizer is exported as tokenizer.json.
pub fn run(a: ConvertArgs) -> Result<()> {
    let loaded = minirec_pipeline::model::load_llm(&a.model, "model", &Device::Cpu, DType::F32)?;
    save_hf_dir(&loaded.model, Some(&loaded.tokenizer), &a.out)?;
    println!("wrote {} ({})", a.out.display(), loaded.description);
    Ok(())
}
