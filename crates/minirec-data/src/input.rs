//! Opening input files: gzip detected by magic bytes, a SHA-256 of the raw bytes taken while streaming
//! (for the manifest), a byte-based progress bar, and line reading that keeps line numbers.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{DataError, Result, SkipReason};

/// What the manifest records of one input file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InputRecord {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    pub gzip: bool,
}

#[derive(Default)]
struct Tally {
    hasher: Sha256,
    bytes: u64,
}

/// Counts and hashes every raw byte the decoder pulls from the file.
struct TallyReader {
    inner: File,
    tally: Arc<Mutex<Tally>>,
    progress: ProgressBar,
}

impl Read for TallyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut t = self.tally.lock().expect("tally lock poisoned");
        t.hasher.update(&buf[..n]);
        t.bytes += n as u64;
        self.progress.inc(n as u64);
        Ok(n)
    }
}

/// An opened input: a buffered reader of the decoded text, and a handle that yields the file's record
/// once the reader has been drained.
pub struct Input {
    pub path: PathBuf,
    pub reader: Box<dyn BufRead + Send>,
    pub gzip: bool,
    tally: Arc<Mutex<Tally>>,
    progress: ProgressBar,
}

impl Input {
    /// Opens `path`, transparently un-gzipping it when it starts with the gzip magic bytes.
    pub fn open(path: &Path, show_progress: bool) -> Result<Input> {
        let mut file = File::open(path).map_err(|e| DataError::io(path, e))?;
        let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
        if len == 0 {
            return Err(DataError::file(path, "file is empty"));
        }
        let mut magic = [0u8; 2];
        let got = read_up_to(&mut file, &mut magic).map_err(|e| DataError::io(path, e))?;
        let gzip = got == 2 && magic == [0x1f, 0x8b];
        // Reopen rather than seek so the hash covers the whole file through one code path.
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        let progress = if show_progress {
            let pb = ProgressBar::new(len);
            pb.set_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            pb.set_message(
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            pb
        } else {
            ProgressBar::hidden()
        };
        let tally = Arc::new(Mutex::new(Tally::default()));
        let raw = TallyReader {
            inner: file,
            tally: tally.clone(),
            progress: progress.clone(),
        };
        let reader: Box<dyn BufRead + Send> = if gzip {
            Box::new(BufReader::with_capacity(
                1 << 16,
                flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 16, raw)),
            ))
        } else {
            Box::new(BufReader::with_capacity(1 << 16, raw))
        };
        Ok(Input {
            path: path.to_path_buf(),
            reader,
            gzip,
            tally,
            progress,
        })
    }

    /// Splits into the reader and a finisher, for readers (csv) that take ownership.
    pub fn into_parts(self) -> (Box<dyn BufRead + Send>, InputFinisher) {
        (
            self.reader,
            InputFinisher {
                path: self.path,
                gzip: self.gzip,
                tally: self.tally,
                progress: self.progress,
            },
        )
    }

    /// Iterates over lines as raw bytes with 1-based line numbers, without the line terminator.
    pub fn lines(self) -> (LineReader, InputFinisher) {
        let (reader, fin) = self.into_parts();
        (
            LineReader {
                path: fin.path.clone(),
                reader,
                line: 0,
                buf: Vec::new(),
            },
            fin,
        )
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

pub struct InputFinisher {
    path: PathBuf,
    gzip: bool,
    tally: Arc<Mutex<Tally>>,
    progress: ProgressBar,
}

impl InputFinisher {
    pub fn finish(self) -> InputRecord {
        self.progress.finish_and_clear();
        let t = std::mem::take(&mut *self.tally.lock().expect("tally lock poisoned"));
        InputRecord {
            path: self.path.display().to_string(),
            bytes: t.bytes,
            sha256: format!("{:x}", t.hasher.finalize()),
            gzip: self.gzip,
        }
    }
}

pub struct LineReader {
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    line: u64,
    buf: Vec<u8>,
}

impl LineReader {
    /// The next line (without `\n` / `\r\n`) and its number; `Ok(None)` at the end. A read error (a truncated
    /// gzip stream included) is fatal and names the line it stopped at.
    pub fn next_line(&mut self) -> Result<Option<(u64, &[u8])>> {
        self.buf.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .map_err(|err| DataError::Io {
                path: self.path.clone(),
                line: Some(self.line + 1),
                err,
            })?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        let mut end = self.buf.len();
        if end > 0 && self.buf[end - 1] == b'\n' {
            end -= 1;
        }
        if end > 0 && self.buf[end - 1] == b'\r' {
            end -= 1;
        }
        Ok(Some((self.line, &self.buf[..end])))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What to do with an unusable row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BadRowPolicy {
    /// Stop with an error naming the file and line (the default: nothing is dropped silently).
    #[default]
    Error,
    /// Skip it, count it under its reason in `stats.json`, and log the first few.
    Skip,
}

impl std::str::FromStr for BadRowPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "error" => Ok(BadRowPolicy::Error),
            "skip" => Ok(BadRowPolicy::Skip),
            other => Err(format!(
                "unknown bad-row policy {other:?} (expected error or skip)"
            )),
        }
    }
}

/// Counts of skipped rows by reason, applying the bad-row policy.
#[derive(Debug, Default, Clone)]
pub struct Skips {
    pub policy: BadRowPolicy,
    counts: BTreeMap<&'static str, u64>,
    logged: u64,
}

const LOG_FIRST: u64 = 5;

impl Skips {
    pub fn new(policy: BadRowPolicy) -> Self {
        Skips {
            policy,
            ..Default::default()
        }
    }

    /// Under `Error`, returns the row error; under `Skip`, counts it and carries on.
    pub fn bad_row(
        &mut self,
        path: &Path,
        line: u64,
        reason: SkipReason,
        msg: impl Into<String>,
    ) -> Result<()> {
        let err = DataError::Row {
            path: path.to_path_buf(),
            line,
            reason,
            msg: msg.into(),
        };
        match self.policy {
            BadRowPolicy::Error => Err(err),
            BadRowPolicy::Skip => {
                if self.logged < LOG_FIRST {
                    tracing::warn!("skipped {err}");
                    self.logged += 1;
                }
                *self.counts.entry(reason.as_str()).or_default() += 1;
                Ok(())
            }
        }
    }

    /// Counts rows dropped for a reason that is not bad input (kept apart from the policy).
    pub fn count(&mut self, reason: SkipReason, n: u64) {
        if n > 0 {
            *self.counts.entry(reason.as_str()).or_default() += n;
        }
    }

    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect()
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// Decodes a line as UTF-8, reporting the line on failure.
pub fn utf8<'a>(path: &Path, line: u64, bytes: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|e| DataError::Row {
        path: path.to_path_buf(),
        line,
        reason: SkipReason::MalformedRow,
        msg: format!("not UTF-8: {e}"),
    })
}
