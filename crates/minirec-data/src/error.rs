use std::fmt;
use std::path::{Path, PathBuf};

/// Why an input row could not be used. The names are the keys of `stats.json`'s `skipped` map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    /// A CSV row with the wrong number of fields, or bytes that are not UTF-8.
    MalformedRow,
    /// A JSON Lines row that does not parse as JSON.
    BadJson,
    /// A Python-literal list column that does not parse.
    BadList,
    /// A required field is missing or empty.
    MissingField,
    /// A timestamp that is not an integer.
    BadTimestamp,
    /// A sample or interaction names an item id absent from the catalog.
    UnknownItem,
    /// History id and title lists of different lengths.
    LengthMismatch,
    /// An item id listed twice in a catalog file.
    DuplicateItem,
    /// A catalog line without a usable title.
    BadTitle,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::MalformedRow => "malformed_row",
            SkipReason::BadJson => "bad_json",
            SkipReason::BadList => "bad_list",
            SkipReason::MissingField => "missing_field",
            SkipReason::BadTimestamp => "bad_timestamp",
            SkipReason::UnknownItem => "unknown_item",
            SkipReason::LengthMismatch => "length_mismatch",
            SkipReason::DuplicateItem => "duplicate_item",
            SkipReason::BadTitle => "bad_title",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened, read or written (including a truncated gzip stream).
    #[error("{}{}: {err}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Io {
        path: PathBuf,
        line: Option<u64>,
        err: std::io::Error,
    },
    /// One row of an input file is unusable.
    #[error("{}:{line}: {reason}: {msg}", path.display())]
    Row {
        path: PathBuf,
        line: u64,
        reason: SkipReason,
        msg: String,
    },
    /// A whole file is unusable (empty, missing column, wrong format).
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
    /// A problem that belongs to no single file (empty catalog after filtering, bad argument).
    #[error("{0}")]
    Invalid(String),
}

impl DataError {
    pub fn io(path: impl AsRef<Path>, err: std::io::Error) -> Self {
        DataError::Io {
            path: path.as_ref().to_path_buf(),
            line: None,
            err,
        }
    }

    pub fn file(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        DataError::File {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;
