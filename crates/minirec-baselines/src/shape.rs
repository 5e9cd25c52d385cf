//! What a classic recommender is: its kind and sizes, and for SASRec the choices that distinguish the
//! original paper's model (pre-norm, scaled embeddings, ReLU) from RecBole's (post-norm, GELU, N(0, 0.02)).
//! `ModelShape::default()` is the shape runs were saved with before these choices existed, so an older
//! `baseline.json` without them loads as the model it was.

use serde::{Deserialize, Serialize};

use crate::error::{BaselineError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Sasrec,
    Gru4rec,
    Caser,
    /// The most frequent training targets, the same list for every history.
    Pop,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Sasrec => "sasrec",
            Kind::Gru4rec => "gru4rec",
            Kind::Caser => "caser",
            Kind::Pop => "pop",
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
            "pop" => Ok(Kind::Pop),
            _ => Err(BaselineError::Invalid(format!(
                "unknown baseline {s:?} (sasrec, gru4rec, caser, pop)"
            ))),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where SASRec's layer norms sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// x + f(LN(x)), a final LN (Kang & McAuley's code).
    Pre,
    /// LN(x + f(x)), an LN on the input embeddings (BERT, RecBole).
    Post,
}

impl std::str::FromStr for Norm {
    type Err = BaselineError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "pre" => Ok(Norm::Pre),
            "post" => Ok(Norm::Post),
            _ => Err(BaselineError::Invalid(format!(
                "unknown norm placement {s:?} (pre, post)"
            ))),
        }
    }
}

/// SASRec's feed-forward activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Act {
    Relu,
    /// The exact (erf) GELU, as RecBole's.
    Gelu,
}

impl std::str::FromStr for Act {
    type Err = BaselineError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "relu" => Ok(Act::Relu),
            "gelu" => Ok(Act::Gelu),
            _ => Err(BaselineError::Invalid(format!(
                "unknown activation {s:?} (relu, gelu)"
            ))),
        }
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
    /// SASRec feed-forward width; 0 means `dim`.
    pub ffn: usize,
    pub norm: Norm,
    pub act: Act,
    /// Multiply item embeddings by √dim before adding positions (Kang & McAuley).
    pub emb_scale: bool,
    /// Dropout probability in training (embeddings, attention weights, block outputs; GRU4Rec's inputs;
    /// Caser's features), drawn from a seeded source so runs reproduce.
    pub dropout: f32,
    /// Standard deviation of the item and position embeddings and of SASRec's weights; 0 means 1/√dim.
    pub init_std: f32,
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
            ffn: 0,
            norm: Norm::Pre,
            act: Act::Relu,
            emb_scale: true,
            dropout: 0.0,
            init_std: 0.0,
            caser_h: 16,
            caser_v: 4,
        }
    }
}

impl ModelShape {
    pub fn ffn_width(&self) -> usize {
        if self.ffn == 0 {
            self.dim
        } else {
            self.ffn
        }
    }

    pub fn weight_std(&self) -> f32 {
        if self.init_std > 0.0 {
            self.init_std
        } else {
            1.0 / (self.dim as f32).sqrt()
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.num_rows < 2 || self.dim == 0 || self.max_len == 0 {
            return Err(BaselineError::Invalid(
                "a model needs at least one item, a dimension and a history length".into(),
            ));
        }
        if self.kind == Kind::Sasrec && (self.heads == 0 || !self.dim.is_multiple_of(self.heads)) {
            return Err(BaselineError::Invalid(format!(
                "SASRec: {} heads do not divide dimension {}",
                self.heads, self.dim
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(BaselineError::Invalid(format!(
                "dropout {} is outside [0, 1)",
                self.dropout
            )));
        }
        if !self.init_std.is_finite() || self.init_std < 0.0 {
            return Err(BaselineError::Invalid(format!(
                "init std {} is not a non-negative number",
                self.init_std
            )));
        }
        Ok(())
    }
}
