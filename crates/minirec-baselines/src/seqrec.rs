//! Three ID-based sequential recommenders sharing one item-embedding table (row 0 is padding): each turns a
//! left-padded history of item rows [B, L] into a user representation [B, d]; an item's score is its
//! embedding's dot product with it.
//! - SASRec (Kang & McAuley 2018): learned positions, pre-norm causal self-attention blocks, last position;
//! - GRU4Rec (Hidasi et al. 2016): a GRU over the history, last state, projected;
//! - Caser (Tang & Wang 2018): horizontal convolutions of every height 1..L (max-pooled over time) and
//!   vertical convolutions across the L positions, concatenated and projected.
//!
//! Dropout is not applied: candle's CPU random source cannot be seeded and runs must be reproducible.

use candle_core::{DType, Device, Tensor, D};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{BaselineError, Result};
use crate::nn::{layer_norm, linear, sigmoid, Params};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Sasrec,
    Gru4rec,
    Caser,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Sasrec => "sasrec",
            Kind::Gru4rec => "gru4rec",
            Kind::Caser => "caser",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = BaselineError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "sasrec" => Ok(Kind::Sasrec),
            "gru4rec" => Ok(Kind::Gru4rec),
            "caser" => Ok(Kind::Caser),
            _ => Err(BaselineError::Invalid(format!(
                "unknown baseline {s:?} (sasrec, gru4rec, caser)"
            ))),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelShape {
    pub kind: Kind,
    /// Items + 1 (row 0 pads).
    pub num_rows: usize,
    pub dim: usize,
    pub max_len: usize,
    /// SASRec blocks.
    pub layers: usize,
    /// SASRec attention heads.
    pub heads: usize,
    /// Caser filters per height (horizontal) and vertical filters.
    pub caser_h: usize,
    pub caser_v: usize,
}

impl Default for ModelShape {
    fn default() -> Self {
        ModelShape {
            kind: Kind::Sasrec,
            num_rows: 1,
            dim: 64,
            max_len: 10,
            layers: 2,
            heads: 1,
            caser_h: 16,
            caser_v: 4,
        }
    }
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
        if shape.num_rows < 2 || shape.dim == 0 || shape.max_len == 0 {
            return Err(BaselineError::Invalid(
                "a model needs at least one item, a dimension and a history length".into(),
            ));
        }
        if shape.kind == Kind::Sasrec && (shape.heads == 0 || shape.dim % shape.heads != 0) {
            return Err(BaselineError::Invalid(format!(
                "SASRec: {} heads do not divide dimension {}",
                shape.heads, shape.dim
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut p = Params::default();
        let (d, l, dev) = (shape.dim, shape.max_len, device);
        let std = 1.0 / (d as f32).sqrt();
        match item_init {
            Some(t) => {
                if t.dims() != [shape.num_rows, d] {
                    return Err(BaselineError::Invalid(format!(
                        "item initialisation has shape {:?}, expected [{}, {d}]",
                        t.dims(),
                        shape.num_rows
                    )));
                }
                p.add("item_emb", t.to_dtype(DType::F32)?.to_device(dev)?)?;
            }
            None => {
                p.normal("item_emb", &[shape.num_rows, d], std, &mut rng, dev)?;
            }
        }
        match shape.kind {
            Kind::Sasrec => {
                p.normal("pos_emb", &[l, d], std, &mut rng, dev)?;
                for b in 0..shape.layers {
                    for w in ["q", "k", "v", "o"] {
                        p.normal(&format!("b{b}.{w}"), &[d, d], std, &mut rng, dev)?;
                    }
                    p.normal(&format!("b{b}.ff1"), &[d, d], std, &mut rng, dev)?;
                    p.constant(&format!("b{b}.ff1_b"), &[d], 0.0, dev)?;
                    p.normal(&format!("b{b}.ff2"), &[d, d], std, &mut rng, dev)?;
                    p.constant(&format!("b{b}.ff2_b"), &[d], 0.0, dev)?;
                    for n in ["ln1", "ln2"] {
                        p.constant(&format!("b{b}.{n}_w"), &[d], 1.0, dev)?;
                        p.constant(&format!("b{b}.{n}_b"), &[d], 0.0, dev)?;
                    }
                }
                p.constant("ln_f_w", &[d], 1.0, dev)?;
                p.constant("ln_f_b", &[d], 0.0, dev)?;
            }
            Kind::Gru4rec => {
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

    /// User representations [B, d].
    pub fn represent(&self, histories: &[Vec<u32>]) -> Result<Tensor> {
        if histories.is_empty() {
            return Err(BaselineError::Invalid("empty batch".into()));
        }
        let (rows, mask, mask_host) = self.batch_rows(histories)?;
        let (b, l, d) = (histories.len(), self.shape.max_len, self.shape.dim);
        let emb = self
            .item_table()
            .index_select(&rows.flatten_all()?, 0)?
            .reshape((b, l, d))?;
        let m3 = mask.unsqueeze(2)?;
        match self.shape.kind {
            Kind::Sasrec => self.sasrec(emb, &mask_host, &m3),
            Kind::Gru4rec => self.gru(emb, &m3),
            Kind::Caser => self.caser(emb.broadcast_mul(&m3)?),
        }
    }

    fn sasrec(&self, emb: Tensor, mv: &[f32], m3: &Tensor) -> Result<Tensor> {
        let (b, l, d) = emb.dims3()?;
        let nh = self.shape.heads;
        let hd = d / nh;
        let mut x =
            ((emb * (d as f64).sqrt())?.broadcast_add(&self.w("pos_emb"))?).broadcast_mul(m3)?;
        // Attention bias: causal, and no attention to padding keys (a fully padded query row still sees itself).
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
        let bias = Tensor::from_vec(bias, (b, 1, l, l), &self.device)?;
        for blk in 0..self.shape.layers {
            let w = |n: &str| self.w(&format!("b{blk}.{n}"));
            let h = layer_norm(&x, &w("ln1_w"), &w("ln1_b"), 1e-8)?;
            let split = |t: Tensor| -> Result<Tensor> {
                Ok(t.reshape((b, l, nh, hd))?.transpose(1, 2)?.contiguous()?)
            };
            let q = split(linear(&h, &w("q"), None)?)?;
            let k = split(linear(&h, &w("k"), None)?)?;
            let v = split(linear(&h, &w("v"), None)?)?;
            let att = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(&bias)?;
            let att = candle_nn::ops::softmax(&att, D::Minus1)?;
            let o = att
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b, l, d))?;
            x = (x + linear(&o, &w("o"), None)?)?;
            let h = layer_norm(&x, &w("ln2_w"), &w("ln2_b"), 1e-8)?;
            let ff = linear(
                &linear(&h, &w("ff1"), Some(&w("ff1_b")))?.relu()?,
                &w("ff2"),
                Some(&w("ff2_b")),
            )?;
            x = (x + ff)?.broadcast_mul(m3)?;
        }
        let x = layer_norm(&x, &self.w("ln_f_w"), &self.w("ln_f_b"), 1e-8)?;
        Ok(x.narrow(1, l - 1, 1)?.squeeze(1)?)
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

    fn caser(&self, emb: Tensor) -> Result<Tensor> {
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
        let all = Tensor::cat(&feats, 1)?;
        Ok(linear(&all, &self.w("fc"), Some(&self.w("fc_b")))?.relu()?)
    }

    /// Scores of every item row for each history, [B, rows], padding row at −∞.
    pub fn score_all(&self, histories: &[Vec<u32>]) -> Result<Tensor> {
        let rep = self.represent(histories)?;
        let s = rep.matmul(&self.item_table().t()?)?;
        let n = self.shape.num_rows;
        let mut pad = vec![0f32; n];
        pad[0] = f32::NEG_INFINITY;
        Ok(s.broadcast_add(&Tensor::from_vec(pad, n, &self.device)?)?)
    }

    /// Scores of given (history, item) pairs: [B].
    pub fn score_pairs(&self, rep: &Tensor, items: &[u32]) -> Result<Tensor> {
        let e = self
            .item_table()
            .index_select(&Tensor::from_slice(items, items.len(), &self.device)?, 0)?;
        Ok((rep * e)?.sum(1)?)
    }
}
