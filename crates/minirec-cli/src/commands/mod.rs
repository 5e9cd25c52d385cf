pub mod demo;
pub mod eval;
pub mod pending;
pub mod prepare;
