//! `manifest.json`: what produced a run directory's files (stage, config, inputs' hashes, program version),
//! so a result can be traced back and a stage re-run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::input::InputRecord;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub program: String,
    pub version: String,
    pub stage: String,
    /// Seconds since the Unix epoch when the stage finished.
    pub created_unix: u64,
    pub config: serde_json::Value,
    pub inputs: Vec<InputRecord>,
    #[serde(default)]
    pub outputs: BTreeMap<String, serde_json::Value>,
}

impl Manifest {
    pub fn new(stage: &str, config: serde_json::Value, inputs: Vec<InputRecord>) -> Self {
        Manifest {
            program: "minirec".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            stage: stage.into(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            config,
            inputs,
            outputs: BTreeMap::new(),
        }
    }
}
