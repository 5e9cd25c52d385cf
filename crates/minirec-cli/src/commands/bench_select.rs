//! `minirec bench select`: wall time of each selection phase (proxy rollouts, scoring with the hidden-space
//! HVP, MiniRec's greedy, k-means) on a generated shop of a chosen size, with a random model of a chosen
//! shape; and the greedy step alone on random features of given widths (it depends only on N, d and m).

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use minirec_data::{demo, prepare_generic, PrepareOptions, PreparedDataset};
use minirec_model::decode::ItemIndex;
use minirec_model::load::{default_dtype, pick_device, preset_config, random_model};
use minirec_select::features::llm_scores;
use minirec_select::learnability::mean_rewards;
use minirec_select::{methods, Matrix, MiniRecConfig};
use minirec_train::rl::prompts_for;
use minirec_train::sft::encode_samples;

#[derive(Args)]
pub struct SelectBenchArgs {
    /// Users in the generated shop (about 9.5 training samples each).
    #[arg(long, default_value_t = 1050)]
    users: usize,
    /// Model shape with random weights (tiny, tiny-64, smollm2-135m, ...).
    #[arg(long, default_value = "tiny-64")]
    arch: String,
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Proxy rollouts per sample; 0 skips the rollout phase.
    #[arg(long, default_value_t = 4)]
    rollouts: usize,
    /// Feature widths for the greedy-only measurement on random features.
    #[arg(long, value_delimiter = ',', default_value = "576,1536")]
    greedy_dims: Vec<usize>,
    #[arg(long, default_value_t = 16)]
    score_batch: usize,
    #[arg(long)]
    cpu: bool,
}

pub fn run(a: SelectBenchArgs) -> Result<()> {
    let tmp = std::env::temp_dir().join(format!("minirec-bench-select-{}", std::process::id()));
    let files = demo::write(&tmp.join("raw"), a.users, 1)?;
    let mut opts = PrepareOptions::new(tmp.join("data"));
    opts.force = true;
    prepare_generic(&files, &opts)?;
    let ds = PreparedDataset::load(&tmp.join("data"))?;
    let n = ds.train.len();
    let device = pick_device(a.cpu)?;
    let tok = minirec_train::sft::catalog_tokenizer(&ds)?;
    let cfg = preset_config(&a.arch, tok.vocab_size())?;
    let mut model = random_model(cfg, default_dtype(&device), &device, 1)?;
    // With --bf16-weights the rollouts and the scoring pass multiply bf16 copies, as a selection's do.
    model.pack_frozen_bf16()?;
    println!(
        "bench select: {n} training samples, {} ({} parameters), {device:?}",
        a.arch,
        model.cfg.num_parameters()
    );
    let mut rows: Vec<(String, f64)> = Vec::new();
    if a.rollouts > 0 {
        let titles = ds.catalog.titles().to_vec();
        let index = ItemIndex::build(&tok, &titles, |t| ds.prompt.response(t))?;
        let samples: Vec<&minirec_data::Sample> = ds.train.iter().collect();
        let prompts = prompts_for(&ds, &samples, &tok)?;
        let t = Instant::now();
        mean_rewards(
            &model,
            &index,
            &prompts,
            a.rollouts,
            1.0,
            64,
            1,
            Vec::new(),
            &mut |_| Ok(()),
            true,
        )?;
        rows.push((
            format!("rollouts ({} per sample)", a.rollouts),
            t.elapsed().as_secs_f64(),
        ));
    }
    let ex = encode_samples(&ds, &ds.train, &tok)?;
    let t = Instant::now();
    let s = llm_scores(&model, &ex, a.score_batch, None, true)?;
    rows.push((
        "scoring: hidden state + HVP + EL2N + GraNd".into(),
        t.elapsed().as_secs_f64(),
    ));
    let ids: Vec<u64> = (0..n as u64).collect();
    let rbar: Vec<f32> = (0..n).map(|i| (i % 11) as f32 / 10.0).collect();
    let cfg = MiniRecConfig {
        size: a.size.min(n),
        ..Default::default()
    };
    let t = Instant::now();
    methods::select_minirec(
        &cfg,
        &ids,
        &s.hidden,
        Some(&s.hvp),
        Some(&rbar),
        &device,
        true,
    )?;
    rows.push((
        format!("MiniRec greedy + curriculum, d = {}", s.hidden.dim),
        t.elapsed().as_secs_f64(),
    ));
    let t = Instant::now();
    methods::select_kmeans(&ids, &s.hidden, a.size.min(n), 20, 1, &device, true)?;
    rows.push((
        format!("k-means++ (20 iterations), d = {}", s.hidden.dim),
        t.elapsed().as_secs_f64(),
    ));
    for &d in &a.greedy_dims {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(d as u64);
        let f = Matrix::new(
            n,
            d,
            (0..n * d).map(|_| rng.random::<f32>() - 0.5).collect(),
        )?;
        let q: Vec<f32> = (0..n).map(|_| rng.random()).collect();
        let t = Instant::now();
        minirec_select::greedy::greedy(&f, &q, a.size.min(n), true, &device, true)?;
        rows.push((
            format!("greedy only, random features d = {d}"),
            t.elapsed().as_secs_f64(),
        ));
    }
    let _ = std::fs::remove_dir_all(&tmp);
    println!("| phase | N = {n}, m = {} |\n|---|---|", a.size.min(n));
    for (name, secs) in rows {
        println!("| {name} | {secs:.2} s |");
    }
    Ok(())
}
