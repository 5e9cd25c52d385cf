//! Gradients reach every trainable tensor (full fine-tuning and LoRA, every family), and adapters and merged
//! weights round-trip through their files.

use candle_core::{DType, Device, Tensor, Var, D};
use minirec_model::lora::{add_lora, load_adapter, save_adapter, save_hf_dir, LoraConfig};
use minirec_model::weights::load_hf_dir;
use minirec_model::Decoder;

mod common;
use common::fixture_model as model;

/// Next-token NLL over a padded batch, through the differentiable path.
fn nll(m: &Decoder) -> Tensor {
    let ids = vec![vec![5u32, 17, 33, 2, 90, 41], vec![0u32, 0, 8, 55, 21, 19]];
    let mask = vec![vec![1u8; 6], vec![0, 0, 1, 1, 1, 1]];
    let (h, _) = m.forward(&ids, &mask, false, false).unwrap();
    let lsm = candle_nn::ops::log_softmax(&m.logits(&h).unwrap(), D::Minus1).unwrap();
    let mut terms = Vec::new();
    for r in 0..2 {
        for j in 0..5 {
            if mask[r][j] == 1 {
                terms.push(
                    lsm.get(r)
                        .unwrap()
                        .get(j)
                        .unwrap()
                        .get(ids[r][j + 1] as usize)
                        .unwrap(),
                );
            }
        }
    }
    (Tensor::stack(&terms, 0).unwrap().mean_all().unwrap() * -1.0).unwrap()
}

fn check_all_nonzero(vars: &[(String, Var)], loss: &Tensor) {
    let grads = loss.backward().unwrap();
    for (name, v) in vars {
        let g = grads
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("{name} has no gradient"));
        let s = g
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(s > 0.0 && s.is_finite(), "{name}: |grad| = {s}");
    }
}

#[test]
fn full_fine_tuning_reaches_every_tensor() {
    for name in ["llama", "qwen2", "gemma2"] {
        let mut m = model(name);
        let vars = m.make_all_trainable().unwrap();
        let expected = m.named_tensors().unwrap().len();
        assert_eq!(vars.len(), expected, "{name}: every tensor is a variable");
        check_all_nonzero(&vars, &nll(&m));
    }
}

#[test]
fn lora_reaches_every_adapter() {
    for name in ["llama", "qwen2", "gemma2"] {
        let mut m = model(name);
        let vars = add_lora(
            &mut m,
            &LoraConfig {
                r: 4,
                ..Default::default()
            },
            1,
        )
        .unwrap();
        assert_eq!(vars.len(), 2 * 7 * m.cfg.num_layers);
        // B starts at zero, which zeroes A's gradient: move B off zero as one optimiser step would.
        for (n, v) in &vars {
            if n.contains("lora_B") {
                v.set(&Tensor::randn(0f32, 0.1, v.shape(), &Device::Cpu).unwrap())
                    .unwrap();
            }
        }
        check_all_nonzero(&vars, &nll(&m));
    }
}

fn logits(m: &Decoder) -> Vec<Vec<f32>> {
    let ids = vec![vec![5u32, 17, 33, 2, 90]];
    let (h, _) = m.forward(&ids, &[vec![1; 5]], true, false).unwrap();
    m.logits(&h).unwrap().squeeze(0).unwrap().to_vec2().unwrap()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn adapters_and_merged_weights_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = model("qwen2");
    let base = logits(&m);
    let cfg = LoraConfig {
        r: 4,
        alpha: 8.0,
        ..Default::default()
    };
    let vars = add_lora(&mut m, &cfg, 7).unwrap();
    assert!(
        max_diff(&base, &logits(&m)) < 1e-6,
        "fresh adapters leave the model unchanged"
    );
    for (n, v) in &vars {
        if n.contains("lora_B") {
            v.set(&Tensor::randn(0f32, 0.2, v.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let adapted = logits(&m);
    assert!(max_diff(&base, &adapted) > 1e-3);

    save_adapter(&mut m, &cfg, "fixture/qwen2", &tmp.path().join("adapter")).unwrap();
    let peft: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("adapter/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(peft["peft_type"], "LORA");
    assert_eq!(peft["r"], 4);
    let mut fresh = model("qwen2");
    let (loaded_cfg, loaded) = load_adapter(&mut fresh, &tmp.path().join("adapter")).unwrap();
    assert_eq!(loaded_cfg.r, 4);
    assert_eq!(loaded.len(), vars.len());
    assert!(max_diff(&adapted, &logits(&fresh)) < 1e-5);

    save_hf_dir(&m, None, &tmp.path().join("merged")).unwrap();
    let (cfg2, w2) = load_hf_dir(&tmp.path().join("merged"), &Device::Cpu).unwrap();
    let merged = Decoder::from_weights(cfg2, &w2, DType::F32, &Device::Cpu).unwrap();
    assert!(max_diff(&adapted, &logits(&merged)) < 1e-4);
}

/// A pass without gradients (a rollout's prompt prefill) returns keys and values that hold no graph, even
/// with trainable weights, and the same values as the differentiable pass: kept with their graph, every
/// layer's input stayed alive until the pass ended.
#[test]
fn a_no_grad_pass_keeps_keys_and_values_without_their_graph() {
    let mut m = model("llama");
    let _vars = m.make_all_trainable().unwrap();
    let ids = vec![vec![5u32, 17, 33, 2, 90, 41]];
    let mask = vec![vec![1u8; 6]];
    let (_, free) = m.forward(&ids, &mask, true, true).unwrap();
    let (_, tracked) = m.forward(&ids, &mask, false, true).unwrap();
    assert_eq!(free.len(), tracked.len());
    assert!(!free.is_empty());
    for ((k, v), (tk, tv)) in free.iter().zip(&tracked) {
        assert!(!k.track_op() && !v.track_op());
        assert!(
            tk.track_op() && tv.track_op(),
            "the differentiable pass keeps its graph"
        );
        assert_eq!(common::max_abs_diff(k, tk), 0.0);
        assert_eq!(common::max_abs_diff(v, tv), 0.0);
    }
}
