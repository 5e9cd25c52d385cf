//! The embedded default, end to end on the CPU: the experiment pipeline (`minirec run`) on the generated demo
//! shop with a tiny Llama-family model trained from scratch (word-level tokenizer over the catalog): SFT,
//! evaluation, MiniRec and baseline selections of a small RL set, GRPO + RISER on each, evaluation, report.
//! With `--model` (a real LLM such as SmolLM2-135M-Instruct) and `--d3` (the Industrial sample), a short real
//! pipeline instead, sized for 15 minutes on 2 CPU cores: SFT on a slice, evaluation of the SFT model, one
//! RISER run, evaluation of it, and a recommendation for a test user's history.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use minirec_data::demo;

use minirec_pipeline::experiment::{
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
    /// Stop after preparing the embedded data (no training).
    #[arg(long, conflicts_with = "model")]
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
    /// RL learning rate [default: 1e-5 for the embedded model, 1e-6 (RISER §5, full weights) with --model].
    #[arg(long)]
    rl_lr: Option<f64>,
    /// A real LLM (GGUF file, HF directory): run the short real pipeline on `--d3` instead of the embedded
    /// default.
    #[arg(long, requires = "d3")]
    model: Option<PathBuf>,
    /// D3 CSV folder for the real-LLM demo: info.txt, test.csv, and train.csv (or valid.csv, which then
    /// trains).
    #[arg(long, requires = "model")]
    d3: Option<PathBuf>,
    /// Real-LLM demo: training samples for SFT (one epoch).
    #[arg(long, default_value_t = 64)]
    sft_samples: usize,
    /// Real-LLM demo: the seeded test subset both rows are evaluated on.
    #[arg(long, default_value_t = 80)]
    eval_samples: usize,
    /// Real-LLM demo: beam width of the evaluation (HR/NDCG are reported at 5 and 10).
    #[arg(long, default_value_t = 10)]
    beam: usize,
    /// Real-LLM demo: RISER steps (4 prompts × 8 rollouts each).
    #[arg(long, default_value_t = 2)]
    rl_steps: usize,
}

pub fn experiment(a: &DemoArgs) -> Experiment {
    Experiment {
        out: a.out.clone(),
        seed: a.seed,
        cpu: true,
        keep_checkpoints: false,
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
            proxy_rl_lr: a.rl_lr.unwrap_or(1e-5),
            ..Default::default()
        },
        rl: RlSection {
            epochs: 1.0,
            prompts_per_step: 8,
            rollouts: 20,
            keep: 16,
            lr: a.rl_lr.unwrap_or(1e-5),
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

/// The short real-LLM pipeline: SFT on the first `sft_samples` training samples, RISER from it on the whole
/// training split for `rl_steps` steps, both evaluated on one seeded test subset.
pub fn real_experiment(a: &DemoArgs, model: &Path, d3: &Path) -> Result<Experiment> {
    let need = |name: &str| -> Result<PathBuf> {
        let p = d3.join(name);
        if !p.is_file() {
            bail!("--d3 {}: no {name} there (a D3 folder holds info.txt, train.csv or valid.csv, test.csv)", d3.display());
        }
        Ok(p)
    };
    let (info, test) = (need("info.txt")?, need("test.csv")?);
    let train = need("train.csv").or_else(|_| need("valid.csv"))?;
    Ok(Experiment {
        out: a.out.clone(),
        seed: a.seed,
        cpu: true,
        keep_checkpoints: false,
        data: DataSection {
            prepared: None,
            d3_train: Some(train),
            d3_valid: None,
            d3_test: Some(test),
            d3_info: Some(info),
            hold_out_every: None,
            domain: "industrial".into(),
            demo_users: None,
        },
        model: ModelSection {
            path: Some(model.to_path_buf()),
            preset: None,
        },
        sft: SftSection {
            epochs: 1,
            lr: 3e-4,
            batch_size: 8,
            max_train: Some(a.sft_samples),
            checkpoint_every: 0,
            ..Default::default()
        },
        select: SelectSection {
            methods: Vec::new(),
            sizes: Vec::new(),
            full: true,
            ..Default::default()
        },
        rl: RlSection {
            max_steps: a.rl_steps,
            prompts_per_step: 4,
            rollouts: 8,
            keep: 8,
            lr: a.rl_lr.unwrap_or(1e-6),
            ..Default::default()
        },
        eval: EvalSection {
            beam: a.beam,
            batch: 16,
            sample: Some(a.eval_samples),
            ..Default::default()
        },
        baselines: BaselineSection::default(),
    })
}

/// The RISER model's top 5 for the first test user's history, beside what that user bought next.
fn print_recommendation(out: &Path) -> Result<()> {
    let ds = minirec_data::PreparedDataset::load(&out.join("data"))?;
    let Some(s) = ds.test.first() else {
        return Ok(());
    };
    let history: Vec<String> = ds.history_titles(s).map(str::to_string).collect();
    let model = out.join("rl").join("full-riser");
    let ask = super::recommend::Ask {
        history: &history,
        k: 5,
        beam: 10,
        exclude_history: false,
    };
    let top = super::recommend::recommend(&model, &ds.catalog, &ds.prompt, &ask, true)?;
    println!("\nthe first test user's history, oldest first:");
    for t in &history {
        println!("     {t}");
    }
    println!("RISER model's top 5 (sequence log-probability):");
    for (i, (t, score)) in top.iter().enumerate() {
        println!("{:>3}. {t}  ({score:.3})", i + 1);
    }
    println!("bought next: {}", ds.target_title(s));
    Ok(())
}

pub fn run(a: DemoArgs, progress: bool) -> Result<()> {
    let t0 = Instant::now();
    // The inputs are checked before the old run directory goes.
    let e = match (&a.model, &a.d3) {
        (Some(model), Some(d3)) => real_experiment(&a, model, d3)?,
        _ => experiment(&a),
    };
    e.check()?;
    if a.out.exists() {
        std::fs::remove_dir_all(&a.out)
            .with_context(|| format!("replacing {}", a.out.display()))?;
    }
    if a.prepare_only && a.model.is_none() {
        return prepare_only(&a, progress);
    }
    let report = minirec_pipeline::run_experiment(&e, progress)?;
    if a.model.is_some() {
        print_recommendation(&a.out)?;
    }
    println!(
        "\n{report}\nreport: {} (total {:.0} s)",
        a.out.join("report.md").display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The embedded dataset, prepared, and its first test sample as the model sees it.
fn prepare_only(a: &DemoArgs, progress: bool) -> Result<()> {
    let raw = a.out.join("raw");
    let files = demo::write(&raw, a.users, a.seed)?;
    println!("embedded dataset written to {}", raw.display());
    let mut opts = minirec_data::PrepareOptions::new(a.out.join("data"));
    opts.force = true;
    opts.progress = progress;
    let stats = minirec_data::prepare_generic(&files, &opts)?;
    minirec_pipeline::prepare::print_stats(&opts.out, &stats);
    let ds = minirec_data::PreparedDataset::load(&opts.out)?;
    if let Some(s) = ds.test.first() {
        println!("\nfirst test sample, as the model sees it:");
        print!("{}", ds.prompt.render(ds.history_titles(s)));
        print!("{}", ds.prompt.response(ds.target_title(s)));
    }
    Ok(())
}
