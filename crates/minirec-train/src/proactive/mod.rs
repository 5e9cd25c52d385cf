//! Proactive recommendation with ProRL (issue 15; spec: `shared/papers/related-methods.md` §1): given a history
//! and a target item, recommend a path of intermediate items that moves the user toward the target.
//!
//! - [`paths`]: the task's samples — (history, target) pairs with a supervised path, from a prepared dataset;
//! - [`reward`]: step metrics from a frozen sequential recommender acting as the user (IoI, IoR, CTR), and the
//!   step reward with or without Stepwise Reward Centering (SRC);
//! - [`advantage`]: Position-Specific Advantage Estimation (PSAE) and the naive whole-path estimator;
//! - [`policy`]: the LLM as path generator (prompt, trie-constrained path sampling and beam search);
//! - [`rl`]: the policy-gradient training with SRC and PSAE switches;
//! - [`eval`]: metric@K of beam paths under a separate evaluator model.

pub mod advantage;
pub mod eval;
pub mod paths;
pub mod policy;
pub mod reward;
pub mod rl;
