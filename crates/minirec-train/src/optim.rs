//! AdamW with its state kept in named tensors, so a checkpoint can hold it and a resumed run continues with
//! exactly the same moments; global-norm gradient clipping; and gradient accumulation.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::adamw_cpu::{Moment, Update};
use crate::error::{Result, TrainError};

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

pub struct AdamW {
    pub vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Updates applied so far.
    pub t: usize,
    cfg: AdamWConfig,
    /// Update f32 CPU variables in place (`adamw_cpu`); off only to test it against the composed ops.
    in_place: bool,
}

/// Gradients summed over micro-batches, one per variable (f32).
pub struct Accumulator {
    sums: Vec<Option<Tensor>>,
    pub micro_batches: usize,
}

impl AdamW {
    pub fn new(vars: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        let zeros = |v: &Var| Tensor::zeros(v.shape(), DType::F32, v.device());
        let m = vars
            .iter()
            .map(|(_, v)| zeros(v))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v2 = vars
            .iter()
            .map(|(_, v)| zeros(v))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(AdamW {
            vars,
            m,
            v: v2,
            t: 0,
            cfg,
            in_place: true,
        })
    }

    /// The default moments with decoupled weight decay `weight_decay`.
    pub fn with_weight_decay(vars: Vec<(String, Var)>, weight_decay: f64) -> Result<Self> {
        Self::new(
            vars,
            AdamWConfig {
                weight_decay,
                ..Default::default()
            },
        )
    }

    pub fn accumulator(&self) -> Accumulator {
        Accumulator {
            sums: vec![None; self.vars.len()],
            micro_batches: 0,
        }
    }

    /// Adds the gradients of one part of a loss that is the sum of its parts (not an average of them).
    pub fn accumulate_part(&self, acc: &mut Accumulator, grads: &GradStore) -> Result<()> {
        let before = acc.micro_batches;
        self.accumulate(acc, grads)?;
        acc.micro_batches = before.max(1);
        Ok(())
    }

    /// Adds one micro-batch's gradients.
    pub fn accumulate(&self, acc: &mut Accumulator, grads: &GradStore) -> Result<()> {
        for (i, (_, var)) in self.vars.iter().enumerate() {
            if let Some(g) = grads.get(var.as_tensor()) {
                // candle's gradient of a variable can still carry a graph (the product with another
                // variable, as a LoRA B·A); kept in the moments, it would chain every step's graph and
                // gradients together: a weight-sized leak per LoRA layer and step.
                let g = g.to_dtype(DType::F32)?.detach();
                acc.sums[i] = Some(match acc.sums[i].take() {
                    None => g,
                    Some(s) => (s + g)?,
                });
            }
        }
        acc.micro_batches += 1;
        Ok(())
    }

    /// Averages the accumulated gradients, clips them to `max_norm` (global L2; 0 = no clipping), applies one
    /// update at learning rate `lr`, and returns the gradient norm before clipping.
    pub fn step(&mut self, acc: Accumulator, lr: f64, max_norm: f64) -> Result<f64> {
        let n = acc.micro_batches.max(1) as f64;
        let grads: Vec<Option<Tensor>> = acc
            .sums
            .into_iter()
            .map(|g| g.map(|g| g / n).transpose())
            .collect::<candle_core::Result<_>>()?;
        let mut sq = 0f64;
        for g in grads.iter().flatten() {
            sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
        let norm = sq.sqrt();
        if !norm.is_finite() {
            return Ok(norm);
        }
        let clip = if max_norm > 0.0 && norm > max_norm {
            max_norm / norm
        } else {
            1.0
        };
        self.t += 1;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(self.t as i32);
        let bc2 = 1.0 - b2.powi(self.t as i32);
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = &grads[i] else { continue };
            if self.in_place && in_place_fits(var.as_tensor(), g) {
                self.step_in_place(i, g, clip, (bc1, bc2), lr)?;
                continue;
            }
            let g = (g * clip)?;
            self.m[i] = ((&self.m[i] * b1)? + (&g * (1.0 - b1))?)?;
            self.v[i] = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let mhat = (&self.m[i] / bc1)?;
            let vhat = (&self.v[i] / bc2)?;
            let w = var.as_tensor().to_dtype(DType::F32)?;
            let mut update = (mhat / (vhat.sqrt()? + self.cfg.eps)?)?;
            if self.cfg.weight_decay > 0.0 {
                update = (update + (&w * self.cfg.weight_decay)?)?;
            }
            let new = (w - (update * lr)?)?.to_dtype(var.dtype())?;
            var.set(&new)?;
        }
        Ok(norm)
    }

    /// Variable `i`'s update through the in-place passes of `adamw_cpu` (the same bits as the composed ops).
    fn step_in_place(
        &self,
        i: usize,
        g: &Tensor,
        clip: f64,
        (bias1, bias2): (f64, f64),
        lr: f64,
    ) -> Result<()> {
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let moment = |beta, squared| Moment {
            beta,
            clip,
            squared,
        };
        self.m[i].inplace_op2(g, &moment(b1, false))?;
        self.v[i].inplace_op2(g, &moment(b2, true))?;
        let update = Update {
            bias1,
            bias2,
            eps: self.cfg.eps,
            weight_decay: self.cfg.weight_decay,
            lr,
        };
        self.vars[i]
            .1
            .as_tensor()
            .inplace_op3(&self.m[i], &self.v[i], &update)?;
        Ok(())
    }

    /// Writes the moments (`m.<name>`, `v.<name>`).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut t: HashMap<String, Tensor> = HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            t.insert(format!("m.{name}"), self.m[i].clone());
            t.insert(format!("v.{name}"), self.v[i].clone());
        }
        candle_core::safetensors::save(&t, path)?;
        Ok(())
    }

    pub fn load(&mut self, path: &Path, t: usize) -> Result<()> {
        let dev = self
            .m
            .first()
            .map(|m| m.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let st = candle_core::safetensors::load(path, &dev).map_err(|e| TrainError::File {
            path: path.into(),
            msg: e.to_string(),
        })?;
        for (i, (name, _)) in self.vars.iter().enumerate() {
            let get = |k: String| {
                st.get(&k).cloned().ok_or_else(|| TrainError::File {
                    path: path.into(),
                    msg: format!("no tensor {k}"),
                })
            };
            self.m[i] = get(format!("m.{name}"))?;
            self.v[i] = get(format!("v.{name}"))?;
        }
        self.t = t;
        Ok(())
    }
}

/// Whether a variable and its gradient take the in-place update: f32 on the CPU, contiguous. (Its moments
/// always are: created as zeros or loaded, and only ever rewritten in place or whole.)
fn in_place_fits(w: &Tensor, g: &Tensor) -> bool {
    [w, g]
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous())
}

/// Linear warm-up to `peak` over `warmup` steps, then cosine decay to `peak · min_ratio` at `total`.
pub fn lr_at(step: usize, peak: f64, warmup: usize, total: usize, min_ratio: f64) -> f64 {
    if warmup > 0 && step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup.min(step)) as f64 / span).min(1.0);
    let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    peak * (min_ratio + (1.0 - min_ratio) * cos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_then_decays() {
        assert!((lr_at(0, 1.0, 4, 20, 0.0) - 0.25).abs() < 1e-12);
        assert!((lr_at(3, 1.0, 4, 20, 0.0) - 1.0).abs() < 1e-12);
        assert!((lr_at(4, 1.0, 4, 20, 0.0) - 1.0).abs() < 1e-12);
        assert!((lr_at(12, 1.0, 4, 20, 0.0) - 0.5).abs() < 1e-12);
        assert!(lr_at(20, 1.0, 4, 20, 0.1) - 0.1 < 1e-12);
        assert!(lr_at(50, 1.0, 4, 20, 0.0).abs() < 1e-12);
    }

    /// One AdamW step against the update computed by hand.
    #[test]
    fn adamw_matches_hand_computation_and_clips() {
        let w = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0], &Device::Cpu).unwrap()).unwrap();
        let mut opt = AdamW::new(
            vec![("w".into(), w.clone())],
            AdamWConfig {
                weight_decay: 0.1,
                ..Default::default()
            },
        )
        .unwrap();
        let loss = (w.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap(); // grad = w
        let mut acc = opt.accumulator();
        opt.accumulate(&mut acc, &loss.backward().unwrap()).unwrap();
        let norm = opt.step(acc, 0.1, 0.0).unwrap();
        assert!((norm - 5f64.sqrt()).abs() < 1e-6);
        // First step: mhat = g, vhat = g², update = g/(|g| + eps) + wd·w = sign(g) + 0.1·w.
        let got: Vec<f32> = w.as_tensor().to_vec1().unwrap();
        let want = [
            1.0 - 0.1 * (1.0 + 0.1 * 1.0),
            -2.0 - 0.1 * (-1.0 + 0.1 * -2.0),
        ];
        for (g, e) in got.iter().zip(want) {
            assert!((*g as f64 - e).abs() < 1e-6, "{got:?} vs {want:?}");
        }
        // Clipping scales the gradient before the moments see it.
        let w2 = Var::from_tensor(&Tensor::new(&[3.0f32, 4.0], &Device::Cpu).unwrap()).unwrap();
        let mut opt2 = AdamW::new(vec![("w".into(), w2.clone())], AdamWConfig::default()).unwrap();
        let loss = (w2.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
        let mut acc = opt2.accumulator();
        opt2.accumulate(&mut acc, &loss.backward().unwrap())
            .unwrap();
        assert!((opt2.step(acc, 0.0, 1.0).unwrap() - 5.0).abs() < 1e-6);
        let m: Vec<f32> = opt2.m[0].to_vec1().unwrap();
        assert!(
            (m[0] - 0.1 * 0.6).abs() < 1e-6 && (m[1] - 0.1 * 0.8).abs() < 1e-6,
            "{m:?}"
        );
    }

    /// The in-place update (CPU, f32) keeps the composed ops' bits: weights and both moments over several steps,
    /// with clipping on and off, weight decay on and off, and gradients holding −0, tiny and huge values.
    #[test]
    fn in_place_update_equals_the_composed_ops_bit_for_bit() {
        let d = Device::Cpu;
        for weight_decay in [0.0, 0.01] {
            let init = [
                Tensor::randn(0f32, 1.0, (3, 70_000), &d).unwrap(), // several parallel chunks
                Tensor::new(&[0.5f32, -0.0, 0.0, 1e-30, -3e4], &d).unwrap(),
            ];
            let vars = |_| -> Vec<(String, Var)> {
                let named = init.iter().enumerate();
                named
                    .map(|(i, t)| (format!("p{i}"), Var::from_tensor(t).unwrap()))
                    .collect()
            };
            let cfg = AdamWConfig {
                weight_decay,
                ..Default::default()
            };
            let mut fused = AdamW::new(vars(0), cfg).unwrap();
            let mut composed = AdamW::new(vars(1), cfg).unwrap();
            composed.in_place = false;
            for step in 0..4 {
                let grads = [
                    (Tensor::randn(0f32, 1.0, (3, 70_000), &d).unwrap() * (1.0 + step as f64))
                        .unwrap(),
                    Tensor::new(&[-0.0f32, 1e-38, -1e-20, 7e3, 0.0], &d).unwrap(),
                ];
                // Clipping binds on the odd steps only.
                let max_norm = if step % 2 == 1 { 1.0 } else { 0.0 };
                for opt in [&mut fused, &mut composed] {
                    let acc = Accumulator {
                        sums: grads.iter().map(|g| Some(g.clone())).collect(),
                        micro_batches: 1,
                    };
                    opt.step(acc, 1e-3, max_norm).unwrap();
                }
                let bits = |t: &Tensor| -> Vec<u32> {
                    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
                    v.iter().map(|x| x.to_bits()).collect()
                };
                for i in 0..2 {
                    let what = format!("wd {weight_decay} step {step} p{i}");
                    let (a, b) = (&fused.vars[i].1, &composed.vars[i].1);
                    assert_eq!(bits(a.as_tensor()), bits(b.as_tensor()), "{what}: weights");
                    assert_eq!(bits(&fused.m[i]), bits(&composed.m[i]), "{what}: m");
                    assert_eq!(bits(&fused.v[i]), bits(&composed.v[i]), "{what}: v");
                }
            }
        }
    }

    /// The gradient of a product of two variables (a LoRA B·A) carries a graph in candle; the moments must
    /// not keep it, or every step's graph and gradients stay alive (a weight-sized leak per layer and step).
    #[test]
    fn moments_keep_no_graph_across_steps() {
        let d = Device::Cpu;
        let a = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 5), &d).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 2), &d).unwrap()).unwrap();
        let mut opt = AdamW::new(
            vec![("a".into(), a.clone()), ("b".into(), b.clone())],
            AdamWConfig::default(),
        )
        .unwrap();
        for _ in 0..2 {
            let loss = b
                .as_tensor()
                .matmul(a.as_tensor())
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap();
            let mut acc = opt.accumulator();
            opt.accumulate(&mut acc, &loss.backward().unwrap()).unwrap();
            assert!(acc.sums.iter().flatten().all(|g| !g.track_op()));
            opt.step(acc, 1e-3, 1.0).unwrap();
        }
        assert!(
            opt.m.iter().chain(&opt.v).all(|t| !t.track_op()),
            "a moment keeps a graph"
        );
    }
}
