//! The closed-form gradient and Hessian-vector product in hidden-state space against candle's autodiff
//! (gradient) and central finite differences of that autodiff gradient (HVP), in f64, with and without
//! Gemma-2-style logit soft-capping; EL2N and GraNd against direct computations.

use candle_core::{DType, Device, Tensor, Var, D};
use minirec_model::load::{preset_config, random_model};
use minirec_model::Decoder;
use minirec_select::features::{llm_scores, Projection};
use minirec_train::sft::Example;

fn model(cap: Option<f64>) -> Decoder {
    let mut cfg = preset_config("tiny", 40).unwrap();
    cfg.final_logit_softcapping = cap;
    random_model(cfg, DType::F32, &Device::Cpu, 7).unwrap()
}

fn examples() -> Vec<Example> {
    vec![
        Example {
            prompt: vec![1, 5, 9, 3],
            response: vec![7, 2, 11],
        },
        Example {
            prompt: vec![4, 4, 8, 12, 30, 6],
            response: vec![19, 3],
        },
        Example {
            prompt: vec![2],
            response: vec![33, 34, 35, 36],
        },
    ]
}

/// The final hidden states predicting each response token of `e` ([T, H], f64) and the targets.
fn predicting_states(m: &Decoder, e: &Example) -> (Tensor, Vec<u32>) {
    let seq: Vec<u32> = e.prompt.iter().chain(&e.response).copied().collect();
    let (h, _) = m
        .forward(
            std::slice::from_ref(&seq),
            &[vec![1u8; seq.len()]],
            false,
            false,
        )
        .unwrap();
    let h = h
        .squeeze(0)
        .unwrap()
        .narrow(0, e.prompt.len() - 1, e.response.len())
        .unwrap();
    (h.to_dtype(DType::F64).unwrap(), e.response.clone())
}

/// Σ_t −log softmax(logits_t)[y_t].
fn title_nll(logits: &Tensor, y: &[u32]) -> Tensor {
    let lsm = candle_nn::ops::log_softmax(logits, D::Minus1).unwrap();
    let idx = Tensor::from_vec(y.to_vec(), (y.len(), 1), &Device::Cpu).unwrap();
    lsm.gather(&idx, 1)
        .unwrap()
        .sum_all()
        .unwrap()
        .neg()
        .unwrap()
}

/// ∇_δ of Σ_t −log softmax(cap(W(h_t + δ)))[y_t], by autodiff.
fn grad_at(w: &Tensor, h: &Tensor, y: &[u32], cap: Option<f64>, delta: &[f64]) -> Vec<f64> {
    let hd = delta.len();
    let d = Var::from_vec(delta.to_vec(), (1, hd), &Device::Cpu).unwrap();
    let z = h
        .broadcast_add(d.as_tensor())
        .unwrap()
        .matmul(&w.t().unwrap())
        .unwrap();
    let s = match cap {
        Some(c) => ((&z / c).unwrap().tanh().unwrap() * c).unwrap(),
        None => z,
    };
    let g = title_nll(&s, y).backward().unwrap();
    g.get(d.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    num / den.max(1e-30)
}

fn check(cap: Option<f64>) {
    let m = model(cap);
    let ex = examples();
    let s = llm_scores(&m, &ex, 2, None, false).unwrap();
    let w = m.output_weight().unwrap().to_dtype(DType::F64).unwrap();
    let hd = m.cfg.hidden_size;
    for (i, e) in ex.iter().enumerate() {
        let (h, y) = predicting_states(&m, e);
        let v = grad_at(&w, &h, &y, cap, &vec![0.0; hd]);
        let ge = rel_err(s.grad.row(i), &v);
        assert!(ge < 1e-4, "sample {i}: gradient rel. error {ge}");
        let eps = 1e-3 / v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let plus: Vec<f64> = v.iter().map(|x| x * eps).collect();
        let minus: Vec<f64> = v.iter().map(|x| -x * eps).collect();
        let gp = grad_at(&w, &h, &y, cap, &plus);
        let gm = grad_at(&w, &h, &y, cap, &minus);
        let fd: Vec<f64> = gp
            .iter()
            .zip(&gm)
            .map(|(a, b)| (a - b) / (2.0 * eps))
            .collect();
        let he = rel_err(s.hvp.row(i), &fd);
        assert!(he < 1e-3, "sample {i}: HVP rel. error {he} (cap {cap:?})");
        // EL2N: mean over tokens of ‖p − e_y‖₂; NLL: Σ −log p(y).
        let z = h.matmul(&w.t().unwrap()).unwrap();
        let sc = match cap {
            Some(c) => ((&z / c).unwrap().tanh().unwrap() * c).unwrap(),
            None => z,
        };
        let p: Vec<Vec<f64>> = candle_nn::ops::softmax_last_dim(&sc)
            .unwrap()
            .to_vec2()
            .unwrap();
        let mut el2n = 0.0;
        let mut nll = 0.0;
        for (t, &yt) in y.iter().enumerate() {
            let sq: f64 = p[t]
                .iter()
                .enumerate()
                .map(|(k, &pk)| (pk - if k == yt as usize { 1.0 } else { 0.0 }).powi(2))
                .sum();
            el2n += sq.sqrt() / y.len() as f64;
            nll -= p[t][yt as usize].ln();
        }
        assert!(
            (s.el2n[i] as f64 - el2n).abs() < 1e-4,
            "EL2N {} vs {el2n}",
            s.el2n[i]
        );
        assert!(
            (s.nll[i] as f64 - nll).abs() < 1e-3,
            "NLL {} vs {nll}",
            s.nll[i]
        );
    }
    // The hidden feature is the prompt's last state; a sample alone and in a batch agree.
    let alone = llm_scores(&m, &ex[1..2], 1, None, false).unwrap();
    let d = rel_err(
        alone.hidden.row(0),
        &s.hidden
            .row(1)
            .iter()
            .map(|&x| x as f64)
            .collect::<Vec<_>>(),
    );
    assert!(d < 1e-5, "batched vs single hidden state differ by {d}");
}

#[test]
fn closed_form_gradient_and_hvp_match_autodiff() {
    check(None);
}

#[test]
fn closed_form_hvp_handles_logit_softcapping() {
    check(Some(0.1));
}

#[test]
fn grand_is_the_output_layer_gradient_norm() {
    // With an untied LM head, GraNd must equal the norm of autodiff's gradient of that head's weight.
    let mut cfg = preset_config("tiny", 40).unwrap();
    cfg.tie_word_embeddings = false;
    let mut m = random_model(cfg, DType::F32, &Device::Cpu, 3).unwrap();
    let ex = examples();
    let s = llm_scores(&m, &ex, 3, None, false).unwrap();
    let vars = m.make_all_trainable().unwrap();
    let head = vars
        .iter()
        .find(|(n, _)| n == "lm_head.weight")
        .expect("an untied head")
        .1
        .clone();
    for (i, e) in ex.iter().enumerate() {
        let nll = minirec_train::sft::token_logprobs(&m, &[(&e.prompt, &e.response)], false)
            .unwrap()
            .sum_all()
            .unwrap()
            .neg()
            .unwrap();
        let g = nll.backward().unwrap();
        let norm = g
            .get(head.as_tensor())
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt();
        assert!(
            (norm - s.grand[i]).abs() <= 1e-4 * norm.max(1.0),
            "sample {i}: GraNd {} vs autodiff {norm}",
            s.grand[i]
        );
    }
}

/// ∇_W of Σ_t −log softmax((W + ΔW) h_t)[y_t], by autodiff, flattened.
fn head_grad_at(w: &Tensor, h: &Tensor, y: &[u32], delta: &Tensor) -> Vec<f64> {
    let dw = Var::from_tensor(delta).unwrap();
    let z = h
        .matmul(&(w + dw.as_tensor()).unwrap().t().unwrap())
        .unwrap();
    let g = title_nll(&z, y).backward().unwrap();
    g.get(dw.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn parameter_space_hvp_is_the_projected_output_layer_hvp() {
    let m = model(None);
    let ex = examples();
    let proj = Projection::new(&m, 6, 5, 1).unwrap();
    let s = llm_scores(&m, &ex, 2, Some(&proj), false).unwrap();
    let ph = s.param_hvp.expect("asked for");
    assert_eq!((ph.rows, ph.dim), (3, 6 * 5));
    let w = m.output_weight().unwrap().to_dtype(DType::F64).unwrap();
    let (r1, r2) = proj.matrices();
    let (r1, r2) = (
        r1.to_dtype(DType::F64).unwrap(),
        r2.to_dtype(DType::F64).unwrap(),
    );
    for (i, e) in ex.iter().enumerate() {
        let (h, y) = predicting_states(&m, e);
        let zero = w.zeros_like().unwrap();
        let v = head_grad_at(&w, &h, &y, &zero);
        let eps = 1e-3 / v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let vt = Tensor::from_vec(v, w.dims(), &Device::Cpu).unwrap();
        let gp = head_grad_at(&w, &h, &y, &(&vt * eps).unwrap());
        let gm = head_grad_at(&w, &h, &y, &(&vt * -eps).unwrap());
        let fd: Vec<f64> = gp
            .iter()
            .zip(&gm)
            .map(|(a, b)| (a - b) / (2.0 * eps))
            .collect();
        let dw = Tensor::from_vec(fd, w.dims(), &Device::Cpu).unwrap();
        let want: Vec<f64> = r1
            .matmul(&dw)
            .unwrap()
            .matmul(&r2.t().unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let err = rel_err(ph.row(i), &want);
        assert!(
            err < 1e-3,
            "sample {i}: projected head HVP rel. error {err}"
        );
    }
}
