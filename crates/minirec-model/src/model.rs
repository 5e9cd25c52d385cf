//! The decoder: Llama/SmolLM2, Qwen2 and Gemma-2 in one implementation, switched by `ModelConfig`. Its layers
//! are `block::Block`s (attention, MLP, norms), each with its own forward; this module holds the embeddings,
//! the caches and the passes over the whole stack.
//!
//! Three forward paths:
//! - `forward`: whole sequences with a padding mask (training, scoring, prompt prefill), differentiable unless
//!   `no_grad` (which frees each layer's intermediates as soon as the next layer has its input);
//! - `forward_shared`: continuations of shared prompts, each prompt run once;
//! - `decode_step`: one new token for each of B·W rows (beams or samples, W per prompt) attending to the
//!   prompt's cache, shared by the prompt's W rows rather than copied, and to the rows' own generated cache.

use std::sync::Arc;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var, D};

pub use crate::block::{Attention, Block, Mlp};
use crate::block::{KeysBefore, LayerInputs, Loader};
use crate::config::{Family, ModelConfig};
use crate::error::{ModelError, Result};
use crate::kernels::attention::AttentionSpec;
use crate::kernels::decode_attention::{decode_attention, DecodeSpec, GenSteps};
use crate::layers::{softcap, softmax_last, Linear, RmsNorm, Rope};
use crate::profile::phase;
use crate::recompute::{PendingGrads, RecomputedLayer};
use crate::weights::Weights;

const NEG_INF: f32 = f32::NEG_INFINITY;
/// Large enough that exp underflows to exactly zero next to any real score, small enough to stay finite.
const PAD_BIAS: f32 = -1e30;

pub struct Decoder {
    pub cfg: ModelConfig,
    pub embed: Tensor,
    pub blocks: Vec<Block>,
    pub norm: RmsNorm,
    /// `None` when tied to the embeddings.
    pub lm_head: Option<Linear>,
    rope: Rope,
    dtype: DType,
    device: Device,
    /// Set: training passes recompute each layer in backward (see `recompute`); weight gradients wait here.
    recompute: Option<PendingGrads>,
    /// The tied output embedding's bf16 copy for inference (`pack_frozen_bf16`).
    head_bf16: Option<crate::kernels::frozen::Bf16Weight>,
    /// Whether `pack_frozen_bf16` gave LoRA's bases copies that serve training passes.
    bf16_trains: bool,
    /// Whether `drop_frozen_f32` replaced the packed linear weights by placeholders (inference only from then).
    f32_dropped: bool,
    /// Trainable weights (the linear layers, the tied output embedding) multiply in mixed precision.
    mixed_bf16: bool,
}

/// The prompt part of the key/value cache: one entry per prompt, shared by all its rows.
pub struct PromptCache {
    /// Per layer: keys and values [B, KVH, Tp, D] (prompts left-padded to Tp).
    kv: Vec<(Tensor, Tensor)>,
    /// Real (unpadded) length of each prompt.
    pub lens: Vec<usize>,
    /// Padded length.
    pub padded: usize,
    /// Additive bias hiding padding keys: [B, 1, 1, Tp], f32.
    pad_bias: Tensor,
}

impl PromptCache {
    pub fn batch(&self) -> usize {
        self.lens.len()
    }

    /// The cache of the prompts at positions `keep` (in that order): one copy of their keys/values, so a
    /// batch can shed prompts whose search is over.
    pub fn select(&self, keep: &[usize]) -> Result<PromptCache> {
        if let Some(&bad) = keep.iter().find(|&&i| i >= self.batch()) {
            return Err(ModelError::Invalid(format!(
                "prompt {bad} is not in a cache of {}",
                self.batch()
            )));
        }
        let idx: Vec<u32> = keep.iter().map(|&i| i as u32).collect();
        let idx = Tensor::from_vec(idx, keep.len(), self.pad_bias.device())?;
        let kv = self
            .kv
            .iter()
            .map(|(k, v)| Ok((k.index_select(&idx, 0)?, v.index_select(&idx, 0)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(PromptCache {
            kv,
            lens: keep.iter().map(|&i| self.lens[i]).collect(),
            padded: self.padded,
            pad_bias: self.pad_bias.index_select(&idx, 0)?,
        })
    }
}

/// What `full_bias` derives from a batch's mask.
struct Biases {
    pos: Vec<u32>,
    causal: Tensor,
    sliding: Option<Tensor>,
    pad: Tensor,
    /// [B × Tk], 1 for real keys.
    key_real: Vec<u8>,
}

/// Distinct prompts run once, whose keys and values a batch of continuation rows attends to.
struct Prefix {
    /// Per layer: keys and values [P, KVH, Tp, D] (prompts left-padded to Tp), in the autograd graph.
    kv: Vec<(Tensor, Tensor)>,
    /// Prompt of each continuation row, as a list and as an index tensor [N].
    row_of: Vec<usize>,
    rows: Tensor,
    lens: Vec<usize>,
    padded: usize,
}

impl Prefix {
    /// Runs the prompts; returns them as a prefix for rows `row_of` and their last hidden states [P, H].
    fn run(
        model: &Decoder,
        prompts: &[&[u32]],
        row_of: &[usize],
        no_grad: bool,
    ) -> Result<(Prefix, Tensor)> {
        let ((ids, mask), tp) = left_padded(prompts)?;
        if let Some(&bad) = row_of.iter().find(|&&i| i >= prompts.len()) {
            return Err(ModelError::Invalid(format!(
                "a row continues prompt {bad} of {}",
                prompts.len()
            )));
        }
        let (kv, last) = if model.runs_prompts_alone() {
            model.forward_each(prompts, tp, no_grad)?
        } else {
            let (hidden, kv) = model.forward_inner(&ids, &mask, no_grad, true, None)?;
            (kv, hidden.narrow(1, tp - 1, 1)?.squeeze(1)?)
        };
        let idx: Vec<u32> = row_of.iter().map(|&i| i as u32).collect();
        let prefix = Prefix {
            kv,
            rows: Tensor::from_vec(idx, row_of.len(), model.device())?,
            row_of: row_of.to_vec(),
            lens: prompts.iter().map(|p| p.len()).collect(),
            padded: tp,
        };
        Ok((prefix, last))
    }

    /// Layer `li`'s keys and values for the rows: each row's prompt entry, then the row's own `k`/`v`.
    fn keys_before(&self, li: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (pk, pv) = &self.kv[li];
        Ok((
            Tensor::cat(&[&pk.index_select(&self.rows, 0)?, k], 2)?,
            Tensor::cat(&[&pv.index_select(&self.rows, 0)?, v], 2)?,
        ))
    }
}

/// One layer's keys (or values) of each decoding step, [N_s, KVH, D] on the host.
type StepRows = Vec<Vec<f32>>;

/// The generated part of the cache. On the CPU in f32 (the decode kernel's case) each step's keys and values
/// stay where they were written, and a row finds its history through its ancestors' places, so reordering
/// beams moves indices, not keys (copying the whole cache twice a step was 17% of a beam search). Elsewhere
/// candle's ops need each row's keys contiguous: one entry per row (B·W rows, prompt-major), reordered and
/// grown by copies.
#[derive(Default)]
pub struct GenCache {
    /// Contiguous layout, per layer [N, KVH, Tg, D].
    kv: Vec<Option<(Tensor, Tensor)>>,
    /// Step layout, per layer: keys and values of each step.
    steps: Vec<(StepRows, StepRows)>,
    /// Step layout, per step: each current row's ancestor's place among that step's rows.
    from: Vec<Vec<u32>>,
    pub len: usize,
}

impl GenCache {
    /// Row i of the next step continues row `parents[i]` of this one.
    pub fn reorder(&mut self, parents: &[u32]) -> Result<()> {
        for places in &mut self.from {
            if let Some(&bad) = parents.iter().find(|&&p| p as usize >= places.len()) {
                return Err(ModelError::Invalid(format!(
                    "row {bad} continued, the cache holds {}",
                    places.len()
                )));
            }
            *places = parents.iter().map(|&p| places[p as usize]).collect();
        }
        let dev = match self.kv.iter().flatten().next() {
            Some((k, _)) => k.device().clone(),
            None => return Ok(()),
        };
        let parents = Tensor::from_slice(parents, parents.len(), &dev)?;
        for e in self.kv.iter_mut().flatten() {
            *e = (
                e.0.index_select(&parents, 0)?,
                e.1.index_select(&parents, 0)?,
            );
        }
        Ok(())
    }

    /// Appends layer `li`'s new keys/values ([N, KVH, 1, D]); returns the layer's whole cache. They are
    /// detached: decoding never back-propagates, and with trainable weights (RL rollouts) each entry would
    /// otherwise keep every earlier step's whole computation alive (4 prompts × 20 rollouts of SmolLM2 grew
    /// to 18 GB that way).
    fn append(&mut self, li: usize, k: Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (k, v) = (k.detach(), v.detach());
        let kv = match self.kv[li].take() {
            None => (k, v.contiguous()?),
            Some((pk, pv)) => (
                Tensor::cat(&[&pk, &k], 2)?,
                Tensor::cat(&[&pv, &v.contiguous()?], 2)?,
            ),
        };
        self.kv[li] = Some(kv.clone());
        Ok(kv)
    }

    /// Starts a step of `n` rows in the step layout (each row is its own place in it).
    fn begin_step(&mut self, layers: usize, n: usize) {
        if self.steps.is_empty() {
            self.steps = vec![(Vec::new(), Vec::new()); layers];
        }
        self.from.push((0..n as u32).collect());
    }

    /// Stores layer `li`'s keys/values of this step ([N, KVH, 1, D]) in the step layout and returns the
    /// layer's history for the decode kernel.
    fn push_step(&mut self, li: usize, k: &Tensor, v: &Tensor) -> Result<GenSteps<'_>> {
        let host = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
        let (k, v) = (host(k)?, host(v)?);
        let (keys, values) = &mut self.steps[li];
        keys.push(k);
        values.push(v);
        Ok(GenSteps {
            keys,
            values,
            from: &self.from,
        })
    }
}

/// Token rows and their masks (1: a real token), as `Decoder::forward` takes them.
type Rows = (Vec<Vec<u32>>, Vec<Vec<u8>>);

/// A prefill's keys and values per layer and the last positions' hidden states.
pub type PrefillOut = (Vec<(Tensor, Tensor)>, Tensor);

/// Prompts left-padded to their longest (token 0, masked out): ids, mask and the padded length.
fn left_padded<P: AsRef<[u32]>>(prompts: &[P]) -> Result<(Rows, usize)> {
    let tp = prompts.iter().map(|p| p.as_ref().len()).max().unwrap_or(0);
    if tp == 0 || prompts.iter().any(|p| p.as_ref().is_empty()) {
        return Err(ModelError::Invalid("a prompt is empty".into()));
    }
    let ids = prompts
        .iter()
        .map(|p| {
            let p = p.as_ref();
            std::iter::repeat_n(0, tp - p.len())
                .chain(p.iter().copied())
                .collect()
        })
        .collect();
    let mask = prompts
        .iter()
        .map(|p| {
            let n = p.as_ref().len();
            std::iter::repeat_n(0u8, tp - n)
                .chain(std::iter::repeat_n(1u8, n))
                .collect()
        })
        .collect();
    Ok(((ids, mask), tp))
}

impl Decoder {
    pub fn from_weights(
        cfg: ModelConfig,
        w: &Weights,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let l = Loader {
            w,
            cfg: &cfg,
            dtype,
            device,
        };
        let embed = l.get("model.embed_tokens.weight")?;
        let (vocab, hidden) = embed.dims2()?;
        if vocab != cfg.vocab_size || hidden != cfg.hidden_size {
            return Err(ModelError::Invalid(format!(
                "embedding is {vocab}×{hidden}, config says {}×{}",
                cfg.vocab_size, cfg.hidden_size
            )));
        }
        let blocks = (0..cfg.num_layers)
            .map(|i| Block::new(&l, i))
            .collect::<Result<Vec<_>>>()?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(Linear::new(l.get("lm_head.weight")?, None))
        };
        let rope = Rope::new(
            cfg.head_dim,
            cfg.rope_theta,
            cfg.max_position_embeddings,
            device,
        )?;
        let norm = l.norm("model.norm.weight")?;
        Ok(Decoder {
            norm,
            cfg,
            embed,
            blocks,
            lm_head,
            rope,
            dtype,
            device: device.clone(),
            recompute: None,
            head_bf16: None,
            bf16_trains: false,
            f32_dropped: false,
            mixed_bf16: false,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Training passes on the CPU recompute each layer in backward instead of keeping its intermediates
    /// (activation checkpointing: about one more forward pass for a fraction of the memory). Gradients of
    /// such a pass must then come from `Decoder::backward`.
    pub fn set_recompute(&mut self, on: bool) {
        self.recompute = on.then(PendingGrads::default);
    }

    /// Whether training passes multiply LoRA's frozen bases on the bf16 kernel (`pack_frozen_bf16`).
    pub fn bf16_trains(&self) -> bool {
        self.bf16_trains
    }

    /// Multiplies trainable weights in mixed precision: f32 weights, gradients and sums, operands rounded to
    /// bf16 per product on the CPU's bf16 units (`kernels::mixed`). Frozen weights and CUDA are unaffected.
    /// Returns whether it is on: asked for, and the CPU runs a bf16 kernel.
    pub fn set_mixed_bf16(&mut self, on: bool) -> bool {
        let on = on && crate::kernels::bf16::available() && self.device.is_cpu();
        self.mixed_bf16 = on;
        for (_, lin) in self.linears_mut() {
            lin.mixed_bf16 = on;
        }
        on
    }

    pub fn mixed_bf16(&self) -> bool {
        self.mixed_bf16
    }

    /// Whether `pack_frozen_bf16` gave the frozen weights bf16 copies: passes outside any autograd graph
    /// multiply them in bf16, so their values differ from an f32 pass's in the last digits.
    pub fn holds_bf16(&self) -> bool {
        self.head_bf16.is_some()
            || self.lm_head.as_ref().is_some_and(|h| h.bf16.is_some())
            || self.blocks.iter().any(|b| b.attn.q.bf16.is_some())
    }

    /// Whether `drop_frozen_f32` freed the f32 linear weights (the model runs inference only).
    pub fn f32_dropped(&self) -> bool {
        self.f32_dropped
    }

    pub fn recomputes(&self) -> bool {
        self.recompute.is_some()
    }

    /// `loss.backward()`, with the weight gradients of recomputed layers added in. Use it for every loss
    /// built from this model's passes.
    pub fn backward(&self, loss: &Tensor) -> Result<GradStore> {
        let Some(pending) = &self.recompute else {
            return Ok(loss.backward()?);
        };
        pending.clear();
        let mut grads = loss.backward()?;
        pending.drain_into(&mut grads)?;
        Ok(grads)
    }

    fn embed_ids(&self, ids: &Tensor) -> Result<Tensor> {
        let shape = ids.dims().to_vec();
        let e = self.embed.index_select(&ids.flatten_all()?, 0)?;
        let mut out = shape;
        out.push(self.cfg.hidden_size);
        let e = e.reshape(out)?;
        if self.cfg.family == Family::Gemma2 {
            // HF rounds the normaliser to the activation dtype before multiplying.
            let n = Tensor::new((self.cfg.hidden_size as f32).sqrt(), &self.device)?
                .to_dtype(self.dtype)?;
            return Ok(e.broadcast_mul(&n)?);
        }
        Ok(e)
    }

    /// Positions (index among a row's real tokens, after its prefix's), a causal bias [1, 1, T, Tk] (with the
    /// sliding window for sliding layers, if it matters at this length) and a padding bias [B, 1, 1, Tk], where
    /// the Tk = Tp + T keys are the row's prefix (if any, left-padded to Tp) and then the row itself. Padding
    /// keys get a large finite negative rather than -inf, so a padding query whose keys are all padding stays
    /// finite (its output is never used). Real tokens must be contiguous in each row, so index differences
    /// between real tokens are position differences.
    fn full_bias(
        &self,
        mask: &[Vec<u8>],
        window: Option<usize>,
        prefix: Option<&Prefix>,
    ) -> Result<Biases> {
        let b = mask.len();
        let t = mask[0].len();
        let tp = prefix.map_or(0, |p| p.padded);
        let tk = tp + t;
        let mut pos = vec![0u32; b * t];
        let mut key_real = vec![0u8; b * tk];
        for (r, m) in mask.iter().enumerate() {
            let lp = prefix.map_or(0, |p| p.lens[p.row_of[r]]);
            key_real[r * tk + tp - lp..r * tk + tp].fill(1);
            let mut p = lp as u32;
            for j in 0..t {
                pos[r * t + j] = p;
                if m[j] != 0 {
                    p += 1;
                    key_real[r * tk + tp + j] = 1;
                }
            }
        }
        let visible = |k: usize, w: Option<usize>| {
            let (i, j) = (tp + k / tk, k % tk);
            j <= i && w.is_none_or(|w| i - j < w)
        };
        let bias = |w: Option<usize>| -> Vec<f32> {
            (0..t * tk)
                .map(|k| if visible(k, w) { 0.0 } else { NEG_INF })
                .collect()
        };
        let pad: Vec<f32> = key_real
            .iter()
            .map(|&m| if m == 0 { PAD_BIAS } else { 0.0 })
            .collect();
        let dev = &self.device;
        Ok(Biases {
            pos,
            causal: Tensor::from_vec(bias(None), (1, 1, t, tk), dev)?,
            sliding: window
                .map(|w| Tensor::from_vec(bias(Some(w)), (1, 1, t, tk), dev))
                .transpose()?,
            pad: Tensor::from_vec(pad, (b, 1, 1, tk), dev)?,
            key_real,
        })
    }

    /// Whole-sequence forward. `ids`: [B, T] token rows, `mask`: which positions are real (padding may be on
    /// either side). Returns the final-norm hidden states [B, T, H] and, if asked, each layer's keys/values.
    pub fn forward(
        &self,
        ids: &[Vec<u32>],
        mask: &[Vec<u8>],
        no_grad: bool,
        keep_kv: bool,
    ) -> Result<(Tensor, Vec<(Tensor, Tensor)>)> {
        self.forward_inner(ids, mask, no_grad, keep_kv, None)
    }

    /// Continuations of shared prompts in two passes: each distinct prompt once ([P] rows, left-padded), then
    /// the N continuation rows (`ids`/`mask` as in `forward`, padding on the right) attending to their
    /// prompt's keys and values and to their own. `row_prompt[n]` is row n's prompt. Differentiable unless
    /// `no_grad`: the gradients of all of a prompt's rows flow back into its one pass. Returns the prompts'
    /// last-position hidden states [P, H] and the rows' hidden states [N, T, H] (final norm applied), equal
    /// to running each prompt + continuation as one sequence.
    pub fn forward_shared(
        &self,
        prompts: &[&[u32]],
        row_prompt: &[usize],
        ids: &[Vec<u32>],
        mask: &[Vec<u8>],
        no_grad: bool,
    ) -> Result<(Tensor, Tensor)> {
        let (prefix, last) = Prefix::run(self, prompts, row_prompt, no_grad)?;
        if ids.len() != row_prompt.len() {
            return Err(ModelError::Invalid(format!(
                "{} continuation rows but {} prompt indices",
                ids.len(),
                row_prompt.len()
            )));
        }
        let (h, _) = self.forward_inner(ids, mask, no_grad, false, Some(&prefix))?;
        Ok((last, h))
    }

    fn check_batch(&self, ids: &[Vec<u32>], mask: &[Vec<u8>]) -> Result<(usize, usize)> {
        if ids.is_empty() || ids[0].is_empty() {
            return Err(ModelError::Invalid("empty batch".into()));
        }
        let (b, t) = (ids.len(), ids[0].len());
        if ids.iter().any(|r| r.len() != t) || mask.len() != b || mask.iter().any(|m| m.len() != t)
        {
            return Err(ModelError::Invalid(
                "ragged batch: pad rows to one length".into(),
            ));
        }
        if let Some(&bad) = ids
            .iter()
            .flatten()
            .find(|&&i| i as usize >= self.cfg.vocab_size)
        {
            return Err(ModelError::Invalid(format!(
                "token id {bad} is outside the vocabulary ({})",
                self.cfg.vocab_size
            )));
        }
        Ok((b, t))
    }

    fn forward_inner(
        &self,
        ids: &[Vec<u32>],
        mask: &[Vec<u8>],
        no_grad: bool,
        keep_kv: bool,
        prefix: Option<&Prefix>,
    ) -> Result<(Tensor, Vec<(Tensor, Tensor)>)> {
        let (b, t) = self.check_batch(ids, mask)?;
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let ids_t = Tensor::from_vec(flat, (b, t), &self.device)?;
        let tk = t + prefix.map_or(0, |p| p.padded);
        let window = self.cfg.sliding_window.filter(|&w| w < tk);
        let bias = self.full_bias(mask, window, prefix)?;
        let (cos, sin) = self.rope.lookup(&bias.pos, (b, t), self.dtype)?;
        let mut x = self.embed_ids(&ids_t)?;
        let mut kvs = Vec::new();
        let spec = |window| {
            Arc::new(AttentionSpec {
                key_real: bias.key_real.clone(),
                window,
                softcap: self.cfg.attn_logit_softcapping.map(|c| c as f32),
                scale: self.cfg.attn_scale() as f32,
            })
        };
        let inputs = LayerInputs {
            cos,
            sin,
            causal: bias.causal.clone(),
            sliding: bias.sliding.clone(),
            pad: bias.pad.clone(),
            full_spec: spec(None),
            window_spec: spec(window),
        };
        // Recomputation keeps only each layer's input; it serves plain differentiable passes (not a prefix's
        // continuation rows, nor passes that return their keys and values).
        let recompute = self.recompute.is_some()
            && !no_grad
            && !keep_kv
            && prefix.is_none()
            && crate::kernels::supported(&x);
        for (li, blk) in self.blocks.iter().enumerate() {
            if let (true, Some(pending)) = (recompute, &self.recompute) {
                if !x.track_op() {
                    // Frozen embeddings under LoRA: an op on an untracked input would not be recorded, and
                    // the layer's adapters would get no gradient.
                    x = Var::from_tensor(&x)?.as_tensor().clone();
                }
                x = x.contiguous()?.apply_op1(RecomputedLayer {
                    block: blk.clone(),
                    cfg: self.cfg.clone(),
                    inputs: inputs.clone(),
                    pending: pending.clone(),
                })?;
                continue;
            }
            let before = |k: &Tensor, v: &Tensor| -> Result<(Tensor, Tensor)> {
                prefix.expect("set with a prefix").keys_before(li, k, v)
            };
            let before: Option<KeysBefore> = prefix.map(|_| &before as KeysBefore);
            let (y, k, v) = blk.forward(&self.cfg, &x, &inputs, before)?;
            if keep_kv {
                let (k, v) = (k.contiguous()?, v.contiguous()?);
                // Without a backward pass the keys and values are data only: kept with their graph, each
                // layer's would hold its input and norm alive to the end of the pass (a rollout prefill of
                // 120 demonstration prompts of 420 tokens grew past 24 GB that way).
                kvs.push(if no_grad {
                    (k.detach(), v.detach())
                } else {
                    (k, v)
                });
            }
            x = y;
            if no_grad {
                // No backward pass will run: cut the graph so this layer's intermediates are freed now
                // (with trainable weights, a prompt prefill otherwise held every layer's at once).
                x = x.detach();
            }
        }
        Ok((self.norm.forward(&x)?, kvs))
    }

    /// The output projection [V, H] (the LM head with any adapter folded in, or the tied embeddings).
    pub fn output_weight(&self) -> Result<Tensor> {
        match &self.lm_head {
            Some(h) => h.merged_weight(),
            None => Ok(self.embed.clone()),
        }
    }

    /// Vocabulary logits (f32, soft-capped for Gemma-2) for hidden states [..., H].
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let l = match &self.lm_head {
            Some(h) => h.forward(hidden)?,
            None => {
                let dims = hidden.dims().to_vec();
                let h = hidden.reshape(((), self.cfg.hidden_size))?;
                let mut out = dims;
                *out.last_mut().expect("rank ≥ 1") = self.cfg.vocab_size;
                crate::kernels::frozen::linear(
                    &h,
                    &self.embed,
                    self.head_bf16.as_ref(),
                    self.mixed_bf16,
                )?
                .reshape(out)?
            }
        };
        softcap(&l.to_dtype(DType::F32)?, self.cfg.final_logit_softcapping)
    }

    /// Runs the prompts and keeps their cache, left-padded to the longest. Returns the cache and the last
    /// position's hidden state for each prompt ([B, H]).
    pub fn prefill(&self, prompts: &[Vec<u32>]) -> Result<(PromptCache, Tensor)> {
        let ((_, mask), tp) = left_padded(prompts)?;
        let (kv, last) = if self.runs_prompts_alone() {
            self.prefill_each(prompts, tp)?
        } else {
            self.prefill_padded(prompts)?
        };
        let pad_bias: Vec<f32> = mask
            .iter()
            .flatten()
            .map(|&m| if m == 0 { NEG_INF } else { 0.0 })
            .collect();
        let pad_bias = Tensor::from_vec(pad_bias, (prompts.len(), 1, 1, tp), &self.device)?;
        let cache = PromptCache {
            kv,
            lens: prompts.iter().map(Vec::len).collect(),
            padded: tp,
            pad_bias,
        };
        Ok((cache, last))
    }

    /// The prompts as one left-padded batch: its keys/values per layer and the last states. The path of every
    /// device but the CPU (public so that tests compare the two).
    #[doc(hidden)]
    pub fn prefill_padded(&self, prompts: &[Vec<u32>]) -> Result<PrefillOut> {
        let ((ids, mask), tp) = left_padded(prompts)?;
        let (hidden, kv) = self.forward(&ids, &mask, true, true)?;
        // Detached for the reason `GenCache::append` gives.
        let kv = kv
            .into_iter()
            .map(|(k, v)| (k.detach(), v.detach()))
            .collect();
        Ok((kv, hidden.narrow(1, tp - 1, 1)?.squeeze(1)?.detach()))
    }

    /// `prefill` of each prompt on its own, detached (see `forward_each`).
    fn prefill_each(&self, prompts: &[Vec<u32>], tp: usize) -> Result<PrefillOut> {
        let prompts: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
        let (kv, last) = self.forward_each(&prompts, tp, true)?;
        let kv = kv
            .into_iter()
            .map(|(k, v)| (k.detach(), v.detach()))
            .collect();
        Ok((kv, last.detach()))
    }

    /// Each prompt through the model on its own, so no padding is computed: the prompts of a batch differ in
    /// length several times over, and a left-padded batch spends most of its products and attention on the
    /// padding. Returns each layer's keys and values placed as a left-padded batch's would be ([P, KVH, Tp,
    /// D]; the padding slots zero, and the attention that reads them masks them) and the last states [P, H];
    /// differentiable unless `no_grad`. A prompt's values do not depend on its batch mates.
    fn forward_each(&self, prompts: &[&[u32]], tp: usize, no_grad: bool) -> Result<PrefillOut> {
        let mut layers: Vec<(Vec<Tensor>, Vec<Tensor>)> =
            vec![Default::default(); self.blocks.len()];
        let mut last = Vec::with_capacity(prompts.len());
        for p in prompts {
            let ids = [p.to_vec()];
            let (hidden, kv) =
                self.forward_inner(&ids, &[vec![1; p.len()]], no_grad, true, None)?;
            last.push(hidden.narrow(1, p.len() - 1, 1)?.squeeze(1)?);
            for ((ks, vs), (k, v)) in layers.iter_mut().zip(kv) {
                ks.push(k.pad_with_zeros(2, tp - p.len(), 0)?);
                vs.push(v.pad_with_zeros(2, tp - p.len(), 0)?);
            }
        }
        let kv = layers
            .into_iter()
            .map(|(ks, vs)| Ok((Tensor::cat(&ks, 0)?, Tensor::cat(&vs, 0)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok((kv, Tensor::cat(&last, 0)?))
    }

    /// One decoding step for `tokens.len()` = B·W rows, W per prompt (prompt-major). Returns the rows' hidden
    /// states [B·W, H] and appends their keys/values to `gen`.
    pub fn decode_step(
        &self,
        pc: &PromptCache,
        gen: &mut GenCache,
        tokens: &[u32],
    ) -> Result<Tensor> {
        let (b, n) = (pc.batch(), tokens.len());
        if n == 0 || n % b != 0 {
            return Err(ModelError::Invalid(format!("{n} rows for {b} prompts")));
        }
        self.decode_rows(pc, gen, tokens, &vec![n / b; b])
    }

    /// Whether prompts (a prefill's, a shared prefix's) run one at a time instead of as a left-padded batch: on
    /// the CPU a wider batch gains little and its padding costs its full share; a GPU wants the batch.
    fn runs_prompts_alone(&self) -> bool {
        self.device.is_cpu()
    }

    /// Whether `decode_rows` takes any number of rows per prompt (the CPU kernel's case), not only equal
    /// numbers (candle's composed ops).
    pub fn decodes_uneven_rows(&self) -> bool {
        self.device.is_cpu() && self.dtype == DType::F32
    }

    /// `decode_step` for rows laid out prompt-major, `rows[i]` of them for prompt i: beams that finished
    /// leave no idle slot behind. Counts may differ only where `decodes_uneven_rows`.
    pub fn decode_rows(
        &self,
        pc: &PromptCache,
        gen: &mut GenCache,
        tokens: &[u32],
        rows: &[usize],
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let n = tokens.len();
        let even = rows.iter().all(|&r| r == rows[0]);
        if n == 0 || rows.len() != pc.batch() || rows.iter().sum::<usize>() != n {
            return Err(ModelError::Invalid(format!(
                "{n} rows laid out as {rows:?} for {} prompts",
                pc.batch()
            )));
        }
        if !even && !self.decodes_uneven_rows() {
            return Err(ModelError::Invalid(format!(
                "rows {rows:?}: candle's ops decode equal rows per prompt only"
            )));
        }
        let tg = gen.len;
        let pos: Vec<u32> = rows
            .iter()
            .zip(&pc.lens)
            .flat_map(|(&r, &len)| std::iter::repeat_n((len + tg) as u32, r))
            .collect();
        let (cos, sin) = self.rope.lookup(&pos, (n, 1), self.dtype)?;
        let ids = Tensor::from_vec(tokens.to_vec(), (n, 1), &self.device)?;
        let mut x = self.embed_ids(&ids)?;
        // The kernel's step layout, or candle's ops on a contiguous cache (see `GenCache`).
        let on_kernel = crate::kernels::supported(&x);
        if on_kernel {
            gen.begin_step(self.blocks.len(), n);
        } else if gen.kv.is_empty() {
            gen.kv = vec![None; self.blocks.len()];
        }
        let scale = cfg.attn_scale();
        let dev = &self.device;
        // The decode kernel's spec for full-attention layers and for sliding-window ones.
        let spec = |window| DecodeSpec {
            prompt_lens: pc.lens.clone(),
            rows: rows.to_vec(),
            window,
            softcap: cfg.attn_logit_softcapping.map(|c| c as f32),
        };
        let specs = [spec(None), spec(cfg.sliding_window)];
        for (li, blk) in self.blocks.iter().enumerate() {
            let (q, k, v) = {
                let _p = phase("decode.qkv", dev);
                let normed = blk.input_norm.forward(&x)?;
                let (q, k, v) = blk.attn.project(&normed, cfg)?;
                // Scaling q here costs N·Hq·D multiplies instead of one pass over every score.
                let q = (Rope::apply(&q, &cos, &sin)? * scale)?; // [N, Hq, 1, D]
                let k = Rope::apply(&k, &cos, &sin)?; // [N, KVH, 1, D]
                (q, k, v)
            };
            let out = if on_kernel {
                let steps = {
                    let _p = phase("decode.cache_append", dev);
                    gen.push_step(li, &k, &v)?
                };
                let _p = phase("decode.attention", dev);
                let (kp, vp) = &pc.kv[li];
                decode_attention(&q, (kp, vp), steps, &specs[usize::from(blk.sliding)])?
            } else {
                let (kg, vg) = {
                    let _p = phase("decode.cache_append", dev);
                    gen.append(li, k, &v)?
                };
                self.decode_attention_composed(blk, pc, li, (&q, &kg, &vg), tg)?
            };
            let a = {
                let _p = phase("decode.o_proj", dev);
                blk.attn.o.forward(&out)?
            };
            let _p = phase("decode.mlp_norms", dev);
            x = blk.tail(&self.cfg, &x, a)?.detach();
        }
        gen.len += 1;
        let h = self.norm.forward(&x)?;
        Ok(h.squeeze(1)?.detach())
    }

    /// The decode step's attention through candle's ops (any device and dtype; the CPU f32 path is
    /// `kernels::decode_attention`): q [N, Hq, 1, D] scaled, against layer `li`'s prompt cache and each row's
    /// generated keys and values [N, KVH, Tg, D]. Returns [N, 1, Hq·D].
    fn decode_attention_composed(
        &self,
        blk: &Block,
        pc: &PromptCache,
        li: usize,
        (q, kg, vg): (&Tensor, &Tensor, &Tensor),
        tg: usize,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, n) = (pc.batch(), q.dim(0)?);
        let w = n / b;
        let (kvh, g, hd) = (cfg.num_kv_heads, cfg.kv_groups(), cfg.head_dim);
        let dev = &self.device;
        let t_gen = kg.dim(2)?;
        // Prompt segment: the W rows of a prompt become W·G query rows against its one cache entry.
        let (kp, vp) = &pc.kv[li];
        let mut sp = {
            let _p = phase("decode.attn_prompt_scores", dev);
            let qp = q
                .reshape((b, w, kvh, g, hd))?
                .permute((0, 2, 1, 3, 4))?
                .reshape((b, kvh, w * g, hd))?;
            let sp = qp.matmul(&kp.t()?)?.to_dtype(DType::F32)?; // [B, KVH, W·G, Tp]
            softcap(&sp, cfg.attn_logit_softcapping)?.broadcast_add(&pc.pad_bias)?
        };
        // Generated segment: each row against its own keys.
        let mut sg = {
            let _p = phase("decode.attn_gen_scores", dev);
            let qg = q.reshape((n, kvh, g, hd))?;
            let sg = qg.matmul(&kg.t()?)?.to_dtype(DType::F32)?; // [N, KVH, G, Tg]
            softcap(&sg, cfg.attn_logit_softcapping)?
                .reshape((b, w, kvh, g, t_gen))?
                .permute((0, 2, 1, 3, 4))?
                .reshape((b, kvh, w * g, t_gen))?
        };
        if let (true, Some(win)) = (blk.sliding, cfg.sliding_window) {
            sp = sp.broadcast_add(&self.window_bias(pc, w, tg, win)?)?;
            if t_gen > win {
                // The query is generated token t_gen − 1; older generated keys fall out of the window too.
                let bias: Vec<f32> = (0..t_gen)
                    .map(|j| if t_gen - 1 - j >= win { NEG_INF } else { 0.0 })
                    .collect();
                sg = sg.broadcast_add(&Tensor::from_vec(bias, (1, 1, 1, t_gen), dev)?)?;
            }
        }
        let out = {
            let _p = phase("decode.attn_softmax_values", dev);
            let probs =
                softmax_last(&Tensor::cat(&[&sp, &sg], D::Minus1)?)?.to_dtype(self.dtype)?;
            let pp = probs.narrow(D::Minus1, 0, pc.padded)?;
            let pg = probs.narrow(D::Minus1, pc.padded, t_gen)?;
            let out_p = pp.contiguous()?.matmul(vp)?; // [B, KVH, W·G, D]
            let out_g = pg
                .reshape((b, kvh, w, g, t_gen))?
                .permute((0, 2, 1, 3, 4))?
                .reshape((n, kvh, g, t_gen))?
                .matmul(vg)?
                .reshape((b, w, kvh, g, hd))?
                .permute((0, 2, 1, 3, 4))?
                .reshape((b, kvh, w * g, hd))?;
            (out_p + out_g)?
                .reshape((b, kvh, w, g, hd))?
                .permute((0, 2, 1, 3, 4))?
                .reshape((n, 1, cfg.num_heads * hd))?
        };
        Ok(out)
    }

    /// Bias hiding prompt keys farther than the sliding window from the current query ([B, 1, W·G, Tp]
    /// broadcastable).
    fn window_bias(&self, pc: &PromptCache, _w: usize, tg: usize, win: usize) -> Result<Tensor> {
        let b = pc.batch();
        let mut bias = vec![0f32; b * pc.padded];
        for r in 0..b {
            let pad = pc.padded - pc.lens[r];
            let q = pc.lens[r] + tg;
            for j in pad..pc.padded {
                if q - (j - pad) >= win {
                    bias[r * pc.padded + j] = NEG_INF;
                }
            }
        }
        Ok(Tensor::from_vec(bias, (b, 1, 1, pc.padded), &self.device)?)
    }

    /// Every linear layer by HF name prefix (for LoRA and saving).
    pub fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::new();
        for (i, blk) in self.blocks.iter_mut().enumerate() {
            let p = format!("model.layers.{i}");
            out.push((format!("{p}.self_attn.q_proj"), &mut blk.attn.q));
            out.push((format!("{p}.self_attn.k_proj"), &mut blk.attn.k));
            out.push((format!("{p}.self_attn.v_proj"), &mut blk.attn.v));
            out.push((format!("{p}.self_attn.o_proj"), &mut blk.attn.o));
            out.push((format!("{p}.mlp.gate_proj"), &mut blk.mlp.gate));
            out.push((format!("{p}.mlp.up_proj"), &mut blk.mlp.up));
            out.push((format!("{p}.mlp.down_proj"), &mut blk.mlp.down));
        }
        if let Some(h) = self.lm_head.as_mut() {
            out.push(("lm_head".to_string(), h));
        }
        out
    }

    /// Every base tensor by HF name, with adapters merged in (for saving an HF directory).
    pub fn named_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        self.needs_f32("saving the weights")?;
        let mut out = vec![("model.embed_tokens.weight".to_string(), self.embed.clone())];
        for (i, blk) in self.blocks.iter().enumerate() {
            let p = format!("model.layers.{i}");
            for (n, l) in [
                ("self_attn.q_proj", &blk.attn.q),
                ("self_attn.k_proj", &blk.attn.k),
                ("self_attn.v_proj", &blk.attn.v),
                ("self_attn.o_proj", &blk.attn.o),
                ("mlp.gate_proj", &blk.mlp.gate),
                ("mlp.up_proj", &blk.mlp.up),
                ("mlp.down_proj", &blk.mlp.down),
            ] {
                out.push((format!("{p}.{n}.weight"), l.merged_weight()?));
                if let Some(b) = &l.bias {
                    out.push((format!("{p}.{n}.bias"), b.clone()));
                }
            }
            out.push((
                format!("{p}.input_layernorm.weight"),
                blk.input_norm.weight.clone(),
            ));
            out.push((
                format!("{p}.post_attention_layernorm.weight"),
                blk.post_attn_norm.weight.clone(),
            ));
            if let Some(n) = &blk.pre_ff_norm {
                out.push((
                    format!("{p}.pre_feedforward_layernorm.weight"),
                    n.weight.clone(),
                ));
            }
            if let Some(n) = &blk.post_ff_norm {
                out.push((
                    format!("{p}.post_feedforward_layernorm.weight"),
                    n.weight.clone(),
                ));
            }
        }
        out.push(("model.norm.weight".to_string(), self.norm.weight.clone()));
        if let Some(h) = &self.lm_head {
            out.push(("lm_head.weight".to_string(), h.merged_weight()?));
        }
        Ok(out)
    }

    /// A bf16 copy of every frozen weight (the linear layers and the output projection), when `--bf16-weights`
    /// asked for it and the CPU runs a bf16 kernel: for passes outside any autograd graph, and, for LoRA's
    /// frozen bases and a frozen tied output embedding, for training passes too (their forward products
    /// and input gradients; a second, transposed copy). Call it after adapters are added. Returns the bytes
    /// packed (0 when nothing was). Trainable weights and adapters stay f32 only.
    pub fn pack_frozen_bf16(&mut self) -> Result<usize> {
        use crate::kernels::frozen::Bf16Weight;
        if !crate::kernels::bf16::wanted() {
            return Ok(0);
        }
        self.needs_f32("packing the weights in bf16")?;
        let training = self.linears_mut().iter().any(|(_, l)| l.lora.is_some());
        let pack = |w: &Tensor| match training {
            true => Bf16Weight::pack_differentiable(w),
            false => Bf16Weight::pack(w),
        };
        let mut bytes = 0;
        for (_, lin) in self.linears_mut() {
            lin.bf16 = pack(&lin.weight)?;
            bytes += lin.bf16.as_ref().map_or(0, |b| b.bytes());
        }
        if self.lm_head.is_none() {
            self.head_bf16 = pack(&self.embed)?;
            bytes += self.head_bf16.as_ref().map_or(0, |b| b.bytes());
        }
        self.bf16_trains = training && bytes > 0;
        Ok(bytes)
    }

    /// For a model that only runs inference: frees the f32 copies of the linear weights that have a bf16 copy
    /// (≈ 0.42 GB for SmolLM2-135M), leaving same-shaped placeholders. From then on the model cannot train,
    /// merge, save or take passes the bf16 copies do not serve (each says so). The embedding stays f32 (its
    /// lookup). Does nothing with adapters present. Returns the bytes freed.
    pub fn drop_frozen_f32(&mut self) -> Result<usize> {
        if self.linears_mut().iter().any(|(_, l)| l.lora.is_some()) {
            return Ok(0);
        }
        let mut freed = 0;
        for (_, lin) in self.linears_mut() {
            let Some(copy) = lin.bf16.as_mut() else {
                continue;
            };
            let placeholder = Tensor::zeros((), lin.weight.dtype(), lin.weight.device())?
                .broadcast_as(lin.weight.shape())?;
            freed += lin.weight.elem_count() * lin.weight.dtype().size_in_bytes();
            copy.retie(&placeholder);
            lin.weight = placeholder;
        }
        self.f32_dropped |= freed > 0;
        Ok(freed)
    }

    /// An error where `drop_frozen_f32` left only bf16 copies and `what` needs the f32 weights.
    fn needs_f32(&self, what: &str) -> Result<()> {
        if self.f32_dropped {
            return Err(ModelError::Invalid(format!(
                "{what}: this model was loaded for inference and keeps its frozen weights in bf16 only"
            )));
        }
        Ok(())
    }

    /// Folds every adapter into its base weight (W + scale·B·A) and drops the adapters.
    pub fn merge_adapters(&mut self) -> Result<()> {
        self.needs_f32("merging adapters")?;
        for (_, lin) in self.linears_mut() {
            if lin.lora.is_some() {
                lin.weight = lin.merged_weight()?.detach();
                lin.lora = None;
            }
        }
        Ok(())
    }

    /// Makes every base tensor a trainable variable (full fine-tuning); returns them by name.
    pub fn make_all_trainable(&mut self) -> Result<Vec<(String, Var)>> {
        self.needs_f32("training")?;
        let mut vars = Vec::new();
        self.for_each_base_tensor(&mut |name, t| {
            let v = Var::from_tensor(t)?;
            *t = v.as_tensor().clone();
            vars.push((name, v));
            Ok(())
        })?;
        Ok(vars)
    }

    /// Ends training: every base tensor becomes a plain tensor again (the values stay), so that inference may
    /// pack frozen bf16 copies of it (`pack_frozen_bf16` leaves trainable weights alone).
    pub fn freeze(&mut self) -> Result<()> {
        self.for_each_base_tensor(&mut |_, t| {
            *t = t.detach();
            Ok(())
        })
    }

    /// Every base tensor by its HF name (adapters aside).
    fn for_each_base_tensor(
        &mut self,
        f: &mut dyn FnMut(String, &mut Tensor) -> Result<()>,
    ) -> Result<()> {
        f("model.embed_tokens.weight".into(), &mut self.embed)?;
        for (i, blk) in self.blocks.iter_mut().enumerate() {
            let p = format!("model.layers.{i}");
            for (n, l) in [
                ("self_attn.q_proj", &mut blk.attn.q),
                ("self_attn.k_proj", &mut blk.attn.k),
                ("self_attn.v_proj", &mut blk.attn.v),
                ("self_attn.o_proj", &mut blk.attn.o),
                ("mlp.gate_proj", &mut blk.mlp.gate),
                ("mlp.up_proj", &mut blk.mlp.up),
                ("mlp.down_proj", &mut blk.mlp.down),
            ] {
                f(format!("{p}.{n}.weight"), &mut l.weight)?;
                if let Some(b) = l.bias.as_mut() {
                    f(format!("{p}.{n}.bias"), b)?;
                }
            }
            f(
                format!("{p}.input_layernorm.weight"),
                &mut blk.input_norm.weight,
            )?;
            f(
                format!("{p}.post_attention_layernorm.weight"),
                &mut blk.post_attn_norm.weight,
            )?;
            if let Some(n) = blk.pre_ff_norm.as_mut() {
                f(
                    format!("{p}.pre_feedforward_layernorm.weight"),
                    &mut n.weight,
                )?;
            }
            if let Some(n) = blk.post_ff_norm.as_mut() {
                f(
                    format!("{p}.post_feedforward_layernorm.weight"),
                    &mut n.weight,
                )?;
            }
        }
        f("model.norm.weight".into(), &mut self.norm.weight)?;
        if let Some(h) = self.lm_head.as_mut() {
            f("lm_head.weight".into(), &mut h.weight)?;
        }
        Ok(())
    }
}
