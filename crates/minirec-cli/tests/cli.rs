//! The `minirec` binary's interface, as users and our checks call it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn minirec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_minirec"))
        .args(args)
        .arg("--quiet")
        .output()
        .expect("run minirec")
}

fn ok(args: &[&str]) -> String {
    let o = minirec(args);
    assert!(
        o.status.success(),
        "minirec {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Fails with a one-line error on stderr; returns it.
fn fails(args: &[&str]) -> String {
    let o = minirec(args);
    assert!(!o.status.success(), "minirec {args:?} should fail");
    let err = String::from_utf8(o.stderr).unwrap();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one-line error expected, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    lines[0].to_string()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn industrial() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/industrial");
    if d.join("info.txt").exists() {
        return Some(d);
    }
    // CI always has shared/ beside the clone: there, a missing dataset is a failure, not a skip.
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing",
        d.display()
    );
    eprintln!("skipping: {} is not present", d.display());
    None
}

#[test]
fn prepare_d3_on_the_industrial_sample() {
    let Some(d) = industrial() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ind");
    let p = |f: &str| d.join(f).to_string_lossy().into_owned();
    let stdout = ok(&[
        "prepare",
        "--format",
        "d3",
        "--info",
        &p("info.txt"),
        "--train",
        &p("valid.csv"),
        "--test",
        &p("test.csv"),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(stdout.contains("3686"), "{stdout}");
    let s = json(&out.join("stats.json"));
    assert_eq!(s["item_ids"], 3686);
    assert_eq!(s["distinct_titles"], 3646);
    assert_eq!(s["samples"]["train"], 4532);
    assert_eq!(s["samples"]["valid"], 0);
    assert_eq!(s["samples"]["test"], 4533);
    assert_eq!(s["skipped"], serde_json::json!({}));
    assert_eq!(s["warnings"], serde_json::json!({}));
    for f in [
        "catalog.jsonl",
        "train.jsonl",
        "valid.jsonl",
        "test.jsonl",
        "prompt.json",
        "manifest.json",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    let m = json(&out.join("manifest.json"));
    assert_eq!(m["stage"], "prepare");
    assert_eq!(m["inputs"].as_array().unwrap().len(), 3);
    // Re-running into the same directory is refused rather than overwriting it.
    let e = fails(&[
        "prepare",
        "--format",
        "d3",
        "--info",
        &p("info.txt"),
        "--train",
        &p("valid.csv"),
        "--test",
        &p("test.csv"),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(e.contains("--force"), "{e}");
}

#[test]
fn eval_scores_predictions_and_writes_json() {
    let tmp = tempfile::tempdir().unwrap();
    let preds = tmp.path().join("preds.jsonl");
    // Ranks: 0, 6 (after dropping a repeat), 12, miss.
    let lines = [
        r#"{"target": "a", "ranked": ["a", "b"]}"#.to_string(),
        serde_json::json!({"target": "g", "ranked": ["x", "x", "b", "c", "d", "e", "f", "g"]}).to_string(),
        serde_json::json!({"target": "m", "ranked": (0..12).map(|i| format!("n{i}")).chain(["m".to_string()]).collect::<Vec<_>>()}).to_string(),
        r#"{"target": "z", "ranked": []}"#.to_string(),
    ];
    std::fs::write(&preds, lines.join("\n")).unwrap();
    let out = tmp.path().join("m.json");
    let table = ok(&[
        "eval",
        "--predictions",
        preds.to_str().unwrap(),
        "--json",
        out.to_str().unwrap(),
    ]);
    assert!(table.contains("NDCG@K"), "{table}");
    let m = json(&out);
    let close = |k: &str, v: f64| {
        assert!(
            (m[k].as_f64().unwrap() - v).abs() < 1e-12,
            "{k}: {} vs {v}",
            m[k]
        )
    };
    assert_eq!(m["n"], 4);
    close("hr@5", 0.25);
    close("hr@10", 0.5);
    close("hr@20", 0.75);
    close("ndcg@5", 0.25);
    close("ndcg@10", (1.0 + 1.0 / 8f64.log2()) / 4.0);
    close(
        "ndcg@20",
        (1.0 + 1.0 / 8f64.log2() + 1.0 / 14f64.log2()) / 4.0,
    );

    let custom = tmp.path().join("k.json");
    ok(&[
        "eval",
        "--predictions",
        preds.to_str().unwrap(),
        "--k",
        "1,7",
        "--json",
        custom.to_str().unwrap(),
    ]);
    let m = json(&custom);
    assert_eq!(m["hr@7"], 0.5);
    assert!(m.get("hr@5").is_none());

    std::fs::write(&preds, format!("{}\n{{\"target\": 3}}\n", lines[0])).unwrap();
    let e = fails(&["eval", "--predictions", preds.to_str().unwrap()]);
    assert!(e.contains("preds.jsonl:2:"), "{e}");
    let e = fails(&[
        "eval",
        "--predictions",
        tmp.path().join("missing.jsonl").to_str().unwrap(),
    ]);
    assert!(e.contains("missing.jsonl"), "{e}");
    let e = fails(&["eval", "--predictions", preds.to_str().unwrap(), "--k", "0"]);
    assert!(e.contains("--k"), "{e}");
}

#[test]
fn prepare_generic_and_amazon_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("raw");
    let files = minirec_data_demo(&raw);
    let out = tmp.path().join("g");
    ok(&[
        "prepare",
        "--format",
        "generic",
        "--interactions",
        files.0.to_str().unwrap(),
        "--items",
        files.1.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--domain",
        "industrial",
    ]);
    let s = json(&out.join("stats.json"));
    assert_eq!(s["format"], "generic");
    assert!(s["samples"]["train"].as_u64().unwrap() > 1000);
    assert_eq!(json(&out.join("prompt.json"))["domain"], "industrial");

    let reviews = tmp.path().join("r.jsonl");
    let meta = tmp.path().join("m.jsonl");
    let mut r = String::new();
    for u in 0..5 {
        for i in 0..5 {
            r.push_str(&format!(
                "{{\"reviewerID\": \"u{u}\", \"asin\": \"i{i}\", \"unixReviewTime\": {}}}\n",
                10 * i + u
            ));
        }
    }
    std::fs::write(&reviews, r).unwrap();
    std::fs::write(
        &meta,
        (0..5)
            .map(|i| format!("{{\"asin\": \"i{i}\", \"title\": \"Item {i}\"}}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let out = tmp.path().join("a");
    ok(&[
        "prepare",
        "--format",
        "amazon",
        "--reviews",
        reviews.to_str().unwrap(),
        "--meta",
        meta.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--k-core",
        "5",
        "--max-history",
        "2",
    ]);
    let s = json(&out.join("stats.json"));
    assert_eq!(
        s["samples"]["train"].as_u64().unwrap()
            + s["samples"]["valid"].as_u64().unwrap()
            + s["samples"]["test"].as_u64().unwrap(),
        20
    );
    assert_eq!(
        (
            s["samples"]["train"].as_u64(),
            s["samples"]["valid"].as_u64()
        ),
        (Some(16), Some(2))
    );

    let e = fails(&[
        "prepare",
        "--format",
        "amazon",
        "--reviews",
        reviews.to_str().unwrap(),
        "--out",
        "x",
    ]);
    assert!(e.contains("--meta"), "{e}");
    let e = fails(&[
        "prepare",
        "--format",
        "amazon",
        "--reviews",
        reviews.to_str().unwrap(),
        "--meta",
        meta.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--force",
        "--k-core",
        "6",
    ]);
    assert!(e.contains("catalog is empty"), "{e}");
    assert!(
        out.join("stats.json").exists(),
        "a failed run keeps the previous dataset"
    );
}

/// The demo's generator, through the binary (so this crate needs no data dependency in tests).
fn minirec_data_demo(raw: &Path) -> (PathBuf, PathBuf) {
    let run = raw.parent().unwrap().join("demo");
    ok(&[
        "demo",
        "--out",
        run.to_str().unwrap(),
        "--users",
        "300",
        "--prepare-only",
    ]);
    (run.join("raw/interactions.csv"), run.join("raw/items.csv"))
}

#[test]
fn demo_prepares_the_embedded_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("demo");
    let out = ok(&["demo", "--out", run.to_str().unwrap(), "--prepare-only"]);
    assert!(out.contains("distinct titles  300"), "{out}");
    assert!(out.contains("### Response:"), "{out}");
    let s = json(&run.join("data/stats.json"));
    assert_eq!(s["item_ids"], 306);
    // Same seed, same dataset.
    let first = std::fs::read(run.join("data/test.jsonl")).unwrap();
    ok(&["demo", "--out", run.to_str().unwrap(), "--prepare-only"]);
    assert_eq!(first, std::fs::read(run.join("data/test.jsonl")).unwrap());
}

#[test]
fn demo_runs_the_pipeline_and_writes_a_report() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("demo");
    let out = ok(&[
        "demo",
        "--out",
        run.to_str().unwrap(),
        "--users",
        "200",
        "--sft-epochs",
        "1",
        "--rl-steps",
        "2",
    ]);
    assert!(out.contains("| SFT + RISER |"), "{out}");
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        report.contains("| SFT |") && report.contains("NDCG@10"),
        "{report}"
    );
    for f in [
        "sft/model/config.json",
        "sft/train_log.jsonl",
        "rl/rl_log.jsonl",
        "rl/model/tokenizer.json",
    ] {
        assert!(run.join(f).exists(), "{f}");
    }
}

#[test]
fn later_stages_say_they_are_not_available_yet() {
    for cmd in ["select", "baseline", "run"] {
        let e = fails(&[cmd, "--data", "x"]);
        assert!(e.contains("not available"), "{cmd}: {e}");
    }
}
