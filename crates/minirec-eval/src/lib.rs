//! minirec-eval: ranking metrics under the all-ranking protocol, and scoring of prediction files.

pub mod compare;
pub mod metrics;
pub mod movement;
pub mod predictions;
pub mod subset;
pub mod targets;

pub use compare::{
    bootstrap_interval, intervals_json, intervals_table, mean_intervals, paired_bootstrap,
    paired_mean_diff, Comparison, MetricDiff, MetricInterval,
};
pub use metrics::{parse_ks, MetricsReport, RankingMetrics};
pub use movement::{movement, CutoffMovement, Movement};
pub use predictions::{read_predictions, score_predictions_file, Prediction};
pub use subset::seeded_subset;
pub use targets::{target_shares, TargetShare, TargetShares};
