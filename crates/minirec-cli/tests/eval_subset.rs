//! Evaluation on a seeded subset, resumed after a kill, and two systems compared sample by sample.

use std::path::Path;

mod common;

use common::{minirec, ok, s};

fn samples_of(p: &Path) -> Vec<u64> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["sample"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn a_seeded_subset_resumes_after_a_kill_and_compares_pairwise() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = tmp.path().join("demo");
    ok(&[
        "demo",
        "--out",
        s(&demo),
        "--users",
        "150",
        "--prepare-only",
    ]);
    let data = demo.join("data");
    let (m1, m2) = (tmp.path().join("m1"), tmp.path().join("m2"));
    common::tiny_model_dir(&m1, &data);
    common::tiny_model_dir(&m2, &data);
    let eval = |model: &Path, out: &Path, seed: &str, extra: &[&str]| {
        let mut a = vec![
            "eval",
            "--model",
            s(model),
            "--data",
            s(&data),
            "--sample",
            "12",
            "--sample-seed",
            seed,
            "--batch",
            "5",
            "--beam",
            "5",
            "--cpu",
            "--predictions-out",
            s(out),
        ];
        a.extend_from_slice(extra);
        minirec(&a)
    };
    let full = tmp.path().join("full.jsonl");
    let o = eval(&m1, &full, "3", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(table.contains("n = 12"), "{table}");
    // Written shortest prompt first (less padding per batch); as a set, 12 distinct samples.
    let mut picked = samples_of(&full);
    picked.sort_unstable();
    assert_eq!(picked.len(), 12);
    assert!(picked.windows(2).all(|w| w[0] < w[1]), "{picked:?}");
    assert_ne!(
        picked,
        (0..12).collect::<Vec<u64>>(),
        "a random subset, not the head"
    );

    // Killed mid-write: two whole batches and part of a line. --resume keeps them and ranks the rest.
    let text = std::fs::read_to_string(&full).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let cut = tmp.path().join("cut.jsonl");
    std::fs::write(
        &cut,
        format!("{}\n{}", lines[..10].join("\n"), &lines[10][..9]),
    )
    .unwrap();
    let o = eval(&m1, &cut, "3", &["--resume"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8(o.stdout).unwrap(), table);
    assert_eq!(std::fs::read_to_string(&cut).unwrap(), text);

    // Batches decoded side by side on lanes: the same lists in the same order and the same table, also resumed.
    let laned = tmp.path().join("laned.jsonl");
    let o = eval(&m1, &laned, "3", &["--lanes", "3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8(o.stdout).unwrap(), table);
    assert_eq!(std::fs::read_to_string(&laned).unwrap(), text);
    std::fs::write(&cut, lines[..5].join("\n") + "\n").unwrap();
    let o = eval(&m1, &cut, "3", &["--resume", "--lanes", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8(o.stdout).unwrap(), table);
    assert_eq!(std::fs::read_to_string(&cut).unwrap(), text);

    // Another subset's file is refused, not mixed in.
    let o = eval(&m1, &full, "4", &["--resume"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("full.jsonl:1:") && e.contains("another"), "{e}");
    assert_eq!(
        std::fs::read_to_string(&full).unwrap(),
        text,
        "the file is left as it was"
    );

    // The same system against itself differs by nothing; a second run pairs sample by sample.
    let same = ok(&["compare", s(&full), s(&cut)]);
    assert!(same.contains("12 paired samples"), "{same}");
    assert!(
        same.contains("| ndcg@10 |") && !same.contains("| yes |"),
        "{same}"
    );
    let other = tmp.path().join("other.jsonl");
    assert!(eval(&m2, &other, "3", &[]).status.success());
    let json = tmp.path().join("c.json");
    ok(&[
        "compare",
        s(&full),
        s(&other),
        "--json",
        s(&json),
        "--k",
        "10",
    ]);
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(c["n"], 12);
    assert_eq!(c["resamples"], 1000);
    let d = &c["metrics"][0];
    assert!(d["low"].as_f64().unwrap() <= d["diff"].as_f64().unwrap());
    assert!(d["diff"].as_f64().unwrap() <= d["high"].as_f64().unwrap());
    // Different samples cannot be paired.
    let head = tmp.path().join("head.jsonl");
    assert!(eval(&m1, &head, "5", &[]).status.success());
    let o = minirec(&["compare", s(&full), s(&head)]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not in B"));
}

/// `compare --by-target N`: the items whose samples carry the difference, in the table and the JSON.
#[test]
fn compare_names_the_targets_that_carry_the_difference() {
    let tmp = tempfile::tempdir().unwrap();
    let line = |t: &str, r: &[&str]| serde_json::json!({"target": t, "ranked": r}).to_string();
    let a = [
        line("Lamp", &["Rod", "Lamp"]),
        line("Lamp", &["Rod", "Tape"]),
        line("Rod", &["Rod"]),
        line("Tape", &["Tape"]),
    ];
    let b = [
        line("Lamp", &["Lamp", "Rod"]),
        line("Lamp", &["Lamp", "Tape"]),
        line("Rod", &["Tape", "Rod"]),
        line("Tape", &["Tape"]),
    ];
    let (pa, pb) = (tmp.path().join("a.jsonl"), tmp.path().join("b.jsonl"));
    std::fs::write(&pa, a.join("\n")).unwrap();
    std::fs::write(&pb, b.join("\n")).unwrap();
    let json = tmp.path().join("c.json");
    let out = ok(&[
        "compare",
        s(&pa),
        s(&pb),
        "--by-target",
        "2",
        "--json",
        s(&json),
    ]);
    assert!(
        out.contains("The 2 targets (of 3) that move b − a at NDCG@10 the most"),
        "{out}"
    );
    assert!(out.contains("| Lamp | 2 |"), "{out}");
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let top = &c["by_target"]["top"];
    assert_eq!(top[0]["target"], "Lamp");
    // Lamp: 1/log2(3) → 1 and 0 → 1 over 4 samples; Rod: 1 → 1/log2(3).
    let g = 1.0 - 1.0 / 3f64.log2();
    assert!((top[0]["contribution"].as_f64().unwrap() - (g + 1.0) / 4.0).abs() < 1e-12);
    assert_eq!(top[1]["target"], "Rod");
    assert!((top[1]["contribution"].as_f64().unwrap() + g / 4.0).abs() < 1e-12);
    assert_eq!(c["n"], 4, "the comparison itself is still there");
    let plain = ok(&["compare", s(&pa), s(&pb)]);
    assert!(!plain.contains("targets (of"), "off unless asked for");
}
