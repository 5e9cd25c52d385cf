//! minirec-model: decoder LLMs on candle for recommendation — loading (HF safetensors, GGUF), a trainable
//! forward pass, LoRA, a KV cache shared across a prompt's beams, and trie-constrained beam search and sampling.

pub mod block;
pub mod config;
pub mod decode;
pub mod error;
pub mod kernels;
pub mod layers;
pub mod load;
pub mod lora;
pub mod model;
pub mod profile;
mod recompute;
pub mod tokenizer;
pub mod weights;

pub use config::{Activation, Family, ModelConfig};
pub use error::{ModelError, Result};
pub use model::{Decoder, GenCache, PromptCache};
pub use tokenizer::TextTokenizer;
pub use weights::Weights;
