//! The D3/BIGRec CSV format: `info.txt` (`title<TAB>item_id`, split on the last tab) and one CSV per split
//! whose list columns are Python literals. Samples keep the files' order and histories.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::catalog::Catalog;
use crate::csvrows::{parse_time, CsvRows};
use crate::dataset::{DatasetWriter, Sample, Split, Stats};
use crate::error::{Result, SkipReason};
use crate::input::{utf8, Input, InputRecord, Skips};
use crate::manifest::Manifest;
use crate::prepare::{row_try, PrepareOptions};
use crate::pylist::{parse_id_list, parse_str_list};

#[derive(Debug, Clone, Serialize)]
pub struct D3Files {
    pub info: PathBuf,
    pub train: PathBuf,
    pub valid: Option<PathBuf>,
    pub test: PathBuf,
}

/// Reads `info.txt` into a catalog.
pub fn load_info(path: &Path, skips: &mut Skips, progress: bool) -> Result<(Catalog, InputRecord)> {
    let (mut lines, fin) = Input::open(path, progress)?.lines();
    let mut catalog = Catalog::new();
    while let Some((line, bytes)) = lines.next_line()? {
        let text = match utf8(path, line, bytes) {
            Ok(t) => t,
            Err(_) => {
                skips.bad_row(path, line, SkipReason::MalformedRow, "not UTF-8")?;
                continue;
            }
        };
        if text.trim().is_empty() {
            skips.bad_row(path, line, SkipReason::MalformedRow, "empty line")?;
            continue;
        }
        let Some((title, id)) = text.rsplit_once('\t') else {
            skips.bad_row(
                path,
                line,
                SkipReason::MalformedRow,
                "no tab between title and item id",
            )?;
            continue;
        };
        let id = id.trim();
        if id.is_empty() {
            skips.bad_row(path, line, SkipReason::MissingField, "empty item id")?;
            continue;
        }
        if title.trim().is_empty() {
            skips.bad_row(
                path,
                line,
                SkipReason::BadTitle,
                format!("item {id:?} has an empty title"),
            )?;
            continue;
        }
        if catalog.index_of(id).is_some() {
            skips.bad_row(
                path,
                line,
                SkipReason::DuplicateItem,
                format!("item id {id:?} is listed again"),
            )?;
            continue;
        }
        catalog.push(id, title)?;
    }
    Ok((catalog, fin.finish()))
}

struct Columns {
    user: usize,
    hist_ids: usize,
    target: usize,
    time: usize,
    hist_titles: Option<usize>,
    target_title: Option<usize>,
}

fn load_split(
    path: &Path,
    split: Split,
    catalog: &Catalog,
    writer: &mut DatasetWriter,
    skips: &mut Skips,
    warnings: &mut std::collections::BTreeMap<String, u64>,
    progress: bool,
) -> Result<InputRecord> {
    let mut rows = CsvRows::open(path, b',', progress)?;
    let c = Columns {
        user: rows.column(&["user_id"])?,
        hist_ids: rows.column(&["history_item_id"])?,
        target: rows.column(&["item_id"])?,
        time: rows.column(&["timestamp"])?,
        hist_titles: rows.optional_column(&["history_item_title"]),
        target_title: rows.optional_column(&["item_title"]),
    };
    let mut mismatches = 0u64;
    while let Some((line, row)) = rows.next(skips)? {
        let user = row_try!(skips, path, line, row.required(c.user, "user_id"));
        let ids_text = row_try!(skips, path, line, row.field(c.hist_ids, "history_item_id"));
        let history = row_try!(
            skips,
            path,
            line,
            parse_id_list(ids_text)
                .map_err(|e| (SkipReason::BadList, format!("history_item_id: {e}")))
        );
        let target = row_try!(skips, path, line, row.required(c.target, "item_id"));
        let time_text = row_try!(skips, path, line, row.field(c.time, "timestamp"));
        let timestamp = row_try!(skips, path, line, parse_time(time_text));
        if let Some(bad) = history
            .iter()
            .map(String::as_str)
            .chain([target])
            .find(|id| catalog.index_of(id).is_none())
        {
            skips.bad_row(
                path,
                line,
                SkipReason::UnknownItem,
                format!("item id {bad:?} is not in info.txt"),
            )?;
            continue;
        }
        if let Some(col) = c.hist_titles {
            let text = row_try!(skips, path, line, row.field(col, "history_item_title"));
            let titles = row_try!(
                skips,
                path,
                line,
                parse_str_list(text)
                    .map_err(|e| (SkipReason::BadList, format!("history_item_title: {e}")))
            );
            if titles.len() != history.len() {
                skips.bad_row(
                    path,
                    line,
                    SkipReason::LengthMismatch,
                    format!(
                        "{} history ids but {} history titles",
                        history.len(),
                        titles.len()
                    ),
                )?;
                continue;
            }
            mismatches += history
                .iter()
                .zip(&titles)
                .filter(|(id, t)| catalog.title_of_id(id) != Some(t.as_str()))
                .count() as u64;
        }
        if let Some(col) = c.target_title {
            let t = row_try!(skips, path, line, row.field(col, "item_title"));
            mismatches += u64::from(catalog.title_of_id(target) != Some(t));
        }
        let mut sample = Sample {
            id: 0,
            user: user.to_string(),
            history,
            target: target.to_string(),
            timestamp,
        };
        writer.write_sample(split, &mut sample)?;
    }
    if mismatches > 0 {
        tracing::warn!(
            "{}: {mismatches} titles differ from info.txt's; info.txt's are used",
            path.display()
        );
        *warnings.entry("title_mismatch".into()).or_default() += mismatches;
    }
    Ok(rows.finish())
}

/// Prepares a dataset from D3-format files.
pub fn prepare_d3(files: &D3Files, opts: &PrepareOptions) -> Result<Stats> {
    let mut skips = Skips::new(opts.on_bad_row);
    let mut writer = DatasetWriter::create(&opts.out, opts.force)?;
    if let Some(k) = opts.hold_out_every {
        if let Some(v) = &files.valid {
            return Err(crate::DataError::file(
                v,
                "a validation file and a held-out slice of the training split were both asked for; give one",
            ));
        }
        if k < 2 {
            return Err(crate::DataError::file(
                &files.train,
                format!("holding out every {k}th training sample would leave nothing to train on; use 2 or more"),
            ));
        }
        writer.hold_out_every(k);
    }
    let (catalog, info_rec) = load_info(&files.info, &mut skips, opts.progress)?;
    tracing::info!(
        "{}: {} item ids, {} distinct titles",
        files.info.display(),
        catalog.len(),
        catalog.num_titles()
    );
    let mut inputs = vec![info_rec];
    let mut warnings = Default::default();
    let splits = [
        (Some(&files.train), Split::Train),
        (files.valid.as_ref(), Split::Valid),
        (Some(&files.test), Split::Test),
    ];
    for (path, split) in splits {
        if let Some(path) = path {
            inputs.push(load_split(
                path,
                split,
                &catalog,
                &mut writer,
                &mut skips,
                &mut warnings,
                opts.progress,
            )?);
        }
    }
    let stats = Stats {
        format: "d3".into(),
        skipped: skips.counts(),
        warnings,
        ..Default::default()
    };
    let config = serde_json::json!({ "format": "d3", "files": files, "options": opts });
    writer.finish(
        &catalog,
        stats,
        &opts.prompt,
        Manifest::new("prepare", config, inputs),
    )
}
