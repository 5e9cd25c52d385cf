//! The prepared dataset directory: `catalog.jsonl`, `train.jsonl` / `valid.jsonl` / `test.jsonl`, `stats.json`,
//! `prompt.json` and `manifest.json`. Written into a temporary sibling directory and renamed into place at the
//! end, so an interrupted `prepare` never leaves a half-written dataset under the final name.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, CatalogEntry};
use crate::error::{DataError, Result};
use crate::fsutil::{read_json, write_json_atomic};
use crate::input::Input;
use crate::manifest::Manifest;
use crate::prompt::PromptTemplate;

/// One next-item sample: the user's previous items (oldest first) and the item that followed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    /// Position in its split, from 0.
    pub id: u64,
    pub user: String,
    /// External item ids, oldest first.
    pub history: Vec<String>,
    pub target: String,
    /// Time of the target interaction, in the input's unit.
    pub timestamp: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Valid,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Valid, Split::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }

    pub fn file_name(self) -> &'static str {
        match self {
            Split::Train => "train.jsonl",
            Split::Valid => "valid.jsonl",
            Split::Test => "test.jsonl",
        }
    }
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "train" => Ok(Split::Train),
            "valid" | "validation" => Ok(Split::Valid),
            "test" => Ok(Split::Test),
            other => Err(format!(
                "unknown split {other:?} (expected train, valid or test)"
            )),
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SplitCounts {
    pub train: u64,
    pub valid: u64,
    pub test: u64,
}

impl SplitCounts {
    pub fn get(&self, s: Split) -> u64 {
        match s {
            Split::Train => self.train,
            Split::Valid => self.valid,
            Split::Test => self.test,
        }
    }

    fn slot(&mut self, s: Split) -> &mut u64 {
        match s {
            Split::Train => &mut self.train,
            Split::Valid => &mut self.valid,
            Split::Test => &mut self.test,
        }
    }

    pub fn total(&self) -> u64 {
        self.train + self.valid + self.test
    }
}

/// `stats.json`: what the dataset holds and what was dropped on the way, and why.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub format: String,
    pub users: u64,
    pub item_ids: u64,
    pub distinct_titles: u64,
    /// Item ids whose title is shared with at least one other id.
    pub ids_with_shared_title: u64,
    pub samples: SplitCounts,
    /// Interactions kept after filtering (raw formats only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactions: Option<u64>,
    pub mean_history_len: f64,
    /// Unusable input rows, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Rows removed by the protocol (title filter, k-core), by rule.
    #[serde(default)]
    pub filtered: BTreeMap<String, u64>,
    /// Oddities that were kept (a title in a split file disagreeing with the catalog, say).
    #[serde(default)]
    pub warnings: BTreeMap<String, u64>,
}

/// Streams a prepared dataset to disk.
pub struct DatasetWriter {
    final_dir: PathBuf,
    tmp_dir: PathBuf,
    splits: [Option<BufWriter<File>>; 3],
    counts: SplitCounts,
    users: rustc_hash::FxHashSet<String>,
    history_total: u64,
    /// Every k-th training sample goes to the validation split instead (see [`DatasetWriter::hold_out_every`]).
    hold_out: Option<usize>,
    train_offered: usize,
}

impl DatasetWriter {
    /// Prepares to write into `dir`. An existing non-empty `dir` is refused unless `force`.
    pub fn create(dir: &Path, force: bool) -> Result<Self> {
        if dir.exists() {
            let non_empty = fs::read_dir(dir)
                .map_err(|e| DataError::io(dir, e))?
                .next()
                .is_some();
            if non_empty && !force {
                return Err(DataError::file(
                    dir,
                    "output directory exists and is not empty (pass --force to replace it)",
                ));
            }
        }
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
        let name = dir
            .file_name()
            .ok_or_else(|| DataError::file(dir, "not a directory name"))?
            .to_string_lossy()
            .into_owned();
        let tmp_dir = parent.join(format!(".{name}.partial-{}", std::process::id()));
        if tmp_dir.exists() {
            fs::remove_dir_all(&tmp_dir).map_err(|e| DataError::io(&tmp_dir, e))?;
        }
        fs::create_dir_all(&tmp_dir).map_err(|e| DataError::io(&tmp_dir, e))?;
        Ok(DatasetWriter {
            final_dir: dir.to_path_buf(),
            tmp_dir,
            splits: [None, None, None],
            counts: SplitCounts::default(),
            users: Default::default(),
            history_total: 0,
            hold_out: None,
            train_offered: 0,
        })
    }

    /// Sends the k-th, 2k-th, … training sample to the validation split: a held-back slice for early stopping
    /// when the source has no validation split.
    pub fn hold_out_every(&mut self, k: usize) {
        self.hold_out = Some(k.max(1));
    }

    fn split_writer(&mut self, split: Split) -> Result<&mut BufWriter<File>> {
        let slot = &mut self.splits[split as usize];
        if slot.is_none() {
            let path = self.tmp_dir.join(split.file_name());
            let f = File::create(&path).map_err(|e| DataError::io(&path, e))?;
            *slot = Some(BufWriter::with_capacity(1 << 16, f));
        }
        Ok(slot.as_mut().expect("just created"))
    }

    /// Appends a sample to a split; its `id` is set to its position in the split.
    pub fn write_sample(&mut self, split: Split, sample: &mut Sample) -> Result<()> {
        let split = match (split, self.hold_out) {
            (Split::Train, Some(k)) => {
                self.train_offered += 1;
                if self.train_offered.is_multiple_of(k) {
                    Split::Valid
                } else {
                    Split::Train
                }
            }
            _ => split,
        };
        sample.id = self.counts.get(split);
        let path = self.tmp_dir.join(split.file_name());
        let w = self.split_writer(split)?;
        serde_json::to_writer(&mut *w, &sample)
            .map_err(std::io::Error::from)
            .and_then(|_| w.write_all(b"\n"))
            .map_err(|e| DataError::io(&path, e))?;
        *self.counts.slot(split) += 1;
        self.history_total += sample.history.len() as u64;
        if !self.users.contains(&sample.user) {
            self.users.insert(sample.user.clone());
        }
        Ok(())
    }

    pub fn counts(&self) -> SplitCounts {
        self.counts
    }

    /// Writes the catalog, stats, prompt and manifest, then moves the dataset into place (replacing an
    /// older one only now that the new one is complete).
    pub fn finish(
        mut self,
        catalog: &Catalog,
        mut stats: Stats,
        prompt: &PromptTemplate,
        mut manifest: Manifest,
    ) -> Result<Stats> {
        if catalog.is_empty() {
            return Err(DataError::Invalid(
                "the catalog is empty: no item survived loading and filtering".into(),
            ));
        }
        for split in Split::ALL {
            // Every split file exists, possibly empty, so readers need no special case.
            let path = self.tmp_dir.join(split.file_name());
            let w = self.split_writer(split)?;
            w.flush().map_err(|e| DataError::io(&path, e))?;
        }
        self.splits = [None, None, None];
        let cat_path = self.tmp_dir.join("catalog.jsonl");
        crate::fsutil::write_jsonl_atomic(&cat_path, catalog.entries())?;

        stats.users = self.users.len() as u64;
        stats.item_ids = catalog.len() as u64;
        stats.distinct_titles = catalog.num_titles() as u64;
        stats.ids_with_shared_title = shared_title_ids(catalog);
        stats.samples = self.counts;
        let n = self.counts.total();
        stats.mean_history_len = if n == 0 {
            0.0
        } else {
            self.history_total as f64 / n as f64
        };
        write_json_atomic(&self.tmp_dir.join("stats.json"), &stats)?;
        write_json_atomic(&self.tmp_dir.join("prompt.json"), prompt)?;
        manifest.outputs.insert(
            "stats".into(),
            serde_json::to_value(&stats).expect("stats serialise"),
        );
        write_json_atomic(&self.tmp_dir.join("manifest.json"), &manifest)?;

        if self.final_dir.exists() {
            fs::remove_dir_all(&self.final_dir).map_err(|e| DataError::io(&self.final_dir, e))?;
        }
        fs::rename(&self.tmp_dir, &self.final_dir)
            .map_err(|e| DataError::io(&self.final_dir, e))?;
        Ok(stats)
    }
}

impl Drop for DatasetWriter {
    fn drop(&mut self) {
        // On an error path the partial directory is useless: remove it.
        if self.tmp_dir.exists() {
            let _ = fs::remove_dir_all(&self.tmp_dir);
        }
    }
}

fn shared_title_ids(catalog: &Catalog) -> u64 {
    let mut per_title = vec![0u32; catalog.num_titles()];
    for i in 0..catalog.len() as u32 {
        per_title[catalog.title_index_of_item(i) as usize] += 1;
    }
    per_title
        .iter()
        .filter(|&&c| c > 1)
        .map(|&c| c as u64)
        .sum()
}

/// A prepared dataset loaded in memory (for the training and evaluation stages).
#[derive(Debug, Clone)]
pub struct PreparedDataset {
    pub dir: PathBuf,
    pub catalog: Catalog,
    pub train: Vec<Sample>,
    pub valid: Vec<Sample>,
    pub test: Vec<Sample>,
    pub stats: Stats,
    pub prompt: PromptTemplate,
}

impl PreparedDataset {
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(DataError::file(
                dir,
                "not a prepared dataset directory (run `minirec prepare` first)",
            ));
        }
        let catalog = load_catalog(&dir.join("catalog.jsonl"))?;
        let stats: Stats = read_json(&dir.join("stats.json"))?;
        let prompt: PromptTemplate = read_json(&dir.join("prompt.json"))?;
        let mut splits = Vec::with_capacity(3);
        for split in Split::ALL {
            splits.push(load_samples(&dir.join(split.file_name()), &catalog)?);
        }
        let test = splits.pop().expect("three splits");
        let valid = splits.pop().expect("three splits");
        let train = splits.pop().expect("three splits");
        Ok(PreparedDataset {
            dir: dir.to_path_buf(),
            catalog,
            train,
            valid,
            test,
            stats,
            prompt,
        })
    }

    pub fn split(&self, s: Split) -> &[Sample] {
        match s {
            Split::Train => &self.train,
            Split::Valid => &self.valid,
            Split::Test => &self.test,
        }
    }

    /// The history titles of a sample, oldest first (ids were validated on load).
    pub fn history_titles<'a>(&'a self, s: &'a Sample) -> impl Iterator<Item = &'a str> + 'a {
        s.history
            .iter()
            .map(|id| self.catalog.title_of_id(id).expect("validated on load"))
    }

    pub fn target_title(&self, s: &Sample) -> &str {
        self.catalog
            .title_of_id(&s.target)
            .expect("validated on load")
    }
}

/// Reads `catalog.jsonl`.
pub fn load_catalog(path: &Path) -> Result<Catalog> {
    let (mut lines, _) = Input::open(path, false)?.lines();
    let mut catalog = Catalog::new();
    while let Some((line, bytes)) = lines.next_line()? {
        let e: CatalogEntry = serde_json::from_slice(bytes).map_err(|e| DataError::Row {
            path: path.to_path_buf(),
            line,
            reason: crate::SkipReason::BadJson,
            msg: e.to_string(),
        })?;
        catalog.push(&e.id, &e.title).map_err(|e| DataError::Row {
            path: path.to_path_buf(),
            line,
            reason: crate::SkipReason::DuplicateItem,
            msg: e.to_string(),
        })?;
    }
    Ok(catalog)
}

/// Reads one split file, checking every id against the catalog. An empty file is an empty split.
pub fn load_samples(path: &Path, catalog: &Catalog) -> Result<Vec<Sample>> {
    if fs::metadata(path)
        .map_err(|e| DataError::io(path, e))?
        .len()
        == 0
    {
        return Ok(Vec::new());
    }
    let (mut lines, _) = Input::open(path, false)?.lines();
    let mut out = Vec::new();
    while let Some((line, bytes)) = lines.next_line()? {
        let s: Sample = serde_json::from_slice(bytes).map_err(|e| DataError::Row {
            path: path.to_path_buf(),
            line,
            reason: crate::SkipReason::BadJson,
            msg: e.to_string(),
        })?;
        if let Some(bad) = s
            .history
            .iter()
            .chain(std::iter::once(&s.target))
            .find(|id| catalog.index_of(id).is_none())
        {
            return Err(DataError::Row {
                path: path.to_path_buf(),
                line,
                reason: crate::SkipReason::UnknownItem,
                msg: format!("item id {bad:?} is not in the catalog"),
            });
        }
        out.push(s);
    }
    Ok(out)
}
