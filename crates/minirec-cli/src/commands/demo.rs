use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use minirec_data::{demo, prepare_generic, PrepareOptions, PreparedDataset};

#[derive(Args)]
pub struct DemoArgs {
    /// Where the demo's run directory goes (replaced if it exists).
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Users in the generated dataset.
    #[arg(long, default_value_t = demo::DEFAULT_USERS)]
    users: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

pub fn run(a: DemoArgs, progress: bool) -> Result<()> {
    let raw = a.out.join("raw");
    let files = demo::write(&raw, a.users, a.seed)?;
    println!("embedded dataset written to {}", raw.display());
    let mut opts = PrepareOptions::new(a.out.join("data"));
    opts.force = true;
    opts.progress = progress;
    let stats = prepare_generic(&files, &opts)?;
    super::prepare::print_stats(&opts.out, &stats);

    let ds = PreparedDataset::load(&opts.out)?;
    if let Some(s) = ds.test.first() {
        println!("\nfirst test sample, as the model sees it:");
        print!("{}", ds.prompt.render(ds.history_titles(s)));
        print!("{}", ds.prompt.response(ds.target_title(s)));
    }
    Ok(())
}
