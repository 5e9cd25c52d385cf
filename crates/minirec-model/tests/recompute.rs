//! Layer recomputation gives the same loss and the same gradients, for every trainable tensor, as the pass
//! that keeps every layer's intermediates: full fine-tuning and LoRA (folded and low-rank), every family.

use candle_core::{Device, Tensor, Var, D};
use minirec_model::lora::{add_lora, LoraConfig};
use minirec_model::Decoder;

mod common;
use common::fixture_model as model;

/// A padded batch of `rows` sequences of length `len` (row r left-padded by r % 3 tokens), and its
/// next-token NLL through the differentiable path.
fn nll(m: &Decoder, rows: usize, len: usize) -> Tensor {
    let vocab = m.cfg.vocab_size as u32;
    let ids: Vec<Vec<u32>> = (0..rows)
        .map(|r| {
            (0..len)
                .map(|j| (r * 31 + j * 7 + 3) as u32 % vocab)
                .collect()
        })
        .collect();
    let mask: Vec<Vec<u8>> = (0..rows)
        .map(|r| (0..len).map(|j| u8::from(j >= r % 3)).collect())
        .collect();
    let (h, _) = m.forward(&ids, &mask, false, false).unwrap();
    let lsm = candle_nn::ops::log_softmax(&m.logits(&h).unwrap(), D::Minus1).unwrap();
    let mut terms = Vec::new();
    for r in 0..rows {
        for j in 0..len - 1 {
            if mask[r][j] == 1 {
                let t = ids[r][j + 1] as usize;
                terms.push(lsm.get(r).unwrap().get(j).unwrap().get(t).unwrap());
            }
        }
    }
    (Tensor::stack(&terms, 0).unwrap().mean_all().unwrap() * -1.0).unwrap()
}

/// (loss, every variable's gradient) of one pass, recomputed or not.
fn pass(
    m: &mut Decoder,
    vars: &[(String, Var)],
    recompute: bool,
    rows: usize,
    len: usize,
) -> (f32, Vec<Vec<f32>>) {
    m.set_recompute(recompute);
    let loss = nll(m, rows, len);
    let grads = m.backward(&loss).unwrap();
    let g = vars
        .iter()
        .map(|(name, v)| {
            grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{name} has no gradient (recompute {recompute})"))
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        })
        .collect();
    (loss.to_scalar().unwrap(), g)
}

fn assert_same(name: &str, vars: &[(String, Var)], m: &mut Decoder, rows: usize, len: usize) {
    let (l0, g0) = pass(m, vars, false, rows, len);
    let (l1, g1) = pass(m, vars, true, rows, len);
    assert!((l0 - l1).abs() <= 1e-6, "{name}: loss {l0} vs {l1}");
    let mut nonzero = 0;
    for ((n, _), (a, b)) in vars.iter().zip(g0.iter().zip(&g1)) {
        let scale = a.iter().fold(1e-3f32, |s, x| s.max(x.abs()));
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(
            worst <= 1e-5 * scale.max(1.0),
            "{name}/{n}: max |Δgrad| {worst} (scale {scale})"
        );
        nonzero += usize::from(a.iter().any(|x| *x != 0.0));
    }
    assert_eq!(nonzero, vars.len(), "{name}: every tensor gets a gradient");
}

#[test]
fn recomputed_layers_give_the_same_gradients_with_full_fine_tuning() {
    for name in ["llama", "qwen2", "gemma2"] {
        let mut m = model(name);
        let vars = m.make_all_trainable().unwrap();
        assert_same(name, &vars, &mut m, 3, 9);
    }
}

#[test]
fn recomputed_layers_give_the_same_gradients_with_lora() {
    for name in ["llama", "qwen2", "gemma2"] {
        let mut m = model(name);
        let cfg = LoraConfig {
            r: 4,
            ..Default::default()
        };
        let vars = add_lora(&mut m, &cfg, 1).unwrap();
        for (n, v) in &vars {
            if n.contains("lora_B") {
                v.set(&Tensor::randn(0f32, 0.1, v.shape(), &Device::Cpu).unwrap())
                    .unwrap();
            }
        }
        // 3 × 9 rows take the low-rank path; 4 × 12 = 48 rows (> 32 inputs) fold the adapter.
        assert_same(&format!("{name} low-rank"), &vars, &mut m, 3, 9);
        assert_same(&format!("{name} folded"), &vars, &mut m, 4, 12);
    }
}

#[test]
fn a_recomputing_model_still_scores_and_decodes_as_before() {
    let mut m = model("llama");
    let ids = vec![vec![5u32, 17, 33, 2, 90]];
    let run = |m: &Decoder| -> Vec<f32> {
        let (h, _) = m.forward(&ids, &[vec![1; 5]], true, false).unwrap();
        m.logits(&h)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let before = run(&m);
    m.set_recompute(true);
    assert_eq!(run(&m), before);
}
