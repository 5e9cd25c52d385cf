//! CSV reading with named columns, line numbers and the bad-row policy.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result, SkipReason};
use crate::input::{Input, InputFinisher, InputRecord, Skips};

pub struct CsvRows {
    path: PathBuf,
    reader: csv::Reader<Box<dyn BufRead + Send>>,
    record: csv::ByteRecord,
    finisher: InputFinisher,
    headers: Vec<String>,
}

impl CsvRows {
    pub fn open(path: &Path, delimiter: u8, show_progress: bool) -> Result<Self> {
        let (reader, finisher) = Input::open(path, show_progress)?.into_parts();
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(true)
            .flexible(false)
            .from_reader(reader);
        let headers = reader
            .byte_headers()
            .map_err(|e| csv_fatal(path, e))?
            .iter()
            .map(|h| {
                String::from_utf8_lossy(h)
                    .trim()
                    .trim_start_matches('\u{feff}')
                    .to_string()
            })
            .collect::<Vec<_>>();
        Ok(CsvRows {
            path: path.to_path_buf(),
            reader,
            record: csv::ByteRecord::new(),
            finisher,
            headers,
        })
    }

    /// The index of the first column named by one of `names`.
    pub fn column(&self, names: &[&str]) -> Result<usize> {
        names
            .iter()
            .find_map(|n| self.headers.iter().position(|h| h == n))
            .ok_or_else(|| {
                DataError::file(
                    &self.path,
                    format!(
                        "missing column {} (header has: {})",
                        names.join(" or "),
                        self.headers.join(", ")
                    ),
                )
            })
    }

    pub fn optional_column(&self, names: &[&str]) -> Option<usize> {
        names
            .iter()
            .find_map(|n| self.headers.iter().position(|h| h == n))
    }

    /// The next record and its line; malformed rows go through `skips`. `Ok(None)` at the end.
    pub fn next(&mut self, skips: &mut Skips) -> Result<Option<(u64, Row<'_>)>> {
        loop {
            match self.reader.read_byte_record(&mut self.record) {
                Ok(false) => return Ok(None),
                Ok(true) => {
                    let line = self.record.position().map(|p| p.line()).unwrap_or(0);
                    return Ok(Some((
                        line,
                        Row {
                            record: &self.record,
                        },
                    )));
                }
                Err(e) => match e.kind() {
                    csv::ErrorKind::UnequalLengths {
                        pos,
                        expected_len,
                        len,
                    } => {
                        let line = pos.as_ref().map(|p| p.line()).unwrap_or(0);
                        skips.bad_row(
                            &self.path,
                            line,
                            SkipReason::MalformedRow,
                            format!("{len} fields where the header has {expected_len}"),
                        )?;
                    }
                    csv::ErrorKind::Io(_) => return Err(csv_fatal(&self.path, e)),
                    _ => {
                        let line = e.position().map(|p| p.line()).unwrap_or(0);
                        skips.bad_row(&self.path, line, SkipReason::MalformedRow, e.to_string())?;
                    }
                },
            }
        }
    }

    pub fn finish(self) -> InputRecord {
        self.finisher.finish()
    }
}

fn csv_fatal(path: &Path, e: csv::Error) -> DataError {
    let line = e.position().map(|p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(err) => DataError::Io {
            path: path.to_path_buf(),
            line,
            err,
        },
        other => DataError::file(path, format!("{other:?}")),
    }
}

/// One CSV record with access to its fields as text.
pub struct Row<'a> {
    record: &'a csv::ByteRecord,
}

impl<'a> Row<'a> {
    /// A field as UTF-8 text; a missing or non-UTF-8 field is a row error.
    pub fn field(
        &self,
        col: usize,
        name: &str,
    ) -> std::result::Result<&'a str, (SkipReason, String)> {
        let raw = self
            .record
            .get(col)
            .ok_or((SkipReason::MissingField, format!("no field {name:?}")))?;
        std::str::from_utf8(raw).map_err(|e| {
            (
                SkipReason::MalformedRow,
                format!("field {name:?} is not UTF-8: {e}"),
            )
        })
    }

    /// A non-empty field (trimmed).
    pub fn required(
        &self,
        col: usize,
        name: &str,
    ) -> std::result::Result<&'a str, (SkipReason, String)> {
        let v = self.field(col, name)?.trim();
        if v.is_empty() {
            return Err((SkipReason::MissingField, format!("field {name:?} is empty")));
        }
        Ok(v)
    }
}

/// Parses an integer timestamp; a float with an integral value (`1495152000.0`) is accepted.
pub fn parse_time(s: &str) -> std::result::Result<i64, (SkipReason, String)> {
    let s = s.trim();
    if let Ok(v) = s.parse::<i64>() {
        return Ok(v);
    }
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(f as i64),
        _ => Err((
            SkipReason::BadTimestamp,
            format!("timestamp {s:?} is not an integer"),
        )),
    }
}
