use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] minirec_model::ModelError),
    #[error(transparent)]
    Data(#[from] minirec_data::DataError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
    /// A NaN or infinite loss: the step, and the last checkpoint that is still good.
    #[error("non-finite loss {loss} at step {step}; the last good checkpoint is {last_good}")]
    NonFinite {
        step: usize,
        loss: f32,
        last_good: String,
    },
    /// Stopped on request after `step` (`SftConfig::interrupt_after`), as a crash would.
    #[error("interrupted after step {step}")]
    Interrupted { step: usize },
    #[error("{0}")]
    Invalid(String),
    /// Too little free disk for what a run is about to write (`disk`): the folder, what, and the bytes.
    #[error(
        "{what}: {} has {} free and needs {}; free space there (or point the run elsewhere) and run the same \
         command again (it resumes from its last checkpoint, if it wrote one)",
        dir.display(),
        crate::disk::human_bytes(*free),
        crate::disk::human_bytes(*need)
    )]
    NoRoom {
        dir: PathBuf,
        what: String,
        need: u64,
        free: u64,
    },
}

impl TrainError {
    pub fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            err,
        }
    }
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
