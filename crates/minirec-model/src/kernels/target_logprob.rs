//! log softmax(logits)[r, t_r] for each row r — the log-probability of each row's target token — as one op
//! with a CPU forward and backward (SFT's cross-entropy, RL's log-probabilities). The composed path
//! (max, subtract, exp, sum, log, gather) runs each step on one core and keeps three [rows × vocabulary]
//! intermediates alive for backward; here nothing beyond the input logits is kept, the backward recomputes
//! each row's log Σ exp and writes g_r · (onehot(t_r) − softmax_r) into the one gradient buffer, rows on
//! every core.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use super::exp::exp_in_place;
use super::log_sum_exp::row_lse;
use super::{cpu_f32, supported, with_host};

/// The target log-probabilities [rows] of `logits` [rows, V]; differentiable in `logits`.
pub fn target_logprobs(logits: &Tensor, targets: &[u32]) -> candle_core::Result<Tensor> {
    let (rows, v) = logits.dims2()?;
    if targets.len() != rows {
        candle_core::bail!(
            "target log-probs: {} targets for {rows} rows",
            targets.len()
        );
    }
    if let Some((r, &t)) = targets.iter().enumerate().find(|(_, &t)| t as usize >= v) {
        candle_core::bail!(
            "target log-probs: row {r}'s target {t} is outside the vocabulary of {v}"
        );
    }
    if !supported(logits) || v == 0 {
        let lsm = candle_nn::ops::log_softmax(logits, D::Minus1)?;
        let tgt = Tensor::from_slice(targets, (rows, 1), logits.device())?;
        return lsm.gather(&tgt, 1)?.squeeze(1);
    }
    logits.contiguous()?.apply_op1(TargetLogprob {
        targets: Arc::new(targets.to_vec()),
    })
}

struct TargetLogprob {
    targets: Arc<Vec<u32>>,
}

impl CustomOp1 for TargetLogprob {
    fn name(&self) -> &'static str {
        "minirec-target-logprob"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, v) = l.shape().dims2()?;
        let x = cpu_f32("target log-probs", s, l)?;
        let mut out = vec![0f32; rows];
        out.par_iter_mut()
            .zip(x.par_chunks(v))
            .zip(self.targets.par_iter())
            .for_each(|((o, row), &t)| *o = row[t as usize] - row_lse(row));
        Ok((CpuStorage::F32(out), Shape::from(rows)))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (rows, v) = x.dims2()?;
        let grad = with_host("target log-probs backward", &[x, g], |s| {
            let (x, g) = (s[0], s[1]);
            let mut out = vec![0f32; rows * v];
            out.par_chunks_mut(v)
                .zip(x.par_chunks(v))
                .zip(g.par_iter().zip(self.targets.par_iter()))
                .for_each(|((o, row), (&gr, &t))| {
                    let lse = row_lse(row);
                    o.iter_mut().zip(row).for_each(|(o, &xj)| *o = xj - lse);
                    exp_in_place(o);
                    o.iter_mut().for_each(|o| *o *= -gr);
                    o[t as usize] += gr;
                });
            out
        })?;
        Ok(Some(Tensor::from_vec(grad, (rows, v), x.device())?))
    }
}
