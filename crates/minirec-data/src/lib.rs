//! minirec-data: interaction logs to next-item samples.
//!
//! Loaders for the D3/BIGRec CSV format, raw Amazon Reviews JSON Lines and a generic CSV format; the papers'
//! protocol (title filter, k-core, chronological 8:1:1 split); the item catalog; the prompt template; the
//! item trie used by constrained decoding; and the prepared dataset directory every later stage reads.

pub mod amazon;
pub mod catalog;
mod csvrows;
pub mod d3;
pub mod dataset;
pub mod demo;
pub mod error;
pub mod fsutil;
pub mod generic;
pub mod input;
pub mod manifest;
pub mod prepare;
pub mod progress;
pub mod prompt;
pub mod protocol;
pub mod pylist;
pub mod trie;

pub use amazon::{prepare_amazon, AmazonFiles};
pub use catalog::Catalog;
pub use d3::{prepare_d3, D3Files};
pub use dataset::{PreparedDataset, Sample, Split, SplitCounts, Stats};
pub use error::{DataError, Result, SkipReason};
pub use generic::{prepare_generic, GenericFiles};
pub use input::BadRowPolicy;
pub use manifest::Manifest;
pub use prepare::PrepareOptions;
pub use prompt::PromptTemplate;
pub use protocol::ProtocolConfig;
pub use trie::{Inserted, NodeId, Trie, TrieCsr};
