//! Raw Amazon Reviews JSON Lines, plain or gzipped: the 2018 release (`reviewerID`, `asin`, `unixReviewTime`;
//! metadata keyed by `asin`) and the 2023 release (`user_id`, `parent_asin`, `timestamp` in ms; metadata keyed
//! by `parent_asin`), detected per line. Titles come from the metadata file.

use std::borrow::Cow;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::dataset::{DatasetWriter, Stats};
use crate::error::{Result, SkipReason};
use crate::input::{utf8, Input, Skips};
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

pub fn prepare_amazon(files: &AmazonFiles, opts: &PrepareOptions) -> Result<Stats> {
    opts.protocol.validate()?;
    let mut skips = Skips::new(opts.on_bad_row);
    let mut writer = DatasetWriter::create(&opts.out, opts.force)?;
    let mut log = InteractionLog::default();

    let path = files.reviews.as_path();
    let (mut lines, fin) = Input::open(path, opts.progress)?.lines();
    while let Some((line, bytes)) = lines.next_line()? {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let text = match utf8(path, line, bytes) {
            Ok(t) => t,
            Err(_) => {
                skips.bad_row(path, line, SkipReason::MalformedRow, "not UTF-8")?;
                continue;
            }
        };
        let r: RawReview = match serde_json::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                skips.bad_row(path, line, SkipReason::BadJson, e.to_string())?;
                continue;
            }
        };
        let user = non_empty(&r.reviewer_id).or(non_empty(&r.user_id));
        let item = non_empty(&r.parent_asin).or(non_empty(&r.asin));
        let (Some(user), Some(item)) = (user, item) else {
            skips.bad_row(
                path,
                line,
                SkipReason::MissingField,
                "needs reviewerID/user_id and asin/parent_asin",
            )?;
            continue;
        };
        let raw_time = r.unix_review_time.as_ref().or(r.timestamp.as_ref());
        let Some(time) = raw_time.and_then(time_of) else {
            let msg = match raw_time {
                None => "needs unixReviewTime/timestamp".to_string(),
                Some(v) => format!("timestamp {v} is not an integer"),
            };
            let reason = if raw_time.is_none() {
                SkipReason::MissingField
            } else {
                SkipReason::BadTimestamp
            };
            skips.bad_row(path, line, reason, msg)?;
            continue;
        };
        log.push(user, item, time);
    }
    let mut inputs = vec![fin.finish()];
    tracing::info!(
        "{}: {} interactions, {} users, {} items",
        path.display(),
        log.len(),
        log.users.len(),
        log.items.len()
    );

    let path = files.meta.as_path();
    let (mut lines, fin) = Input::open(path, opts.progress)?.lines();
    while let Some((line, bytes)) = lines.next_line()? {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let text = match utf8(path, line, bytes) {
            Ok(t) => t,
            Err(_) => {
                skips.bad_row(path, line, SkipReason::MalformedRow, "not UTF-8")?;
                continue;
            }
        };
        let m: RawMeta = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                skips.bad_row(path, line, SkipReason::BadJson, e.to_string())?;
                continue;
            }
        };
        let Some(item) = non_empty(&m.parent_asin).or(non_empty(&m.asin)) else {
            skips.bad_row(
                path,
                line,
                SkipReason::MissingField,
                "needs asin/parent_asin",
            )?;
            continue;
        };
        if let Some(title) = m.title.as_deref().and_then(clean_title) {
            log.set_title(item, title);
        }
    }
    inputs.push(fin.finish());

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
