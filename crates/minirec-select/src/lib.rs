//! minirec-select: MiniRec data selection (papers/minirec.txt §4, Algorithm 1) and the baselines Random,
//! KMeans, GraNd, EL2N and DEALRec, all writing the same subset file (JSONL in training order).

pub mod curriculum;
pub mod error;
pub mod features;
pub mod goracs;
pub mod greedy;
pub mod kmeans;
pub mod learnability;
pub mod matrix;
pub mod methods;
pub mod pipeline;
pub mod proxy;
pub mod subset;
pub mod transport;

pub use error::{Result, SelectError};
pub use matrix::Matrix;
pub use methods::{Method, MiniRecConfig};
pub use subset::{read_subset, write_subset, SubsetRow};

pub(crate) use minirec_data::progress::bar_if as bar;
