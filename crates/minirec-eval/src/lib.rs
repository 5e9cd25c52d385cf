//! minirec-eval: ranking metrics under the all-ranking protocol, and scoring of prediction files.

pub mod metrics;
pub mod predictions;

pub use metrics::{parse_ks, MetricsReport, RankingMetrics};
pub use predictions::{score_predictions_file, Prediction};
