//! minirec's forward pass against HF transformers' logits on tiny random models of each family
//! (fixtures/make_fixtures.py made them with transformers 5.17 / torch 2.11, float32 on CPU).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use minirec_model::weights::load_hf_dir;
use minirec_model::{Decoder, GenCache};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load(name: &str) -> (Decoder, serde_json::Value) {
    let dir = fixture(name);
    let (cfg, w) = load_hf_dir(&dir, &Device::Cpu).unwrap();
    let model = Decoder::from_weights(cfg, &w, DType::F32, &Device::Cpu).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    (model, reference)
}

fn rows<T: Copy>(v: &serde_json::Value, f: impl Fn(&serde_json::Value) -> T) -> Vec<Vec<T>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(&f).collect())
        .collect()
}

/// Max |ours − HF| over every real position's logits.
fn max_diff(model: &Decoder, reference: &serde_json::Value, no_grad: bool) -> f32 {
    let ids = rows(&reference["input_ids"], |x| x.as_u64().unwrap() as u32);
    let mask = rows(&reference["attention_mask"], |x| x.as_u64().unwrap() as u8);
    let (hidden, _) = model.forward(&ids, &mask, no_grad, false).unwrap();
    let logits: Vec<Vec<Vec<f32>>> = model.logits(&hidden).unwrap().to_vec3().unwrap();
    let want = reference["logits"].as_array().unwrap();
    let mut worst = 0f32;
    for (r, m) in mask.iter().enumerate() {
        let real: Vec<usize> = (0..m.len()).filter(|&j| m[j] == 1).collect();
        let w = want[r].as_array().unwrap();
        assert_eq!(w.len(), real.len());
        for (k, &j) in real.iter().enumerate() {
            for (a, b) in logits[r][j].iter().zip(w[k].as_array().unwrap()) {
                worst = worst.max((a - b.as_f64().unwrap() as f32).abs());
            }
        }
    }
    worst
}

#[test]
fn logits_match_hf_transformers() {
    for name in ["llama", "qwen2", "gemma2"] {
        let (model, reference) = load(name);
        for no_grad in [false, true] {
            let d = max_diff(&model, &reference, no_grad);
            println!("{name} no_grad={no_grad}: max |Δlogit| = {d:.2e}");
            assert!(
                d < 1e-4,
                "{name} (no_grad={no_grad}) differs from transformers by {d}"
            );
        }
    }
}

/// The logits at every position of one sequence, from a full forward pass.
fn full_forward_logits(model: &Decoder, seq: &[u32]) -> Vec<Vec<f32>> {
    let mask = vec![vec![1u8; seq.len()]];
    let (h, _) = model.forward(&[seq.to_vec()], &mask, false, false).unwrap();
    model
        .logits(&h)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2()
        .unwrap()
}

/// The largest absolute difference between two logit rows.
fn gap(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// Decoding with the prompt cache shared by W rows gives the logits of a full forward over each row's
/// whole sequence.
#[test]
fn shared_prompt_cache_decoding_matches_full_forward() {
    for name in ["llama", "qwen2", "gemma2"] {
        let (model, _) = load(name);
        let prompts = vec![vec![5u32, 17, 33, 2, 90, 41, 7], vec![8u32, 55, 21]];
        let w = 3;
        // Each row continues its prompt with its own tokens.
        let conts: Vec<Vec<u32>> = (0..prompts.len() * w)
            .map(|r| vec![(10 + r) as u32, (40 + 3 * r) as u32, (70 + r) as u32])
            .collect();
        let (pc, _) = model.prefill(&prompts).unwrap();
        let mut gen = GenCache::default();
        let mut stepped = Vec::new();
        for s in 0..3 {
            let toks: Vec<u32> = conts.iter().map(|c| c[s]).collect();
            let h = model.decode_step(&pc, &mut gen, &toks).unwrap();
            stepped.push(model.logits(&h).unwrap().to_vec2::<f32>().unwrap());
        }
        for (r, c) in conts.iter().enumerate() {
            let full: Vec<u32> = prompts[r / w].iter().chain(c).copied().collect();
            let l = full_forward_logits(&model, &full);
            for (s, step) in stepped.iter().enumerate() {
                let d = gap(&l[prompts[r / w].len() + s], &step[r]);
                assert!(d < 1e-4, "{name} row {r} step {s}: {d}");
            }
        }
    }
}

/// Beam reordering: a row that continues another row's history sees that history.
#[test]
fn reordering_the_generated_cache_follows_parents() {
    let (model, _) = load("llama");
    let prompts = vec![vec![5u32, 17, 33]];
    let (pc, _) = model.prefill(&prompts).unwrap();
    let mut gen = GenCache::default();
    model.decode_step(&pc, &mut gen, &[10, 20]).unwrap();
    // Both rows now continue row 1 (token 20).
    assert!(gen.reorder(&[0, 2]).is_err(), "row 2 does not exist");
    gen.reorder(&[1, 1]).unwrap();
    let h = model.decode_step(&pc, &mut gen, &[30, 31]).unwrap();
    let stepped: Vec<Vec<f32>> = model.logits(&h).unwrap().to_vec2().unwrap();
    for (r, tok) in [30u32, 31].iter().enumerate() {
        let l = full_forward_logits(&model, &[5, 17, 33, 20, *tok]);
        let d = gap(&l[4], &stepped[r]);
        assert!(d < 1e-4, "row {r}: {d}");
    }
}

/// Uneven rows (beams that finished leave no slot behind): each row sees its own prompt and history, as the
/// full forward pass of its sequence does; reordering moves rows across the new layout.
#[test]
fn uneven_rows_per_prompt_decode_their_own_sequences() {
    let (model, _) = load("llama");
    assert!(model.decodes_uneven_rows());
    let prompts = vec![vec![5u32, 17, 33], vec![8u32, 55], vec![3u32, 4, 9, 12]];
    let (pc, _) = model.prefill(&prompts).unwrap();
    let mut gen = GenCache::default();
    model
        .decode_rows(&pc, &mut gen, &[10, 20, 30, 40, 50], &[3, 1, 1])
        .unwrap();
    // Prompt 0 keeps rows 2 and 0 (in that order), prompt 1 splits its row in two, prompt 2 drops out...
    // but the cache still holds it, so it keeps its row (a prompt leaves through `PromptCache::select`).
    gen.reorder(&[2, 0, 3, 3, 4]).unwrap();
    let toks = [11u32, 12, 13, 14, 15];
    let h = model.decode_rows(&pc, &mut gen, &toks, &[2, 2, 1]).unwrap();
    let stepped: Vec<Vec<f32>> = model.logits(&h).unwrap().to_vec2().unwrap();
    let history = [(0usize, 30u32), (0, 10), (1, 40), (1, 40), (2, 50)];
    for (r, (&(p, first), &tok)) in history.iter().zip(&toks).enumerate() {
        let mut full = prompts[p].clone();
        full.extend([first, tok]);
        let l = full_forward_logits(&model, &full);
        let d = gap(&l[full.len() - 1], &stepped[r]);
        assert!(d < 1e-4, "row {r}: {d}");
    }
    // Layouts that do not fit the batch are errors.
    assert!(model.decode_rows(&pc, &mut gen, &toks, &[2, 2]).is_err());
    assert!(model.decode_rows(&pc, &mut gen, &toks, &[2, 2, 2]).is_err());
}

/// The decode step's two attention paths agree: the CPU f32 kernel and candle's composed ops (which serve
/// other dtypes and CUDA; f64 here), over three steps of shared-prompt decoding with beams reordered.
#[test]
fn decode_kernel_matches_the_composed_path() {
    for name in ["llama", "qwen2", "gemma2"] {
        let dir = fixture(name);
        let (cfg, w) = load_hf_dir(&dir, &Device::Cpu).unwrap();
        let steps = |dtype: DType| {
            let m = Decoder::from_weights(cfg.clone(), &w, dtype, &Device::Cpu).unwrap();
            let prompts = vec![vec![5u32, 17, 33, 2, 90, 41, 7], vec![8u32, 55, 21]];
            let (pc, _) = m.prefill(&prompts).unwrap();
            let mut gen = GenCache::default();
            let mut out = Vec::new();
            for s in 0..3u32 {
                if s > 0 {
                    gen.reorder(&[1, 1, 0, 5, 3, 3]).unwrap();
                }
                let toks: Vec<u32> = (0..6).map(|r| 10 + 7 * r + s).collect();
                let h = m.decode_step(&pc, &mut gen, &toks).unwrap();
                out.push(m.logits(&h).unwrap().to_vec2::<f32>().unwrap());
            }
            out
        };
        let (kernel, composed) = (steps(DType::F32), steps(DType::F64));
        let d = kernel
            .iter()
            .flatten()
            .flatten()
            .zip(composed.iter().flatten().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!("{name}: max |Δlogit| kernel vs composed = {d:.2e}");
        assert!(d < 1e-4, "{name}: {d}");
    }
}

/// The CPU prefills each prompt alone (no padding computed), so a prompt's cache and last state no longer
/// depend on its batch mates (in a padded batch they do, at float rounding, through the padded length); they
/// equal the padded batch's to rounding, and decode steps reading the cache match full passes, for prompts
/// spanning several of the attention kernel's query blocks and differing in length many times over.
#[test]
fn prefilling_each_prompt_alone_equals_the_padded_batch() {
    for name in ["llama", "qwen2", "gemma2"] {
        // The fixtures' 64 positions, stretched: prompts longer than the kernel's 64-query blocks.
        let (mut cfg, w) = load_hf_dir(&fixture(name), &Device::Cpu).unwrap();
        cfg.max_position_embeddings = 256;
        let model = Decoder::from_weights(cfg, &w, DType::F32, &Device::Cpu).unwrap();
        let prompt = |len: usize, seed: usize| -> Vec<u32> {
            (0..len)
                .map(|i| ((i * 31 + seed * 17) % 90 + 3) as u32)
                .collect()
        };
        let prompts = vec![prompt(150, 1), prompt(3, 2), prompt(70, 3), prompt(129, 4)];
        let (pc, last) = model.prefill(&prompts).unwrap();
        let rows = |t: &candle_core::Tensor| -> Vec<Vec<f32>> { t.to_vec2().unwrap() };
        let last = rows(&last);
        for (r, p) in prompts.iter().enumerate() {
            let (_, alone) = model.prefill(std::slice::from_ref(p)).unwrap();
            let alone = &rows(&alone)[0];
            let same = alone
                .iter()
                .zip(&last[r])
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{name} prompt {r}: its state depends on its batch mates"
            );
        }
        let (_, padded) = model.prefill_padded(&prompts).unwrap();
        for (r, row) in rows(&padded).iter().enumerate() {
            let d = gap(row, &last[r]);
            assert!(d < 1e-4, "{name} prompt {r}: {d} from the padded batch");
        }
        // Decode steps read the cache's real slots: their states match full passes of each sequence.
        let mut gen = GenCache::default();
        let toks = [10u32, 20, 30, 40];
        let h = model.decode_step(&pc, &mut gen, &toks).unwrap();
        let stepped: Vec<Vec<f32>> = model.logits(&h).unwrap().to_vec2().unwrap();
        for (r, p) in prompts.iter().enumerate() {
            let mut full = p.clone();
            full.push(toks[r]);
            let d = gap(&full_forward_logits(&model, &full)[p.len()], &stepped[r]);
            assert!(d < 1e-4, "{name} prompt {r}: {d}");
        }
    }
}
