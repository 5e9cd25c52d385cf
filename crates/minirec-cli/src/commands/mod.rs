//! One module a command: its arguments, and the call into `minirec_pipeline` (or a library crate) that does
//! the work.

pub mod baseline;
pub mod bench;
pub mod bench_goracs;
pub mod bench_select;
pub mod compare;
pub mod convert;
pub mod demo;
pub mod eval;
pub mod prepare;
pub mod proactive;
pub mod recommend;
pub mod rl;
pub mod run;
pub mod select;
pub mod serve;
pub mod sft;
