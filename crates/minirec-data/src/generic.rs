//! The generic format: `interactions.csv` (user, item, timestamp) and `items.csv` (item, title), comma- or
//! (for `.tsv` files) tab-separated, with a header row. The papers' protocol is applied as for raw Amazon data.

use std::path::{Path, PathBuf};

use rustc_hash::FxHashSet;
use serde::Serialize;

use crate::csvrows::{parse_time, CsvRows};
use crate::dataset::{DatasetWriter, Stats};
use crate::error::{Result, SkipReason};
use crate::input::Skips;
use crate::manifest::Manifest;
use crate::prepare::{row_try, PrepareOptions};
use crate::protocol::{build_samples, clean_title, InteractionLog};

#[derive(Debug, Clone, Serialize)]
pub struct GenericFiles {
    pub interactions: PathBuf,
    pub items: PathBuf,
}

fn delimiter(path: &Path) -> u8 {
    match path.extension().and_then(|e| e.to_str()) {
        Some("tsv") | Some("tab") => b'\t',
        _ => b',',
    }
}

pub fn prepare_generic(files: &GenericFiles, opts: &PrepareOptions) -> Result<Stats> {
    opts.protocol.validate()?;
    let mut skips = Skips::new(opts.on_bad_row);
    let mut writer = DatasetWriter::create(&opts.out, opts.force)?;
    let mut log = InteractionLog::default();

    let path = &files.interactions;
    let mut rows = CsvRows::open(path, delimiter(path), opts.progress)?;
    let (cu, ci, ct) = (
        rows.column(&["user", "user_id", "userId"])?,
        rows.column(&["item", "item_id", "itemId"])?,
        rows.column(&["timestamp", "time", "ts"])?,
    );
    while let Some((line, row)) = rows.next(&mut skips)? {
        let user = row_try!(skips, path, line, row.required(cu, "user"));
        let item = row_try!(skips, path, line, row.required(ci, "item"));
        let t = row_try!(skips, path, line, row.required(ct, "timestamp"));
        let time = row_try!(skips, path, line, parse_time(t));
        log.push(user, item, time);
    }
    let mut inputs = vec![rows.finish()];

    let path = &files.items;
    let mut rows = CsvRows::open(path, delimiter(path), opts.progress)?;
    let (ci, ct) = (
        rows.column(&["item", "item_id", "itemId", "id"])?,
        rows.column(&["title", "name"])?,
    );
    let mut seen: FxHashSet<String> = FxHashSet::default();
    let mut unused = 0u64;
    while let Some((line, row)) = rows.next(&mut skips)? {
        let item = row_try!(skips, path, line, row.required(ci, "item"));
        let raw = row_try!(skips, path, line, row.field(ct, "title"));
        if !seen.insert(item.to_string()) {
            skips.bad_row(
                path,
                line,
                SkipReason::DuplicateItem,
                format!("item {item:?} is listed again"),
            )?;
            continue;
        }
        if let Some(title) = clean_title(raw) {
            unused += u64::from(!log.set_title(item, title));
        }
    }
    inputs.push(rows.finish());

    let mut filtered = Default::default();
    let (catalog, kept) = build_samples(&log, &opts.protocol, &mut writer, &mut filtered)?;
    let mut warnings = std::collections::BTreeMap::new();
    if unused > 0 {
        warnings.insert("items_never_interacted".to_string(), unused);
    }
    let stats = Stats {
        format: "generic".into(),
        interactions: Some(kept),
        skipped: skips.counts(),
        filtered,
        warnings,
        ..Default::default()
    };
    let config = serde_json::json!({ "format": "generic", "files": files, "options": opts });
    writer.finish(
        &catalog,
        stats,
        &opts.prompt,
        Manifest::new("prepare", config, inputs),
    )
}
