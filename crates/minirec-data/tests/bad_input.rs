//! Bad input never panics: each unusable row either stops the run with an error naming the file and line, or,
//! with the skip policy, is counted in stats.json. Random bytes and truncated files are fed to every loader.

use std::io::Write;
use std::path::{Path, PathBuf};

use minirec_data::dataset::load_samples;
use minirec_data::{
    prepare_amazon, prepare_d3, prepare_generic, AmazonFiles, BadRowPolicy, D3Files, GenericFiles,
    PrepareOptions, PreparedDataset,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const INFO: &str = "Drill, 18V\t0\nSaw \"Pro\"\t1\nGlue's Best\t2\nDrill, 18V\t3\n";
const HEADER: &str = "user_id,item_asins,item_asin,history_item_id,item_id,history_item_title,item_title,history_rating,rating,history_timestamp,timestamp";

/// A D3 CSV row; list cells are quoted the CSV way (inner double quotes doubled).
fn d3_row(user: &str, hist: &str, target: &str, titles: &str, ts: &str) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let names = ["Drill, 18V", "Saw \"Pro\"", "Glue's Best", "Drill, 18V"];
    let target_title = target
        .parse::<usize>()
        .ok()
        .and_then(|i| names.get(i))
        .unwrap_or(&"t");
    format!(
        "{user},[],x,{},{target},{},{},[],5.0,[],{ts}",
        q(hist),
        q(titles),
        q(target_title)
    )
}

fn good_rows() -> Vec<String> {
    vec![
        d3_row("u1", "[0]", "1", "['Drill, 18V']", "100"),
        d3_row("u1", "[0, 1]", "2", "['Drill, 18V', 'Saw \"Pro\"']", "200"),
        d3_row(
            "u2",
            "[2, 3]",
            "0",
            "[\"Glue's Best\", 'Drill, 18V']",
            "150.0",
        ),
    ]
}

fn write_d3(dir: &Path, train_rows: &[String]) -> D3Files {
    let info = dir.join("info.txt");
    std::fs::write(&info, INFO).unwrap();
    let train = dir.join("train.csv");
    std::fs::write(&train, format!("{HEADER}\n{}\n", train_rows.join("\n"))).unwrap();
    let test = dir.join("test.csv");
    std::fs::write(&test, format!("{HEADER}\n{}\n", good_rows().join("\n"))).unwrap();
    D3Files {
        info,
        train,
        valid: None,
        test,
    }
}

fn opts(out: &Path, policy: BadRowPolicy) -> PrepareOptions {
    let mut o = PrepareOptions::new(out);
    o.on_bad_row = policy;
    o.force = true;
    o
}

#[test]
fn d3_good_rows_parse_with_quotes_commas_and_shared_titles() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_d3(dir.path(), &good_rows());
    let out = dir.path().join("out");
    let s = prepare_d3(&f, &opts(&out, BadRowPolicy::Error)).unwrap();
    assert_eq!(
        (s.item_ids, s.distinct_titles, s.ids_with_shared_title),
        (4, 3, 2)
    );
    assert_eq!(
        (s.samples.train, s.samples.valid, s.samples.test),
        (3, 0, 3)
    );
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    // A title that disagrees with info.txt is kept (ids are authoritative) and counted.
    let mut rows = good_rows();
    rows.push(d3_row("u3", "[1]", "0", "['Saw']", "300"));
    let f = write_d3(dir.path(), &rows);
    let s = prepare_d3(&f, &opts(&out, BadRowPolicy::Error)).unwrap();
    assert_eq!(s.warnings.get("title_mismatch"), Some(&1));
    assert_eq!(s.samples.train, 4);
    let ds = PreparedDataset::load(&out).unwrap();
    assert_eq!(ds.train[2].history, vec!["2", "3"]);
    assert_eq!(ds.train[2].timestamp, 150);
    assert_eq!(
        ds.history_titles(&ds.train[1]).collect::<Vec<_>>(),
        vec!["Drill, 18V", "Saw \"Pro\""]
    );
}

/// Each case: a bad train row (line 3 of train.csv, after the header and one good row), and the reason.
fn bad_cases() -> Vec<(String, &'static str)> {
    vec![
        ("u9,only,three".to_string(), "malformed_row"),
        (d3_row("u9", "[0, 1", "2", "['a']", "5"), "bad_list"),
        (d3_row("u9", "[0]", "2", "['Drill, 18V'", "5"), "bad_list"),
        (d3_row("u9", "[7]", "2", "['x']", "5"), "unknown_item"),
        (
            d3_row("u9", "[0]", "99", "['Drill, 18V']", "5"),
            "unknown_item",
        ),
        (
            d3_row("u9", "[0, 1]", "2", "['Drill, 18V']", "5"),
            "length_mismatch",
        ),
        (
            d3_row("u9", "[0]", "2", "['Drill, 18V']", "yesterday"),
            "bad_timestamp",
        ),
        (
            d3_row("", "[0]", "2", "['Drill, 18V']", "5"),
            "missing_field",
        ),
    ]
}

#[test]
fn d3_bad_rows_error_with_file_and_line_or_are_counted() {
    for (row, reason) in bad_cases() {
        let dir = tempfile::tempdir().unwrap();
        let rows = vec![good_rows()[0].clone(), row.clone(), good_rows()[1].clone()];
        let f = write_d3(dir.path(), &rows);
        let out = dir.path().join("out");
        let err = prepare_d3(&f, &opts(&out, BadRowPolicy::Error))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train.csv:3:") && err.contains(reason),
            "{row}: {err}"
        );
        assert!(!out.exists());
        let s = prepare_d3(&f, &opts(&out, BadRowPolicy::Skip)).unwrap();
        assert_eq!(s.skipped.get(reason), Some(&1), "{row}: {:?}", s.skipped);
        assert_eq!(s.samples.train, 2);
    }
}

#[test]
fn d3_whole_file_problems_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_d3(dir.path(), &good_rows());
    let out = dir.path().join("out");
    std::fs::write(&f.train, "").unwrap();
    let e = prepare_d3(&f, &opts(&out, BadRowPolicy::Skip))
        .unwrap_err()
        .to_string();
    assert!(e.contains("train.csv") && e.contains("empty"), "{e}");
    std::fs::write(&f.train, "user_id,item_id,timestamp\nu,1,5\n").unwrap();
    let e = prepare_d3(&f, &opts(&out, BadRowPolicy::Skip))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("train.csv") && e.contains("missing column history_item_id"),
        "{e}"
    );
    let mut f2 = f.clone();
    f2.info = dir.path().join("nope.txt");
    let e = prepare_d3(&f2, &opts(&out, BadRowPolicy::Skip))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.txt"), "{e}");
    std::fs::write(&f.info, "no tab here\n").unwrap();
    let e = prepare_d3(&f, &opts(&out, BadRowPolicy::Error))
        .unwrap_err()
        .to_string();
    assert!(e.contains("info.txt:1:"), "{e}");
    // With every line skipped the catalog is empty: an error, not an empty dataset.
    std::fs::write(&f.train, format!("{HEADER}\n")).unwrap();
    std::fs::write(&f.test, format!("{HEADER}\n")).unwrap();
    let e = prepare_d3(&f, &opts(&out, BadRowPolicy::Skip))
        .unwrap_err()
        .to_string();
    assert!(e.contains("catalog is empty"), "{e}");
}

#[test]
fn truncated_gzip_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for u in 0..300 {
        for j in 0..6 {
            text.push_str(&format!(
                r#"{{"reviewerID": "U{u}", "asin": "A{}", "unixReviewTime": {}}}"#,
                (u + j) % 40,
                u * 10 + j
            ));
            text.push('\n');
        }
    }
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(text.as_bytes()).unwrap();
    let gz = e.finish().unwrap();
    let reviews = dir.path().join("reviews.jsonl.gz");
    std::fs::write(&reviews, &gz[..gz.len() / 2]).unwrap();
    let meta = dir.path().join("meta.jsonl");
    std::fs::write(
        &meta,
        (0..40)
            .map(|i| format!("{{\"asin\": \"A{i}\", \"title\": \"T{i}\"}}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let files = AmazonFiles { reviews, meta };
    for policy in [BadRowPolicy::Error, BadRowPolicy::Skip] {
        let e = prepare_amazon(&files, &opts(&dir.path().join("out"), policy))
            .unwrap_err()
            .to_string();
        assert!(e.contains("reviews.jsonl.gz:"), "{e}");
    }
}

fn random_bytes(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let n = rng.random_range(0..600);
    let alphabet = b"\"',[]{}:\t\n\r\\ 0123456789abcxyz_-.\xff\xc3";
    (0..n)
        .map(|_| {
            if rng.random_bool(0.7) {
                alphabet[rng.random_range(0..alphabet.len())]
            } else {
                rng.random()
            }
        })
        .collect()
}

/// Runs `f` and fails the test if it panicked; its `Result` may be either.
fn no_panic<T, E>(what: &str, damaged: &str, f: impl FnOnce() -> Result<T, E>) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    assert!(r.is_ok(), "{what} panicked on a damaged {damaged}");
}

struct Valid {
    d3: D3Files,
    amazon: AmazonFiles,
    generic: GenericFiles,
    prepared: PathBuf,
}

fn valid_inputs(dir: &Path) -> Valid {
    let d3 = write_d3(dir, &good_rows());
    let reviews = dir.join("reviews.jsonl");
    let meta = dir.join("meta.jsonl");
    let mut r = String::new();
    for u in 0..6 {
        for i in 0..6 {
            r.push_str(&format!(
                "{{\"user_id\": \"u{u}\", \"parent_asin\": \"i{i}\", \"timestamp\": {}}}\n",
                u * 100 + i
            ));
        }
    }
    std::fs::write(&reviews, r).unwrap();
    std::fs::write(
        &meta,
        (0..6)
            .map(|i| format!("{{\"parent_asin\": \"i{i}\", \"title\": \"Item {i}\"}}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let generic = minirec_data::demo::write(&dir.join("generic"), 200, 1).unwrap();
    let prepared = dir.join("prepared");
    prepare_generic(&generic, &opts(&prepared, BadRowPolicy::Error)).unwrap();
    Valid {
        d3,
        amazon: AmazonFiles { reviews, meta },
        generic,
        prepared,
    }
}

/// Every loader input, as (name, path) pairs to overwrite with damaged bytes.
fn targets(v: &Valid) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("d3 info", v.d3.info.clone()),
        ("d3 train", v.d3.train.clone()),
        ("amazon reviews", v.amazon.reviews.clone()),
        ("amazon meta", v.amazon.meta.clone()),
        ("generic interactions", v.generic.interactions.clone()),
        ("generic items", v.generic.items.clone()),
        ("prepared catalog", v.prepared.join("catalog.jsonl")),
        ("prepared train", v.prepared.join("train.jsonl")),
        ("prepared stats", v.prepared.join("stats.json")),
    ]
}

/// Runs every loader; `damaged` names the input that was damaged, for the failure message.
fn run_all_loaders(v: &Valid, out: &Path, damaged: &str) {
    for policy in [BadRowPolicy::Error, BadRowPolicy::Skip] {
        no_panic("d3", damaged, || prepare_d3(&v.d3, &opts(out, policy)));
        no_panic("amazon", damaged, || {
            prepare_amazon(&v.amazon, &opts(out, policy))
        });
        no_panic("generic", damaged, || {
            prepare_generic(&v.generic, &opts(out, policy))
        });
    }
    no_panic("prepared dataset", damaged, || {
        PreparedDataset::load(&v.prepared)
    });
    no_panic("split samples", damaged, || {
        let c = minirec_data::dataset::load_catalog(&v.prepared.join("catalog.jsonl"))?;
        load_samples(&v.prepared.join("test.jsonl"), &c)
    });
}

#[test]
fn random_bytes_and_truncations_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let v = valid_inputs(dir.path());
    let out = dir.path().join("out");
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (name, path) in targets(&v) {
        let original = std::fs::read(&path).unwrap();
        for round in 0..25 {
            let damaged = match round % 3 {
                0 => random_bytes(&mut rng),
                1 => original[..rng.random_range(0..=original.len())].to_vec(),
                _ => {
                    let mut b = original.clone();
                    for _ in 0..4 {
                        if !b.is_empty() {
                            let i = rng.random_range(0..b.len());
                            b[i] = rng.random();
                        }
                    }
                    b
                }
            };
            std::fs::write(&path, &damaged).unwrap();
            run_all_loaders(&v, &out, name);
        }
        std::fs::write(&path, &original).unwrap();
    }
    // Gzipped inputs truncated at every tenth of their length.
    let text = std::fs::read(&v.amazon.reviews).unwrap();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&text).unwrap();
    let gz = e.finish().unwrap();
    for cut in (0..10).map(|k| gz.len() * k / 10) {
        std::fs::write(&v.amazon.reviews, &gz[..cut]).unwrap();
        for policy in [BadRowPolicy::Error, BadRowPolicy::Skip] {
            let r = std::panic::catch_unwind(|| prepare_amazon(&v.amazon, &opts(&out, policy)));
            let r = r.expect("no panic");
            assert!(
                r.is_err(),
                "a gzip cut at {cut} of {} bytes must not pass as complete",
                gz.len()
            );
        }
    }
}
