//! The README's documented sequence, run as a new user runs it, on a tiny model with LoRA:
//! prepare → sft --lora-rank → rl --init RUN → select --model RUN → eval --model RUN →
//! recommend --model RUN --history A B C; then the resume paths a user relies on.

use std::path::Path;

mod common;

use common::{minirec, ok, s};

/// Every line of a JSONL log without its timing fields.
fn log_without_timing(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            for k in ["seconds", "rollout_s", "update_s", "samples_per_s"] {
                v.as_object_mut().unwrap().remove(k);
            }
            v
        })
        .collect()
}

#[test]
fn the_readme_lora_flow_runs_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    // Raw interactions from the embedded shop, prepared with the documented generic-format command.
    let demo = tmp.path().join("demo");
    ok(&[
        "demo",
        "--out",
        s(&demo),
        "--users",
        "200",
        "--prepare-only",
    ]);
    let data = tmp.path().join("data");
    let out = ok(&[
        "prepare",
        "--format",
        "generic",
        "--interactions",
        s(&demo.join("raw/interactions.csv")),
        "--items",
        s(&demo.join("raw/items.csv")),
        "--out",
        s(&data),
    ]);
    assert!(out.contains("distinct titles"), "{out}");
    let base = tmp.path().join("base");
    common::tiny_model_dir(&base, &data);

    let sft = tmp.path().join("runs/sft");
    let out = ok(&[
        "sft",
        "--data",
        s(&data),
        "--model",
        s(&base),
        "--out",
        s(&sft),
        "--lora-rank",
        "8",
        "--epochs",
        "1",
        "--max-train",
        "48",
        "--lr",
        "1e-3",
        "--cpu",
    ]);
    assert!(out.contains("6 steps"), "{out}");
    assert!(sft.join("adapter/adapter_config.json").is_file());
    assert!(
        !sft.join("model").exists(),
        "LoRA SFT exports only its adapter"
    );

    // RL from the LoRA SFT run, itself with LoRA: its adapter sits on the SFT run's.
    let rl = tmp.path().join("runs/rl");
    let rl_args = [
        "rl",
        "--data",
        s(&data),
        "--init",
        s(&sft),
        "--out",
        s(&rl),
        "--max-steps",
        "3",
        "--prompts-per-step",
        "2",
        "--rollouts",
        "4",
        "--keep",
        "3",
        "--lora-rank",
        "4",
        "--lr",
        "1e-3",
        "--eval-every",
        "0",
        "--cpu",
    ];
    let out = ok(&rl_args);
    assert!(out.contains("3 steps"), "{out}");
    assert!(rl.join("adapter/adapter_config.json").is_file());

    // Resuming the finished run says so and prints the real summary, not zeros.
    let mut again = rl_args.to_vec();
    again.push("--resume");
    let resumed = ok(&again);
    assert!(resumed.contains("already finished at step 3"), "{resumed}");
    let summary = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("rl: 3 steps"))
            .unwrap_or_else(|| panic!("no summary in {t}"))
            .split(", rollout")
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(summary(&out), summary(&resumed));
    // And the reward signal the run had, the same after the resume.
    let signal = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("rl: groups with a hit "))
            .unwrap_or_else(|| panic!("no signal line in {t}"))
            .to_string()
    };
    assert!(signal(&out).contains(" of 6 ("), "{out}");
    assert_eq!(signal(&out), signal(&resumed));

    let sel = tmp.path().join("sel/minirec-8.jsonl");
    ok(&[
        "select",
        "--data",
        s(&data),
        "--model",
        s(&sft),
        "--method",
        "minirec",
        "--size",
        "8",
        "--out",
        s(&sel),
        "--proxy",
        s(&rl),
        "--rollouts",
        "2",
        "--cpu",
    ]);
    let picked = std::fs::read_to_string(&sel).unwrap();
    assert_eq!(picked.lines().count(), 8);

    for model in [&sft, &rl] {
        let m = tmp.path().join("metrics.json");
        let out = ok(&[
            "eval",
            "--model",
            s(model),
            "--data",
            s(&data),
            "--split",
            "test",
            "--limit",
            "6",
            "--beam",
            "4",
            "--json",
            s(&m),
            "--cpu",
        ]);
        assert!(out.contains("NDCG@K"), "{out}");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&m).unwrap()).unwrap();
        assert_eq!(v["n"], 6);
    }

    let titles: Vec<String> = std::fs::read_to_string(data.join("catalog.jsonl"))
        .unwrap()
        .lines()
        .take(3)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["title"].as_str().unwrap().to_string()
        })
        .collect();
    let one_flag = ok(&[
        "recommend",
        "--model",
        s(&rl),
        "--data",
        s(&data),
        "--history",
        &titles[0],
        &titles[1],
        &titles[2],
        "--top-k",
        "3",
        "--json",
        "--cpu",
    ]);
    let recs: Vec<serde_json::Value> = serde_json::from_str(&one_flag).unwrap();
    assert_eq!(recs.len(), 3);
    let repeated = ok(&[
        "recommend",
        "--model",
        s(&rl),
        "--data",
        s(&data),
        "--history",
        &titles[0],
        "--history",
        &titles[1],
        "--history",
        &titles[2],
        "--top-k",
        "3",
        "--json",
        "--cpu",
    ]);
    assert_eq!(
        one_flag, repeated,
        "one flag with three values = three flags"
    );

    // A baseline run is refused where an LLM is needed, with the command that takes it.
    let sas = tmp.path().join("runs/sasrec");
    ok(&[
        "baseline",
        "--model",
        "sasrec",
        "--data",
        s(&data),
        "--out",
        s(&sas),
        "--epochs",
        "1",
    ]);
    let o = minirec(&["rl", "--data", s(&data), "--init", s(&sas), "--out", s(&rl)]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("baseline") && err.contains("eval --model"),
        "{err}"
    );
}

/// A run killed between checkpoints and resumed writes the same log as one never interrupted.
#[test]
fn resumed_sft_and_rl_logs_equal_uninterrupted_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = tmp.path().join("demo");
    ok(&[
        "demo",
        "--out",
        s(&demo),
        "--users",
        "200",
        "--prepare-only",
    ]);
    let data = demo.join("data");
    let base = tmp.path().join("base");
    common::tiny_model_dir(&base, &data);
    let sft = |out: &Path, extra: &[&str]| {
        let mut a = vec![
            "sft",
            "--data",
            s(&data),
            "--model",
            s(&base),
            "--out",
            s(out),
            "--max-steps",
            "5",
            "--max-train",
            "40",
            "--batch-size",
            "4",
            "--checkpoint-every",
            "2",
            "--lora-rank",
            "4",
            "--cpu",
        ];
        a.extend_from_slice(extra);
        ok(&a)
    };
    let whole = tmp.path().join("sft-whole");
    let cut = tmp.path().join("sft-cut");
    sft(&whole, &[]);
    // The interrupted run: stopped after step 5's log line but with its last checkpoint at step 4, as a
    // kill between checkpoints leaves it (--max-steps 5 then --resume continues to the same 5 steps).
    sft(&cut, &[]);
    let log = cut.join("train_log.jsonl");
    let ckpt = cut.join("checkpoints");
    std::fs::remove_dir_all(ckpt.join("step-00000005")).unwrap();
    std::fs::write(ckpt.join("latest"), "step-00000004").unwrap();
    let before = std::fs::read_to_string(&log).unwrap().lines().count();
    sft(&cut, &["--resume"]);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap().lines().count(),
        before
    );
    assert_eq!(
        log_without_timing(&whole.join("train_log.jsonl")),
        log_without_timing(&log)
    );

    let rl = |out: &Path, extra: &[&str]| {
        let mut a = vec![
            "rl",
            "--data",
            s(&data),
            "--init",
            s(&whole),
            "--out",
            s(out),
            "--max-steps",
            "5",
            "--prompts-per-step",
            "2",
            "--rollouts",
            "4",
            "--keep",
            "3",
            "--checkpoint-every",
            "2",
            "--eval-every",
            "2",
            "--eval-samples",
            "4",
            "--lr",
            "1e-3",
            "--cpu",
        ];
        a.extend_from_slice(extra);
        ok(&a)
    };
    let whole_rl = tmp.path().join("rl-whole");
    let cut_rl = tmp.path().join("rl-cut");
    let first = rl(&whole_rl, &[]);
    rl(&cut_rl, &[]);
    let ckpt = cut_rl.join("checkpoints");
    std::fs::remove_dir_all(ckpt.join("step-00000005")).unwrap();
    std::fs::write(ckpt.join("latest"), "step-00000004").unwrap();
    let second = rl(&cut_rl, &["--resume"]);
    assert_eq!(
        log_without_timing(&whole_rl.join("rl_log.jsonl")),
        log_without_timing(&cut_rl.join("rl_log.jsonl"))
    );
    let summary = |t: &str| t.split(", rollout").next().unwrap().to_string();
    assert_eq!(summary(&first), summary(&second));
}
