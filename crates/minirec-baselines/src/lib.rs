//! minirec-baselines: classic ID-based sequential recommenders (SASRec, GRU4Rec, Caser) trained and evaluated
//! on the same prepared splits and with the same title-level metrics as the LLM, a MiniLM sentence encoder for
//! text-initialised item embeddings ("*" variants), and DEALRec's surrogate influence scores.

pub mod error;
pub mod influence;
pub mod minilm;
pub mod nn;
pub mod pca;
pub mod seqrec;
pub mod shape;
pub mod train;

pub use error::{BaselineError, Result};
pub use seqrec::SeqRec;
pub use shape::{Act, Kind, ModelShape, Norm};
pub use train::{TrainConfig, TrainSummary};

pub(crate) use minirec_data::progress::bar_if as bar;
