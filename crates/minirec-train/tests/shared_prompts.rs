//! One prompt pass per group: responses that share a prompt attend to its one run, a repeated sequence is run
//! once, and the log-probabilities,
//! the GRPO and SimPO losses built on them and every parameter's gradient equal the per-sequence path's —
//! for Llama, Qwen2 (biases) and Gemma-2 (soft-caps, a sliding window shorter than the sequences), with LoRA
//! and full fine-tuning, through the CPU kernels (f32) and candle's composed ops (f64).

use candle_core::{DType, Device, Tensor, Var};
use minirec_model::config::Family;
use minirec_model::load::{preset_config, random_model};
use minirec_model::lora::LoraConfig;
use minirec_model::Decoder;
use minirec_train::logprobs::{token_logprobs, token_logprobs_per_sequence, tokens_processed};
use minirec_train::riser::{grpo_loss_part, masked_reward, simpo_pair_loss, GrpoLossConfig};
use minirec_train::sft::trainable;
use minirec_train::SftConfig;

const VOCAB: usize = 40;

fn model(family: &str, dtype: DType, lora: bool) -> (Decoder, Vec<(String, Var)>) {
    let mut cfg = preset_config("tiny", VOCAB).unwrap();
    match family {
        "qwen2" => {
            cfg.family = Family::Qwen2;
            cfg.attention_bias = true;
        }
        "gemma2" => {
            cfg.family = Family::Gemma2;
            cfg.attn_logit_softcapping = Some(50.0);
            cfg.final_logit_softcapping = Some(30.0);
            cfg.query_pre_attn_scalar = Some(8.0);
            cfg.sliding_window = Some(5);
            cfg.sliding_layers = vec![true, false];
            cfg.activation = minirec_model::Activation::GeluTanh;
        }
        _ => {}
    }
    let mut m = random_model(cfg, dtype, &Device::Cpu, 11).unwrap();
    let sft = SftConfig {
        lora: lora.then(|| LoraConfig {
            r: 4,
            ..Default::default()
        }),
        ..Default::default()
    };
    let vars = trainable(&mut m, &sft).unwrap();
    if lora {
        // PEFT starts B at zero; move it so that A's gradients are not all zero too.
        for (n, v) in &vars {
            if n.contains("lora_B") {
                let r = Tensor::randn(0f32, 0.05, v.shape(), &Device::Cpu).unwrap();
                v.set(&r.to_dtype(v.dtype()).unwrap()).unwrap();
            }
        }
    }
    (m, vars)
}

/// Two groups of rollouts (prompts of 7 and 4 tokens), responses of different lengths, and a lone sequence.
fn batch() -> Vec<(Vec<u32>, Vec<u32>)> {
    let p1: Vec<u32> = vec![3, 8, 5, 21, 13, 2, 30];
    let p2: Vec<u32> = vec![17, 4, 9, 11];
    let p3: Vec<u32> = vec![6, 6, 1];
    vec![
        (p1.clone(), vec![10, 12, 14]),
        (p1.clone(), vec![10, 15]),
        (p2.clone(), vec![22, 23, 24, 25]),
        (p1.clone(), vec![33, 12, 14, 1, 2, 7]),
        (p2.clone(), vec![22]),
        (p3, vec![5, 9, 27]),
        (p2.clone(), vec![31, 32]),
        (p1.clone(), vec![10, 15]),
        (p2, vec![22, 23, 24, 25]),
    ]
}

fn refs(b: &[(Vec<u32>, Vec<u32>)]) -> Vec<(&[u32], &[u32])> {
    b.iter()
        .map(|(p, r)| (p.as_slice(), r.as_slice()))
        .collect()
}

fn to_f64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn max_rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1.0 + x.abs().max(y.abs())))
        .fold(0.0, f64::max)
}

/// GRPO over the groups plus SimPO on (first, second) response pairs, as `rl.rs` builds them.
fn losses(lp: &Tensor, b: &[(Vec<u32>, Vec<u32>)]) -> Tensor {
    let n: usize = b.iter().map(|(_, r)| r.len()).sum();
    let old: Vec<f32> = to_f64(lp).iter().map(|&x| x as f32 - 0.05).collect();
    let mut adv = Vec::new();
    let mut mask = Vec::new();
    for (i, (_, r)) in b.iter().enumerate() {
        adv.extend(std::iter::repeat_n(i as f32 * 0.3 - 0.8, r.len()));
        mask.extend((0..r.len()).map(|k| 1.0 / (1.0 + k as f32)));
    }
    let cfg = GrpoLossConfig {
        clip_eps: 0.2,
        beta_kl: 0.0,
    };
    let total: f32 = mask.iter().sum();
    let grpo = grpo_loss_part(lp, &old, &adv, &mask, &vec![false; n], &cfg, total).unwrap();
    let mut rewards = Vec::new();
    let mut off = 0;
    for (_, r) in b {
        let m = vec![1.0; r.len()];
        rewards.push(masked_reward(&lp.narrow(0, off, r.len()).unwrap(), &m).unwrap());
        off += r.len();
    }
    let simpo = simpo_pair_loss(&rewards[0], &rewards[1], 2.0, 0.5).unwrap();
    let simpo2 = simpo_pair_loss(&rewards[2], &rewards[4], 2.0, 0.5).unwrap();
    ((grpo + simpo).unwrap() + simpo2).unwrap()
}

fn check(family: &str, dtype: DType, lora: bool) {
    let b = batch();
    let (m, vars) = model(family, dtype, lora);
    let shared = token_logprobs(&m, &refs(&b), false).unwrap();
    let whole = token_logprobs_per_sequence(&m, &refs(&b), false).unwrap();
    let d = max_rel(&to_f64(&shared), &to_f64(&whole));
    let what = format!("{family} {dtype:?} lora={lora}");
    assert!(d < 1e-5, "{what}: log-probabilities differ by {d}");
    let (ls, lw) = (losses(&shared, &b), losses(&whole, &b));
    let d = max_rel(&to_f64(&ls), &to_f64(&lw));
    assert!(d < 1e-5, "{what}: losses differ by {d}");
    let (gs, gw) = (ls.backward().unwrap(), lw.backward().unwrap());
    let mut nonzero = 0;
    for (name, v) in &vars {
        let a = gs
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("{what}: {name} has no gradient (shared)"));
        let c = gw
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("{what}: {name} has no gradient"));
        let (a, c) = (to_f64(a), to_f64(c));
        let scale = c.iter().fold(0f64, |s, x| s.max(x.abs())).max(1e-3);
        let d = a
            .iter()
            .zip(&c)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
            / scale;
        assert!(
            d < 1e-5,
            "{what}: gradient of {name} differs by {d} (relative to its max)"
        );
        nonzero += usize::from(c.iter().any(|x| *x != 0.0));
    }
    assert!(
        nonzero * 10 >= vars.len() * 9,
        "{what}: most parameters get a gradient"
    );
}

#[test]
fn shared_prompt_values_and_gradients_equal_the_per_sequence_path() {
    for family in ["llama", "qwen2", "gemma2"] {
        for lora in [false, true] {
            check(family, DType::F32, lora);
        }
    }
    // f64 takes candle's composed attention (as CUDA and bf16 do), with the same prefix masks.
    check("gemma2", DType::F64, false);
    check("llama", DType::F64, true);
}

#[test]
fn shared_prompts_cut_the_tokens_processed() {
    let b = batch();
    let whole: usize = b.iter().map(|(p, r)| p.len() + r.len()).sum();
    // Prompts of 7, 4 and 3 tokens once each, and the 21 tokens of the distinct responses (two sequences
    // repeat).
    assert_eq!(tokens_processed(&refs(&b)), 7 + 4 + 3 + 21);
    assert_eq!(whole, 4 * 7 + 4 * 4 + 3 + 21 + 2 + 4);
    let distinct = vec![(vec![1u32, 2], vec![3u32]), (vec![4, 5], vec![6])];
    assert_eq!(tokens_processed(&refs(&distinct)), 6);
}
