//! The `minirec` binary's interface, as users and our checks call it.

use std::path::{Path, PathBuf};

mod common;
use common::{minirec, ok, s};

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

/// `select` with MiniRec on 10 samples, the model as its own proxy, 2 rollouts each.
fn minirec_select<'a>(data: &'a str, model: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "select",
        "--data",
        data,
        "--model",
        model,
        "--method",
        "minirec",
        "--size",
        "10",
        "--out",
        out,
        "--proxy",
        model,
        "--rollouts",
        "2",
    ]
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
    // GORACS measures closeness to the validation split: without one it stops before loading anything.
    let e = fails(&[
        "select",
        "--data",
        out.to_str().unwrap(),
        "--model",
        "no-such-model",
        "--method",
        "goracs",
        "--size",
        "8",
        "--out",
        tmp.path().join("g.jsonl").to_str().unwrap(),
    ]);
    assert!(
        e.contains("validation") && e.contains("--hold-out-every"),
        "{e}"
    );
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

    // A held-back validation slice: every 20th training row, the same rows the experiment scripts hold back.
    let held = tmp.path().join("held");
    ok(&[
        "prepare",
        "--format",
        "d3",
        "--info",
        &p("info.txt"),
        "--train",
        &p("valid.csv"),
        "--test",
        &p("test.csv"),
        "--hold-out-every",
        "20",
        "--out",
        held.to_str().unwrap(),
    ]);
    let s = json(&held.join("stats.json"));
    assert_eq!(
        (
            s["samples"]["train"].as_u64(),
            s["samples"]["valid"].as_u64()
        ),
        (Some(4306), Some(226))
    );
    let lines = |dir: &Path, f: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join(f))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (all, train, valid) = (
        lines(&out, "train.jsonl"),
        lines(&held, "train.jsonl"),
        lines(&held, "valid.jsonl"),
    );
    let strip = |v: &serde_json::Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("id");
        v
    };
    assert_eq!(strip(&valid[0]), strip(&all[19]));
    assert_eq!(strip(&valid[225]), strip(&all[4519]));
    assert_eq!(strip(&train[19]), strip(&all[20]));
    let o = minirec(&[
        "prepare",
        "--format",
        "d3",
        "--info",
        &p("info.txt"),
        "--train",
        &p("valid.csv"),
        "--valid",
        &p("valid.csv"),
        "--test",
        &p("test.csv"),
        "--hold-out-every",
        "20",
        "--out",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("--hold-out-every") && e.contains("--valid"),
        "{e}"
    );
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

/// A D3 folder with the Industrial sample's catalog and its first `train` / `test` rows.
fn industrial_slice(d: &Path, out: &Path, train: usize, test: usize) {
    std::fs::create_dir_all(out).unwrap();
    std::fs::copy(d.join("info.txt"), out.join("info.txt")).unwrap();
    for (f, n) in [("valid.csv", train), ("test.csv", test)] {
        let text = std::fs::read_to_string(d.join(f)).unwrap();
        let head: Vec<&str> = text.lines().take(n + 1).collect();
        std::fs::write(out.join(f), head.join("\n") + "\n").unwrap();
    }
}

#[test]
fn the_real_llm_demo_runs_sft_riser_evaluation_and_a_recommendation() {
    let Some(d) = industrial() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let d3 = tmp.path().join("d3");
    industrial_slice(&d, &d3, 24, 12);
    // A tiny random model whose word-level tokenizer covers the catalog stands in for SmolLM2.
    let data = tmp.path().join("data");
    let p = |f: &str| d3.join(f).to_string_lossy().into_owned();
    ok(&[
        "prepare",
        "--format",
        "d3",
        "--domain",
        "industrial",
        "--info",
        &p("info.txt"),
        "--train",
        &p("valid.csv"),
        "--test",
        &p("test.csv"),
        "--out",
        s(&data),
    ]);
    let model = tmp.path().join("model");
    common::tiny_model_dir(&model, &data);
    let run = tmp.path().join("run");
    let out = ok(&[
        "demo",
        "--model",
        s(&model),
        "--d3",
        s(&d3),
        "--out",
        s(&run),
        "--sft-samples",
        "8",
        "--eval-samples",
        "6",
        "--rl-steps",
        "1",
        "--beam",
        "5",
    ]);
    for row in [
        "| SFT |",
        "| + RISER |",
        "| full-riser | sft | 6 |",
        "| total |",
        "| stage | seconds | hours |",
    ] {
        assert!(out.contains(row), "{row} missing from:\n{out}");
    }
    assert!(
        out.contains("bought next: ") && out.contains("  1. "),
        "{out}"
    );
    assert_eq!(json(&run.join("eval/sft.json"))["n"], 6);
    assert_eq!(json(&run.join("eval/full-riser.json"))["n"], 6);
    let rl = std::fs::read_to_string(run.join("rl/full-riser/rl_log.jsonl")).unwrap();
    assert_eq!(rl.lines().count(), 1);
    // Both evaluations ranked the same seeded samples.
    let samples = |f: &str| -> Vec<u64> {
        let text = std::fs::read_to_string(run.join("eval").join(f)).unwrap();
        let mut v: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["sample"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        samples("sft.predictions.jsonl"),
        samples("full-riser.predictions.jsonl")
    );
    let e = fails(&[
        "demo",
        "--model",
        s(&model),
        "--d3",
        s(tmp.path()),
        "--out",
        s(&run),
    ]);
    assert!(e.contains("no info.txt"), "{e}");
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
        "--size",
        "32",
        "--methods",
        "minirec,random",
    ]);
    assert!(
        out.contains("| minirec |") && out.contains("| random |"),
        "{out}"
    );
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        report.contains("| SFT only |") && report.contains("NDCG@10"),
        "{report}"
    );
    assert!(
        report.contains("![mean reward per rollout](rewards.svg)"),
        "{report}"
    );
    let chart = std::fs::read_to_string(run.join("rewards.svg")).unwrap();
    assert_eq!(
        chart.matches("<polyline").count(),
        2,
        "one curve per RL run"
    );
    for f in [
        "sft/model/config.json",
        "sft/train_log.jsonl",
        "select/minirec-32.jsonl",
        "select/minirec-32.scores.jsonl",
        "select/minirec-32.manifest.json",
        "rl/minirec-32-riser/rl_log.jsonl",
        "rl/minirec-32-riser/model/tokenizer.json",
        "rl/random-32-riser/model/config.json",
        "eval/sft.json",
        "eval/minirec-32-riser.predictions.jsonl",
        "stages.json",
        "rewards.svg",
        "entropy.svg",
    ] {
        assert!(run.join(f).exists(), "{f}");
    }
    // The MiniRec subset: 32 distinct train samples, every score present, curriculum groups in order, and the
    // greedy value consistent with its parts.
    let text = std::fs::read_to_string(run.join("select/minirec-32.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 32);
    let mut ids: Vec<u64> = rows
        .iter()
        .map(|r| r["sample_id"].as_u64().unwrap())
        .collect();
    let mut last_group = 0;
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["order"].as_u64(), Some(i as u64));
        let g = r["group"].as_u64().unwrap();
        assert!(g >= last_group);
        last_group = g;
        let f = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} in {r}"));
        assert!((f("v") - f("d") * (f("l") + f("r"))).abs() < 1e-4, "{r}");
        assert!((0.0..=1.0).contains(&f("r_bar")));
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 32);
    let scores = std::fs::read_to_string(run.join("select/minirec-32.scores.jsonl")).unwrap();
    let train_n = json(&run.join("data/stats.json"))["samples"]["train"]
        .as_u64()
        .unwrap();
    assert_eq!(
        scores.lines().count() as u64,
        train_n,
        "one score line per training sample"
    );
}

/// A prepared demo dataset and an SFT model from a quick `run`, shared by the tests below.
fn quick_experiment(dir: &Path) -> (PathBuf, String) {
    let demo = dir.join("demo");
    ok(&[
        "demo",
        "--out",
        demo.to_str().unwrap(),
        "--users",
        "150",
        "--prepare-only",
    ]);
    let data = demo.join("data");
    let toml = format!(
        r#"
out = "exp"
seed = 7
cpu = true
keep_checkpoints = true

[data]
prepared = "{data}"

[model]
preset = "tiny"

[sft]
epochs = 1
lr = 3e-3
batch_size = 32

[select]
methods = ["random", "el2n", "kmeans", "grand", "minirec", "goracs"]
sizes = [16]
ablations = ["no-diversity"]
full = true
rollouts = 2
proxy_samples = 16
proxy_rl_steps = 1

[rl]
max_steps = 2
prompts_per_step = 4
rollouts = 4
keep = 4
lr = 1e-5
variants = ["riser", "grpo", "riser-demos"]
demo_rollouts = 2
checkpoint_every = 1

[eval]
sample = 40
batch = 40
whole = ["sft", "full-riser", "full-grpo"]

[baselines]
models = ["sasrec"]
epochs = 2
"#,
        data = data.display()
    );
    let file = dir.join("experiment.toml");
    std::fs::write(&file, toml).unwrap();
    let out = ok(&["run", file.to_str().unwrap()]);
    (data, out)
}

/// A small experiment file on a 120-user demo shop: tiny model, SFT on 64 samples, one RL step of GRPO and
/// RISER, `methods` (a TOML list) at size 8, every row on `eval_sample` samples in batches of `eval_batch`.
fn small_experiment(dir: &Path, methods: &str, eval_sample: usize, eval_batch: usize) -> PathBuf {
    let data = common::demo_data(dir, 120);
    let toml = format!(
        r#"
out = "exp"
seed = 7
cpu = true

[data]
prepared = "{data}"

[model]
preset = "tiny"

[sft]
lr = 3e-3
batch_size = 32
max_train = 64

[select]
methods = {methods}
sizes = [8]
full = true

[rl]
max_steps = 1
prompts_per_step = 2
rollouts = 4
keep = 4
variants = ["riser", "grpo"]

[eval]
sample = {eval_sample}
batch = {eval_batch}
"#,
        data = data.display()
    );
    let file = dir.join("experiment.toml");
    std::fs::write(&file, toml).unwrap();
    file
}

/// `--seed` runs the file with another seed, and a run directory holds one seed: a second seed into it stops
/// before any stage, naming both, and leaves the directory as it was.
#[test]
fn run_refuses_a_second_seed_in_one_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let file = small_experiment(tmp.path(), "[]", 16, 16);
    let out = tmp.path().join("seed7");
    std::fs::create_dir_all(&out).unwrap();
    let record = r#"{"seed": 7, "out": "seed7"}"#;
    std::fs::write(out.join("experiment.json"), record).unwrap();
    let o = minirec(&[
        "run",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--seed",
        "8",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("was run with seed 7, and this run has seed 8") && err.contains("--out"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("experiment.json")).unwrap(),
        record
    );
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        1,
        "nothing else written"
    );
}

/// A trainers-only experiment (the session-sized SmolLM2 file's shape): no selection table, the step cap stated.
#[test]
fn run_without_selection_methods_reports_the_trainers_only() {
    let tmp = tempfile::tempdir().unwrap();
    let file = small_experiment(tmp.path(), "[]", 16, 16);
    // With one of RISER's ablations: its row, paired against SFT and against RISER, and no SimPO in its run.
    let toml = std::fs::read_to_string(&file).unwrap().replace(
        r#"variants = ["riser", "grpo"]"#,
        r#"variants = ["riser", "grpo", "riser-no-simpo"]"#,
    );
    std::fs::write(&file, toml).unwrap();
    ok(&["run", file.to_str().unwrap()]);
    let report = std::fs::read_to_string(tmp.path().join("exp/report.md")).unwrap();
    assert!(!report.contains("selected samples"), "{report}");
    assert!(report.contains("(at most 1 step)"), "{report}");
    for row in [
        "| + GRPO |",
        "| + RISER |",
        "| + RISER w/o SimPO |",
        "| full-grpo | sft | 16 |",
        "| full-riser-no-simpo | sft | 16 |",
        "| full-riser-no-simpo | full-riser | 16 |",
        "| full-riser | full-grpo | 16 |",
    ] {
        assert!(report.contains(row), "{row} missing from\n{report}");
    }
    let log = std::fs::read_to_string(tmp.path().join("exp/rl/full-riser-no-simpo/rl_log.jsonl"))
        .unwrap();
    for line in log.lines() {
        let step: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(step["simpo_loss"].is_null(), "SimPO ran: {line}");
    }
}

/// An RL row that left the SFT weights as they were (here lr 0; on real data, every group failed) takes the
/// SFT row's lists instead of ranking the same model again; a row whose policy moved is ranked.
#[test]
fn a_row_whose_model_is_the_sft_models_bytes_reuses_its_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let file = small_experiment(tmp.path(), "[]", 16, 16);
    let toml = std::fs::read_to_string(&file)
        .unwrap()
        .replace(r#"variants = ["riser", "grpo"]"#, r#"variants = ["grpo"]"#)
        .replace("keep = 4\n", "keep = 4\nlr = 0.0\n");
    std::fs::write(&file, &toml).unwrap();
    let out = ok(&["run", file.to_str().unwrap()]);
    assert!(
        out.contains("eval full-grpo: its model is byte-for-byte row sft's"),
        "{out}"
    );
    let eval = tmp.path().join("exp/eval");
    let read = |f: &str| std::fs::read(eval.join(f)).unwrap();
    assert_eq!(
        read("full-grpo.predictions.jsonl"),
        read("sft.predictions.jsonl")
    );
    assert_eq!(json(&eval.join("full-grpo.json"))["n"], 16);
    // Exported stages lose their checkpoints (by default); the models stay.
    for stage in ["sft", "rl/full-grpo"] {
        let run = tmp.path().join("exp").join(stage);
        assert!(!run.join("checkpoints").exists(), "{stage}");
        assert!(run.join("model/config.json").is_file(), "{stage}");
    }
    assert!(
        out.contains("rl full-grpo: removed its checkpoints"),
        "{out}"
    );

    // RISER's SimPO term moves the policy even when every group failed: its row is ranked. At the new lr the
    // finished GRPO row is not this file's any more: the runner names it and what to remove.
    let toml = toml
        .replace(r#"variants = ["grpo"]"#, r#"variants = ["grpo", "riser"]"#)
        .replace("lr = 0.0\n", "lr = 1e-3\n");
    std::fs::write(&file, toml).unwrap();
    let err = fails(&["run", file.to_str().unwrap()]);
    assert!(
        err.contains("row full-grpo") && err.contains("lr: 0 recorded, 1e-3 here"),
        "{err}"
    );
    std::fs::remove_dir_all(tmp.path().join("exp/rl/full-grpo")).unwrap();
    for f in ["full-grpo.json", "full-grpo.predictions.jsonl"] {
        std::fs::remove_file(eval.join(f)).unwrap();
    }
    let out = ok(&["run", file.to_str().unwrap()]);
    assert!(out.contains("rl full-riser: 1 steps"), "{out}");
    assert!(
        !out.contains("eval full-riser: its model is byte-for-byte"),
        "{out}"
    );
    assert_eq!(json(&eval.join("full-riser.json"))["n"], 16);
}

/// `bench rollouts`: one row per temperature, hit shares that grow with m (the first m of the same draws), and
/// a clear error for a temperature that is not positive.
#[test]
fn bench_rollouts_reports_hits_per_temperature_and_group_size() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::demo_data(tmp.path(), 120);
    let model = tmp.path().join("model");
    common::tiny_model_dir(&model, &data);
    let out_json = tmp.path().join("probe.json");
    let table = ok(&[
        "bench",
        "rollouts",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--samples",
        "6",
        "--ms",
        "2,8",
        "--temperatures",
        "0.5,2",
        "--batch",
        "4",
        "--cpu",
        "--json",
        s(&out_json),
    ]);
    assert!(table.contains("prompts with a hit, m = 8"), "{table}");
    let rows = json(&out_json);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        let reward = r["mean_reward"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&reward));
        let share = |k: usize| r["with_hit"][k][1].as_f64().unwrap();
        assert!(share(0) <= share(1), "{r}");
        assert!(r["distinct"].as_f64().unwrap() >= 1.0);
    }
    let e = fails(&[
        "bench",
        "rollouts",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--temperatures",
        "0",
        "--cpu",
    ]);
    assert!(e.contains("temperature 0 is not positive"), "{e}");
}

/// A run restored on a new machine from its compact outputs (metrics, ranked lists, logs; no weights): the SFT
/// is redone and checked against the recorded SFT lists, finished rows are not trained again, and a row whose
/// evaluation is missing is trained from the new SFT model. An SFT that ranks differently stops the run.
#[test]
fn a_run_restored_without_weights_redoes_sft_checks_it_and_skips_finished_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let file = small_experiment(tmp.path(), "[\"random\"]", 12, 8);
    ok(&["run", file.to_str().unwrap()]);
    let exp = tmp.path().join("exp");
    let report = std::fs::read_to_string(exp.join("report.md")).unwrap();
    let lose_weights = || {
        std::fs::remove_dir_all(exp.join("sft")).unwrap();
        for run in std::fs::read_dir(exp.join("rl")).unwrap() {
            let run = run.unwrap().path();
            for d in ["model", "adapter", "checkpoints"] {
                let _ = std::fs::remove_dir_all(run.join(d));
            }
        }
    };

    // Every row finished: nothing is trained, the report is the same.
    lose_weights();
    let out = ok(&["run", file.to_str().unwrap()]);
    assert!(out.contains("no model is needed"), "{out}");
    assert!(!exp.join("sft").exists());
    assert_eq!(
        std::fs::read_to_string(exp.join("report.md")).unwrap(),
        report
    );

    // One row's evaluation missing: SFT again, checked, and only that row trained.
    let grpo = json(&exp.join("eval/full-grpo.json"));
    std::fs::remove_file(exp.join("eval/full-grpo.json")).unwrap();
    std::fs::remove_file(exp.join("eval/full-grpo.predictions.jsonl")).unwrap();
    // The report so far: the finished rows as before, the missing one empty, and nothing trained.
    let so_far = ok(&["run", file.to_str().unwrap(), "--report-only"]);
    assert!(
        so_far.contains("report so far: 3 finished row(s)"),
        "{so_far}"
    );
    assert!(so_far.contains("| + GRPO | – | – |"), "{so_far}");
    assert!(!so_far.contains("| full-grpo | sft |"), "{so_far}");
    let riser_row = |r: &str| {
        r.lines()
            .find(|l| l.starts_with("| + RISER |"))
            .map(str::to_owned)
    };
    assert_eq!(riser_row(&so_far), riser_row(&report));
    assert!(!exp.join("sft").exists());
    let out = ok(&["run", file.to_str().unwrap()]);
    assert!(
        out.contains("ranks the recorded SFT evaluation's first 8 samples identically"),
        "{out}"
    );
    assert!(out.contains("rl full-grpo: 1 steps"), "{out}");
    assert!(!out.contains("rl full-riser:"), "{out}");
    assert!(!out.contains("rl random-8-riser:"), "{out}");
    assert_eq!(
        json(&exp.join("eval/full-grpo.json")),
        grpo,
        "the same SFT model trains the same row"
    );

    // A recorded SFT list that the new SFT model does not reproduce: the run stops before training anything.
    lose_weights();
    std::fs::remove_file(exp.join("eval/full-grpo.json")).unwrap();
    let lists = exp.join("eval/sft.predictions.jsonl");
    let text = std::fs::read_to_string(&lists).unwrap();
    let mut first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    first["ranked"].as_array_mut().unwrap().swap(0, 1);
    let rest: Vec<&str> = text.lines().skip(1).collect();
    std::fs::write(&lists, format!("{first}\n{}\n", rest.join("\n"))).unwrap();
    let e = fails(&["run", file.to_str().unwrap()]);
    assert!(e.contains("does not reproduce the recorded one"), "{e}");
    assert!(e.contains("differs first at rank 1"), "{e}");
    assert!(!exp.join("rl/full-grpo/model").exists());
}

/// `run --plan` lists every stage in the runner's order with its state, trains nothing, and estimates what is
/// left from the run's own finished stages of the same kind.
#[test]
fn plan_lists_each_stage_and_estimates_the_rest_from_finished_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let file = small_experiment(tmp.path(), "[\"random\"]", 12, 8);
    ok(&["run", file.to_str().unwrap()]);
    let exp = tmp.path().join("exp");
    std::fs::remove_dir_all(exp.join("rl/full-grpo")).unwrap();
    std::fs::remove_file(exp.join("eval/full-grpo.json")).unwrap();
    std::fs::remove_file(exp.join("eval/full-grpo.predictions.jsonl")).unwrap();
    let plan = ok(&["run", file.to_str().unwrap(), "--plan"]);
    let order: Vec<&str> = plan
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split(" | ").next())
        .filter(|s| s.contains(':') || *s == "sft")
        .collect();
    assert_eq!(
        order,
        [
            "sft",
            "eval:sft",
            "rl:full-riser",
            "eval:full-riser",
            "rl:full-grpo",
            "eval:full-grpo",
            "select:random-8",
            "rl:random-8-riser",
            "eval:random-8-riser",
        ],
        "{plan}"
    );
    assert!(plan.contains("9 stages, 7 done"), "{plan}");
    assert!(plan.contains("2 left"), "{plan}");
    // The one GRPO run is the one to do: RISER's steps do not stand in for its rate.
    assert!(
        plan.contains("plus 1 stage(s) of a kind not measured yet"),
        "{plan}"
    );
    let row = |name: &str| {
        plan.lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap()
            .to_owned()
    };
    assert!(row("rl:full-grpo").ends_with("| to do |  | ? |"), "{plan}");
    assert!(row("eval:full-grpo").contains("≈"), "{plan}");
    assert!(row("rl:full-riser").contains("| done |"), "{plan}");
    assert!(
        !exp.join("rl/full-grpo").exists(),
        "the plan trained something"
    );
    assert!(!exp.join("eval/full-grpo.json").exists());
}

/// Growing `[eval] sample` extends every row's evaluation: the lists ranked already are kept (a seeded
/// subset's first draws are the smaller subset), only the new samples are ranked, as a fresh evaluation ranks
/// them, and only after the row's model has re-ranked the first batch it wrote identically. A list the model
/// does not reproduce stops that row's evaluation.
#[test]
fn a_larger_eval_sample_extends_each_rows_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let file = small_experiment(tmp.path(), "[]", 12, 8);
    let run = || ok(&["run", file.to_str().unwrap()]);
    let grow = |from: &str, to: &str| {
        let toml = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, toml.replace(from, to)).unwrap();
    };
    run();
    let exp = tmp.path().join("exp");
    let lists = |row: &str| {
        std::fs::read_to_string(exp.join(format!("eval/{row}.predictions.jsonl"))).unwrap()
    };
    let before = lists("full-riser");
    grow("sample = 12", "sample = 20");
    let out = run();
    assert!(
        out.contains(
            "eval full-riser: continues its 12 lists; the model ranks the first 8 identically"
        ),
        "{out}"
    );
    assert!(
        out.contains("rl/full-riser/model exists, skipping"),
        "retrained: {out}"
    );
    let after = lists("full-riser");
    assert!(after.starts_with(&before));
    for row in ["sft", "full-riser", "full-grpo"] {
        assert_eq!(
            json(&exp.join(format!("eval/{row}.json")))["n"],
            20,
            "{row}"
        );
    }
    let report = std::fs::read_to_string(exp.join("report.md")).unwrap();
    assert!(report.contains("| full-grpo | sft | 20 |"), "{report}");

    // The extended lists are those of a fresh evaluation of the 20 samples.
    let fresh = tmp.path().join("fresh.jsonl");
    ok(&[
        "eval",
        "--model",
        s(&exp.join("rl/full-riser/model")),
        "--data",
        s(&tmp.path().join("demo/data")),
        "--sample",
        "20",
        "--sample-seed",
        "42",
        "--batch",
        "8",
        "--beam",
        "20",
        "--cpu",
        "--predictions-out",
        s(&fresh),
    ]);
    let by_sample = |text: &str| {
        let mut v: Vec<(u64, serde_json::Value)> = text
            .lines()
            .map(|l| {
                let p: serde_json::Value = serde_json::from_str(l).unwrap();
                (p["sample"].as_u64().unwrap(), p["ranked"].clone())
            })
            .collect();
        v.sort_by_key(|(i, _)| *i);
        v
    };
    assert_eq!(
        by_sample(&after),
        by_sample(&std::fs::read_to_string(&fresh).unwrap())
    );

    // A recorded list this model does not rank: the row stops, naming the sample and rank.
    let path = exp.join("eval/full-grpo.predictions.jsonl");
    let text = lists("full-grpo");
    let mut first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    first["ranked"].as_array_mut().unwrap().swap(0, 1);
    let rest: Vec<&str> = text.lines().skip(1).collect();
    std::fs::write(&path, format!("{first}\n{}\n", rest.join("\n"))).unwrap();
    grow("sample = 20", "sample = 24");
    let e = fails(&["run", file.to_str().unwrap()]);
    assert!(
        e.contains("row full-grpo: its model now does not reproduce the lists"),
        "{e}"
    );
    assert!(e.contains("differs first at rank 1"), "{e}");
    assert_eq!(lists("full-grpo").lines().count(), 20, "nothing appended");
}

#[test]
fn run_executes_every_stage_then_skips_finished_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, out) = quick_experiment(tmp.path());
    let exp = tmp.path().join("exp");
    let report = std::fs::read_to_string(exp.join("report.md")).unwrap();
    for row in [
        "| random |",
        "| el2n |",
        "| kmeans |",
        "| grand |",
        "| minirec |",
        "| goracs |",
        "| full (",
        "| w/o diversity |",
        "| + GRPO |",
        "| + RISER |",
        "| + RISER, in-context demos |",
        "| sasrec |",
    ] {
        assert!(report.contains(row), "{row} missing from\n{report}");
    }
    assert!(out.contains("## MiniRec ablations"), "{out}");
    // Every row on the seeded 40-sample subset; SFT and full-data RISER on the whole split too, paired.
    let n = |name: &str| {
        json(&exp.join(format!("eval/{name}.json")))["n"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(n("sft"), 40);
    assert_eq!(n("random-16-riser"), 40);
    let test_len = std::fs::read_to_string(data.join("test.jsonl"))
        .unwrap()
        .lines()
        .count() as u64;
    assert_eq!(
        (n("sft.whole"), n("full-riser.whole"), n("full-grpo.whole")),
        (test_len, test_len, test_len)
    );
    assert!(!exp.join("eval/random-16-riser.whole.json").exists());
    let whole_table = format!("## The whole test split ({test_len} samples)");
    assert!(report.contains(&whole_table), "{report}");
    for name in ["sft", "full-riser"] {
        let r = json(&exp.join(format!("eval/{name}.whole.json")));
        let row = format!(
            "| {name} | {:.4} | {:.4} |",
            r["ndcg@5"].as_f64().unwrap(),
            r["ndcg@10"].as_f64().unwrap()
        );
        assert!(report.contains(&row), "{row} missing from\n{report}");
    }
    assert!(
        report.contains("## Differences with 95% intervals")
            && report.contains("largest item share of ΔNDCG@10"),
        "{report}"
    );
    for row in [
        "| full-riser | sft | 40 |",
        "| minirec-16-riser | random-16-riser | 40 |",
    ] {
        assert!(report.contains(row), "{row} missing from\n{report}");
    }
    for row in [
        format!("| full-riser.whole | sft.whole | {test_len} |"),
        format!("| full-riser.whole | full-grpo.whole | {test_len} |"),
        "| full-riser | full-grpo | 40 |".to_string(),
    ] {
        assert!(report.contains(&row), "{row} missing from\n{report}");
    }
    // `[rl] checkpoint_every = 1`: a checkpoint after each of the 2 steps (the default, 50, writes the last only).
    for step in ["step-00000001", "step-00000002"] {
        assert!(
            exp.join("rl/full-riser/checkpoints").join(step).is_dir(),
            "{step}"
        );
    }
    // Plain GRPO runs on the full set only.
    assert!(exp.join("rl/full-grpo/model/config.json").exists());
    assert!(!exp.join("rl/random-16-grpo").exists());
    // A second run finds every output and only rewrites the report.
    let again = ok(&["run", tmp.path().join("experiment.toml").to_str().unwrap()]);
    assert!(again.contains("no model is needed"), "{again}");
    assert!(!again.contains("rl random-16-riser: 2 steps"), "{again}");
    assert_eq!(
        std::fs::read_to_string(exp.join("report.md")).unwrap(),
        report
    );

    // Rollouts lost (e.g. a crash before they were cached): the trained proxy is re-used, not retrained.
    let cache = exp.join("select/cache");
    let proxy_log = cache.join("proxy/rl/rl_log.jsonl");
    let proxy_steps = std::fs::read_to_string(&proxy_log).unwrap().lines().count();
    std::fs::remove_file(cache.join("rewards.json")).unwrap();
    std::fs::remove_file(exp.join("select/minirec-16.jsonl")).unwrap();
    // (The row's evaluation goes too: a finished row needs no selection.)
    std::fs::remove_file(exp.join("eval/minirec-16-riser.json")).unwrap();
    ok(&["run", tmp.path().join("experiment.toml").to_str().unwrap()]);
    assert!(exp.join("select/minirec-16.jsonl").is_file());
    assert_eq!(
        std::fs::read_to_string(&proxy_log).unwrap().lines().count(),
        proxy_steps,
        "the proxy was trained again"
    );

    // `select` on its own: MiniRec with a given proxy, the param-space variant, and every baseline.
    let model = exp.join("sft/model");
    let sel = tmp.path().join("sel");
    let (data_s, model_s) = (data.to_str().unwrap(), model.to_str().unwrap());
    let m_out = sel.join("m.jsonl");
    let mut args = minirec_select(data_s, model_s, m_out.to_str().unwrap());
    args.extend(["--space", "param", "--lambda", "0.5"]);
    let line = ok(&args);
    assert!(line.contains("10 of"), "{line}");
    let text = std::fs::read_to_string(sel.join("m.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 10);
    // Without learnability the curriculum still needs the proxy's rewards: said before the proxy runs.
    let no_l = |extra: &[&str]| {
        let (out, cache) = (sel.join("no-l.jsonl"), sel.join("no-l-cache"));
        // A fresh cache each time: with the rewards cached no proxy runs and nothing is said.
        let _ = std::fs::remove_dir_all(&cache);
        let mut args = minirec_select(data_s, model_s, out.to_str().unwrap());
        args.extend(["--no-learnability", "--cache", cache.to_str().unwrap()]);
        args.extend_from_slice(extra);
        let o = minirec(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stderr).unwrap()
    };
    assert!(no_l(&[]).contains("add --no-curriculum"));
    assert!(!no_l(&["--no-curriculum"]).contains("--no-curriculum"));
    let surrogate = exp.join("baselines/sasrec");
    let d = ok(&[
        "select",
        "--data",
        data.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--method",
        "dealrec",
        "--size",
        "12",
        "--out",
        sel.join("d.jsonl").to_str().unwrap(),
        "--surrogate",
        surrogate.to_str().unwrap(),
    ]);
    assert!(d.contains("12 of"), "{d}");
    // GORACS: the OT trace in the summary and the manifest; the swaps never raise POO.
    let g = ok(&[
        "select",
        "--data",
        data.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--method",
        "goracs",
        "--size",
        "12",
        "--out",
        sel.join("g.jsonl").to_str().unwrap(),
        "--goracs-swaps",
        "5",
    ]);
    assert!(g.contains("12 of") && g.contains("POO"), "{g}");
    let gm = json(&sel.join("g.manifest.json"));
    let trace = &gm["outputs"]["goracs"];
    assert!(trace["poo"].as_f64().unwrap() <= trace["greedy_poo"].as_f64().unwrap());
    assert!(trace["swaps"].as_u64().unwrap() <= 5, "{trace}");
    assert_eq!(
        std::fs::read_to_string(sel.join("g.jsonl"))
            .unwrap()
            .lines()
            .count(),
        12
    );
    let r = ok(&[
        "select",
        "--data",
        data.to_str().unwrap(),
        "--method",
        "random",
        "--size",
        "5",
        "--out",
        sel.join("r.jsonl").to_str().unwrap(),
    ]);
    assert!(r.contains("5 of"), "{r}");
    // Transfer (MiniRec §5.3): a second experiment with another shape selects with the first one's model.
    let toml2 = format!(
        "out = \"exp2\"\ncpu = true\n[data]\nprepared = \"{}\"\n[model]\npreset = \"tiny-64\"\n\
         [sft]\nepochs = 1\nlr = 3e-3\nbatch_size = 32\n[select]\nmethods = [\"minirec\"]\nsizes = [8]\n\
         full = false\nrollouts = 2\nproxy = \"{}\"\nmodel = \"{}\"\n[rl]\nmax_steps = 1\nrollouts = 4\nkeep = 4\n\
         [eval]\nlimit = 10\n",
        data.display(),
        model.display(),
        model.display()
    );
    std::fs::write(tmp.path().join("transfer.toml"), toml2).unwrap();
    let t = ok(&["run", tmp.path().join("transfer.toml").to_str().unwrap()]);
    assert!(t.contains("| minirec |"), "{t}");
    let m2 = json(&tmp.path().join("exp2/select/minirec-8.manifest.json"));
    assert!(
        m2["config"]["model"]
            .as_str()
            .unwrap()
            .ends_with("exp/sft/model"),
        "{m2}"
    );
    let cfg2 = json(&tmp.path().join("exp2/rl/minirec-8-riser/model/config.json"));
    assert_eq!(
        cfg2["hidden_size"], 64,
        "trained the experiment's own (tiny-64) model"
    );

    // The subset feeds `rl --subset` in its order.
    ok(&[
        "rl",
        "--data",
        data.to_str().unwrap(),
        "--init",
        model.to_str().unwrap(),
        "--out",
        tmp.path().join("rl").to_str().unwrap(),
        "--subset",
        sel.join("m.jsonl").to_str().unwrap(),
        "--max-steps",
        "1",
        "--rollouts",
        "4",
        "--keep",
        "4",
        "--eval-every",
        "0",
        "--cpu",
    ]);
    // The manifest names the samples the steps trained on: the subset's first ones, in its order.
    let m = json(&tmp.path().join("rl/manifest.json"));
    let per_step = m["config"]["config"]["prompts_per_step"].as_u64().unwrap() as usize;
    let trained: Vec<u64> = m["config"]["trained_sample_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let subset: Vec<u64> = std::fs::read_to_string(sel.join("m.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["sample_id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(trained.len(), per_step, "1 step");
    assert_eq!(trained, subset[..per_step.min(subset.len())].to_vec());
    // In-context RL: demonstrations in 2 of the 4 rollouts; the log says how each kind fared.
    ok(&[
        "rl",
        "--data",
        data.to_str().unwrap(),
        "--init",
        model.to_str().unwrap(),
        "--out",
        tmp.path().join("rl-demos").to_str().unwrap(),
        "--max-steps",
        "2",
        "--rollouts",
        "4",
        "--keep",
        "4",
        "--demos",
        "1",
        "--demo-rollouts",
        "2",
        "--eval-every",
        "0",
        "--cpu",
    ]);
    let log = std::fs::read_to_string(tmp.path().join("rl-demos/rl_log.jsonl")).unwrap();
    assert!(
        log.contains("demo_reward") && log.contains("plain_reward"),
        "{log}"
    );
    let e = fails(&[
        "rl",
        "--data",
        data.to_str().unwrap(),
        "--init",
        model.to_str().unwrap(),
        "--out",
        tmp.path().join("rl-similar").to_str().unwrap(),
        "--demos",
        "1",
        "--demo-rollouts",
        "2",
        "--demo-select",
        "similar",
        "--cpu",
    ]);
    assert!(e.contains("--demo-encoder"), "{e}");
    // Retrieval by MiniLM similarity, where the encoder is installed (MINIREC_MINILM_DIR); the embeddings are
    // kept in the run directory for a resumed run.
    if let Some(enc) = std::env::var_os("MINIREC_MINILM_DIR") {
        let run = tmp.path().join("rl-similar");
        ok(&[
            "rl",
            "--data",
            data.to_str().unwrap(),
            "--init",
            model.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
            "--max-steps",
            "1",
            "--rollouts",
            "4",
            "--keep",
            "4",
            "--demos",
            "2",
            "--demo-rollouts",
            "2",
            "--demo-select",
            "similar",
            "--demo-encoder",
            enc.to_str().unwrap(),
            "--eval-every",
            "0",
            "--cpu",
        ]);
        assert!(run.join("demo_embeddings.safetensors").is_file());
        let log = std::fs::read_to_string(run.join("rl_log.jsonl")).unwrap();
        assert!(log.contains("demo_reward"), "{log}");
    }
}

#[test]
fn select_and_run_reject_bad_input_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = tmp.path().join("demo");
    ok(&[
        "demo",
        "--out",
        demo.to_str().unwrap(),
        "--users",
        "100",
        "--prepare-only",
    ]);
    let data = demo.join("data");
    let out = tmp.path().join("s.jsonl");
    let e = fails(&[
        "select",
        "--data",
        data.to_str().unwrap(),
        "--method",
        "random",
        "--size",
        "999999",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(e.contains("--size"), "{e}");
    let e = fails(&[
        "select",
        "--data",
        data.to_str().unwrap(),
        "--method",
        "minirec",
        "--size",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(e.contains("--model"), "{e}");
    let o = minirec(&[
        "select",
        "--data",
        data.to_str().unwrap(),
        "--method",
        "magic",
        "--size",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = String::from_utf8(o.stderr).unwrap();
    assert!(e.contains("unknown selection method"), "{e}");
    let toml = tmp.path().join("e.toml");
    std::fs::write(
        &toml,
        "out = \"x\"\n[data]\nprepared = \"d\"\n[model]\npreset = \"tiny\"\n[rl]\nepoch = 2\n",
    )
    .unwrap();
    let e = fails(&["run", toml.to_str().unwrap()]);
    assert!(e.contains("e.toml:7:") && e.contains("epoch"), "{e}");
    std::fs::write(
        &toml,
        "out = \"x\"\n[data]\nprepared = \"d\"\ndemo_users = 3\n[model]\npreset = \"tiny\"\n",
    )
    .unwrap();
    let e = fails(&["run", toml.to_str().unwrap()]);
    assert!(e.contains("exactly one of"), "{e}");
    // A subset naming a sample that is not in the train split.
    std::fs::write(&out, "{\"sample_id\": 123456789}\n").unwrap();
    let e = fails(&[
        "rl",
        "--data",
        data.to_str().unwrap(),
        "--init",
        "nowhere",
        "--out",
        tmp.path().join("r").to_str().unwrap(),
        "--subset",
        out.to_str().unwrap(),
    ]);
    assert!(e.contains("123456789") && e.contains("s.jsonl"), "{e}");
}

#[test]
fn baseline_trains_and_evaluates_like_any_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::demo_data(tmp.path(), 150);
    let run = tmp.path().join("gru");
    let out = ok(&[
        "baseline",
        "--model",
        "gru4rec",
        "--data",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--epochs",
        "2",
        "--cpu",
    ]);
    assert!(
        out.contains("baseline gru4rec (seed 42): 2 epochs"),
        "{out}"
    );
    let j = tmp.path().join("m.json");
    let p = tmp.path().join("p.jsonl");
    let table = ok(&[
        "eval",
        "--model",
        run.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
        j.to_str().unwrap(),
        "--predictions-out",
        p.to_str().unwrap(),
    ]);
    assert!(table.contains("NDCG@K"), "{table}");
    // The predictions file scores to the same numbers through the generic path (without the intervals it
    // prints by default, which the model's multi-level table leaves out).
    let again = ok(&[
        "eval",
        "--predictions",
        p.to_str().unwrap(),
        "--resamples",
        "0",
    ]);
    let with_intervals = ok(&["eval", "--predictions", p.to_str().unwrap()]);
    assert!(with_intervals.contains("95% intervals"), "{with_intervals}");
    // (the model's table is followed by its item-level one, which a predictions file cannot give).
    assert!(table.starts_with(&again), "{table}\n{again}");
    assert!(table.contains("item-level"), "{table}");
    assert!(json(&j)["ndcg@10"].as_f64().is_some());
    // Text initialisation needs the encoder and says where to get it.
    let e = fails(&[
        "baseline",
        "--model",
        "sasrec",
        "--data",
        data.to_str().unwrap(),
        "--out",
        tmp.path().join("s").to_str().unwrap(),
        "--text-init",
        "--encoder",
        tmp.path().join("none").to_str().unwrap(),
    ]);
    assert!(e.contains("config.json"), "{e}");
}

#[test]
fn baseline_with_several_seeds_reports_mean_and_std_and_pop_needs_no_training() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::demo_data(tmp.path(), 150);
    let eval_json = |run: &std::path::Path| {
        let j = tmp.path().join("e.json");
        let table = ok(&[
            "eval",
            "--model",
            run.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--json",
            j.to_str().unwrap(),
        ]);
        (table, json(&j))
    };
    let run = tmp.path().join("sas");
    let args = [
        "baseline",
        "--model",
        "sasrec",
        "--data",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--epochs",
        "2",
        "--seeds",
        "5,6",
        "--dim",
        "16",
        "--cpu",
    ];
    ok(&args);
    assert!(run.join("seed-5").is_dir() && run.join("seed-6").is_dir());
    let (table, j) = eval_json(&run);
    assert!(table.contains("over 2 seeds, mean ± std"), "{table}");
    let (a, b) = (
        j["seeds"]["5"]["ndcg@10"].as_f64().unwrap(),
        j["seeds"]["6"]["ndcg@10"].as_f64().unwrap(),
    );
    assert!(
        (j["ndcg@10"].as_f64().unwrap() - (a + b) / 2.0).abs() < 1e-12,
        "{j}"
    );
    let sd = ((a - b) * (a - b) / 2.0).sqrt();
    assert!(
        (j["seeds"]["std"]["ndcg@10"].as_f64().unwrap() - sd).abs() < 1e-12,
        "{j}"
    );
    assert!(
        j["item_level"]["hr@10"].as_f64().is_some() && j["seeds"]["5"]["item_level"].is_object()
    );
    // Seeds are runs of their own: seed 5 alone is the same model as seed 5 of the pair.
    let single = tmp.path().join("sas5");
    let mut one = args;
    one[6] = single.to_str().unwrap();
    one[10] = "5";
    ok(&one);
    let (_, j5) = eval_json(&single);
    assert_eq!(j5["ndcg@10"].as_f64().unwrap(), a);

    let pop = tmp.path().join("pop");
    let out = ok(&[
        "baseline",
        "--model",
        "pop",
        "--data",
        data.to_str().unwrap(),
        "--out",
        pop.to_str().unwrap(),
    ]);
    assert!(out.contains("pop"), "{out}");
    let (_, jp) = eval_json(&pop);
    assert!(jp["hr@10"].as_f64().unwrap() > 0.0, "{jp}");
    let o = minirec(&[
        "baseline",
        "--model",
        "sasrec",
        "--data",
        data.to_str().unwrap(),
        "--out",
        tmp.path().join("x").to_str().unwrap(),
        "--loss",
        "hinge",
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(e.contains("hinge"), "{e}");
}

#[test]
fn proactive_runs_sft_the_arms_and_evaluation_then_skips_them() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::demo_data(tmp.path(), 150);
    let model = tmp.path().join("model");
    common::tiny_model_dir(&model, &data);
    for kind in ["sasrec", "gru4rec"] {
        let out = tmp.path().join(kind);
        ok(&[
            "baseline",
            "--model",
            kind,
            "--data",
            s(&data),
            "--out",
            s(&out),
            "--epochs",
            "2",
            "--cpu",
        ]);
    }
    let exp = tmp.path().join("pro");
    let args = |arms: &str| -> Vec<String> {
        [
            "proactive",
            "--data",
            s(&data),
            "--model",
            s(&model),
            "--user",
            s(&tmp.path().join("sasrec")),
            "--evaluator",
            s(&tmp.path().join("gru4rec")),
            "--out",
            s(&exp),
            "--max-len",
            "2",
            "--sft-samples",
            "8",
            "--rl-prompts",
            "4",
            "--arms",
            arms,
            "--rl-steps",
            "2",
            "--prompts-per-step",
            "2",
            "--rollouts",
            "4",
            "--eval-samples",
            "5",
            "--beam",
            "3",
            "--cpu",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let run = |arms: &str| {
        let a = args(arms);
        ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = run("naive-pg,prorl");
    for row in [
        "| sft |",
        "| naive-pg |",
        "| prorl |",
        "Paired differences against SFT",
    ] {
        assert!(out.contains(row), "{row} missing from:\n{out}");
    }
    for arm in ["sft", "naive-pg", "prorl"] {
        let r = json(&exp.join(format!("eval-{arm}.json")));
        assert_eq!(r["n"], 5, "{arm}");
        let lines = std::fs::read_to_string(exp.join(format!("eval-{arm}.jsonl"))).unwrap();
        assert_eq!(lines.lines().count(), 5);
        for l in lines.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            for p in v["paths"].as_array().unwrap() {
                let n = p.as_array().unwrap().len();
                assert!((1..=2).contains(&n), "{arm}: a path of {n} titles");
            }
        }
    }
    let log = std::fs::read_to_string(exp.join("rl-prorl/prorl_log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 2);
    // A rerun skips every finished stage and reports the same table.
    let again = run("naive-pg,prorl");
    assert_eq!(again, out);
    let e = fails(
        &args("greedy")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(e.contains("unknown arm \"greedy\""), "{e}");
}
