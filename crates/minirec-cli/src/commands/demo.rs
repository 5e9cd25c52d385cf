//! The embedded default, end to end on the CPU: the experiment pipeline (`minirec run`) on the generated demo
//! shop with a tiny Llama-family model trained from scratch (word-level tokenizer over the catalog): SFT,
//! evaluation, MiniRec and baseline selections of a small RL set, GRPO + RISER on each, evaluation, report.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use minirec_data::demo;

use super::experiment::{
    BaselineSection, DataSection, EvalSection, Experiment, ModelSection, RlSection, SelectSection,
    SftSection,
};

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
    /// Stop after preparing the data (no training).
    #[arg(long)]
    prepare_only: bool,
    #[arg(long, default_value_t = 2)]
    sft_epochs: usize,
    /// RL training-set size chosen by each selection method.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Selection methods compared (minirec, random, kmeans, grand, el2n, dealrec).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "minirec,random,kmeans,el2n"
    )]
    methods: Vec<String>,
    #[arg(long, default_value_t = 1e-5)]
    rl_lr: f64,
}

pub fn experiment(a: &DemoArgs) -> Experiment {
    Experiment {
        out: a.out.clone(),
        seed: a.seed,
        cpu: true,
        data: DataSection {
            prepared: None,
            d3_train: None,
            d3_valid: None,
            d3_test: None,
            d3_info: None,
            hold_out_every: None,
            domain: "generic".into(),
            demo_users: Some(a.users),
        },
        model: ModelSection {
            path: None,
            preset: Some("tiny-64".into()),
        },
        sft: SftSection {
            epochs: a.sft_epochs,
            lr: 3e-3,
            batch_size: 32,
            ..Default::default()
        },
        select: SelectSection {
            methods: a.methods.clone(),
            sizes: vec![a.size],
            full: false,
            rollouts: 4,
            proxy_samples: 256,
            proxy_sft_epochs: 0,
            proxy_rl_steps: 32,
            proxy_rl_lr: a.rl_lr,
            ..Default::default()
        },
        rl: RlSection {
            epochs: 1.0,
            prompts_per_step: 8,
            rollouts: 20,
            keep: 16,
            lr: a.rl_lr,
            kl_cov_ratio: 0.02,
            ..Default::default()
        },
        eval: EvalSection {
            batch: 64,
            ..Default::default()
        },
        baselines: BaselineSection::default(),
    }
}

pub fn run(a: DemoArgs, progress: bool) -> Result<()> {
    let t0 = Instant::now();
    if a.out.exists() {
        std::fs::remove_dir_all(&a.out)
            .with_context(|| format!("replacing {}", a.out.display()))?;
    }
    let e = experiment(&a);
    e.check()?;
    if a.prepare_only {
        let raw = a.out.join("raw");
        let files = demo::write(&raw, a.users, a.seed)?;
        println!("embedded dataset written to {}", raw.display());
        let mut opts = minirec_data::PrepareOptions::new(a.out.join("data"));
        opts.force = true;
        opts.progress = progress;
        let stats = minirec_data::prepare_generic(&files, &opts)?;
        super::prepare::print_stats(&opts.out, &stats);
        let ds = minirec_data::PreparedDataset::load(&opts.out)?;
        if let Some(s) = ds.test.first() {
            println!("\nfirst test sample, as the model sees it:");
            print!("{}", ds.prompt.render(ds.history_titles(s)));
            print!("{}", ds.prompt.response(ds.target_title(s)));
        }
        return Ok(());
    }
    let report = super::run::run_experiment(&e, progress)?;
    println!(
        "\n{report}\nreport: {} (total {:.0} s)",
        a.out.join("report.md").display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
