//! Three ID-based sequential recommenders sharing one item-embedding table (row 0 is padding): each turns a
//! left-padded history of item rows [B, L] into a user representation [B, d]; an item's score is its
//! embedding's dot product with it.
//! - SASRec (Kang & McAuley 2018): learned positions, pre-norm causal self-attention blocks, last position;
//! - GRU4Rec (Hidasi et al. 2016): a GRU over the history, last state, projected;
//! - Caser (Tang & Wang 2018): horizontal convolutions of every height 1..L (max-pooled over time) and
//!   vertical convolutions across the L positions, concatenated and projected.
//!
//! - Pop: no model, the most frequent training targets (one parameter per row: its score).
//!
//! Dropout masks come from a seeded host stream ([`Dropout`]), so training runs reproduce.

use candle_core::{DType, Device, Tensor, D};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{BaselineError, Result};
use crate::nn::{layer_norm, linear, maybe_drop, sigmoid, Dropout, Params};
pub use crate::shape::{Act, Kind, ModelShape, Norm};

/// Layer-norm epsilon (Kang & McAuley's 1e-8; RecBole's 1e-12 is the same in f32).
const LN_EPS: f64 = 1e-8;

/// SASRec's positions, blocks and norms: post-norm models normalise the input embeddings, pre-norm ones
/// the output.
fn init_sasrec(
    p: &mut Params,
    shape: &ModelShape,
    rng: &mut ChaCha8Rng,
    dev: &Device,
) -> Result<()> {
    let (d, f, std) = (shape.dim, shape.ffn_width(), shape.weight_std());
    p.normal("pos_emb", &[shape.max_len, d], std, rng, dev)?;
    for b in 0..shape.layers {
        for w in ["q", "k", "v", "o"] {
            p.normal(&format!("b{b}.{w}"), &[d, d], std, rng, dev)?;
        }
        p.normal(&format!("b{b}.ff1"), &[f, d], std, rng, dev)?;
        p.constant(&format!("b{b}.ff1_b"), &[f], 0.0, dev)?;
        p.normal(&format!("b{b}.ff2"), &[d, f], std, rng, dev)?;
        p.constant(&format!("b{b}.ff2_b"), &[d], 0.0, dev)?;
        for n in ["ln1", "ln2"] {
            p.constant(&format!("b{b}.{n}_w"), &[d], 1.0, dev)?;
            p.constant(&format!("b{b}.{n}_b"), &[d], 0.0, dev)?;
        }
    }
    let last = if shape.norm == Norm::Post {
        "ln_e"
    } else {
        "ln_f"
    };
    p.constant(&format!("{last}_w"), &[d], 1.0, dev)?;
    p.constant(&format!("{last}_b"), &[d], 0.0, dev)?;
    Ok(())
}

pub struct SeqRec {
    pub shape: ModelShape,
    pub params: Params,
    pub device: Device,
}

impl SeqRec {
    /// A freshly initialised model; `item_init` replaces the item table (rows × dim) if given.
    pub fn new(
        shape: ModelShape,
        item_init: Option<Tensor>,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        shape.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut p = Params::default();
        let (d, l, dev) = (shape.dim, shape.max_len, device);
        let std = shape.weight_std();
        match (item_init, shape.kind) {
            (_, Kind::Pop) => {
                p.constant("pop", &[shape.num_rows], 0.0, dev)?;
            }
            (Some(t), _) => {
                if t.dims() != [shape.num_rows, d] {
                    return Err(BaselineError::Invalid(format!(
                        "item initialisation has shape {:?}, expected [{}, {d}]",
                        t.dims(),
                        shape.num_rows
                    )));
                }
                p.add("item_emb", t.to_dtype(DType::F32)?.to_device(dev)?)?;
            }
            (None, _) => {
                p.normal("item_emb", &[shape.num_rows, d], std, &mut rng, dev)?;
            }
        }
        match shape.kind {
            Kind::Sasrec => init_sasrec(&mut p, &shape, &mut rng, dev)?,
            Kind::Gru4rec => {
                let std = 1.0 / (d as f32).sqrt();
                for g in ["r", "z", "n"] {
                    p.normal(&format!("w_{g}"), &[d, d], std, &mut rng, dev)?;
                    p.normal(&format!("u_{g}"), &[d, d], std, &mut rng, dev)?;
                    p.constant(&format!("b_{g}"), &[d], 0.0, dev)?;
                }
                p.normal("out", &[d, d], std, &mut rng, dev)?;
                p.constant("out_b", &[d], 0.0, dev)?;
            }
            Kind::Caser => {
                for h in 1..=l {
                    p.normal(
                        &format!("h{h}"),
                        &[shape.caser_h, h * d],
                        1.0 / ((h * d) as f32).sqrt(),
                        &mut rng,
                        dev,
                    )?;
                    p.constant(&format!("h{h}_b"), &[shape.caser_h], 0.0, dev)?;
                }
                p.normal(
                    "v",
                    &[shape.caser_v, l],
                    1.0 / (l as f32).sqrt(),
                    &mut rng,
                    dev,
                )?;
                let fin = shape.caser_h * l + shape.caser_v * d;
                p.normal("fc", &[d, fin], 1.0 / (fin as f32).sqrt(), &mut rng, dev)?;
                p.constant("fc_b", &[d], 0.0, dev)?;
            }
            Kind::Pop => {}
        }
        Ok(SeqRec {
            shape,
            params: p,
            device: device.clone(),
        })
    }

    fn w(&self, name: &str) -> Tensor {
        self.params
            .get(name)
            .unwrap_or_else(|| panic!("parameter {name} exists by construction"))
            .as_tensor()
            .clone()
    }

    pub fn item_table(&self) -> Tensor {
        self.w("item_emb")
    }

    /// Histories → item rows [B, L], left-padded with 0 (the newest item last), truncated to the newest L.
    /// Also returns the mask on the host, for what is built there (SASRec's attention bias).
    pub fn batch_rows(&self, histories: &[Vec<u32>]) -> Result<(Tensor, Tensor, Vec<f32>)> {
        let l = self.shape.max_len;
        let mut rows = Vec::with_capacity(histories.len() * l);
        let mut mask = Vec::with_capacity(histories.len() * l);
        for h in histories {
            let h = &h[h.len().saturating_sub(l)..];
            if let Some(&bad) = h
                .iter()
                .find(|&&r| r == 0 || r as usize >= self.shape.num_rows)
            {
                return Err(BaselineError::Invalid(format!(
                    "item row {bad} is outside 1..{}",
                    self.shape.num_rows
                )));
            }
            rows.extend(std::iter::repeat_n(0u32, l - h.len()).chain(h.iter().copied()));
            mask.extend(
                std::iter::repeat_n(0f32, l - h.len()).chain(std::iter::repeat_n(1f32, h.len())),
            );
        }
        let b = histories.len();
        Ok((
            Tensor::from_vec(rows, (b, l), &self.device)?,
            Tensor::from_slice(&mask, (b, l), &self.device)?,
            mask,
        ))
    }

    /// User representations [B, d] (inference: no dropout).
    pub fn represent(&self, histories: &[Vec<u32>]) -> Result<Tensor> {
        self.represent_with(histories, None)
    }

    /// User representations [B, d] in training, with dropout drawn from `drop`.
    pub fn represent_train(&self, histories: &[Vec<u32>], drop: &mut Dropout) -> Result<Tensor> {
        self.represent_with(histories, Some(drop))
    }

    fn represent_with(
        &self,
        histories: &[Vec<u32>],
        mut drop: Option<&mut Dropout>,
    ) -> Result<Tensor> {
        if histories.is_empty() {
            return Err(BaselineError::Invalid("empty batch".into()));
        }
        if self.shape.kind == Kind::Pop {
            return Err(BaselineError::Invalid(
                "the popularity baseline has no user representation".into(),
            ));
        }
        let (rows, mask, mask_host) = self.batch_rows(histories)?;
        let (b, l, d) = (histories.len(), self.shape.max_len, self.shape.dim);
        let emb = self
            .item_table()
            .index_select(&rows.flatten_all()?, 0)?
            .reshape((b, l, d))?;
        let m3 = mask.unsqueeze(2)?;
        let dr = &mut drop;
        match self.shape.kind {
            Kind::Sasrec => self.sasrec(emb, &mask_host, &m3, dr),
            Kind::Gru4rec => self.gru(maybe_drop(dr, emb)?, &m3),
            Kind::Caser => self.caser(emb.broadcast_mul(&m3)?, dr),
            Kind::Pop => unreachable!("handled above"),
        }
    }

    /// Causal attention that never looks at padding keys (a fully padded query row still sees itself).
    fn attention_bias(&self, mv: &[f32], b: usize) -> Result<Tensor> {
        let l = self.shape.max_len;
        let mut bias = vec![0f32; b * l * l];
        for r in 0..b {
            for i in 0..l {
                for j in 0..l {
                    if j > i || (mv[r * l + j] == 0.0 && j != i) {
                        bias[(r * l + i) * l + j] = -1e9;
                    }
                }
            }
        }
        Ok(Tensor::from_vec(bias, (b, 1, l, l), &self.device)?)
    }

    fn sasrec(
        &self,
        emb: Tensor,
        mv: &[f32],
        m3: &Tensor,
        dr: &mut Option<&mut Dropout>,
    ) -> Result<Tensor> {
        let (b, l, d) = emb.dims3()?;
        let post = self.shape.norm == Norm::Post;
        let scale = if self.shape.emb_scale {
            (d as f64).sqrt()
        } else {
            1.0
        };
        let mut x = (emb * scale)?.broadcast_add(&self.w("pos_emb"))?;
        if post {
            x = layer_norm(&x, &self.w("ln_e_w"), &self.w("ln_e_b"), LN_EPS)?;
        }
        x = maybe_drop(dr, x)?.broadcast_mul(m3)?;
        let bias = self.attention_bias(mv, b)?;
        for blk in 0..self.shape.layers {
            let w = |n: &str| self.w(&format!("b{blk}.{n}"));
            let ln = |t: &Tensor, n: &str| {
                layer_norm(t, &w(&format!("{n}_w")), &w(&format!("{n}_b")), LN_EPS)
            };
            let h = if post { x.clone() } else { ln(&x, "ln1")? };
            let o = self.self_attention(&h, &bias, blk, dr)?;
            let o = maybe_drop(dr, o)?;
            x = if post {
                ln(&(x + o)?, "ln1")?
            } else {
                (x + o)?
            };
            let h = if post { x.clone() } else { ln(&x, "ln2")? };
            let inner = linear(&h, &w("ff1"), Some(&w("ff1_b")))?;
            let inner = match self.shape.act {
                Act::Relu => inner.relu()?,
                Act::Gelu => inner.gelu_erf()?,
            };
            let ff = maybe_drop(dr, linear(&inner, &w("ff2"), Some(&w("ff2_b")))?)?;
            x = if post {
                ln(&(x + ff)?, "ln2")?
            } else {
                (x + ff)?
            };
            x = x.broadcast_mul(m3)?;
        }
        if !post {
            x = layer_norm(&x, &self.w("ln_f_w"), &self.w("ln_f_b"), LN_EPS)?;
        }
        debug_assert_eq!(x.dims(), [b, l, d]);
        Ok(x.narrow(1, l - 1, 1)?.squeeze(1)?)
    }

    /// Multi-head self-attention of block `blk` (before its output dropout), [B, L, d].
    fn self_attention(
        &self,
        h: &Tensor,
        bias: &Tensor,
        blk: usize,
        dr: &mut Option<&mut Dropout>,
    ) -> Result<Tensor> {
        let (b, l, d) = h.dims3()?;
        let nh = self.shape.heads;
        let hd = d / nh;
        let w = |n: &str| self.w(&format!("b{blk}.{n}"));
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, l, nh, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let q = split(linear(h, &w("q"), None)?)?;
        let k = split(linear(h, &w("k"), None)?)?;
        let v = split(linear(h, &w("v"), None)?)?;
        let att = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(bias)?;
        let att = maybe_drop(dr, candle_nn::ops::softmax(&att, D::Minus1)?)?;
        let o = att
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, l, d))?;
        linear(&o, &w("o"), None)
    }

    fn gru(&self, emb: Tensor, m3: &Tensor) -> Result<Tensor> {
        let (b, l, d) = emb.dims3()?;
        let mut h = Tensor::zeros((b, d), DType::F32, &self.device)?;
        let (wr, wz, wn) = (self.w("w_r"), self.w("w_z"), self.w("w_n"));
        let (ur, uz, un) = (self.w("u_r"), self.w("u_z"), self.w("u_n"));
        let (br, bz, bn) = (self.w("b_r"), self.w("b_z"), self.w("b_n"));
        for t in 0..l {
            let x = emb.narrow(1, t, 1)?.squeeze(1)?;
            let m = m3.narrow(1, t, 1)?.squeeze(1)?;
            let r = sigmoid(&(linear(&x, &wr, Some(&br))? + linear(&h, &ur, None)?)?)?;
            let z = sigmoid(&(linear(&x, &wz, Some(&bz))? + linear(&h, &uz, None)?)?)?;
            let n = (linear(&x, &wn, Some(&bn))? + (r * linear(&h, &un, None)?)?)?.tanh()?;
            let next = ((z.ones_like()? - &z)? * n)?.add(&(&z * &h)?)?;
            // Padding steps leave the state as it was.
            h = (next.broadcast_mul(&m)? + h.broadcast_mul(&(1.0 - &m)?)?)?;
        }
        linear(&h, &self.w("out"), Some(&self.w("out_b")))
    }

    fn caser(&self, emb: Tensor, dr: &mut Option<&mut Dropout>) -> Result<Tensor> {
        let (b, l, d) = emb.dims3()?;
        let mut feats = Vec::with_capacity(l + 1);
        for h in 1..=l {
            // Windows of h consecutive rows, flattened: [B, L−h+1, h·d].
            let win = Tensor::cat(
                &(0..h)
                    .map(|o| emb.narrow(1, o, l - h + 1))
                    .collect::<candle_core::Result<Vec<_>>>()?,
                2,
            )?;
            let c = linear(
                &win,
                &self.w(&format!("h{h}")),
                Some(&self.w(&format!("h{h}_b"))),
            )?
            .relu()?;
            feats.push(c.max(1)?);
        }
        // Vertical filters: weighted sums of the L rows, [B, n_v, d] flattened.
        let v = emb
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * d, l))?
            .matmul(&self.w("v").t()?)?
            .reshape((b, d, self.shape.caser_v))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, self.shape.caser_v * d))?;
        feats.push(v);
        let all = maybe_drop(dr, Tensor::cat(&feats, 1)?)?;
        Ok(linear(&all, &self.w("fc"), Some(&self.w("fc_b")))?.relu()?)
    }

    /// Scores of every item row for each history, [B, rows], padding row at −∞.
    pub fn score_all(&self, histories: &[Vec<u32>]) -> Result<Tensor> {
        let n = self.shape.num_rows;
        let s = if self.shape.kind == Kind::Pop {
            self.w("pop").unsqueeze(0)?.repeat((histories.len(), 1))?
        } else {
            let rep = self.represent(histories)?;
            self.score_reps(&rep)?
        };
        let mut pad = vec![0f32; n];
        pad[0] = f32::NEG_INFINITY;
        Ok(s.broadcast_add(&Tensor::from_vec(pad, n, &self.device)?)?)
    }

    /// Every item row's score for user representations [B, d]: [B, rows] (the padding row included).
    pub fn score_reps(&self, rep: &Tensor) -> Result<Tensor> {
        Ok(rep.matmul(&self.item_table().t()?)?)
    }

    /// Scores of given (history, item) pairs: [B].
    pub fn score_pairs(&self, rep: &Tensor, items: &[u32]) -> Result<Tensor> {
        let e = self
            .item_table()
            .index_select(&Tensor::from_slice(items, items.len(), &self.device)?, 0)?;
        Ok((rep * e)?.sum(1)?)
    }
}
