//! Options shared by every `prepare` format.

use std::path::PathBuf;

use serde::Serialize;

use crate::input::BadRowPolicy;
use crate::prompt::PromptTemplate;
use crate::protocol::ProtocolConfig;

#[derive(Debug, Clone, Serialize)]
pub struct PrepareOptions {
    pub out: PathBuf,
    pub on_bad_row: BadRowPolicy,
    /// Replace an existing output directory.
    pub force: bool,
    pub prompt: PromptTemplate,
    pub protocol: ProtocolConfig,
    /// d3 without a validation file: hold back every k-th training sample as the validation split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_out_every: Option<usize>,
    #[serde(skip)]
    pub progress: bool,
}

impl PrepareOptions {
    pub fn new(out: impl Into<PathBuf>) -> Self {
        PrepareOptions {
            out: out.into(),
            on_bad_row: BadRowPolicy::Error,
            force: false,
            prompt: PromptTemplate::default(),
            protocol: ProtocolConfig::default(),
            hold_out_every: None,
            progress: false,
        }
    }
}

/// Turns a row-level `(reason, message)` into a policy decision.
macro_rules! row_try {
    ($skips:expr, $path:expr, $line:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err((reason, msg)) => {
                $skips.bad_row($path, $line, reason, msg)?;
                continue;
            }
        }
    };
}
pub(crate) use row_try;
