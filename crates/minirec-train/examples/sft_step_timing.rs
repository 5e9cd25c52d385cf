//! Times the pieces of one SFT step (forward, backward, optimiser) for a tiny model on the demo data.
use std::time::Instant;

use candle_core::{DType, Device};
use minirec_data::{demo, prepare_generic, PrepareOptions, PreparedDataset};
use minirec_model::load::{preset_config, random_model};
use minirec_train::optim::{AdamW, AdamWConfig};
use minirec_train::sft::{batch_nll, encode_samples, trainable, SftConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join("minirec-sft-timing");
    let files = demo::write(&dir.join("raw"), 800, 42)?;
    let mut o = PrepareOptions::new(dir.join("data"));
    o.force = true;
    prepare_generic(&files, &o)?;
    let ds = PreparedDataset::load(&dir.join("data"))?;
    let tok = minirec_train::sft::catalog_tokenizer(&ds)?;
    let cfg = preset_config("tiny-64", tok.vocab_size())?;
    let mut m = random_model(cfg, DType::F32, &Device::Cpu, 1)?;
    let ex = encode_samples(&ds, &ds.train[..320], &tok)?;
    println!(
        "mean tokens {}",
        ex.iter()
            .map(|e| e.prompt.len() + e.response.len())
            .sum::<usize>()
            / ex.len()
    );
    let vars = trainable(&mut m, &SftConfig::default())?;
    let mut opt = AdamW::new(vars, AdamWConfig::default())?;
    let (mut f, mut b, mut s) = (0f64, 0f64, 0f64);
    for chunk in ex.chunks(32) {
        let batch: Vec<_> = chunk.iter().collect();
        let t = Instant::now();
        let loss = batch_nll(&m, &batch, false)?;
        f += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let g = loss.backward()?;
        b += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut acc = opt.accumulator();
        opt.accumulate(&mut acc, &g)?;
        opt.step(acc, 1e-3, 1.0)?;
        s += t.elapsed().as_secs_f64();
    }
    println!("10 steps: forward {f:.3} s, backward {b:.3} s, optimiser {s:.3} s");
    Ok(())
}
