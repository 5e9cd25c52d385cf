//! A raw Amazon fixture built by hand, whose k-core cascade and chronological split were counted by hand.
//!
//! Core: users C00..C19 each review items P0..P9 once; user u's j-th review (j = 0..9) is item (u + j) % 10
//! at time 1_000_000 + 1000 j + u. P8 and P9 share the title "Shared Widget".
//! Noise, all of which the protocol must remove:
//! - T1 (no title in the metadata), T2 (an HTML fragment as title), T3 (absent from the metadata): 6 + 6 + 5
//!   reviews by core users, dropped by the title filter before k-core.
//! - X1 reviews P0..P3 (4 < 5): removed in round 1.
//! - J1 is reviewed by C00..C03 (4 < 5): removed in round 1.
//! - J2 is reviewed by Y and Z1..Z4; each Z also reviews P0 only (2 < 5), so round 1 removes the Z's
//!   (8 reviews), round 2 removes J2 (now 1 review), round 3 removes Y (4 reviews left).
//!
//! Valid reviews: 200 + 6 + 6 + 5 + 4 + 4 + 5 + 4 + 4 = 238; kept 200; removed 17 by title, 21 by k-core.
//! Samples: 20 users × 9 = 180, split ⌊0.8·180⌋ = 144, ⌊0.9·180⌋ − 144 = 18, 18. Sorted by target time
//! (j, then u): train = j 1..7 and j = 8 for u 0..3; valid = j = 8 for u 4..19 and j = 9 for u 0, 1; test = j = 9
//! for u 2..19.

use std::io::Write;
use std::path::Path;

use minirec_data::{
    prepare_amazon, AmazonFiles, BadRowPolicy, PrepareOptions, PreparedDataset, SkipReason,
};

fn review_2018(user: &str, item: &str, t: i64) -> String {
    format!(
        r#"{{"overall": 5.0, "reviewerID": "{user}", "asin": "{item}", "reviewText": "fine, \"really\"", "unixReviewTime": {t}}}"#
    )
}

fn review_2023(user: &str, item: &str, t: i64) -> String {
    format!(
        r#"{{"rating": 5.0, "user_id": "{user}", "asin": "X{item}", "parent_asin": "{item}", "timestamp": {}}}"#,
        t * 1000
    )
}

/// Returns (reviews lines, meta lines); `bad` adds one non-JSON line and one line without an item.
fn fixture(review: fn(&str, &str, i64) -> String, bad: bool) -> (Vec<String>, Vec<String>) {
    let mut r = Vec::new();
    for u in 0..20 {
        for j in 0..10 {
            r.push(review(
                &format!("C{u:02}"),
                &format!("P{}", (u + j) % 10),
                1_000_000 + 1000 * j as i64 + u as i64,
            ));
        }
    }
    let mut t = 500_000;
    let mut add = |user: String, item: &str| {
        t += 7;
        r.push(review(&user, item, t));
    };
    for u in 0..6 {
        add(format!("C{u:02}"), "T1");
    }
    for u in 6..12 {
        add(format!("C{u:02}"), "T2");
    }
    for u in 12..17 {
        add(format!("C{u:02}"), "T3");
    }
    for i in 0..4 {
        add("X1".into(), &format!("P{i}"));
    }
    for u in 0..4 {
        add(format!("C{u:02}"), "J1");
    }
    add("Y".into(), "J2");
    for z in 1..=4 {
        add(format!("Z{z}"), "J2");
        add(format!("Z{z}"), "P0");
    }
    for i in 0..4 {
        add("Y".into(), &format!("P{i}"));
    }
    if bad {
        r.insert(7, "this is not json".into());
        r.insert(50, r#"{"reviewerID": "C01", "unixReviewTime": 5}"#.into());
    }
    let mut m = Vec::new();
    for i in 0..10 {
        let title = if i >= 8 {
            "Shared Widget".to_string()
        } else {
            format!("Part {i} &amp; Co")
        };
        m.push(format!(
            r#"{{"asin": "P{i}", "parent_asin": "P{i}", "title": "{title}", "price": "$1"}}"#
        ));
    }
    m.push(r#"{"asin": "T1", "title": ""}"#.into());
    m.push(r#"{"asin": "T2", "title": "<span class=\"x\">var a</span>"}"#.into());
    m.push(r#"{"asin": "J1", "title": "Jig One"}"#.into());
    m.push(r#"{"asin": "J2", "title": "Jig Two"}"#.into());
    m.push(r#"{"asin": "NEVER", "title": "Never reviewed"}"#.into());
    (r, m)
}

fn write_lines(path: &Path, lines: &[String], gzip: bool) {
    let text = lines.join("\n") + "\n";
    if gzip {
        let mut e = flate2::write::GzEncoder::new(
            std::fs::File::create(path).unwrap(),
            flate2::Compression::fast(),
        );
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap();
    } else {
        std::fs::write(path, text).unwrap();
    }
}

fn files(dir: &Path, review: fn(&str, &str, i64) -> String, bad: bool, gzip: bool) -> AmazonFiles {
    let (r, m) = fixture(review, bad);
    let ext = if gzip { ".jsonl.gz" } else { ".jsonl" };
    let files = AmazonFiles {
        reviews: dir.join(format!("reviews{ext}")),
        meta: dir.join(format!("meta{ext}")),
    };
    write_lines(&files.reviews, &r, gzip);
    write_lines(&files.meta, &m, gzip);
    files
}

fn check_counts(out: &Path, time_scale: i64) {
    let ds = PreparedDataset::load(out).unwrap();
    let s = &ds.stats;
    assert_eq!(s.item_ids, 10);
    assert_eq!(s.distinct_titles, 9);
    assert_eq!(s.ids_with_shared_title, 2);
    assert_eq!(s.users, 20);
    assert_eq!(s.interactions, Some(200));
    assert_eq!(
        (s.samples.train, s.samples.valid, s.samples.test),
        (144, 18, 18)
    );
    assert_eq!(s.filtered["items_without_title"], 3);
    assert_eq!(s.filtered["interactions_of_items_without_title"], 17);
    assert_eq!(s.filtered["kcore_interactions"], 21);
    assert_eq!(s.filtered["kcore_users"], 6);
    assert_eq!(s.filtered["kcore_items"], 2);
    assert_eq!(ds.catalog.title_of_id("P3"), Some("Part 3 & Co"));

    // Chronological order and split boundaries, as counted in the header comment.
    // (j, u) of a core sample, read back from its time 1_000_000 + 1000 j + u.
    let key = |x: &minirec_data::Sample| {
        let t = x.timestamp / time_scale - 1_000_000;
        (t / 1000, t % 1000)
    };
    assert_eq!(key(&ds.train[0]), (1, 0));
    assert_eq!(key(ds.train.last().unwrap()), (8, 3));
    assert_eq!(key(&ds.valid[0]), (8, 4));
    assert_eq!(key(ds.valid.last().unwrap()), (9, 1));
    assert_eq!(key(&ds.test[0]), (9, 2));
    assert_eq!(key(ds.test.last().unwrap()), (9, 19));
    let all: Vec<_> = ds
        .train
        .iter()
        .chain(&ds.valid)
        .chain(&ds.test)
        .map(|x| x.timestamp)
        .collect();
    assert!(
        all.windows(2).all(|w| w[0] <= w[1]),
        "samples are sorted by target time"
    );

    // The first test sample: user C02's last review (j = 9 → P1), history = its 9 earlier items.
    let t0 = &ds.test[0];
    assert_eq!(t0.user, "C02");
    assert_eq!(t0.target, "P1");
    let expect: Vec<String> = (0..9).map(|j| format!("P{}", (2 + j) % 10)).collect();
    assert_eq!(t0.history, expect);
    assert_eq!(t0.id, 0);
    assert_eq!(ds.test[17].id, 17);
}

#[test]
fn amazon_2018_fixture_counts_match_hand_computation() {
    let dir = tempfile::tempdir().unwrap();
    let f = files(dir.path(), review_2018, false, false);
    let out = dir.path().join("prepared");
    prepare_amazon(&f, &PrepareOptions::new(&out)).unwrap();
    check_counts(&out, 1);
    let ds = PreparedDataset::load(&out).unwrap();
    assert!(ds.stats.skipped.is_empty());
}

#[test]
fn amazon_2023_gzipped_fixture_gives_the_same_counts() {
    let dir = tempfile::tempdir().unwrap();
    let f = files(dir.path(), review_2023, false, true);
    let out = dir.path().join("prepared");
    prepare_amazon(&f, &PrepareOptions::new(&out)).unwrap();
    check_counts(&out, 1000);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["inputs"][0]["gzip"], true);
    assert_eq!(m["inputs"][0]["sha256"].as_str().unwrap().len(), 64);
}

#[test]
fn bad_rows_stop_the_run_or_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let f = files(dir.path(), review_2018, true, false);
    let out = dir.path().join("prepared");
    let err = prepare_amazon(&f, &PrepareOptions::new(&out))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("reviews.jsonl:8:") && err.contains("bad_json"),
        "{err}"
    );
    assert!(!out.exists(), "a failed run leaves no dataset behind");

    let mut opts = PrepareOptions::new(&out);
    opts.on_bad_row = BadRowPolicy::Skip;
    prepare_amazon(&f, &opts).unwrap();
    check_counts(&out, 1);
    let ds = PreparedDataset::load(&out).unwrap();
    assert_eq!(ds.stats.skipped[SkipReason::BadJson.as_str()], 1);
    assert_eq!(ds.stats.skipped[SkipReason::MissingField.as_str()], 1);
}

#[test]
fn max_history_and_k_core_are_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let f = files(dir.path(), review_2018, false, false);
    let out = dir.path().join("h3");
    let mut opts = PrepareOptions::new(&out);
    opts.protocol.max_history = 3;
    prepare_amazon(&f, &opts).unwrap();
    let ds = PreparedDataset::load(&out).unwrap();
    assert_eq!(ds.test[0].history, vec!["P8", "P9", "P0"]);
    assert!(ds
        .train
        .iter()
        .all(|s| !s.history.is_empty() && s.history.len() <= 3));

    // Without k-core only the title filter applies: 238 − 17 = 221 interactions by 26 users;
    // J1 and J2 stay in the catalog.
    let out = dir.path().join("k0");
    let mut opts = PrepareOptions::new(&out);
    opts.protocol.k_core = 0;
    prepare_amazon(&f, &opts).unwrap();
    let ds = PreparedDataset::load(&out).unwrap();
    assert_eq!(ds.stats.interactions, Some(221));
    assert_eq!(ds.stats.item_ids, 12);
    assert_eq!(ds.stats.samples.total(), 221 - 26);
}

#[test]
fn an_existing_output_is_kept_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let f = files(dir.path(), review_2018, false, false);
    let out = dir.path().join("prepared");
    prepare_amazon(&f, &PrepareOptions::new(&out)).unwrap();
    let err = prepare_amazon(&f, &PrepareOptions::new(&out))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--force"), "{err}");
    let mut opts = PrepareOptions::new(&out);
    opts.force = true;
    prepare_amazon(&f, &opts).unwrap();
    check_counts(&out, 1);
}
