use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error(transparent)]
    Train(#[from] minirec_train::TrainError),
    #[error(transparent)]
    Data(#[from] minirec_data::DataError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
    #[error("{0}")]
    Invalid(String),
}

impl BaselineError {
    pub fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        BaselineError::Io {
            path: path.into(),
            err,
        }
    }
}

pub type Result<T, E = BaselineError> = std::result::Result<T, E>;
