//! DEALRec's influence score (Lin et al., SIGIR 2024) from a small sequential surrogate: the effect of removing
//! a sample on the surrogate's empirical risk, I(s) = ∇L(s)ᵀ H⁻¹ ḡ with ḡ the mean training gradient.
//! DEALRec inverts H with LiSSA; here H is the damped diagonal empirical Fisher (mean squared per-sample
//! gradient), which keeps the cost at two passes of per-sample gradients. L is the full-softmax next-item loss.

use candle_core::Tensor;
use minirec_data::PreparedDataset;

use crate::error::Result;
use crate::seqrec::SeqRec;
use crate::train::encode;

/// Flattened per-sample gradient of −log softmax(rep·Eᵀ)[target] over every surrogate parameter.
fn sample_grad(model: &SeqRec, history: &[u32], target: u32) -> Result<Vec<f32>> {
    let scores = model.score_all(&[history.to_vec()])?; // [1, rows]
    let lsm = candle_nn::ops::log_softmax(&scores, 1)?;
    let loss = lsm.narrow(1, target as usize, 1)?.sum_all()?.neg()?;
    let grads = loss.backward()?;
    let mut out = Vec::new();
    for (_, v) in &model.params.vars {
        match grads.get(v.as_tensor()) {
            Some(g) => out.extend(g.flatten_all()?.to_vec1::<f32>()?),
            None => out.extend(std::iter::repeat_n(0f32, v.elem_count())),
        }
    }
    Ok(out)
}

/// Influence of every training sample of `ds` under the surrogate (higher: removing it hurts more).
pub fn influence_scores(model: &SeqRec, ds: &PreparedDataset, progress: bool) -> Result<Vec<f32>> {
    let rows = encode(ds, &ds.train)?;
    let n = rows.len().max(1) as f64;
    let pb = crate::bar(progress, 2 * rows.len() as u64, "surrogate influence");
    let mut mean: Vec<f64> = Vec::new();
    let mut fisher: Vec<f64> = Vec::new();
    for r in &rows {
        let g = sample_grad(model, &r.history, r.target)?;
        if mean.is_empty() {
            mean = vec![0.0; g.len()];
            fisher = vec![0.0; g.len()];
        }
        for (k, &x) in g.iter().enumerate() {
            mean[k] += x as f64 / n;
            fisher[k] += (x as f64).powi(2) / n;
        }
        pb.inc(1);
    }
    let avg_f = fisher.iter().sum::<f64>() / fisher.len().max(1) as f64;
    let damping = 1e-3 * avg_f.max(f64::MIN_POSITIVE);
    let direction: Vec<f32> = mean
        .iter()
        .zip(&fisher)
        .map(|(m, f)| (m / (f + damping)) as f32)
        .collect();
    let dir_t = Tensor::from_vec(direction, mean.len(), &candle_core::Device::Cpu)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let g = sample_grad(model, &r.history, r.target)?;
        let gt = Tensor::from_vec(g, mean.len(), &candle_core::Device::Cpu)?;
        out.push((gt * &dir_t)?.sum_all()?.to_scalar::<f32>()?);
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(out)
}
