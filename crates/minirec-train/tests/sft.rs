//! SFT on the embedded demo dataset with a tiny model: it learns, and an interrupted run resumed from its last
//! checkpoint ends with exactly the weights of an uninterrupted one.

use std::path::Path;

use candle_core::{DType, Device};
use minirec_data::{demo, prepare_generic, PrepareOptions, PreparedDataset};
use minirec_model::load::{load_model, preset_config, random_model};
use minirec_model::lora::LoraConfig;
use minirec_model::{Decoder, TextTokenizer};
use minirec_train::sft::{encode_samples, eval_nll, train, trainable, Example, SftConfig};
use minirec_train::TrainError;

fn demo_data(dir: &Path) -> PreparedDataset {
    let files = demo::write(&dir.join("raw"), 300, 7).unwrap();
    let mut o = PrepareOptions::new(dir.join("data"));
    o.force = true;
    prepare_generic(&files, &o).unwrap();
    PreparedDataset::load(&dir.join("data")).unwrap()
}

fn tokenizer(ds: &PreparedDataset) -> TextTokenizer {
    let prompt = ds.prompt.render(["x"]);
    TextTokenizer::word_level(
        ds.catalog
            .titles()
            .iter()
            .map(String::as_str)
            .chain([prompt.as_str()]),
    )
    .unwrap()
}

fn tiny_model(vocab: usize, seed: u64) -> Decoder {
    let cfg = preset_config("tiny", vocab).unwrap();
    random_model(cfg, DType::F32, &Device::Cpu, seed).unwrap()
}

/// Rank-4 adapters without dropout, so runs compare exactly.
fn small_lora() -> LoraConfig {
    LoraConfig {
        r: 4,
        alpha: 8.0,
        dropout: 0.0,
        ..Default::default()
    }
}

fn examples(ds: &PreparedDataset, tok: &TextTokenizer) -> (Vec<Example>, Vec<Example>) {
    let train = encode_samples(ds, &ds.train[..256], tok).unwrap();
    let valid = encode_samples(ds, &ds.valid[..64], tok).unwrap();
    (train, valid)
}

#[test]
fn sft_lowers_validation_loss_and_exports_a_loadable_model() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = demo_data(tmp.path());
    let tok = tokenizer(&ds);
    let (tr, va) = examples(&ds, &tok);
    let mut model = tiny_model(tok.vocab_size(), 1);
    let before = eval_nll(&model, &va, 32).unwrap();
    let cfg = SftConfig {
        epochs: 3,
        lr: 3e-3,
        batch_size: 16,
        checkpoint_every: 0,
        patience: 3,
        ..Default::default()
    };
    let vars = trainable(&mut model, &cfg).unwrap();
    let run = tmp.path().join("run");
    let s = train(
        &mut model, &tok, vars, &tr, &va, &cfg, &run, "random", false, false,
    )
    .unwrap();
    let after = eval_nll(&model, &va, 32).unwrap();
    println!("valid NLL {before:.3} -> {after:.3}; {:?}", s.valid_losses);
    assert!(after < before - 1.0, "validation NLL {before} -> {after}");
    assert_eq!(s.steps, 3 * 16);
    assert_eq!(
        s.best_valid_loss.map(|b| (b - after).abs() < 1e-4),
        Some(true),
        "the exported weights are the best epoch's"
    );
    // The run directory loads as a model, with its tokenizer.
    let loaded = load_model(&run, &Device::Cpu, DType::F32).unwrap();
    let again = eval_nll(&loaded.model, &va, 32).unwrap();
    assert!((again - after).abs() < 1e-4);
    let log = std::fs::read_to_string(run.join("train_log.jsonl")).unwrap();
    assert_eq!(
        log.lines().filter(|l| l.contains("\"valid_loss\"")).count(),
        3
    );
}

#[test]
fn validation_every_n_steps_keeps_the_best_weights_inside_one_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = demo_data(tmp.path());
    let tok = tokenizer(&ds);
    let (tr, va) = examples(&ds, &tok);
    let mut model = tiny_model(tok.vocab_size(), 1);
    let cfg = SftConfig {
        epochs: 1,
        lr: 3e-3,
        batch_size: 16,
        checkpoint_every: 0,
        valid_every: 5,
        patience: 10,
        ..Default::default()
    };
    let vars = trainable(&mut model, &cfg).unwrap();
    let run = tmp.path().join("run");
    let s = train(
        &mut model, &tok, vars, &tr, &va, &cfg, &run, "random", false, false,
    )
    .unwrap();
    let log = std::fs::read_to_string(run.join("train_log.jsonl")).unwrap();
    let at: Vec<u64> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("valid_loss").is_some())
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    // 256 samples / 16 = 16 steps: every 5th and the last.
    assert_eq!(at, vec![5, 10, 15, 16]);
    let best = s.valid_losses.iter().cloned().fold(f64::INFINITY, f64::min);
    assert_eq!(s.best_valid_loss, Some(best));
    let exported = eval_nll(&model, &va, 32).unwrap();
    assert!(
        (exported - best).abs() < 1e-4,
        "exported {exported} vs best {best}"
    );

    // Patience counts validations: with patience 1 the run stops at the first one that is not better.
    let mut model = tiny_model(tok.vocab_size(), 1);
    let cfg = SftConfig {
        lr: 0.3,
        valid_every: 2,
        patience: 1,
        ..cfg
    };
    let vars = trainable(&mut model, &cfg).unwrap();
    let s = train(
        &mut model,
        &tok,
        vars,
        &tr,
        &va,
        &cfg,
        &tmp.path().join("run2"),
        "random",
        false,
        false,
    )
    .unwrap();
    let v = &s.valid_losses;
    if s.stopped_early {
        assert!(v[v.len() - 1] >= v[v.len() - 2], "{v:?}");
        assert!(v[..v.len() - 1].windows(2).all(|w| w[1] < w[0]), "{v:?}");
        assert!(s.steps < 16);
    } else {
        assert!(v.windows(2).all(|w| w[1] < w[0]), "{v:?}");
    }
}

fn run_to_end(
    ds: &PreparedDataset,
    tok: &TextTokenizer,
    run: &Path,
    cfg: &SftConfig,
    resume: bool,
) -> Result<Decoder, TrainError> {
    let (tr, _) = examples(ds, tok);
    let mut model = tiny_model(tok.vocab_size(), 2);
    let vars = trainable(&mut model, cfg).unwrap();
    train(
        &mut model,
        tok,
        vars,
        &tr,
        &[],
        cfg,
        run,
        "random",
        resume,
        false,
    )?;
    Ok(model)
}

fn max_diff(a: &Decoder, b: &Decoder) -> f32 {
    let (ta, tb) = (a.named_tensors().unwrap(), b.named_tensors().unwrap());
    ta.iter()
        .zip(&tb)
        .map(|((n1, x), (n2, y))| {
            assert_eq!(n1, n2);
            (x - y)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        })
        .fold(0.0, f32::max)
}

#[test]
fn resume_after_interruption_reaches_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = demo_data(tmp.path());
    let tok = tokenizer(&ds);
    for lora in [None, Some(small_lora())] {
        let cfg = SftConfig {
            epochs: 2,
            lr: 2e-3,
            batch_size: 16,
            grad_accum: 2,
            checkpoint_every: 3,
            lora: lora.clone(),
            ..Default::default()
        };
        let whole = run_to_end(
            &ds,
            &tok,
            &tmp.path().join(format!("whole-{}", lora.is_some())),
            &cfg,
            false,
        )
        .unwrap();
        let run = tmp.path().join(format!("split-{}", lora.is_some()));
        let crash = SftConfig {
            interrupt_after: Some(5),
            ..cfg.clone()
        };
        assert!(matches!(
            run_to_end(&ds, &tok, &run, &crash, false),
            Err(TrainError::Interrupted { step: 5 })
        ));
        // The newest complete checkpoint is step 3; steps 4 and 5 are redone.
        let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
        assert_eq!(latest.trim(), "step-00000003");
        let resumed = run_to_end(&ds, &tok, &run, &cfg, true).unwrap();
        let kept = std::fs::read_dir(run.join("checkpoints"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("step-")
            })
            .count();
        assert_eq!(
            kept,
            minirec_train::checkpoint::KEEP,
            "older checkpoints are pruned"
        );
        let d = max_diff(&whole, &resumed);
        assert!(
            d < 1e-6,
            "lora={}: resumed weights differ by {d}",
            lora.is_some()
        );
        // And it really trained.
        assert!(max_diff(&whole, &tiny_model(tok.vocab_size(), 2)) > 1e-3 || lora.is_some());
    }
}

/// The per-step training losses a run logged.
fn step_losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("train_log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| v.get("loss").and_then(|x| x.as_f64()))
        .collect()
}

#[test]
fn mixed_precision_follows_the_f32_run_and_moves_every_weight() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = demo_data(tmp.path());
    let tok = tokenizer(&ds);
    let (tr, va) = examples(&ds, &tok);
    if !minirec_model::kernels::bf16::available() {
        eprintln!("skipped: no bf16 kernel on this CPU (the run would train in f32 and say so)");
        return;
    }
    let cfg = |mixed, recompute| SftConfig {
        epochs: 1,
        lr: 3e-3,
        batch_size: 16,
        checkpoint_every: 0,
        bf16_mixed: mixed,
        recompute,
        ..Default::default()
    };
    let mut runs = Vec::new();
    // f32, mixed, and mixed with layers recomputed in backward (which re-runs the mixed products).
    for (mixed, recompute) in [(false, false), (true, false), (true, true)] {
        let mut model = tiny_model(tok.vocab_size(), 3);
        let vars = trainable(&mut model, &cfg(mixed, recompute)).unwrap();
        let before: Vec<_> = vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().copy().unwrap()))
            .collect();
        let run = tmp.path().join(format!("run-{mixed}-{recompute}"));
        train(
            &mut model,
            &tok,
            vars.clone(),
            &tr,
            &va,
            &cfg(mixed, recompute),
            &run,
            "random",
            false,
            false,
        )
        .unwrap();
        assert_eq!(model.mixed_bf16(), mixed);
        for ((name, v), (_, b)) in vars.iter().zip(&before) {
            let moved = (v.as_tensor() - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap();
            assert!(
                moved.to_scalar::<f32>().unwrap() > 0.0,
                "mixed={mixed}: {name} never moved"
            );
        }
        runs.push((step_losses(&run), eval_nll(&model, &va, 32).unwrap()));
    }
    let ((l32, nll32), (lmx, nllmx), (lre, _)) = (&runs[0], &runs[1], &runs[2]);
    for (a, b) in lmx.iter().zip(lre) {
        assert!(
            (a - b).abs() < 1e-5 * a.abs(),
            "recomputed mixed run: {a} vs {b}"
        );
    }
    assert_eq!(l32.len(), 16);
    let worst = l32
        .iter()
        .zip(lmx)
        .map(|(a, b)| ((a - b) / a).abs())
        .fold(0f64, f64::max);
    println!("losses: worst relative gap {worst:.4}; validation NLL {nll32:.4} (f32) vs {nllmx:.4} (mixed)");
    // bf16 operands carry 8 bits of mantissa: the runs part slowly, and learn alike.
    for (i, (a, b)) in l32.iter().zip(lmx).enumerate() {
        assert!(
            (a - b).abs() < 0.05 * a.abs(),
            "step {}: loss {a} (f32) vs {b} (mixed)",
            i + 1
        );
    }
    assert!(
        (nll32 - nllmx).abs() < 0.05 * nll32,
        "validation NLL {nll32} (f32) vs {nllmx} (mixed)"
    );
    assert!(
        l32.iter().zip(lmx).any(|(a, b)| a != b),
        "mixed precision changed nothing"
    );
}

#[test]
fn mixed_precision_is_off_for_lora_which_trains_as_in_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = demo_data(tmp.path());
    let tok = tokenizer(&ds);
    let (tr, va) = examples(&ds, &tok);
    let cfg = |mixed| SftConfig {
        epochs: 1,
        lr: 3e-3,
        batch_size: 32,
        checkpoint_every: 0,
        bf16_mixed: mixed,
        lora: Some(small_lora()),
        ..Default::default()
    };
    let mut adapters = Vec::new();
    for mixed in [false, true] {
        let mut model = tiny_model(tok.vocab_size(), 3);
        let vars = trainable(&mut model, &cfg(mixed)).unwrap();
        let run = tmp.path().join(format!("lora-{mixed}"));
        let c = cfg(mixed);
        train(
            &mut model,
            &tok,
            vars.clone(),
            &tr,
            &va,
            &c,
            &run,
            "random",
            false,
            false,
        )
        .unwrap();
        // Asked for, it stays off: only the adapters train, and they are not multiplied in bf16.
        assert!(!model.mixed_bf16(), "mixed={mixed}: LoRA left mixed on");
        let values: Vec<Vec<f32>> = vars
            .iter()
            .map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
            .collect();
        adapters.push((step_losses(&run), values));
    }
    assert_eq!(adapters[0], adapters[1], "bf16_mixed changed a LoRA run");
}
