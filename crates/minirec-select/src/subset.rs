//! The subset file: JSONL in training order, one selected sample per line with every score it was chosen by.

use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, SelectError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubsetRow {
    /// The sample's id in the train split.
    pub sample_id: u64,
    /// Position in training order, from 0.
    pub order: usize,
    /// When the selector chose it, from 0 (greedy step, centroid claim, score rank).
    pub pick: usize,
    /// Curriculum group (0 when there is no curriculum).
    pub group: usize,
    pub method: String,
    /// Proxy mean reward r̄ (Eq. 6).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub r_bar: Option<f32>,
    /// Normalised learnability L (Eq. 5, 7).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub l: Option<f32>,
    /// Normalised representativeness R (Eq. 12).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub r: Option<f32>,
    /// Normalised diversity D at pick time (Eq. 13).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub d: Option<f32>,
    /// V = D·(L + λR) at pick time (Eq. 14).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub v: Option<f32>,
    /// A baseline's own score (GraNd norm, EL2N norm, DEALRec score, k-means distance²).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub score: Option<f32>,
}

impl SubsetRow {
    pub fn new(sample_id: u64, pick: usize, method: &str) -> Self {
        SubsetRow {
            sample_id,
            order: 0,
            pick,
            group: 0,
            method: method.to_string(),
            r_bar: None,
            l: None,
            r: None,
            d: None,
            v: None,
            score: None,
        }
    }
}

/// Writes rows atomically (temporary file, then rename), numbering `order` from 0.
pub fn write_subset(path: &Path, rows: &mut [SubsetRow]) -> Result<()> {
    let mut text = Vec::new();
    for (i, r) in rows.iter_mut().enumerate() {
        r.order = i;
        serde_json::to_writer(&mut text, r).map_err(|e| SelectError::Invalid(e.to_string()))?;
        text.push(b'\n');
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| SelectError::io(dir, e))?;
    }
    let tmp = path.with_extension("jsonl.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| SelectError::io(&tmp, e))?;
    f.write_all(&text).map_err(|e| SelectError::io(&tmp, e))?;
    f.sync_all().map_err(|e| SelectError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| SelectError::io(path, e))
}

/// Reads a subset file; each line needs at least `sample_id`. Errors name the line.
pub fn read_subset(path: &Path) -> Result<Vec<u64>> {
    let f = std::fs::File::open(path).map_err(|e| SelectError::io(path, e))?;
    let mut ids = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| SelectError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let err = |msg: String| SelectError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            msg,
        };
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| err(format!("not JSON: {e}")))?;
        let id = v
            .get("sample_id")
            .and_then(|x| x.as_u64())
            .ok_or_else(|| err("no unsigned integer `sample_id`".into()))?;
        if !seen.insert(id) {
            return Err(err(format!("sample_id {id} appears twice")));
        }
        ids.push(id);
    }
    if ids.is_empty() {
        return Err(SelectError::Invalid(format!(
            "{}: the subset is empty",
            path.display()
        )));
    }
    Ok(ids)
}
