//! Products with frozen weights (the LoRA base, the tied output embedding) whose backward passes return
//! the gradient of the input only.
//!
//! candle's own backward computes both operands' gradients for every product and sum, and keeps the
//! gradient of a tensor that takes none (a frozen weight) in its store until the pass ends: in a LoRA step
//! that is one weight-sized gradient per linear layer — the whole model again, plus a third of the
//! backward pass's FLOPs — for nothing.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};

use std::sync::Arc;

use super::bf16::PackedBf16;

/// Whether `x · wᵀ` should take the frozen path: on the CPU, `x` in an autograd graph, `w` in none.
fn frozen(x: &Tensor, w: &Tensor) -> bool {
    x.device().is_cpu() && x.track_op() && !w.track_op()
}

/// A frozen weight's bf16 copy for the bf16 kernel, tied to the tensor it was packed from (a weight that is
/// replaced — adapters merged, made trainable — no longer matches it, so a stale copy is never used).
#[derive(Debug, Clone)]
pub struct Bf16Weight {
    id: candle_core::TensorId,
    pack: Arc<PackedBf16>,
    /// `w` transposed, for the input gradient `g · w` of a training pass (LoRA's frozen base).
    backward: Option<Arc<PackedBf16>>,
    /// The f32 weight was replaced by a placeholder (`retie`): no pass may fall back to it.
    f32_dropped: bool,
}

impl Bf16Weight {
    /// A copy for passes outside any autograd graph. `None` where the weight trains, is not f32 on the CPU,
    /// or the CPU has no bf16 kernel.
    pub fn pack(w: &Tensor) -> candle_core::Result<Option<Self>> {
        Self::pack_with(w, false)
    }

    /// A copy that also serves training passes: their forward product and their input gradient.
    pub fn pack_differentiable(w: &Tensor) -> candle_core::Result<Option<Self>> {
        Self::pack_with(w, true)
    }

    fn pack_with(w: &Tensor, backward: bool) -> candle_core::Result<Option<Self>> {
        if w.track_op() || !crate::kernels::supported(w) || w.rank() != 2 {
            return Ok(None);
        }
        let (n, k) = w.dims2()?;
        let data = w.flatten_all()?.to_vec1::<f32>()?;
        let Some(pack) = PackedBf16::new(&data, n, k) else {
            return Ok(None);
        };
        let backward = match backward {
            false => None,
            true => {
                let t = w.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
                PackedBf16::new(&t, k, n).map(Arc::new)
            }
        };
        Ok(Some(Bf16Weight {
            id: w.id(),
            pack: Arc::new(pack),
            backward,
            f32_dropped: false,
        }))
    }

    pub fn bytes(&self) -> usize {
        self.pack.bytes() + self.backward.as_ref().map_or(0, |b| b.bytes())
    }

    /// Ties the copy to `placeholder`, which stands in for the f32 weight from now on (same shape, no data):
    /// passes the copy cannot serve then fail instead of multiplying by the placeholder.
    pub fn retie(&mut self, placeholder: &Tensor) {
        self.id = placeholder.id();
        self.f32_dropped = true;
    }

    /// Whether this copy can take `x · wᵀ` for `w`: the same tensor, and a pass it serves.
    pub fn serves(&self, x: &Tensor, w: &Tensor) -> bool {
        self.id == w.id()
            && crate::kernels::supported(x)
            && (!x.track_op() || self.backward.is_some())
    }
}

/// `x [rows, in] · wᵀ` for a weight `w [out, in]`; differentiable in `x` only when `w` takes no gradient.
/// A matching bf16 copy of `w` takes the product instead where it serves the pass (`Bf16Weight::serves`);
/// with `mixed`, a trainable `w` is multiplied on the bf16 kernel in mixed precision (`kernels::mixed`).
pub fn linear(
    x: &Tensor,
    w: &Tensor,
    bf16: Option<&Bf16Weight>,
    mixed: bool,
) -> candle_core::Result<Tensor> {
    if bf16.is_some_and(|b| b.f32_dropped && b.id == w.id() && !b.serves(x, w)) {
        candle_core::bail!(
            "this model keeps its frozen weights in bf16 only (loaded for inference), and a {} pass on \
             {:?} {:?} needs them in f32",
            if x.track_op() { "training" } else { "non-f32" },
            x.device(),
            x.dtype()
        );
    }
    if let Some(b) = bf16.filter(|b| b.serves(x, w)) {
        // One op for both passes: it reads `x` in place, and records a backward only when `x` is tracked.
        return x.contiguous()?.apply_op1(Bf16Linear { w: b.clone() });
    }
    if mixed && w.track_op() && super::mixed::serves(x, w) {
        return super::mixed::linear(x, w);
    }
    if !frozen(x, w) {
        return x.matmul(&w.t()?);
    }
    x.contiguous()?
        .apply_op1(FrozenLinear { w: w.contiguous()? })
}

/// `w + delta` where only `delta` takes a gradient (a LoRA update folded into its frozen base).
pub fn add_to_frozen(w: &Tensor, delta: &Tensor) -> candle_core::Result<Tensor> {
    if !frozen(delta, w) || w.dtype() != delta.dtype() {
        return w + delta;
    }
    delta
        .contiguous()?
        .apply_op1(AddToFrozen { w: w.contiguous()? })
}

struct FrozenLinear {
    w: Tensor,
}

/// The CPU storage of a frozen operand (kept inside the op, so it is read here rather than passed in).
fn cpu_storage<R>(
    op: &str,
    t: &Tensor,
    f: impl FnOnce(&CpuStorage, &Layout) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(c) => f(c, l),
        _ => candle_core::bail!("{op}: the frozen operand is not on the CPU"),
    }
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "minirec-frozen-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, k) = l.shape().dims2()?;
        let (out, wk) = self.w.dims2()?;
        if wk != k {
            candle_core::bail!(
                "frozen linear: input {:?} for weight {:?}",
                l.shape(),
                self.w.shape()
            );
        }
        cpu_storage("frozen linear", &self.w, |w, wl| {
            let wt = wl.transpose(0, 1)?;
            Ok((
                s.matmul(w, (1, rows, out, k), l, &wt)?,
                Shape::from((rows, out)),
            ))
        })
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(g.matmul(&self.w)?))
    }
}

struct AddToFrozen {
    w: Tensor,
}

impl CustomOp1 for AddToFrozen {
    fn name(&self) -> &'static str {
        "minirec-add-to-frozen"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        if l.shape() != self.w.shape() {
            candle_core::bail!("add to frozen: {:?} for {:?}", l.shape(), self.w.shape());
        }
        let out = cpu_storage("add to frozen", &self.w, |w, wl| {
            let wl = wl.clone();
            s.binary_impl::<candle_core::op::Add>(w, l, &wl)
        })?;
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _d: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(g.clone()))
    }
}

/// `x · wᵀ` on the bf16 kernel; in a training pass its backward `g · w` runs on the transposed copy.
struct Bf16Linear {
    w: Bf16Weight,
}

impl CustomOp1 for Bf16Linear {
    fn name(&self) -> &'static str {
        "minirec-bf16-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, k) = l.shape().dims2()?;
        let (n, wk) = self.w.pack.dims();
        if wk != k {
            candle_core::bail!("bf16 linear: input {:?} for weight [{n}, {wk}]", l.shape());
        }
        let x = crate::kernels::cpu_f32("bf16 linear", s, l)?;
        let y = self.w.pack.matmul_t(x, rows);
        Ok((CpuStorage::F32(y), Shape::from((rows, n))))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let back = self
            .w
            .backward
            .as_ref()
            .expect("only copies with a backward pack enter training passes");
        let (rows, _) = g.dims2()?;
        let gx =
            crate::kernels::with_host("bf16 linear backward", &[g], |s| back.matmul_t(s[0], rows))?;
        Ok(Some(Tensor::from_vec(
            gx,
            (rows, back.dims().0),
            g.device(),
        )?))
    }
}
