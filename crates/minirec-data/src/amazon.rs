//! Raw Amazon Reviews JSON Lines, plain or gzipped: the 2018 release (`reviewerID`, `asin`, `unixReviewTime`;
//! metadata keyed by `asin`) and the 2023 release (`user_id`, `parent_asin`, `timestamp` in ms; metadata keyed
//! by `parent_asin`), detected per line. Titles come from the metadata file.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dataset::{DatasetWriter, Stats};
use crate::error::{Result, SkipReason};
use crate::input::{utf8, Input, InputRecord, Skips};
use crate::manifest::Manifest;
use crate::prepare::PrepareOptions;
use crate::protocol::{build_samples, clean_title, InteractionLog};

#[derive(Debug, Clone, Serialize)]
pub struct AmazonFiles {
    pub reviews: PathBuf,
    pub meta: PathBuf,
}

#[derive(Deserialize)]
struct RawReview<'a> {
    #[serde(rename = "reviewerID", borrow, default)]
    reviewer_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    user_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    asin: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    parent_asin: Option<Cow<'a, str>>,
    #[serde(rename = "unixReviewTime", default)]
    unix_review_time: Option<serde_json::Value>,
    #[serde(default)]
    timestamp: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawMeta<'a> {
    #[serde(borrow, default)]
    asin: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    parent_asin: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    title: Option<Cow<'a, str>>,
}

fn non_empty<'a>(v: &'a Option<Cow<'a, str>>) -> Option<&'a str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn time_of(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Calls `f` with each non-blank line of a JSON Lines file decoded as UTF-8; returns the file's record.
fn for_each_line(
    path: &Path,
    progress: bool,
    skips: &mut Skips,
    mut f: impl FnMut(u64, &str, &mut Skips) -> Result<()>,
) -> Result<InputRecord> {
    let (mut lines, fin) = Input::open(path, progress)?.lines();
    while let Some((line, bytes)) = lines.next_line()? {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match utf8(path, line, bytes) {
            Ok(text) => f(line, text, skips)?,
            Err(_) => skips.bad_row(path, line, SkipReason::MalformedRow, "not UTF-8")?,
        }
    }
    Ok(fin.finish())
}

/// Parses one JSON line; `None` when it was bad and skipped.
fn parse<'a, T: Deserialize<'a>>(
    path: &Path,
    line: u64,
    text: &'a str,
    skips: &mut Skips,
) -> Result<Option<T>> {
    match serde_json::from_str(text) {
        Ok(v) => Ok(Some(v)),
        Err(e) => skips
            .bad_row(path, line, SkipReason::BadJson, e.to_string())
            .map(|_| None),
    }
}

pub fn prepare_amazon(files: &AmazonFiles, opts: &PrepareOptions) -> Result<Stats> {
    opts.protocol.validate()?;
    let mut skips = Skips::new(opts.on_bad_row);
    let mut writer = DatasetWriter::create(&opts.out, opts.force)?;
    let mut log = InteractionLog::default();

    let path = files.reviews.as_path();
    let rec = for_each_line(path, opts.progress, &mut skips, |line, text, skips| {
        let Some(r) = parse::<RawReview>(path, line, text, skips)? else {
            return Ok(());
        };
        let user = non_empty(&r.reviewer_id).or(non_empty(&r.user_id));
        let item = non_empty(&r.parent_asin).or(non_empty(&r.asin));
        let (Some(user), Some(item)) = (user, item) else {
            return skips.bad_row(
                path,
                line,
                SkipReason::MissingField,
                "needs reviewerID/user_id and asin/parent_asin",
            );
        };
        let raw_time = r.unix_review_time.as_ref().or(r.timestamp.as_ref());
        match raw_time.map(|v| (v, time_of(v))) {
            Some((_, Some(time))) => {
                log.push(user, item, time);
                Ok(())
            }
            Some((v, None)) => skips.bad_row(
                path,
                line,
                SkipReason::BadTimestamp,
                format!("timestamp {v} is not an integer"),
            ),
            None => skips.bad_row(
                path,
                line,
                SkipReason::MissingField,
                "needs unixReviewTime/timestamp",
            ),
        }
    })?;
    let mut inputs = vec![rec];
    tracing::info!(
        "{}: {} interactions, {} users, {} items",
        path.display(),
        log.len(),
        log.users.len(),
        log.items.len()
    );

    let path = files.meta.as_path();
    let rec = for_each_line(path, opts.progress, &mut skips, |line, text, skips| {
        let Some(m) = parse::<RawMeta>(path, line, text, skips)? else {
            return Ok(());
        };
        let Some(item) = non_empty(&m.parent_asin).or(non_empty(&m.asin)) else {
            return skips.bad_row(
                path,
                line,
                SkipReason::MissingField,
                "needs asin/parent_asin",
            );
        };
        if let Some(title) = m.title.as_deref().and_then(clean_title) {
            log.set_title(item, title);
        }
        Ok(())
    })?;
    inputs.push(rec);

    let mut filtered = Default::default();
    let (catalog, kept) = build_samples(&log, &opts.protocol, &mut writer, &mut filtered)?;
    let stats = Stats {
        format: "amazon".into(),
        interactions: Some(kept),
        skipped: skips.counts(),
        filtered,
        ..Default::default()
    };
    let config = serde_json::json!({ "format": "amazon", "files": files, "options": opts });
    writer.finish(
        &catalog,
        stats,
        &opts.prompt,
        Manifest::new("prepare", config, inputs),
    )
}
