use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use minirec_data::dataset::load_catalog;
use minirec_data::{Catalog, PromptTemplate};
use minirec_model::decode::{beam_search, ItemIndex};
use minirec_model::load::{default_dtype, pick_device};

#[derive(Args)]
pub struct RecommendArgs {
    /// A GGUF file, an HF directory, a LoRA adapter directory, or a run directory.
    #[arg(long)]
    model: PathBuf,
    /// A prepared dataset: its catalog is what can be recommended, its prompt.json the wording.
    #[arg(long)]
    data: PathBuf,
    /// The user's history, oldest first: `--history "A" "B" "C"` (or the flag repeated).
    #[arg(long = "history", required = true, num_args = 1..)]
    history: Vec<String>,
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// Beam width (at least --top-k).
    #[arg(long, default_value_t = 20)]
    beam: usize,
    /// Print JSON: [{"title": ..., "score": ...}, ...], best first; scores are sequence log-probabilities.
    #[arg(long)]
    json: bool,
    /// Run on the CPU even when a GPU is available.
    #[arg(long)]
    cpu: bool,
}

/// The `top_k` titles the model ranks first after `history` (oldest first), with their sequence
/// log-probabilities, by constrained beam search of width `max(beam, top_k)` over the catalog.
pub fn recommend(
    model: &Path,
    catalog: &Catalog,
    prompt: &PromptTemplate,
    history: &[String],
    top_k: usize,
    beam: usize,
    cpu: bool,
) -> Result<Vec<(String, f32)>> {
    let device = pick_device(cpu)?;
    let loaded = minirec_pipeline::model::load_llm_for_inference(
        model,
        "model",
        &device,
        default_dtype(&device),
    )?;
    let titles = catalog.titles().to_vec();
    let index = ItemIndex::build(&loaded.tokenizer, &titles, |t| prompt.response(t))?;
    let text = prompt.render(history.iter().map(String::as_str));
    let ids = loaded.tokenizer.encode(&text)?;
    let ranked = beam_search(&loaded.model, &index, &[ids], beam.max(top_k))?;
    Ok(ranked[0]
        .iter()
        .take(top_k)
        .map(|s| (titles[s.title as usize].clone(), s.score))
        .collect())
}

pub fn run(a: RecommendArgs) -> Result<()> {
    if a.top_k == 0 {
        bail!("--top-k must be at least 1");
    }
    let catalog = load_catalog(&a.data.join("catalog.jsonl"))
        .with_context(|| format!("reading the catalog of {}", a.data.display()))?;
    let prompt: PromptTemplate = minirec_data::fsutil::read_json(&a.data.join("prompt.json"))?;
    let unknown: Vec<&String> = a
        .history
        .iter()
        .filter(|t| catalog.title_index(t).is_none())
        .collect();
    if !unknown.is_empty() {
        tracing::warn!(
            "{} history titles are not in the catalog (used as given): {:?}",
            unknown.len(),
            unknown
        );
    }
    let top = recommend(
        &a.model, &catalog, &prompt, &a.history, a.top_k, a.beam, a.cpu,
    )?;
    if a.json {
        let v: Vec<serde_json::Value> = top
            .iter()
            .map(|(t, s)| serde_json::json!({"title": t, "score": s}))
            .collect();
        println!("{}", serde_json::to_string(&v)?);
    } else {
        for (i, (t, s)) in top.iter().enumerate() {
            println!("{:>3}. {t}  ({s:.3})", i + 1);
        }
    }
    Ok(())
}
