pub mod bench;
pub mod convert;
pub mod demo;
pub mod eval;
pub mod pending;
pub mod prepare;
pub mod recommend;
pub mod sft;
