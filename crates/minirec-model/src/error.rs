use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
    #[error("missing tensor {name:?} in {source_desc}")]
    MissingTensor { name: String, source_desc: String },
    #[error("unsupported architecture {0:?} (supported: llama, qwen2, gemma2)")]
    UnsupportedArch(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{0}")]
    Invalid(String),
}

impl ModelError {
    pub fn file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        ModelError::File {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// Reads and parses a JSON file; an unreadable or invalid file is an error naming it.
pub fn read_json_file(path: &std::path::Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|err| ModelError::Io {
        path: path.to_path_buf(),
        err,
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::file(path, format!("invalid JSON: {e}")))
}
