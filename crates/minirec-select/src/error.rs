use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error(transparent)]
    Model(#[from] minirec_model::ModelError),
    #[error(transparent)]
    Train(#[from] minirec_train::TrainError),
    #[error(transparent)]
    Data(#[from] minirec_data::DataError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{}:{line}: {msg}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("{0}")]
    Invalid(String),
}

impl SelectError {
    pub fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        SelectError::Io {
            path: path.into(),
            err,
        }
    }
}

pub type Result<T, E = SelectError> = std::result::Result<T, E>;
