//! What preparing a dataset needs beyond minirec-data: the prompt wording chosen by domain or file, and
//! the summary printed when it is done.

use std::path::Path;

use anyhow::{Context, Result};
use minirec_data::{PromptTemplate, Stats};

pub fn prompt_template(domain: &str, file: Option<&Path>) -> Result<PromptTemplate> {
    if let Some(f) = file {
        return Ok(minirec_data::fsutil::read_json(f)?);
    }
    PromptTemplate::preset(domain).with_context(|| {
        format!(
            "unknown --domain {domain:?} (expected one of {})",
            PromptTemplate::PRESETS.join(", ")
        )
    })
}

pub fn print_stats(out: &Path, s: &Stats) {
    println!("prepared {} ({} format)", out.display(), s.format);
    println!("  users            {}", s.users);
    println!("  item ids         {}", s.item_ids);
    println!(
        "  distinct titles  {}  ({} ids share a title)",
        s.distinct_titles, s.ids_with_shared_title
    );
    if let Some(n) = s.interactions {
        println!("  interactions     {n}");
    }
    println!(
        "  samples          train {}, valid {}, test {}",
        s.samples.train, s.samples.valid, s.samples.test
    );
    println!("  mean history     {:.2}", s.mean_history_len);
    for (title, map) in [
        ("skipped", &s.skipped),
        ("filtered", &s.filtered),
        ("warnings", &s.warnings),
    ] {
        let nonzero: Vec<String> = map
            .iter()
            .filter(|(_, &v)| v > 0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        if !nonzero.is_empty() {
            println!("  {title:<16} {}", nonzero.join(", "));
        }
    }
}
