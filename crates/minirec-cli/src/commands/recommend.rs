use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use minirec_data::dataset::load_catalog;
use minirec_data::{Catalog, PromptTemplate};
use minirec_model::load::{default_dtype, pick_device};
use minirec_pipeline::serve::{check_request, Recommender, Request};

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
    /// Leave out the titles the history holds (the search widens by their number, so --top-k still come back).
    #[arg(long)]
    exclude_history: bool,
    /// Print JSON: [{"title": ..., "score": ...}, ...], best first; scores are sequence log-probabilities.
    #[arg(long)]
    json: bool,
    /// Run on the CPU even when a GPU is available.
    #[arg(long)]
    cpu: bool,
}

/// What `recommend` asks for: `k` titles from a search of width `max(beam, k)`, without the history's own
/// titles if `exclude_history`.
pub struct Ask<'a> {
    pub history: &'a [String],
    pub k: usize,
    pub beam: usize,
    pub exclude_history: bool,
}

/// The `k` titles the model ranks first after the history (oldest first), with their sequence
/// log-probabilities, by constrained beam search over the catalog (the serving engine's, on one request).
pub fn recommend(
    model: &Path,
    catalog: &Catalog,
    prompt: &PromptTemplate,
    ask: &Ask,
    cpu: bool,
) -> Result<Vec<(String, f32)>> {
    let request = Request {
        history: ask.history.to_vec(),
        k: ask.k,
        beam: ask.beam.max(ask.k),
        exclude_history: ask.exclude_history,
    };
    check_request(&request, usize::MAX).map_err(|e| anyhow::anyhow!("--{e}"))?;
    let device = pick_device(cpu)?;
    let loaded = minirec_pipeline::model::load_llm_for_inference(
        model,
        "model",
        &device,
        default_dtype(&device),
    )?;
    let engine = Recommender::new(
        loaded.model,
        loaded.tokenizer,
        prompt.clone(),
        catalog.titles().to_vec(),
    )?;
    let mut answers = engine.recommend(std::slice::from_ref(&request))?;
    Ok(answers
        .pop()
        .unwrap_or_default()
        .into_iter()
        .map(|r| (r.title, r.score))
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
    let ask = Ask {
        history: &a.history,
        k: a.top_k,
        beam: a.beam,
        exclude_history: a.exclude_history,
    };
    let top = recommend(&a.model, &catalog, &prompt, &ask, a.cpu)?;
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
