use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use minirec_data::{
    prepare_amazon, prepare_d3, prepare_generic, AmazonFiles, BadRowPolicy, D3Files, GenericFiles,
    PrepareOptions,
};
use minirec_pipeline::prepare::{print_stats, prompt_template};

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// D3/BIGRec CSV: info.txt and one CSV per split.
    D3,
    /// Raw Amazon Reviews JSON Lines (2018 or 2023), plain or gzipped, with the item metadata file.
    Amazon,
    /// interactions.csv (user,item,timestamp) and items.csv (item,title).
    Generic,
}

#[derive(Args)]
pub struct PrepareArgs {
    #[arg(long, value_enum)]
    format: Format,
    /// d3: the item file (`title<TAB>item_id` per line).
    #[arg(long)]
    info: Option<PathBuf>,
    /// d3: the training split CSV.
    #[arg(long)]
    train: Option<PathBuf>,
    /// d3: the validation split CSV (optional).
    #[arg(long)]
    valid: Option<PathBuf>,
    /// d3 without --valid: hold back every K-th training sample (the K-th, 2K-th, …) as the validation split,
    /// for early stopping.
    #[arg(long, conflicts_with = "valid", value_name = "K")]
    hold_out_every: Option<usize>,
    /// d3: the test split CSV.
    #[arg(long)]
    test: Option<PathBuf>,
    /// amazon: the reviews file (JSON Lines, may be gzipped).
    #[arg(long)]
    reviews: Option<PathBuf>,
    /// amazon: the item metadata file (JSON Lines, may be gzipped).
    #[arg(long)]
    meta: Option<PathBuf>,
    /// generic: interactions CSV with columns user,item,timestamp.
    #[arg(long)]
    interactions: Option<PathBuf>,
    /// generic: items CSV with columns item,title.
    #[arg(long)]
    items: Option<PathBuf>,
    /// The prepared dataset directory to write.
    #[arg(long)]
    out: PathBuf,
    /// What to do with an unusable input row: stop with an error, or skip it and count it in stats.json.
    #[arg(long, default_value = "error")]
    on_bad_row: BadRowPolicy,
    /// amazon, generic: minimum interactions per user and per item (0 or 1: no filtering).
    #[arg(long, default_value_t = 5)]
    k_core: u32,
    /// amazon, generic: at most this many previous items form a sample's history.
    #[arg(long, default_value_t = 10)]
    max_history: usize,
    /// The prompt wording: generic, games, toys, books or industrial.
    #[arg(long, default_value = "generic")]
    domain: String,
    /// A prompt template as JSON ({"domain", "instruction", "history_intro", "response_header"}); overrides --domain.
    #[arg(long)]
    prompt: Option<PathBuf>,
    /// Replace the output directory if it exists.
    #[arg(long)]
    force: bool,
}

fn need<'a>(v: &'a Option<PathBuf>, flag: &str, format: &str) -> Result<&'a PathBuf> {
    v.as_ref()
        .with_context(|| format!("--format {format} needs --{flag}"))
}

pub fn run(a: PrepareArgs, progress: bool) -> Result<()> {
    let mut opts = PrepareOptions::new(&a.out);
    opts.on_bad_row = a.on_bad_row;
    opts.force = a.force;
    opts.hold_out_every = a.hold_out_every;
    opts.progress = progress;
    opts.prompt = prompt_template(&a.domain, a.prompt.as_deref())?;
    opts.protocol.k_core = a.k_core;
    opts.protocol.max_history = a.max_history;
    let stats = match a.format {
        Format::D3 => {
            for (flag, v) in [
                ("reviews", &a.reviews),
                ("meta", &a.meta),
                ("interactions", &a.interactions),
                ("items", &a.items),
            ] {
                if v.is_some() {
                    bail!("--{flag} does not apply to --format d3");
                }
            }
            let files = D3Files {
                info: need(&a.info, "info", "d3")?.clone(),
                train: need(&a.train, "train", "d3")?.clone(),
                valid: a.valid.clone(),
                test: need(&a.test, "test", "d3")?.clone(),
            };
            prepare_d3(&files, &opts)?
        }
        Format::Amazon => {
            let files = AmazonFiles {
                reviews: need(&a.reviews, "reviews", "amazon")?.clone(),
                meta: need(&a.meta, "meta", "amazon")?.clone(),
            };
            prepare_amazon(&files, &opts)?
        }
        Format::Generic => {
            let files = GenericFiles {
                interactions: need(&a.interactions, "interactions", "generic")?.clone(),
                items: need(&a.items, "items", "generic")?.clone(),
            };
            prepare_generic(&files, &opts)?
        }
    };
    print_stats(&a.out, &stats);
    Ok(())
}
