//! RL on a tiny catalog with a tiny random model: reward rises within a few dozen steps (RISER and plain GRPO),
//! and an interrupted run resumed from its checkpoint ends with the uninterrupted run's weights.

use candle_core::{DType, Device};
use minirec_model::decode::ItemIndex;
use minirec_model::load::{preset_config, random_model};
use minirec_model::{Decoder, TextTokenizer};
use minirec_train::demos::{Demo, DemoPool};
use minirec_train::rl::{train, RlConfig, RlPrompt};
use minirec_train::sft::trainable;
use minirec_train::{SftConfig, TrainError};

fn tiny(seed: u64) -> Decoder {
    let cfg = preset_config("tiny", 24).unwrap();
    random_model(cfg, DType::F32, &Device::Cpu, seed).unwrap()
}

/// Eight titles [1|2, 3..=6, 9]: two branching tokens, then an end token.
fn catalog() -> ItemIndex {
    ItemIndex::from_sequences((0..8u32).map(|t| vec![1 + t / 4, 3 + t % 4, 9]).collect()).unwrap()
}

fn prompts() -> Vec<RlPrompt> {
    (0..4u32)
        .map(|i| RlPrompt {
            prompt: vec![10 + i, 14 + i, 20],
            target: (3 * i + 1) % 8,
        })
        .collect()
}

fn tok() -> TextTokenizer {
    TextTokenizer::word_level(["a"]).unwrap()
}

fn run(
    cfg: &RlConfig,
    dir: &std::path::Path,
    resume: bool,
) -> Result<(Decoder, Vec<f64>), TrainError> {
    let pool = (cfg.demos > 0).then(demo_pool);
    run_with(cfg, dir, resume, pool.as_ref())
}

/// Six demonstrations: prompts of their own and catalog titles as answers.
fn demo_pool() -> DemoPool {
    let cat = catalog();
    DemoPool::random(
        (0..6u32)
            .map(|j| Demo {
                prompt: vec![11 + j % 3, 21 + j % 3, 20],
                response: cat.sequences[(j as usize * 5) % 8].clone(),
            })
            .collect(),
    )
    .unwrap()
}

fn run_with(
    cfg: &RlConfig,
    dir: &std::path::Path,
    resume: bool,
    demos: Option<&DemoPool>,
) -> Result<(Decoder, Vec<f64>), TrainError> {
    let mut m = tiny(3);
    let sft = SftConfig {
        lora: cfg.lora.clone(),
        ..Default::default()
    };
    let vars = trainable(&mut m, &sft).unwrap();
    // The KL penalty's reference is the initial policy.
    let reference = cfg.kl_ref_beta.map(|_| tiny(3));
    let (_, logs) = train(
        &mut m,
        &tok(),
        vars,
        &catalog(),
        &prompts(),
        &prompts(),
        reference.as_ref(),
        demos,
        cfg,
        dir,
        "tiny",
        resume,
        false,
    )?;
    Ok((m, logs.iter().map(|l| l.mean_reward).collect()))
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// 30 RISER steps at a learning rate the tiny model learns from within them.
fn learning_config() -> RlConfig {
    RlConfig {
        max_steps: 30,
        prompts_per_step: 4,
        rollouts: 8,
        keep: 6,
        // Two optimiser steps per batch (the default), so half the step size of a one-update schedule.
        lr: 5e-3,
        checkpoint_every: 0,
        kl_cov_ratio: 0.05,
        ..Default::default()
    }
}

#[test]
fn reward_rises_with_riser_and_with_plain_grpo() {
    let tmp = tempfile::tempdir().unwrap();
    let base = learning_config();
    for (name, cfg) in [("riser", base.clone()), ("grpo", base.clone().plain_grpo())] {
        let (_, rewards) = run(&cfg, &tmp.path().join(name), false).unwrap();
        let (first, last) = (mean(&rewards[..5]), mean(&rewards[25..]));
        println!("{name}: mean reward {first:.3} -> {last:.3}");
        assert!(
            last > first + 0.3 && last > 0.5,
            "{name}: {first} -> {last}"
        );
    }
    assert!(tmp.path().join("riser/rl_mean_reward.svg").exists());
    // Each step logs its prompts' hits among all 8 rollouts: a prompt with a hit among the kept ones has one.
    let steps = minirec_train::rl::read_step_logs(&tmp.path().join("grpo/rl_log.jsonl")).unwrap();
    for s in &steps {
        assert_eq!(s.prompt_hits.len(), 4, "step {}", s.step);
        assert!(s.prompt_hits.iter().all(|&h| h <= 8));
        let with_hit = s.prompt_hits.iter().filter(|&&h| h > 0).count() as f64 / 4.0;
        assert!(s.hit_rate <= with_hit, "step {}: {s:?}", s.step);
    }
    assert!(steps.iter().any(|s| s.prompt_hits.iter().any(|&h| h > 0)));
    let log = std::fs::read_to_string(tmp.path().join("riser/rl_log.jsonl")).unwrap();
    let hr: Vec<f64> = log
        .lines()
        .filter_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()?
                .get("valid_hr@1")?
                .as_f64()
        })
        .collect();
    assert_eq!(
        hr.len(),
        1 + 30 / 25 + 1,
        "before, every 25 steps, and at the end"
    );
    let line: serde_json::Value =
        serde_json::from_str(log.lines().find(|l| l.contains("mean_reward")).unwrap()).unwrap();
    for k in [
        "mean_reward",
        "hit_rate",
        "all_fail_share",
        "distinct_rollouts",
        "entropy",
        "grpo_loss",
        "simpo_loss",
        "grad_norm",
        "rollout_s",
        "update_s",
    ] {
        assert!(line.get(k).is_some(), "log has {k}");
    }
}

#[test]
fn mixed_precision_updates_learn_as_f32_does_and_leave_rollouts_f32() {
    if !minirec_model::kernels::bf16::available() {
        eprintln!("skipped: no bf16 kernel on this CPU (the run would train in f32 and say so)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let f32_cfg = learning_config();
    let mixed_cfg = RlConfig {
        bf16_mixed: true,
        ..f32_cfg.clone()
    };
    let (f32_model, _) = run(&f32_cfg, &tmp.path().join("f32"), false).unwrap();
    let (mixed, rewards) = run(&mixed_cfg, &tmp.path().join("mixed"), false).unwrap();
    assert!(
        !mixed.mixed_bf16(),
        "the model leaves RL in f32 (rollouts, validation and export)"
    );
    let (first, last) = (mean(&rewards[..5]), mean(&rewards[25..]));
    assert!(last > first + 0.3 && last > 0.5, "mixed: {first} -> {last}");
    assert!(
        max_diff(&f32_model, &mixed) > 0.0,
        "mixed precision changed nothing"
    );
    let init = tiny(3);
    for ((name, w), (_, w0)) in mixed
        .named_tensors()
        .unwrap()
        .iter()
        .zip(init.named_tensors().unwrap())
    {
        let moved = (w - w0).unwrap().abs().unwrap().max_all().unwrap();
        assert!(
            moved.to_scalar::<f32>().unwrap() > 0.0,
            "{name} never moved"
        );
    }
    // The first step's updates start from the same weights and the same rollouts: their losses agree to
    // bf16's rounding.
    let step0 = |dir: &str| -> serde_json::Value {
        let log = std::fs::read_to_string(tmp.path().join(dir).join("rl_log.jsonl")).unwrap();
        let first = log
            .lines()
            .find(|l| l.contains("\"step\":0,") && l.contains("mean_reward"));
        serde_json::from_str(first.unwrap()).unwrap()
    };
    let (a, b) = (step0("f32"), step0("mixed"));
    for key in ["grpo_loss", "simpo_loss", "grad_norm"] {
        let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
        assert!(
            (x - y).abs() < 0.05 * x.abs(),
            "{key}: {x} (f32) vs {y} (mixed)"
        );
        println!("step 0 {key}: {x} (f32) vs {y} (mixed)");
    }
}

#[test]
fn rl_resume_reaches_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = RlConfig {
        max_steps: 8,
        prompts_per_step: 2,
        rollouts: 6,
        keep: 4,
        lr: 5e-3,
        checkpoint_every: 3,
        ..Default::default()
    };
    let (whole, _) = run(&cfg, &tmp.path().join("whole"), false).unwrap();
    let crash = RlConfig {
        interrupt_after: Some(5),
        ..cfg.clone()
    };
    assert!(matches!(
        run(&crash, &tmp.path().join("split"), false),
        Err(TrainError::Interrupted { step: 5 })
    ));
    let (resumed, _) = run(&cfg, &tmp.path().join("split"), true).unwrap();
    let d = max_diff(&whole, &resumed);
    assert!(d < 1e-6, "{d}");
}

fn max_diff(a: &Decoder, b: &Decoder) -> f32 {
    a.named_tensors()
        .unwrap()
        .iter()
        .zip(b.named_tensors().unwrap())
        .map(|((_, x), (_, y))| {
            (x - y)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        })
        .fold(0f32, f32::max)
}

fn log_values(dir: &std::path::Path, key: &str) -> Vec<f64> {
    std::fs::read_to_string(dir.join("rl_log.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()?
                .get(key)?
                .as_f64()
        })
        .collect()
}

/// Three RISER steps with a high learning rate (so differences would show), and the same as plain GRPO with the
/// KL penalty to the reference.
fn three_steps(micro_batch: Option<usize>) -> (RlConfig, RlConfig) {
    let base = RlConfig {
        max_steps: 3,
        prompts_per_step: 4,
        rollouts: 6,
        keep: 4,
        lr: 5e-3,
        checkpoint_every: 0,
        eval_every: 0,
        kl_cov_ratio: 0.1,
        micro_batch,
        ..Default::default()
    };
    let plain = RlConfig {
        kl_ref_beta: Some(0.1),
        ..base.clone().plain_grpo()
    };
    (base, plain)
}

#[test]
fn micro_batched_updates_equal_the_whole_batch_update() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, plain) = three_steps(Some(1000));
    for (name, cfg) in [("riser", base), ("grpo-kl", plain)] {
        let (whole, _) = run(&cfg, &tmp.path().join(format!("{name}-whole")), false).unwrap();
        let small = RlConfig {
            micro_batch: Some(3),
            ..cfg.clone()
        };
        let (parts, _) = run(&small, &tmp.path().join(format!("{name}-parts")), false).unwrap();
        let d = max_diff(&whole, &parts);
        assert!(d < 1e-5, "{name}: weights differ by {d}");
        assert!(
            max_diff(&whole, &tiny(3)) > 1e-3,
            "{name}: the updates moved the weights"
        );
        for key in ["grpo_loss", "simpo_loss", "kl_ref", "grad_norm"] {
            let a = log_values(&tmp.path().join(format!("{name}-whole")), key);
            let b = log_values(&tmp.path().join(format!("{name}-parts")), key);
            assert_eq!(a.len(), b.len(), "{name} {key}");
            // Parts share prompts differently from the whole batch, so sums round differently; at lr 5e-3
            // that rounding grows to ~1e-5 relative by the third step.
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() < 1e-4 * (1.0 + x.abs()),
                    "{name} {key}: {x} vs {y}"
                );
            }
        }
        let simpo = log_values(&tmp.path().join(format!("{name}-whole")), "simpo_loss");
        let grpo = log_values(&tmp.path().join(format!("{name}-whole")), "grpo_loss");
        println!("{name}: grpo {grpo:?} simpo {simpo:?}");
    }
}

#[test]
fn one_prompt_pass_per_group_trains_as_the_per_sequence_path() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, plain) = three_steps(None);
    let lora = Some(minirec_model::lora::LoraConfig {
        r: 4,
        ..Default::default()
    });
    for (name, cfg) in [
        ("riser", base.clone()),
        ("grpo-kl", plain.clone()),
        (
            "riser-lora",
            RlConfig {
                lora: lora.clone(),
                ..base
            },
        ),
        ("grpo-kl-lora", RlConfig { lora, ..plain }),
    ] {
        let per_seq = RlConfig {
            share_prompts: false,
            ..cfg.clone()
        };
        let (a, _) = run(&cfg, &tmp.path().join(format!("{name}-shared")), false).unwrap();
        let (b, _) = run(&per_seq, &tmp.path().join(format!("{name}-whole")), false).unwrap();
        let d = max_diff(&a, &b);
        assert!(d < 1e-5, "{name}: weights differ by {d}");
        for key in [
            "grpo_loss",
            "simpo_loss",
            "kl_ref",
            "grad_norm",
            "mean_reward",
        ] {
            let x = log_values(&tmp.path().join(format!("{name}-shared")), key);
            let y = log_values(&tmp.path().join(format!("{name}-whole")), key);
            assert_eq!(x.len(), y.len(), "{name} {key}");
            // The gradient norm sums every squared gradient after three steps: with gemm's AVX-512 kernels the
            // two paths' products (different row counts, different tiles) round differently: 2.2796200 vs
            // 2.2795780 for grpo-kl (1.3e-5 of 1 + |x|); weights and losses stay within 1e-5.
            let tol = if key == "grad_norm" { 5e-5 } else { 1e-5 };
            for (x, y) in x.iter().zip(&y) {
                assert!(
                    (x - y).abs() < tol * (1.0 + x.abs()),
                    "{name} {key}: {x} vs {y}"
                );
            }
        }
        let (ts, tw) = (
            log_values(&tmp.path().join(format!("{name}-shared")), "tokens"),
            log_values(&tmp.path().join(format!("{name}-whole")), "tokens"),
        );
        assert!(
            ts.iter().zip(&tw).all(|(s, w)| s < w),
            "{name}: tokens {ts:?} vs {tw:?}"
        );
    }
}

#[test]
fn kl_cov_acts_only_from_the_second_update_of_a_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let base = RlConfig {
        max_steps: 3,
        prompts_per_step: 4,
        rollouts: 8,
        keep: 6,
        lr: 5e-2,
        checkpoint_every: 0,
        eval_every: 0,
        kl_cov_ratio: 0.2,
        simpo: false,
        ..Default::default()
    };
    let go = |k: usize, kl_cov: bool, name: &str| {
        let cfg = RlConfig {
            updates_per_batch: k,
            kl_cov,
            ..base.clone()
        };
        run(&cfg, &tmp.path().join(name), false).unwrap().0
    };
    // One update per batch: the ratio is 1 where the penalty |log r| is taken, so it has no gradient.
    let d1 = max_diff(&go(1, true, "k1-on"), &go(1, false, "k1-off"));
    assert!(d1 < 1e-7, "one update: KL-Cov changed the weights by {d1}");
    // Two updates: the second sees a moved policy, and the penalty pulls the outliers back.
    let d2 = max_diff(&go(2, true, "k2-on"), &go(2, false, "k2-off"));
    assert!(d2 > 1e-4, "two updates: KL-Cov changed nothing ({d2})");
}

#[test]
fn in_context_demos_train_as_the_per_sequence_path_and_log_both_kinds_of_reward() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, _) = three_steps(None);
    let cfg = RlConfig {
        demos: 1,
        demo_rollouts: 4,
        ..base.clone()
    };
    let per_seq = RlConfig {
        share_prompts: false,
        ..cfg.clone()
    };
    let (a, _) = run(&cfg, &tmp.path().join("shared"), false).unwrap();
    let (b, _) = run(&per_seq, &tmp.path().join("whole"), false).unwrap();
    let (plain, _) = run(&base, &tmp.path().join("plain"), false).unwrap();
    assert!(max_diff(&a, &b) < 1e-5, "{}", max_diff(&a, &b));
    assert!(
        max_diff(&a, &plain) > 1e-4,
        "the demonstrations changed nothing"
    );
    for key in ["grpo_loss", "simpo_loss", "mean_reward"] {
        let x = log_values(&tmp.path().join("shared"), key);
        let y = log_values(&tmp.path().join("whole"), key);
        assert_eq!(x.len(), y.len(), "{key}");
        for (x, y) in x.iter().zip(&y) {
            assert!((x - y).abs() < 1e-5 * (1.0 + x.abs()), "{key}: {x} vs {y}");
        }
    }
    for key in ["demo_reward", "plain_reward"] {
        let v = log_values(&tmp.path().join("shared"), key);
        assert_eq!(v.len(), 3, "{key}");
        assert!(v.iter().all(|r| (0.0..=1.0).contains(r)), "{key}: {v:?}");
        assert!(log_values(&tmp.path().join("plain"), key).is_empty());
    }
    // A demonstration-augmented prompt is longer, so the shared pass runs more tokens than without demos.
    let t_demo = log_values(&tmp.path().join("shared"), "tokens");
    let t_plain = log_values(&tmp.path().join("plain"), "tokens");
    assert!(t_demo.iter().sum::<f64>() > t_plain.iter().sum::<f64>());
}

#[test]
fn in_context_rl_resumes_to_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = RlConfig {
        max_steps: 6,
        prompts_per_step: 2,
        rollouts: 6,
        keep: 4,
        lr: 5e-3,
        checkpoint_every: 2,
        eval_every: 0,
        demos: 1,
        demo_rollouts: 3,
        ..Default::default()
    };
    let (whole, _) = run(&cfg, &tmp.path().join("whole"), false).unwrap();
    let crash = RlConfig {
        interrupt_after: Some(3),
        ..cfg.clone()
    };
    assert!(run(&crash, &tmp.path().join("split"), false).is_err());
    let (resumed, _) = run(&cfg, &tmp.path().join("split"), true).unwrap();
    assert!(max_diff(&whole, &resumed) < 1e-6);
}

#[test]
fn inconsistent_demo_settings_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let base = RlConfig {
        max_steps: 1,
        rollouts: 6,
        keep: 4,
        eval_every: 0,
        ..Default::default()
    };
    let pool = demo_pool();
    for (cfg, with_pool, want) in [
        (
            RlConfig {
                demos: 1,
                ..base.clone()
            },
            true,
            "--demo-rollouts",
        ),
        (
            RlConfig {
                demo_rollouts: 2,
                ..base.clone()
            },
            true,
            "--demos",
        ),
        (
            RlConfig {
                demos: 1,
                demo_rollouts: 7,
                ..base.clone()
            },
            true,
            "more than the 6 rollouts",
        ),
        (
            RlConfig {
                demos: 1,
                demo_rollouts: 2,
                ..base.clone()
            },
            false,
            "pool",
        ),
        // 4 rollouts × 2 demonstrations need 8 distinct demonstrations; the pool has 6.
        (
            RlConfig {
                demos: 2,
                demo_rollouts: 4,
                ..base.clone()
            },
            true,
            "distinct demonstrations",
        ),
    ] {
        let p = with_pool.then_some(&pool);
        let err = match run_with(&cfg, &tmp.path().join(want), false, p) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{want}: accepted"),
        };
        assert!(err.contains(want), "{want}: {err}");
    }
}
