//! Benchmarks and device checks that need no test harness: beam-search throughput, and parity of the device
//! (GPU, bf16) with the CPU and with the HF reference fixtures.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use clap::{Args, Subcommand};
use minirec_data::{prepare_d3, D3Files, PrepareOptions, PreparedDataset};
use minirec_model::decode::{beam_search, beam_search_stats, ItemIndex};
use minirec_model::load::{default_dtype, pick_device, preset_config, random_model};
use minirec_model::weights::load_hf_dir;
use minirec_model::{Decoder, GenCache, TextTokenizer};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Time trie-constrained beam search over a D3-format catalog and prompts.
    Beam(BeamArgs),
    /// Compare the device's forward pass and beam search with the CPU and the HF reference fixtures.
    Parity(ParityArgs),
    /// Time each selection phase (rollouts, HVP scoring, greedy, k-means) on a generated shop.
    Select(super::bench_select::SelectBenchArgs),
    /// Time GORACS (cost matrix, greedy start, swaps with exact EMDs) for a budget out of large training sets.
    Goracs(super::bench_goracs::GoracsBenchArgs),
    /// The machine's matrix-product rate through candle (the limit the model's phases are measured against).
    Gemm(GemmArgs),
    /// Whether RL will have a signal: a model's rollouts on a seeded slice at several temperatures — mean
    /// reward and the share of prompts with a hit among m rollouts (1 − GRPO's all-fail share).
    Rollouts(RolloutsArgs),
}

#[derive(Args)]
pub struct RolloutsArgs {
    /// The model (any model path or run directory).
    #[arg(long)]
    model: PathBuf,
    /// A prepared dataset.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "train")]
    split: String,
    /// Prompts in the seeded slice.
    #[arg(long, default_value_t = 64)]
    samples: usize,
    /// Group sizes m to report (the largest is drawn).
    #[arg(long, value_delimiter = ',', default_value = "4,8,20,40")]
    ms: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "0.7,1.0,1.3")]
    temperatures: Vec<f32>,
    /// Prompts per sampling call.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long)]
    cpu: bool,
    /// Write the rows as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
pub struct GemmArgs {
    /// Square matrix size n (n³ multiply-adds per product).
    #[arg(long, default_value_t = 2048)]
    size: usize,
    /// A model-shaped product instead: M,K,N (rows × inputs × outputs, the weight read transposed as the
    /// model's linear layers read it), e.g. 320,576,1536 for a decode step's MLP.
    #[arg(long, value_delimiter = ',', conflicts_with = "size")]
    shape: Option<Vec<usize>>,
    /// Timed products (after one warm-up).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Also time the same product with the weight in bf16 (AVX512_BF16; the frozen-weight kernel).
    #[arg(long)]
    bf16: bool,
}

#[derive(Args)]
pub struct BeamArgs {
    /// tokenizer.json to use with random weights (ignored with --model).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// A real model instead of random weights.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Random-weight shape: smollm2-135m, smollm2-360m, qwen2-0.5b, qwen2-1.5b.
    #[arg(long, default_value = "smollm2-135m")]
    arch: String,
    /// D3 info.txt: the catalog.
    #[arg(long)]
    info: PathBuf,
    /// D3 split CSV: the prompts' histories.
    #[arg(long)]
    split: PathBuf,
    #[arg(long, default_value_t = 1000)]
    prompts: usize,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value_t = 20)]
    beam: usize,
    #[arg(long)]
    cpu: bool,
    /// Stop starting new batches after this many seconds (the prompts done are reported).
    #[arg(long)]
    max_seconds: Option<f64>,
    /// Append the result as a JSON line here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
pub struct ParityArgs {
    /// The directory of HF reference fixtures (crates/minirec-model/tests/fixtures).
    #[arg(long)]
    fixtures: PathBuf,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Beam(a) => beam(a),
        BenchCommand::Parity(a) => parity(a),
        BenchCommand::Select(a) => super::bench_select::run(a),
        BenchCommand::Goracs(a) => super::bench_goracs::run(a),
        BenchCommand::Gemm(a) => gemm(a),
        BenchCommand::Rollouts(a) => rollouts(a),
    }
}

fn rollouts(a: RolloutsArgs) -> Result<()> {
    let job = minirec_pipeline::probe::ProbeJob {
        model: &a.model,
        data: &a.data,
        split: a.split.parse().map_err(|m: String| anyhow::anyhow!(m))?,
        samples: a.samples,
        ms: a.ms,
        temperatures: a.temperatures,
        batch: a.batch,
        seed: a.seed,
        cpu: a.cpu,
    };
    let rows = minirec_pipeline::probe::probe_rollouts(&job, true)?;
    print!("{}", minirec_pipeline::probe::table(&rows));
    if let Some(p) = &a.json {
        minirec_data::fsutil::write_json_atomic(p, &rows)?;
    }
    Ok(())
}

/// f32 GEMM rate on the CPU through candle's matmul, best of `reps`.
fn gemm(a: GemmArgs) -> Result<()> {
    let (m, k, n, transposed) = match a.shape.as_deref() {
        Some(&[m, k, n]) => (m, k, n, true),
        Some(other) => anyhow::bail!("--shape takes M,K,N (three sizes), got {other:?}"),
        None => (a.size, a.size, a.size, false),
    };
    let x = candle_core::Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
    let w = candle_core::Tensor::randn(
        0f32,
        1.0,
        (
            if transposed { n } else { k },
            if transposed { k } else { n },
        ),
        &Device::Cpu,
    )?;
    let product = || -> Result<candle_core::Tensor> {
        Ok(if transposed {
            x.matmul(&w.t()?)?
        } else {
            x.matmul(&w)?
        })
    };
    product()?;
    let mut best = f64::INFINITY;
    for _ in 0..a.reps.max(1) {
        let t = Instant::now();
        product()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    let gflops = 2.0 * (m * k * n) as f64 / best / 1e9;
    println!(
        "gemm f32 {m}x{k}x{n}{}: best {:.2} ms, {gflops:.1} GFLOP/s ({} threads)",
        if transposed {
            " (weight transposed)"
        } else {
            ""
        },
        best * 1e3,
        candle_core::utils::get_num_threads()
    );
    if a.bf16 {
        gemm_bf16(&x, &w, transposed, a.reps)?;
    }
    Ok(())
}

/// The bf16-weight kernel's rate on the same operands (the weight packed once, outside the timing).
fn gemm_bf16(
    x: &candle_core::Tensor,
    w: &candle_core::Tensor,
    transposed: bool,
    reps: usize,
) -> Result<()> {
    use minirec_model::kernels::bf16::{kernel, PackedBf16};
    let (m, k) = x.dims2()?;
    let wt = if transposed {
        w.clone()
    } else {
        w.t()?.contiguous()?
    };
    let n = wt.dims()[0];
    let packed = PackedBf16::new(&wt.flatten_all()?.to_vec1::<f32>()?, n, k)
        .context("this CPU has neither AMX-BF16 nor AVX512_BF16")?;
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let mut best = f64::INFINITY;
    for _ in 0..=reps.max(1) {
        let t = Instant::now();
        std::hint::black_box(packed.matmul_t(&xs, m));
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "gemm bf16 weights {m}x{k}x{n} ({}): best {:.2} ms, {:.1} GFLOP/s ({} threads)",
        kernel().map_or("-", |k| k.name()),
        best * 1e3,
        2.0 * (m * k * n) as f64 / best / 1e9,
        rayon::current_num_threads()
    );
    Ok(())
}

fn load_prompts(info: &Path, split: &Path, n: usize) -> Result<(Vec<String>, Vec<String>)> {
    let tmp = std::env::temp_dir().join(format!("minirec-bench-{}", std::process::id()));
    let mut opts = PrepareOptions::new(&tmp);
    opts.force = true;
    let files = D3Files {
        info: info.into(),
        train: split.into(),
        valid: None,
        test: split.into(),
    };
    prepare_d3(&files, &opts)?;
    let ds = PreparedDataset::load(&tmp)?;
    let _ = std::fs::remove_dir_all(&tmp);
    let prompts: Vec<String> = ds
        .test
        .iter()
        .take(n)
        .map(|s| ds.prompt.render(ds.history_titles(s)))
        .collect();
    let titles = ds.catalog.titles().to_vec();
    anyhow::ensure!(
        prompts.len() == n,
        "{} has only {} prompts",
        split.display(),
        prompts.len()
    );
    Ok((prompts, titles))
}

fn beam(a: BeamArgs) -> Result<()> {
    let device = pick_device(a.cpu)?;
    let dtype = default_dtype(&device);
    let (model, tok, what) = match &a.model {
        Some(p) => {
            let l = minirec_pipeline::model::load_llm_for_inference(p, "model", &device, dtype)?;
            (l.model, l.tokenizer, l.description)
        }
        None => {
            let tp = a
                .tokenizer
                .as_ref()
                .context("give --tokenizer (with random weights) or --model")?;
            let tok = TextTokenizer::from_file(tp)?;
            let cfg = preset_config(&a.arch, tok.vocab_size())?;
            (
                random_model(cfg, dtype, &device, 0)?,
                tok,
                format!("random {}", a.arch),
            )
        }
    };
    let (prompts, titles) = load_prompts(&a.info, &a.split, a.prompts)?;
    let index = ItemIndex::build(&tok, &titles, |t| format!("\"{t}\"\n"))?;
    let ids = tok.encode_batch(&prompts)?;
    let mean_prompt = ids.iter().map(Vec::len).sum::<usize>() as f64 / ids.len() as f64;
    let mean_title =
        index.sequences.iter().map(Vec::len).sum::<usize>() as f64 / index.len() as f64;
    eprintln!(
        "{what} on {device:?} {dtype:?}: {} titles (mean {mean_title:.1} tokens, max {}), {} prompts (mean {mean_prompt:.1} tokens)",
        index.len(),
        index.max_len(),
        ids.len()
    );
    // Warm-up (kernel compilation, allocator).
    beam_search(&model, &index, &ids[..a.batch.min(ids.len())], a.beam)?;
    device.synchronize()?;
    minirec_model::profile::reset();
    let t0 = Instant::now();
    let (mut steps, mut rows, mut cands, mut done) = (0, 0, 0, 0);
    for chunk in ids.chunks(a.batch) {
        if a.max_seconds
            .is_some_and(|m| t0.elapsed().as_secs_f64() > m)
        {
            break;
        }
        let (_, s) = beam_search_stats(&model, &index, chunk, a.beam)?;
        steps += s.steps;
        rows += s.rows;
        cands += s.candidates;
        done += chunk.len();
    }
    device.synchronize()?;
    let secs = t0.elapsed().as_secs_f64();
    let (step_ms, floor_ms, weight_bytes) =
        decode_step_time(&model, &ids, a.batch, a.beam, &device)?;
    let out = serde_json::json!({
        "engine": "minirec", "model": what, "device": format!("{device:?}"), "dtype": format!("{dtype:?}"),
        "catalog_titles": index.len(), "prompts": done, "batch": a.batch, "beam": a.beam,
        "seconds": secs, "prompts_per_s": done as f64 / secs,
        "decode_steps": steps, "decoded_rows": rows, "beam_tokens_per_s": rows as f64 / secs, "candidates": cands,
        "decode_step_ms": step_ms, "weights_bytes": weight_bytes, "bandwidth_floor_ms_at_3TBps": floor_ms,
    });
    println!("{out}");
    for (name, secs, calls) in minirec_model::profile::report() {
        eprintln!("  {name:<32} {secs:>9.3} s  {calls:>8} calls");
    }
    if let Some(p) = &a.json {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)?;
        writeln!(f, "{out}")?;
    }
    Ok(())
}

/// Mean time of one decode step for `batch`·`beam` rows after a prefill, against the time to read every
/// weight once at 3 TB/s.
fn decode_step_time(
    model: &Decoder,
    ids: &[Vec<u32>],
    batch: usize,
    beam: usize,
    device: &Device,
) -> Result<(f64, f64, usize)> {
    let prompts = &ids[..batch.min(ids.len())];
    let (pc, _) = model.prefill(prompts)?;
    let mut gen = GenCache::default();
    let tokens = vec![1u32; prompts.len() * beam];
    for _ in 0..3 {
        let h = model.decode_step(&pc, &mut gen, &tokens)?;
        model.logits(&h)?;
    }
    device.synchronize()?;
    let n = 10;
    let t0 = Instant::now();
    for _ in 0..n {
        let h = model.decode_step(&pc, &mut gen, &tokens)?;
        model.logits(&h)?;
    }
    device.synchronize()?;
    let ms = t0.elapsed().as_secs_f64() * 1000.0 / n as f64;
    let bytes = model.cfg.num_parameters() * model.dtype().size_in_bytes();
    Ok((ms, bytes as f64 / 3e12 * 1000.0, bytes))
}

fn parity(a: ParityArgs) -> Result<()> {
    let device = pick_device(false)?;
    for name in ["llama", "qwen2", "gemma2"] {
        let dir = a.fixtures.join(name);
        let reference: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json"))?)?;
        let ids: Vec<Vec<u32>> = serde_json::from_value(reference["input_ids"].clone())?;
        let mask: Vec<Vec<u8>> = serde_json::from_value(reference["attention_mask"].clone())?;
        let want: Vec<Vec<Vec<f32>>> = serde_json::from_value(reference["logits"].clone())?;
        let mut report = serde_json::json!({"fixture": name, "device": format!("{device:?}")});
        let mut models = Vec::new();
        for dtype in [DType::F32, DType::BF16] {
            let (cfg, w) = load_hf_dir(&dir, &device)?;
            let m = Decoder::from_weights(cfg, &w, dtype, &device)?;
            let (h, _) = m.forward(&ids, &mask, true, false)?;
            let got: Vec<Vec<Vec<f32>>> = m.logits(&h)?.to_vec3()?;
            let mut worst = 0f32;
            for (r, row) in mask.iter().enumerate() {
                let real: Vec<usize> = (0..row.len()).filter(|&j| row[j] == 1).collect();
                for (k, &j) in real.iter().enumerate() {
                    for (x, y) in got[r][j].iter().zip(&want[r][k]) {
                        worst = worst.max((x - y).abs());
                    }
                }
            }
            report[format!("max_abs_logit_diff_vs_hf_{dtype:?}")] = worst.into();
            models.push(m);
        }
        // Beam search on the device (f32, bf16) against the CPU (f32) over a small random catalog.
        let (cfg, w) = load_hf_dir(&dir, &Device::Cpu)?;
        let cpu = Decoder::from_weights(cfg, &w, DType::F32, &Device::Cpu)?;
        let seqs: Vec<Vec<u32>> = (0..60u32)
            .map(|i| vec![3 + i % 7, 10 + (i * 7) % 11, 30 + (i * 13) % 17, 2])
            .collect();
        let mut uniq = seqs.clone();
        uniq.sort();
        uniq.dedup();
        let index = ItemIndex::from_sequences(uniq)?;
        let prompts = vec![ids[0].clone(), ids[1][3..].to_vec()];
        let want = beam_search(&cpu, &index, &prompts, 20)?;
        for (m, label) in models.iter().zip(["f32", "bf16"]) {
            let got = beam_search(m, &index, &prompts, 20)?;
            let mut same_top1 = 0;
            let mut overlap = 0;
            let mut max_score_diff = 0f32;
            for (g, w) in got.iter().zip(&want) {
                same_top1 += usize::from(g[0].title == w[0].title);
                overlap += g
                    .iter()
                    .filter(|x| w.iter().any(|y| y.title == x.title))
                    .count();
                for x in g {
                    if let Some(y) = w.iter().find(|y| y.title == x.title) {
                        max_score_diff = max_score_diff.max((x.score - y.score).abs());
                    }
                }
            }
            report[format!("beam_{label}_top1_agree")] =
                format!("{same_top1}/{}", prompts.len()).into();
            report[format!("beam_{label}_top20_overlap")] =
                format!("{overlap}/{}", 20 * prompts.len()).into();
            report[format!("beam_{label}_max_score_diff")] = max_score_diff.into();
        }
        println!("{report}");
    }
    Ok(())
}
