//! The embedded default, end to end on the CPU: generate the demo shop, prepare it, train a tiny Llama-family
//! model from scratch (SFT) with a word-level tokenizer over the catalog, evaluate it by beam search over every
//! title, continue with RL (GRPO + RISER) on a small subset, evaluate again, and write `report.md`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device};
use clap::Args;
use minirec_data::{demo, prepare_generic, PrepareOptions, PreparedDataset};
use minirec_eval::MetricsReport;
use minirec_model::decode::ItemIndex;
use minirec_model::load::{preset_config, random_model};
use minirec_model::TextTokenizer;
use minirec_train::rl::RlConfig;
use minirec_train::sft::{encode_samples, trainable, SftConfig};

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
    #[arg(long, default_value_t = 30)]
    rl_steps: usize,
    #[arg(long, default_value_t = 1e-5)]
    rl_lr: f64,
}

pub fn run(a: DemoArgs, progress: bool) -> Result<()> {
    let t0 = Instant::now();
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
    if a.prepare_only {
        return Ok(());
    }

    // A word-level tokenizer over the catalog and the prompt wording, and a tiny model from scratch.
    let wording = ds.prompt.render(["x"]);
    let tok = TextTokenizer::word_level(
        ds.catalog
            .titles()
            .iter()
            .map(String::as_str)
            .chain([wording.as_str()]),
    )?;
    let cfg = preset_config("tiny-64", tok.vocab_size())?;
    let device = Device::Cpu;
    let mut model = random_model(cfg, DType::F32, &device, a.seed)?;
    println!(
        "\ntiny Llama-family model: {} parameters, vocabulary {} words",
        model.cfg.num_parameters(),
        tok.vocab_size()
    );

    let ks = [5, 10, 20];
    let eval = |m: &minirec_model::Decoder| -> Result<MetricsReport> {
        super::eval::rank_samples(m, &tok, &ds, &ds.test, 20, 64, &ks, None, progress)
    };
    let train_ex = encode_samples(&ds, &ds.train, &tok)?;
    let valid_ex = encode_samples(&ds, &ds.valid, &tok)?;
    let sft_cfg = SftConfig {
        epochs: a.sft_epochs,
        lr: 3e-3,
        batch_size: 32,
        patience: 1,
        checkpoint_every: 0,
        seed: a.seed,
        ..Default::default()
    };
    let vars = trainable(&mut model, &sft_cfg)?;
    let t = Instant::now();
    let sft = minirec_train::sft::train(
        &mut model,
        &tok,
        vars,
        &train_ex,
        &valid_ex,
        &sft_cfg,
        &a.out.join("sft"),
        "demo-random",
        false,
        progress,
    )?;
    println!(
        "SFT: {} steps in {:.1} s ({:.0} samples/s), valid loss {}",
        sft.steps,
        t.elapsed().as_secs_f64(),
        sft.samples_per_s,
        sft.best_valid_loss
            .map(|v| format!("{v:.3}"))
            .unwrap_or_default()
    );
    let sft_metrics = eval(&model)?;

    // RL from the SFT model on 256 training samples, in order.
    model.merge_adapters()?;
    let titles = ds.catalog.titles().to_vec();
    let index = ItemIndex::build(&tok, &titles, |t| ds.prompt.response(t))?;
    let rl_samples: Vec<&minirec_data::Sample> = ds.train.iter().take(256).collect();
    let prompts = minirec_train::rl::prompts_for(&ds, &rl_samples, &tok)?;
    let valid_samples: Vec<&minirec_data::Sample> = ds.valid.iter().take(128).collect();
    let valid_prompts = minirec_train::rl::prompts_for(&ds, &valid_samples, &tok)?;
    let rl_cfg = RlConfig {
        eval_every: 10,
        max_steps: a.rl_steps,
        prompts_per_step: 8,
        rollouts: 20,
        keep: 16,
        lr: a.rl_lr,
        kl_cov_ratio: 0.02,
        checkpoint_every: 0,
        seed: a.seed,
        ..Default::default()
    };
    let vars = trainable(&mut model, &SftConfig::default())?;
    let t = Instant::now();
    let (rl, _) = minirec_train::rl::train(
        &mut model,
        &tok,
        vars,
        &index,
        &prompts,
        &valid_prompts,
        None,
        &rl_cfg,
        &a.out.join("rl"),
        "demo-sft",
        false,
        progress,
    )?;
    println!(
        "RL (GRPO + RISER): {} steps in {:.1} s (rollouts {:.1} s, updates {:.1} s), mean reward {:.3} -> {:.3}",
        rl.steps,
        t.elapsed().as_secs_f64(),
        rl.rollout_s,
        rl.update_s,
        rl.first_rewards,
        rl.last_rewards
    );
    let rl_metrics = eval(&model)?;

    let mut table = String::from("| model | NDCG@5 | NDCG@10 | NDCG@20 | HR@5 | HR@10 | HR@20 |\n|---|---|---|---|---|---|---|\n");
    for (name, m) in [("SFT", &sft_metrics), ("SFT + RISER", &rl_metrics)] {
        let g = |k: &str| m.get(k).unwrap_or(f64::NAN);
        writeln!(
            table,
            "| {name} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |",
            g("ndcg@5"),
            g("ndcg@10"),
            g("ndcg@20"),
            g("hr@5"),
            g("hr@10"),
            g("hr@20")
        )?;
    }
    let report = format!(
        "# minirec demo\n\nEmbedded dataset ({} users, seed {}): {} item ids, {} titles; samples train {}, valid {}, test {}.\n\
         Tiny Llama-family model from scratch ({} parameters), word-level tokenizer, CPU.\n\
         Test split, all-ranking by beam search (width 20) over every title.\n\n{table}\nTotal time {:.1} s.\n",
        a.users,
        a.seed,
        stats.item_ids,
        stats.distinct_titles,
        stats.samples.train,
        stats.samples.valid,
        stats.samples.test,
        model.cfg.num_parameters(),
        t0.elapsed().as_secs_f64()
    );
    minirec_data::fsutil::write_atomic(&a.out.join("report.md"), |w| {
        std::io::Write::write_all(w, report.as_bytes())
    })?;
    println!("\n{table}\nreport: {}", a.out.join("report.md").display());
    Ok(())
}
