//! `minirec recommend` and `minirec convert` end to end on a tiny random model with a word-level tokenizer
//! over the demo catalog's vocabulary.

use std::collections::BTreeSet;

mod common;
use common::{minirec, tiny_model_dir};

#[test]
fn recommend_ranks_catalog_titles_and_convert_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("demo");
    assert!(minirec(&[
        "demo",
        "--out",
        run.to_str().unwrap(),
        "--users",
        "300",
        "--prepare-only"
    ])
    .status
    .success());
    let data = run.join("data");
    let model = tmp.path().join("model");
    tiny_model_dir(&model, &data);

    let args = [
        "recommend",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--history",
        "Voltex Cordless Drill 12V",
        "--history",
        "Voltex Cordless Drill 18V",
        "--top-k",
        "7",
        "--json",
    ];
    let o = minirec(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let recs: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(recs.len(), 7);
    let catalog = std::fs::read_to_string(data.join("catalog.jsonl")).unwrap();
    let mut seen = BTreeSet::new();
    let mut last = f64::INFINITY;
    for r in &recs {
        let t = r["title"].as_str().unwrap();
        assert!(
            catalog.contains(&format!("\"title\":\"{t}\"")),
            "{t} is a catalog title"
        );
        assert!(seen.insert(t.to_string()), "distinct");
        let s = r["score"].as_f64().unwrap();
        assert!(s <= last && s < 0.0, "best first, log-probabilities");
        last = s;
    }

    // With every title in the beam the ranking is exact, so leaving out the history's titles must give the
    // same list without them, scores unchanged.
    let titles: BTreeSet<String> = catalog
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["title"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let n = titles.len().to_string();
    let all_args = |k: &str, exclude: bool| {
        let mut v: Vec<&str> = args[..9].to_vec();
        v.extend(["--top-k", k, "--beam", n.as_str(), "--json"]);
        if exclude {
            v.push("--exclude-history");
        }
        let o = minirec(&v);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout).unwrap()
    };
    let everything = all_args(&n, false);
    let history = ["Voltex Cordless Drill 12V", "Voltex Cordless Drill 18V"];
    let without: Vec<&serde_json::Value> = everything
        .iter()
        .filter(|r| !history.contains(&r["title"].as_str().unwrap()))
        .collect();
    assert_eq!(
        without.len(),
        titles.len() - 2,
        "both history titles are in the catalog"
    );
    let excluded = all_args(&(titles.len() - 2).to_string(), true);
    assert_eq!(excluded.iter().collect::<Vec<_>>(), without);
    let top = all_args("7", true);
    assert_eq!(top.len(), 7);
    assert_eq!(top.iter().collect::<Vec<_>>(), without[..7].to_vec());

    // convert writes an HF directory that ranks identically.
    let converted = tmp.path().join("converted");
    assert!(minirec(&[
        "convert",
        "--model",
        model.to_str().unwrap(),
        "--out",
        converted.to_str().unwrap()
    ])
    .status
    .success());
    let mut args2 = args.to_vec();
    let conv = converted.to_str().unwrap().to_string();
    args2[2] = &conv;
    let o2 = minirec(&args2);
    assert_eq!(o.stdout, o2.stdout);

    let bad = minirec(&[
        "recommend",
        "--model",
        tmp.path().join("nope").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--history",
        "x",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nope"));
}

#[test]
fn sft_from_the_cli_writes_a_run_that_recommends() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("demo");
    assert!(minirec(&[
        "demo",
        "--out",
        run.to_str().unwrap(),
        "--users",
        "300",
        "--prepare-only"
    ])
    .status
    .success());
    let data = run.join("data");
    let model = tmp.path().join("model");
    tiny_model_dir(&model, &data);
    let out = tmp.path().join("sft");
    let args = [
        "sft",
        "--data",
        data.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--max-steps",
        "4",
        "--batch-size",
        "8",
        "--max-train",
        "64",
        "--lr",
        "1e-3",
        "--checkpoint-every",
        "2",
        "--cpu",
    ];
    let o = minirec(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("4 steps"));
    for f in [
        "manifest.json",
        "train_log.jsonl",
        "model/config.json",
        "model/tokenizer.json",
        "checkpoints/latest",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    let o = minirec(&[
        "recommend",
        "--model",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--history",
        "Voltex Cordless Drill 12V",
        "--top-k",
        "3",
        "--json",
        "--cpu",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let recs: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(recs.len(), 3);
    // eval --model ranks every test sample and scores it with the same code as eval --predictions.
    let preds = tmp.path().join("preds.jsonl");
    let metrics = tmp.path().join("m.json");
    let o = minirec(&[
        "eval",
        "--model",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--split",
        "test",
        "--limit",
        "12",
        "--beam",
        "5",
        "--k",
        "1,5",
        "--predictions-out",
        preds.to_str().unwrap(),
        "--json",
        metrics.to_str().unwrap(),
        "--cpu",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&preds)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12);
    assert!(lines
        .iter()
        .all(|l| l["ranked"].as_array().unwrap().len() == 5));
    let again = tmp.path().join("m2.json");
    assert!(minirec(&[
        "eval",
        "--predictions",
        preds.to_str().unwrap(),
        "--k",
        "1,5",
        "--json",
        again.to_str().unwrap()
    ])
    .status
    .success());
    let (m1, m2): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&std::fs::read_to_string(&metrics).unwrap()).unwrap(),
        serde_json::from_str(&std::fs::read_to_string(&again).unwrap()).unwrap(),
    );
    assert_eq!(m1, m2);
    assert_eq!(m1["n"], 12);
    // RL from the SFT run, on a two-sample selection, then the RL run evaluates like any model.
    let subset = tmp.path().join("subset.jsonl");
    std::fs::write(&subset, "{\"sample_id\": 3}\n{\"sample_id\": 0}\n").unwrap();
    let rl = tmp.path().join("rl");
    let o = minirec(&[
        "rl",
        "--data",
        data.to_str().unwrap(),
        "--init",
        out.to_str().unwrap(),
        "--out",
        rl.to_str().unwrap(),
        "--subset",
        subset.to_str().unwrap(),
        "--max-steps",
        "2",
        "--prompts-per-step",
        "2",
        "--rollouts",
        "4",
        "--keep",
        "3",
        "--lr",
        "1e-3",
        "--kl-ref",
        "0.1",
        "--cpu",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("2 steps"));
    let log = std::fs::read_to_string(rl.join("rl_log.jsonl")).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("mean_reward")).count(), 2);
    assert_eq!(
        log.lines().filter(|l| l.contains("valid_hr@1")).count(),
        2,
        "before the first and after the last step"
    );
    assert!(rl.join("rl_entropy.svg").exists() && out.join("sft_loss.svg").exists());
    let o = minirec(&[
        "eval",
        "--model",
        rl.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--limit",
        "3",
        "--beam",
        "3",
        "--cpu",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(&subset, "{\"sample_id\": 999999}\n").unwrap();
    let o = minirec(&[
        "rl",
        "--data",
        data.to_str().unwrap(),
        "--init",
        out.to_str().unwrap(),
        "--out",
        rl.to_str().unwrap(),
        "--subset",
        subset.to_str().unwrap(),
        "--cpu",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("999999"));
    // A missing dataset is named.
    let o = minirec(&[
        "sft",
        "--data",
        tmp.path().join("none").to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("none"));
}
