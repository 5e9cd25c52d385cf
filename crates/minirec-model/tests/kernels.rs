//! The custom CPU kernels against the composed candle ops they replace: values and gradients on random inputs
//! with odd sizes, padding on either side, grouped-query heads, a sliding window and soft-capping.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var, D};
use minirec_model::kernels::attention::{causal_attention, AttentionSpec};
use rand::{Rng, SeedableRng};

mod common;
use common::max_abs_diff as max_diff;

fn rand_tensor(rng: &mut impl Rng, shape: &[usize], scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// The composed path of `model.rs`: repeat the key/value heads, scores, soft-cap, causal/window and padding
/// biases, softmax, values.
fn reference(q: &Tensor, k: &Tensor, v: &Tensor, spec: &AttentionSpec) -> Tensor {
    let (b, h, t, d) = q.dims4().unwrap();
    let kvh = k.dim(1).unwrap();
    let rep = |x: &Tensor| {
        x.unsqueeze(2)
            .unwrap()
            .expand((b, kvh, h / kvh, t, d))
            .unwrap()
            .reshape((b, h, t, d))
            .unwrap()
    };
    let (kr, vr) = (rep(k), rep(v));
    let mut s = (q.matmul(&kr.t().unwrap()).unwrap() * spec.scale as f64).unwrap();
    if let Some(c) = spec.softcap {
        s = ((s / c as f64).unwrap().tanh().unwrap() * c as f64).unwrap();
    }
    let causal: Vec<f32> = (0..t * t)
        .map(|x| {
            let (i, j) = (x / t, x % t);
            let ok = j <= i && spec.window.is_none_or(|w| i - j < w);
            if ok {
                0.0
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect();
    let pad: Vec<f32> = spec
        .key_real
        .iter()
        .map(|&r| if r == 0 { -1e30 } else { 0.0 })
        .collect();
    let causal = Tensor::from_vec(causal, (1, 1, t, t), &Device::Cpu).unwrap();
    let pad = Tensor::from_vec(pad, (b, 1, 1, t), &Device::Cpu).unwrap();
    let s = s
        .broadcast_add(&causal)
        .unwrap()
        .broadcast_add(&pad)
        .unwrap();
    let p = candle_nn::ops::softmax(&s, D::Minus1).unwrap();
    p.matmul(&vr).unwrap()
}

/// The gradients of Σ y ∘ probe: every input's gradient along one random direction of the output.
fn probe_grads(y: &Tensor, probe: &Tensor) -> candle_core::backprop::GradStore {
    (y * probe).unwrap().sum_all().unwrap().backward().unwrap()
}

/// Runs one case; returns the largest value and gradient differences.
fn compare(b: usize, h: usize, kvh: usize, t: usize, d: usize, spec: AttentionSpec, seed: u64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let q = Var::from_tensor(&rand_tensor(&mut rng, &[b, h, t, d], 1.0)).unwrap();
    let k = Var::from_tensor(&rand_tensor(&mut rng, &[b, kvh, t, d], 1.0)).unwrap();
    let v = Var::from_tensor(&rand_tensor(&mut rng, &[b, kvh, t, d], 1.0)).unwrap();
    let w = rand_tensor(&mut rng, &[b, h, t, d], 1.0);
    let spec = Arc::new(spec);
    let got = causal_attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), spec.clone()).unwrap();
    let want = reference(q.as_tensor(), k.as_tensor(), v.as_tensor(), &spec);
    let dv = max_diff(&got, &want);
    assert!(dv < 1e-5, "values differ by {dv} ({b}×{h}/{kvh}×{t}×{d})");
    let g1 = probe_grads(&got, &w);
    let g2 = probe_grads(&want, &w);
    for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
        let (a, r) = (g1.get(x).unwrap(), g2.get(x).unwrap());
        let scale = common::max_abs(r);
        let diff = max_diff(a, r);
        assert!(
            diff < 1e-4 * scale.max(1.0),
            "d{name} differs by {diff} (scale {scale}) ({b}×{h}/{kvh}×{t}×{d})"
        );
    }
}

fn right_padded(b: usize, t: usize, lens: &[usize]) -> Vec<u8> {
    (0..b * t).map(|x| u8::from(x % t < lens[x / t])).collect()
}

#[test]
fn attention_matches_the_composed_ops_in_values_and_gradients() {
    // Several query blocks (T > 64, not a multiple), three heads per key/value head, right padding.
    compare(
        2,
        6,
        2,
        131,
        16,
        AttentionSpec {
            key_real: right_padded(2, 131, &[131, 77]),
            window: None,
            softcap: None,
            scale: 0.25,
        },
        1,
    );
    // Left padding (as prefill pads prompts), where early padding queries see only padding keys.
    let t = 23;
    let key_real: Vec<u8> = (0..3 * t)
        .map(|x| u8::from(x % t >= [0, 5, 11][x / t]))
        .collect();
    compare(
        3,
        4,
        4,
        t,
        8,
        AttentionSpec {
            key_real,
            window: None,
            softcap: None,
            scale: 8f32.powf(-0.5),
        },
        2,
    );
}

#[test]
fn attention_matches_with_a_sliding_window_and_soft_capping() {
    compare(
        2,
        4,
        2,
        97,
        8,
        AttentionSpec {
            key_real: right_padded(2, 97, &[97, 50]),
            window: Some(9),
            softcap: Some(5.0),
            scale: 0.5,
        },
        3,
    );
    // A window wider than the block, so blocks start mid-sequence.
    compare(
        1,
        2,
        1,
        150,
        4,
        AttentionSpec {
            key_real: vec![1; 150],
            window: Some(70),
            softcap: None,
            scale: 1.0,
        },
        4,
    );
}

#[test]
fn attention_rejects_mismatched_inputs() {
    let dev = Device::Cpu;
    let q = Tensor::zeros((1, 3, 4, 2), DType::F32, &dev).unwrap();
    let k = Tensor::zeros((1, 2, 4, 2), DType::F32, &dev).unwrap();
    let spec = Arc::new(AttentionSpec {
        key_real: vec![1; 4],
        window: None,
        softcap: None,
        scale: 1.0,
    });
    let e = causal_attention(&q, &k, &k, spec).unwrap_err().to_string();
    assert!(e.contains("do not fit"), "{e}");
}

/// The composed RMSNorm of `layers.rs` (its differentiable path).
fn rms_reference(x: &Tensor, w: &Tensor, eps: f64, plus_one: bool) -> Tensor {
    let var = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
    let normed = x
        .broadcast_div(&(var + eps).unwrap().sqrt().unwrap())
        .unwrap();
    let w = if plus_one {
        (w + 1.0).unwrap()
    } else {
        w.clone()
    };
    normed.broadcast_mul(&w).unwrap()
}

#[test]
fn rms_norm_matches_the_composed_ops_in_values_and_gradients() {
    use minirec_model::kernels::rms_norm::rms_norm;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    for (shape, plus_one) in [
        (vec![3, 37, 19], false),
        (vec![130, 8], true),
        (vec![1, 1, 5], false),
    ] {
        let h = *shape.last().unwrap();
        let x = Var::from_tensor(&rand_tensor(&mut rng, &shape, 2.0)).unwrap();
        let w = Var::from_tensor(&rand_tensor(&mut rng, &[h], 1.0)).unwrap();
        let probe = rand_tensor(&mut rng, &shape, 1.0);
        let got = rms_norm(x.as_tensor(), w.as_tensor(), 1e-6, plus_one).unwrap();
        let want = rms_reference(x.as_tensor(), w.as_tensor(), 1e-6, plus_one);
        assert!(max_diff(&got, &want) < 1e-5, "{shape:?}");
        let g1 = probe_grads(&got, &probe);
        let g2 = probe_grads(&want, &probe);
        for (name, v) in [("x", &x), ("w", &w)] {
            let d = max_diff(g1.get(v).unwrap(), g2.get(v).unwrap());
            assert!(d < 1e-4, "d{name} differs by {d} for {shape:?}");
        }
    }
}

#[test]
fn rope_and_silu_mul_match_the_composed_ops_in_values_and_gradients() {
    use minirec_model::kernels::{rope::rope, silu_mul::silu_mul};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
    let (b, h, t, d) = (2, 3, 7, 10);
    let x = Var::from_tensor(&rand_tensor(&mut rng, &[b, h, t, d], 1.0)).unwrap();
    let cos = rand_tensor(&mut rng, &[b, t, d / 2], 1.0);
    let sin = rand_tensor(&mut rng, &[b, t, d / 2], 1.0);
    let probe = rand_tensor(&mut rng, &[b, h, t, d], 1.0);
    let got = rope(x.as_tensor(), &cos, &sin).unwrap();
    // rope_slow's composition, as layers.rs writes it.
    let c = Tensor::cat(&[&cos, &cos], D::Minus1)
        .unwrap()
        .unsqueeze(1)
        .unwrap();
    let s = Tensor::cat(&[&sin, &sin], D::Minus1)
        .unwrap()
        .unsqueeze(1)
        .unwrap();
    let x1 = x.narrow(D::Minus1, 0, d / 2).unwrap();
    let x2 = x.narrow(D::Minus1, d / 2, d / 2).unwrap();
    let rot = Tensor::cat(&[&x2.neg().unwrap(), &x1], D::Minus1).unwrap();
    let want = (x.broadcast_mul(&c).unwrap() + rot.broadcast_mul(&s).unwrap()).unwrap();
    assert!(max_diff(&got, &want) < 1e-5);
    let g1 = probe_grads(&got, &probe);
    let g2 = probe_grads(&want, &probe);
    assert!(max_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap()) < 1e-5);

    let g = Var::from_tensor(&rand_tensor(&mut rng, &[5, 4099], 6.0)).unwrap();
    let u = Var::from_tensor(&rand_tensor(&mut rng, &[5, 4099], 2.0)).unwrap();
    let probe = rand_tensor(&mut rng, &[5, 4099], 1.0);
    let got = silu_mul(g.as_tensor(), u.as_tensor()).unwrap();
    let want = (candle_nn::ops::silu(g.as_tensor()).unwrap() * u.as_tensor()).unwrap();
    assert!(max_diff(&got, &want) < 1e-5);
    let g1 = probe_grads(&got, &probe);
    let g2 = probe_grads(&want, &probe);
    for v in [&g, &u] {
        let diff = max_diff(g1.get(v).unwrap(), g2.get(v).unwrap());
        assert!(diff < 1e-5, "{diff}");
    }
}

/// Over many rows a LoRA layer folds its adapter into the weight; values and adapter gradients stay those of
/// the low-rank path.
#[test]
fn lora_fold_equals_the_low_rank_path() {
    use minirec_model::layers::{Linear, Lora};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let (rows, din, dout, r) = (300, 12, 9, 3);
    let a = Var::from_tensor(&rand_tensor(&mut rng, &[r, din], 1.0)).unwrap();
    let b = Var::from_tensor(&rand_tensor(&mut rng, &[dout, r], 1.0)).unwrap();
    let w = rand_tensor(&mut rng, &[dout, din], 1.0);
    let bias = rand_tensor(&mut rng, &[dout], 1.0);
    let x = rand_tensor(&mut rng, &[rows, din], 1.0);
    let probe = rand_tensor(&mut rng, &[rows, dout], 1.0);
    let mut lin = Linear::new(w.clone(), Some(bias.clone()));
    lin.lora = Some(Lora {
        a: a.clone(),
        b: b.clone(),
        scale: 0.5,
    });
    let got = lin.forward(&x).unwrap();
    let low = x
        .matmul(&a.as_tensor().t().unwrap())
        .unwrap()
        .matmul(&b.as_tensor().t().unwrap())
        .unwrap();
    let want = (x
        .matmul(&w.t().unwrap())
        .unwrap()
        .broadcast_add(&bias)
        .unwrap()
        + (low * 0.5).unwrap())
    .unwrap();
    assert!(max_diff(&got, &want) < 1e-4);
    let g1 = probe_grads(&got, &probe);
    let g2 = probe_grads(&want, &probe);
    for v in [&a, &b] {
        let d = max_diff(g1.get(v).unwrap(), g2.get(v).unwrap());
        assert!(d < 1e-3, "{d}");
    }
}

#[test]
fn attention_of_the_last_queries_equals_the_full_attention_rows() {
    // Responses attending to a shared prompt: queries are the last tq of tk positions. The kernel on those
    // queries alone must give the full attention's last rows, and the same gradients in k and v.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let (b, h, kvh, tk, tq, d) = (2, 4, 2, 70, 9, 8);
    let mut real = right_padded(b, tk, &[70, 66]);
    real[..3].fill(0); // a left-padded prompt in row 0
    for window in [None, Some(20)] {
        let spec = AttentionSpec {
            key_real: real.clone(),
            window,
            softcap: Some(30.0),
            scale: 0.35,
        };
        let q = rand_tensor(&mut rng, &[b, h, tk, d], 1.0);
        let k = Var::from_tensor(&rand_tensor(&mut rng, &[b, kvh, tk, d], 1.0)).unwrap();
        let v = Var::from_tensor(&rand_tensor(&mut rng, &[b, kvh, tk, d], 1.0)).unwrap();
        let g = rand_tensor(&mut rng, &[b, h, tq, d], 1.0);
        let q_last = Var::from_tensor(&q.narrow(2, tk - tq, tq).unwrap()).unwrap();
        let got = causal_attention(
            q_last.as_tensor(),
            k.as_tensor(),
            v.as_tensor(),
            Arc::new(spec.clone()),
        )
        .unwrap();
        let q_full = Var::from_tensor(&q).unwrap();
        let want = reference(q_full.as_tensor(), k.as_tensor(), v.as_tensor(), &spec)
            .narrow(2, tk - tq, tq)
            .unwrap();
        assert!(max_diff(&got, &want) < 1e-5, "{window:?}: values");
        let ga = probe_grads(&got, &g);
        let gb = probe_grads(&want, &g);
        for (name, x) in [("k", &k), ("v", &v)] {
            let d = max_diff(
                ga.get(x.as_tensor()).unwrap(),
                gb.get(x.as_tensor()).unwrap(),
            );
            assert!(d < 1e-4, "{window:?}: d{name} differs by {d}");
        }
        let dq_full = gb
            .get(q_full.as_tensor())
            .unwrap()
            .narrow(2, tk - tq, tq)
            .unwrap();
        let d = max_diff(ga.get(q_last.as_tensor()).unwrap(), &dq_full);
        assert!(d < 1e-4, "{window:?}: dq differs by {d}");
    }
}

#[test]
fn frozen_products_give_the_input_gradient_and_none_for_the_weight() {
    use minirec_model::kernels::frozen::{add_to_frozen, linear};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let w = rand_tensor(&mut rng, &[13, 7], 1.0);
    let x = Var::from_tensor(&rand_tensor(&mut rng, &[5, 7], 1.0)).unwrap();
    let g = rand_tensor(&mut rng, &[5, 13], 1.0);
    let y = linear(x.as_tensor(), &w, None, false).unwrap();
    let want = x.as_tensor().matmul(&w.t().unwrap()).unwrap();
    assert!(max_diff(&y, &want) < 1e-5);
    let gs = probe_grads(&y, &g);
    let gw = probe_grads(&want, &g);
    assert!(
        max_diff(
            gs.get(x.as_tensor()).unwrap(),
            gw.get(x.as_tensor()).unwrap()
        ) < 1e-5
    );
    assert!(gs.get(&w).is_none());
    let delta = Var::from_tensor(&rand_tensor(&mut rng, &[13, 7], 0.1)).unwrap();
    let m = add_to_frozen(&w, delta.as_tensor()).unwrap();
    assert!(max_diff(&m, &(&w + delta.as_tensor()).unwrap()) < 1e-6);
    let r = rand_tensor(&mut rng, &[13, 7], 1.0);
    let gm = probe_grads(&m, &r);
    assert!(max_diff(gm.get(delta.as_tensor()).unwrap(), &r) < 1e-6);
    assert!(gm.get(&w).is_none());
    // Outside a graph (inference) both are the plain products.
    let plain = linear(&x.as_tensor().detach(), &w, None, false).unwrap();
    assert!(max_diff(&plain, &want) < 1e-5);
}

/// One decoding step by brute force: for each row and head, the visible prompt keys (after the padding, inside
/// the window) then the row's own visible generated keys, softmax(softcap(q·k)) and the values.
#[allow(clippy::too_many_arguments)]
fn decode_reference(
    q: &[f32],
    (kp, vp): (&[f32], &[f32]),
    (kg, vg): (&[f32], &[f32]),
    (rows, h, kvh, d, tp, tg): (&[usize], usize, usize, usize, usize, usize),
    lens: &[usize],
    window: Option<usize>,
    softcap: Option<f32>,
) -> Vec<f32> {
    let prompt_of: Vec<usize> = (0..rows.len())
        .flat_map(|p| std::iter::repeat_n(p, rows[p]))
        .collect();
    let mut out = vec![0f32; prompt_of.len() * h * d];
    for (r, &p) in prompt_of.iter().enumerate() {
        let qpos = lens[p] + tg - 1;
        for hh in 0..h {
            let kh = hh / (h / kvh);
            let qv = &q[(r * h + hh) * d..][..d];
            // (key, value) rows visible to this query.
            let mut keys: Vec<(&[f32], &[f32])> = Vec::new();
            for j in tp - lens[p]..tp {
                let pos = j - (tp - lens[p]);
                if window.is_none_or(|win| qpos - pos < win) {
                    let at = ((p * kvh + kh) * tp + j) * d;
                    keys.push((&kp[at..at + d], &vp[at..at + d]));
                }
            }
            for t in 0..tg {
                if window.is_none_or(|win| tg - 1 - t < win) {
                    let at = ((r * kvh + kh) * tg + t) * d;
                    keys.push((&kg[at..at + d], &vg[at..at + d]));
                }
            }
            let scores: Vec<f64> = keys
                .iter()
                .map(|(k, _)| {
                    let s: f64 = qv
                        .iter()
                        .zip(*k)
                        .map(|(a, b)| (*a as f64) * (*b as f64))
                        .sum();
                    softcap.map_or(s, |c| (s / c as f64).tanh() * c as f64)
                })
                .collect();
            let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - mx).exp()).collect();
            let z: f64 = e.iter().sum();
            for (i, (_, v)) in keys.iter().enumerate() {
                for c in 0..d {
                    out[(r * h + hh) * d + c] += (e[i] / z * v[c] as f64) as f32;
                }
            }
        }
    }
    out
}

/// (prompts, rows of the first prompt (the rest alternate one more, one fewer), heads, kv heads, head size,
/// padded prompt, generated, lengths, window, softcap)
type DecodeCase = (
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    Vec<usize>,
    Option<usize>,
    Option<f32>,
);

/// A generated cache in the kernel's step layout: step s holds `n + extra(s)` rows in random order (the
/// rows of an earlier step that later beams left behind among them), and `from[s][r]` finds row r's ancestor.
/// Returns the steps and the same history laid out contiguously ([N, KVH, Tg, D]) for the reference.
struct Steps {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    from: Vec<Vec<u32>>,
    dense: (Vec<f32>, Vec<f32>),
}

fn random_steps(rng: &mut impl Rng, n: usize, kvh: usize, tg: usize, d: usize) -> Steps {
    let width = kvh * d;
    let mut st = Steps {
        keys: Vec::new(),
        values: Vec::new(),
        from: Vec::new(),
        dense: (vec![0f32; n * tg * width], vec![0f32; n * tg * width]),
    };
    for s in 0..tg {
        // The current step holds exactly the current rows, in order; earlier ones more, shuffled.
        let rows = if s + 1 == tg { n } else { n + s % 3 };
        let from: Vec<u32> = (0..n)
            .map(|r| {
                if s + 1 == tg {
                    r as u32
                } else {
                    rng.random_range(0..rows as u32)
                }
            })
            .collect();
        let k: Vec<f32> = (0..rows * width)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let v: Vec<f32> = (0..rows * width)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        for (r, &p) in from.iter().enumerate() {
            for kh in 0..kvh {
                let src = (p as usize * kvh + kh) * d;
                let dst = ((r * kvh + kh) * tg + s) * d;
                st.dense.0[dst..dst + d].copy_from_slice(&k[src..src + d]);
                st.dense.1[dst..dst + d].copy_from_slice(&v[src..src + d]);
            }
        }
        st.keys.push(k);
        st.values.push(v);
        st.from.push(from);
    }
    st
}

#[test]
fn decode_attention_matches_brute_force() {
    use minirec_model::kernels::decode_attention::{decode_attention, DecodeSpec, GenSteps};
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let cases: Vec<DecodeCase> = vec![
        (3, 5, 6, 2, 16, 13, 4, vec![13, 7, 1], None, None),
        (2, 4, 4, 4, 8, 9, 1, vec![9, 3], None, Some(2.0)),
        // Window smaller than the prompt: early prompt keys drop out; window smaller than the generated part.
        (2, 3, 6, 3, 12, 11, 6, vec![11, 5], Some(4), Some(5.0)),
        (1, 20, 9, 3, 64, 190, 17, vec![150], Some(160), None),
        (4, 1, 2, 1, 5, 3, 2, vec![3, 2, 3, 1], Some(2), None),
    ];
    for (case, (b, w, h, kvh, d, tp, tg, lens, window, softcap)) in cases.into_iter().enumerate() {
        // Uneven rows: beams that finished leave their prompt with fewer (none, where w is 1).
        let rows: Vec<usize> = (0..b).map(|i| [w, w + 1, w - 1][i % 3]).collect();
        let n = rows.iter().sum();
        let q = rand_tensor(&mut rng, &[n, h, 1, d], 1.0);
        let (kp, vp) = (
            rand_tensor(&mut rng, &[b, kvh, tp, d], 1.0),
            rand_tensor(&mut rng, &[b, kvh, tp, d], 1.0),
        );
        let st = random_steps(&mut rng, n, kvh, tg, d);
        let gen = GenSteps {
            keys: &st.keys,
            values: &st.values,
            from: &st.from,
        };
        let spec = DecodeSpec {
            prompt_lens: lens.clone(),
            rows: rows.clone(),
            window,
            softcap,
        };
        let got = decode_attention(&q, (&kp, &vp), gen, &spec).unwrap();
        assert_eq!(got.dims(), &[n, 1, h * d]);
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = decode_reference(
            &flat(&q),
            (&flat(&kp), &flat(&vp)),
            (&st.dense.0, &st.dense.1),
            (&rows, h, kvh, d, tp, tg),
            &lens,
            window,
            softcap,
        );
        let diff = flat(&got)
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 2e-5, "case {case}: max |Δ| {diff}");
    }
    // Shapes and places that do not fit are errors, not panics.
    let q = rand_tensor(&mut rng, &[4, 2, 1, 8], 1.0);
    let kp = rand_tensor(&mut rng, &[3, 1, 5, 8], 1.0);
    let st = random_steps(&mut rng, 4, 1, 2, 8);
    let spec = DecodeSpec {
        prompt_lens: vec![5, 5, 5],
        rows: vec![3, 1],
        window: None,
        softcap: None,
    };
    fn gen<'a>(st: &'a Steps, from: &'a [Vec<u32>]) -> GenSteps<'a> {
        GenSteps {
            keys: &st.keys,
            values: &st.values,
            from,
        }
    }
    assert!(decode_attention(&q, (&kp, &kp), gen(&st, &st.from), &spec).is_err());
    let kp = rand_tensor(&mut rng, &[2, 1, 5, 8], 1.0);
    let spec = DecodeSpec {
        prompt_lens: vec![5, 5],
        rows: vec![3, 1],
        ..spec
    };
    assert!(decode_attention(&q, (&kp, &kp), gen(&st, &st.from), &spec).is_ok());
    let spec = DecodeSpec {
        rows: vec![3, 2],
        ..spec
    };
    assert!(decode_attention(&q, (&kp, &kp), gen(&st, &st.from), &spec).is_err());
    let spec = DecodeSpec {
        rows: vec![2, 2],
        ..spec
    };
    assert!(decode_attention(&q, (&kp, &kp), gen(&st, &st.from), &spec).is_ok());
    let mut far = st.from.clone();
    far[0][1] = 99;
    assert!(decode_attention(&q, (&kp, &kp), gen(&st, &far), &spec).is_err());
    assert!(decode_attention(&q, (&kp, &kp), gen(&st, &st.from[..1]), &spec).is_err());
}

/// `bf16::set_wanted` is process-wide: tests that set it take turns.
static WANTED: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Inference with bf16 frozen weights (AMX or AVX512_BF16) stays close to f32, takes no part in training
/// passes, and a weight replaced after packing (adapters merged, made trainable) is never multiplied by its
/// stale copy.
#[test]
fn bf16_frozen_weights_serve_inference_only() {
    use minirec_model::kernels::bf16;
    use minirec_model::load::{preset_config, random_model};
    if !bf16::available() {
        eprintln!("skipped: no bf16 kernel on this CPU");
        return;
    }
    let dev = candle_core::Device::Cpu;
    let cfg = preset_config("tiny-64", 97).unwrap();
    let mut model = random_model(cfg, candle_core::DType::F32, &dev, 3).unwrap();
    let ids = vec![vec![5u32, 17, 40, 2, 66, 9]];
    let mask = vec![vec![1u8; 6]];
    let logits = |m: &minirec_model::Decoder| {
        let (h, _) = m.forward(&ids, &mask, true, false).unwrap();
        m.logits(&h)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let f32_logits = logits(&model);
    let bytes = {
        let _one_at_a_time = WANTED.lock().unwrap();
        bf16::set_wanted(true);
        let bytes = model.pack_frozen_bf16().unwrap();
        bf16::set_wanted(false);
        bytes
    };
    assert!(bytes > 0);
    let bf_logits = logits(&model);
    let worst = f32_logits
        .iter()
        .zip(&bf_logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let scale = f32_logits.iter().map(|a| a.abs()).fold(0f32, f32::max);
    assert!(worst > 0.0, "the bf16 copy was not used");
    assert!(
        worst < 0.02 * scale.max(1.0),
        "bf16 logits off by {worst} (scale {scale})"
    );
    // Trainable weights replace the packed tensors: the pass is f32 again.
    let _vars = model.make_all_trainable().unwrap();
    let again = logits(&model);
    let worst = f32_logits
        .iter()
        .zip(&again)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "a stale bf16 copy was used ({worst})");
    // Trainable weights are left alone by packing; frozen again (a proxy after its RL steps), they pack and
    // the pass runs on the bf16 copies, with the same values as the first time.
    bf16::set_wanted(true);
    assert_eq!(model.pack_frozen_bf16().unwrap(), 0, "trainable weights");
    model.freeze().unwrap();
    assert_eq!(model.pack_frozen_bf16().unwrap(), bytes, "frozen again");
    bf16::set_wanted(false);
    assert_eq!(logits(&model), bf_logits);
}

/// LoRA's frozen base on the bf16 kernel in a training pass: the forward product and the input gradient
/// stay close to f32 (both multiply bf16-rounded operands), the weight takes no gradient, and a copy packed
/// for inference only never enters a training pass.
#[test]
fn bf16_differentiable_copies_give_the_input_gradient() {
    use minirec_model::kernels::bf16;
    use minirec_model::kernels::frozen::{linear, Bf16Weight};
    if !bf16::available() {
        eprintln!("skipped: no bf16 kernel on this CPU");
        return;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let w = rand_tensor(&mut rng, &[29, 65], 1.0);
    let x = Var::from_tensor(&rand_tensor(&mut rng, &[37, 65], 1.0)).unwrap();
    let g = rand_tensor(&mut rng, &[37, 29], 1.0);
    let copy = Bf16Weight::pack_differentiable(&w).unwrap().unwrap();
    let y = linear(x.as_tensor(), &w, Some(&copy), false).unwrap();
    let want = x.as_tensor().matmul(&w.t().unwrap()).unwrap();
    let d = max_diff(&y, &want);
    assert!(d > 0.0 && d < 0.15, "forward |Δ| {d}");
    let gs = probe_grads(&y, &g);
    let gw = probe_grads(&want, &g);
    let d = max_diff(
        gs.get(x.as_tensor()).unwrap(),
        gw.get(x.as_tensor()).unwrap(),
    );
    assert!(d > 0.0 && d < 0.15, "input gradient |Δ| {d}");
    assert!(gs.get(&w).is_none());
    let inference = Bf16Weight::pack(&w).unwrap().unwrap();
    let y = linear(x.as_tensor(), &w, Some(&inference), false).unwrap();
    assert!(
        max_diff(&y, &want) < 1e-5,
        "an inference copy served training"
    );
}

/// A LoRA model whose bases are packed in bf16 trains through them: every adapter gets a gradient, close to
/// the f32 one.
#[test]
fn bf16_lora_bases_give_every_adapter_a_gradient() {
    use minirec_model::kernels::bf16;
    use minirec_model::load::{preset_config, random_model};
    use minirec_model::lora::{add_lora, LoraConfig};
    if !bf16::available() {
        eprintln!("skipped: no bf16 kernel on this CPU");
        return;
    }
    let dev = candle_core::Device::Cpu;
    let cfg = preset_config("tiny-64", 97).unwrap();
    let ids = vec![vec![5u32, 17, 40, 2, 66, 9, 31, 8]];
    let mask = vec![vec![1u8; 8]];
    let lora = LoraConfig {
        dropout: 0.0,
        ..Default::default()
    };
    let grads = |packed: bool| {
        let mut model = random_model(cfg.clone(), candle_core::DType::F32, &dev, 3).unwrap();
        let vars = add_lora(&mut model, &lora, 5).unwrap();
        // Non-zero B, so that A's gradients are too.
        for (_, v) in &vars {
            v.set(&(v.as_tensor() + 0.01).unwrap()).unwrap();
        }
        if packed {
            let _one_at_a_time = WANTED.lock().unwrap();
            bf16::set_wanted(true);
            assert!(model.pack_frozen_bf16().unwrap() > 0);
            bf16::set_wanted(false);
        }
        let (h, _) = model.forward(&ids, &mask, false, false).unwrap();
        let loss = model.logits(&h).unwrap().sqr().unwrap().mean_all().unwrap();
        let store = loss.backward().unwrap();
        vars.iter()
            .map(|(n, v)| (n.clone(), store.get(v.as_tensor()).cloned()))
            .collect::<Vec<_>>()
    };
    let (f32_grads, bf16_grads) = (grads(false), grads(true));
    let mut worst = 0f32;
    for ((name, a), (_, b)) in f32_grads.iter().zip(&bf16_grads) {
        let (a, b) = (
            a.as_ref()
                .unwrap_or_else(|| panic!("{name}: no f32 gradient")),
            b.as_ref().unwrap_or_else(|| panic!("{name}: no gradient")),
        );
        let norm = a
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt();
        let diff = (a - b)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt();
        assert!(norm > 0.0, "{name}: zero gradient");
        worst = worst.max(diff / norm);
    }
    assert!(worst > 0.0, "the bf16 copies were not used");
    assert!(worst < 0.05, "worst relative gradient difference {worst}");
}

/// The row-parallel log Σ exp equals candle's composed op, with −∞ entries (masked tokens), a row of only −∞,
/// odd widths and a vocabulary-sized row.
#[test]
fn log_sum_exp_rows_matches_the_composed_op() {
    use minirec_model::kernels::log_sum_exp::log_sum_exp_rows;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
    for &(rows, n) in &[(1, 1), (3, 7), (5, 33), (2, 49152)] {
        let mut x = rand_tensor(&mut rng, &[rows, n], 8.0)
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (i, v) in x.iter_mut().enumerate() {
            if i % 5 == 3 {
                *v = f32::NEG_INFINITY;
            }
        }
        let x = Tensor::from_vec(x, (rows, n), &Device::Cpu).unwrap();
        let got = log_sum_exp_rows(&x).unwrap();
        let want = x.log_sum_exp(candle_core::D::Minus1).unwrap();
        assert_eq!(got.dims(), want.dims());
        let d = max_diff(&got, &want);
        assert!(d < 1e-4, "{rows}×{n}: |Δ| {d}");
    }
    let none = Tensor::from_vec(vec![f32::NEG_INFINITY; 4], (1, 4), &Device::Cpu).unwrap();
    let v = log_sum_exp_rows(&none).unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(v, vec![f32::NEG_INFINITY]);
}

/// An inference-only model frees its f32 linear weights once they have bf16 copies: its logits stay those of
/// the bf16 copies, and training, adapters or a pass the copies cannot serve fail with a clear error instead of
/// multiplying by the placeholders.
#[test]
fn inference_models_drop_their_f32_linears_and_refuse_training() {
    use minirec_model::kernels::bf16;
    use minirec_model::load::{preset_config, random_model};
    use minirec_model::lora::{add_lora, LoraConfig};
    if !bf16::available() {
        eprintln!("skipped: no bf16 kernel on this CPU");
        return;
    }
    let dev = candle_core::Device::Cpu;
    let cfg = preset_config("tiny-64", 97).unwrap();
    let mut model = random_model(cfg, candle_core::DType::F32, &dev, 3).unwrap();
    {
        let _one_at_a_time = WANTED.lock().unwrap();
        bf16::set_wanted(true);
        assert!(model.pack_frozen_bf16().unwrap() > 0);
        bf16::set_wanted(false);
    }
    let ids = vec![vec![5u32, 17, 40, 2, 66, 9]];
    let mask = vec![vec![1u8; 6]];
    let logits = |m: &minirec_model::Decoder| {
        let (h, _) = m.forward(&ids, &mask, true, false).unwrap();
        m.logits(&h).unwrap()
    };
    let before = logits(&model);
    let freed = model.drop_frozen_f32().unwrap();
    assert!(freed > 0 && model.f32_dropped());
    assert_eq!(max_diff(&before, &logits(&model)), 0.0);
    let up = &model.blocks[0].mlp.up;
    let x = Var::from_tensor(&Tensor::ones((3, up.in_dim()), DType::F32, &dev).unwrap()).unwrap();
    let err = up.forward(x.as_tensor()).unwrap_err().to_string();
    assert!(err.contains("bf16 only"), "{err}");
    for err in [
        model.make_all_trainable().map(|_| ()).unwrap_err(),
        add_lora(&mut model, &LoraConfig::default(), 1)
            .map(|_| ())
            .unwrap_err(),
        model.named_tensors().map(|_| ()).unwrap_err(),
    ] {
        assert!(err.to_string().contains("bf16 only"), "{err}");
    }
}

/// The fused target log-probability equals log_softmax + gather in value and in the logits' gradient, at odd
/// sizes; a target outside the vocabulary is an error naming its row.
#[test]
fn target_logprobs_match_the_composed_ops_in_values_and_gradients() {
    use minirec_model::kernels::target_logprob::target_logprobs;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    for &(rows, v) in &[(1, 1), (3, 7), (9, 130), (4, 4099)] {
        let logits = Var::from_tensor(&rand_tensor(&mut rng, &[rows, v], 4.0)).unwrap();
        let targets: Vec<u32> = (0..rows).map(|r| ((r * 31 + 5) % v) as u32).collect();
        let probe = rand_tensor(&mut rng, &[rows], 1.0);
        let got = target_logprobs(logits.as_tensor(), &targets).unwrap();
        let tgt = Tensor::from_slice(&targets, (rows, 1), &Device::Cpu).unwrap();
        let want = candle_nn::ops::log_softmax(logits.as_tensor(), D::Minus1)
            .unwrap()
            .gather(&tgt, 1)
            .unwrap()
            .squeeze(1)
            .unwrap();
        assert!(max_diff(&got, &want) < 1e-5, "{rows}×{v}: values");
        let (gg, gw) = (probe_grads(&got, &probe), probe_grads(&want, &probe));
        let d = max_diff(
            gg.get(logits.as_tensor()).unwrap(),
            gw.get(logits.as_tensor()).unwrap(),
        );
        assert!(d < 1e-5, "{rows}×{v}: gradient |Δ| {d}");
    }
    let x = Tensor::zeros((2, 5), DType::F32, &Device::Cpu).unwrap();
    let err = target_logprobs(&x, &[1, 5]).unwrap_err().to_string();
    assert!(err.contains("row 1"), "{err}");
}
