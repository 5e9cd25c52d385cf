//! Layer recomputation (activation checkpointing) for training on the CPU.
//!
//! candle keeps every op's output until the backward pass ends, so a training forward over B·T rows holds
//! every layer's intermediates at once: ≈ 3.3 MB a token for SmolLM2-135M, most of an SFT step's memory.
//! With recomputation each layer runs as one op that keeps only its input: the forward runs the layer and
//! drops its graph; the backward runs it again from that input, back-propagates through that one layer, and
//! returns the input's gradient. The cost is one more forward pass.
//!
//! A custom op returns gradients for its inputs only, so the gradients of the layer's own weights and
//! adapters are handed over through a store the model owns; `Decoder::backward` adds them to the pass's
//! `GradStore`. That is why a model with recomputation on must be differentiated with `Decoder::backward`.

use std::sync::{Arc, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor, Var};

use crate::block::{Block, LayerInputs};
use crate::config::ModelConfig;

/// Weight gradients produced inside recomputed layers, waiting for `Decoder::backward`.
#[derive(Clone, Default)]
pub(crate) struct PendingGrads(Arc<Mutex<Vec<(Tensor, Tensor)>>>);

impl PendingGrads {
    fn push(&self, t: Tensor, g: Tensor) {
        self.0.lock().expect("gradient store lock").push((t, g));
    }

    /// Adds the waiting gradients to `grads` (summing with any the pass found itself) and empties the store.
    pub fn drain_into(&self, grads: &mut GradStore) -> candle_core::Result<()> {
        let pending = std::mem::take(&mut *self.0.lock().expect("gradient store lock"));
        for (t, g) in pending {
            let sum = match grads.remove(&t) {
                Some(prev) => (prev + g)?,
                None => g,
            };
            grads.insert(&t, sum);
        }
        Ok(())
    }

    /// Drops waiting gradients (a pass whose backward never ran, or failed).
    pub fn clear(&self) {
        self.0.lock().expect("gradient store lock").clear();
    }
}

/// One decoder layer over x [B, T, H] as a single op that keeps only x for backward.
pub(crate) struct RecomputedLayer {
    pub block: Block,
    pub cfg: ModelConfig,
    pub inputs: LayerInputs,
    pub pending: PendingGrads,
}

fn msg(e: crate::error::ModelError) -> candle_core::Error {
    candle_core::Error::Msg(format!("recomputed layer: {e}"))
}

impl RecomputedLayer {
    fn run(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self
            .block
            .forward(&self.cfg, x, &self.inputs, None)
            .map_err(msg)?
            .0)
    }
}

impl CustomOp1 for RecomputedLayer {
    fn name(&self) -> &'static str {
        "minirec-recomputed-layer"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = crate::kernels::cpu_f32("recomputed layer", s, l)?;
        let x = Tensor::from_slice(x, l.shape(), &candle_core::Device::Cpu)?;
        // The layer's graph (weights may be variables) is dropped with `y`: nothing of it is kept.
        let y = self.run(&x)?.detach();
        let shape = y.shape().clone();
        Ok((CpuStorage::F32(y.flatten_all()?.to_vec1::<f32>()?), shape))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let xv = Var::from_tensor(&x.detach())?;
        let y = self.run(xv.as_tensor())?;
        let grads = (y * g.detach())?.sum_all()?.backward()?;
        for t in self.block.tensors() {
            if let Some(gt) = grads.get(&t) {
                // Detached: a gradient can carry the recomputed layer's graph (see `AdamW::accumulate`).
                self.pending.push(t, gt.detach());
            }
        }
        Ok(grads.get(xv.as_tensor()).map(Tensor::detach))
    }
}
