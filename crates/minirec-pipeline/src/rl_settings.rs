//! The RL settings of one row of an experiment, and the check that a finished row was trained with them: a
//! run directory can hold rows seeded from another file's run (`benches/cpu/tables_session.sh seed-rows`), and
//! a row trained at another learning rate must not sit in this file's table under this file's name.

use std::path::Path;

use anyhow::{bail, Result};
use minirec_train::rl::RlConfig;
use serde_json::Value;

use crate::experiment::Experiment;
use crate::runner::RlSet;

/// The trainer's configuration for `variant` on a set of `samples` training samples.
pub(crate) fn rl_config(e: &Experiment, samples: usize, variant: &str) -> RlConfig {
    let r = &e.rl;
    let mut steps = ((samples as f64 * r.epochs) / r.prompts_per_step as f64).ceil() as usize;
    if r.max_steps > 0 {
        steps = steps.min(r.max_steps);
    }
    let cfg = RlConfig {
        max_steps: steps.max(1),
        prompts_per_step: r.prompts_per_step,
        rollouts: r.rollouts,
        keep: r.keep,
        lr: r.lr,
        kl_cov_ratio: r.kl_cov_ratio,
        micro_batch: r.micro_batch,
        updates_per_batch: r.updates_per_batch,
        bf16_mixed: r.bf16_mixed,
        eval_every: r.eval_every,
        checkpoint_every: r.checkpoint_every,
        seed: e.seed,
        lora: r.lora_rank.map(|rank| minirec_model::lora::LoraConfig {
            r: rank,
            alpha: 2.0 * rank as f64,
            dropout: 0.0,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut cfg = crate::variant::configure(cfg, variant);
    if variant == "riser-demos" {
        (cfg.demos, cfg.demo_rollouts, cfg.demo_select) = (r.demos, r.demo_rollouts, r.demo_select);
    }
    cfg
}

/// Settings that change how a run is carried out, not what it trains.
const HOW_NOT_WHAT: [&str; 3] = ["checkpoint_every", "eval_every", "micro_batch"];

/// Fails when row `name`'s recorded RL (`rl/{name}/manifest.json`, which travels with a seeded row) differs
/// from what this file would train, naming each differing setting. A setting the record predates is not
/// compared, nor the step count when the set's size is unknown (`samples`: a seeded row without its
/// selection file); a row without a record passes.
pub(crate) fn check_recorded(
    e: &Experiment,
    set: &RlSet,
    samples: Option<usize>,
    variant: &str,
    name: &str,
) -> Result<()> {
    let path = e.out.join("rl").join(name).join("manifest.json");
    let Some(recorded) = recorded_config(&path) else {
        return Ok(());
    };
    let expected = serde_json::to_value(rl_config(e, samples.unwrap_or(0), variant))?;
    let mut ignore = HOW_NOT_WHAT.to_vec();
    if samples.is_none() {
        ignore.push("max_steps");
    }
    let differ = differing(&expected, &recorded, &ignore);
    if !differ.is_empty() {
        bail!(
            "row {name}: its RL was trained with other settings than this file's for set {} ({}; recorded in \
             {}) — a row seeded from another experiment? Remove rl/{name} and eval/{name}.* from the run \
             directory to train it with this file's settings",
            set.label,
            differ.join(", "),
            path.display()
        );
    }
    Ok(())
}

/// The `config` an RL run's manifest records, if the file exists and holds one.
fn recorded_config(path: &Path) -> Option<Value> {
    let m: Value = minirec_data::fsutil::read_json(path).ok()?;
    m.get("config")?.get("config").cloned()
}

/// "key: recorded → expected" for every setting both hold with different values.
fn differing(expected: &Value, recorded: &Value, ignore: &[&str]) -> Vec<String> {
    let (Some(x), Some(r)) = (expected.as_object(), recorded.as_object()) else {
        return vec!["the record is not an object".into()];
    };
    x.iter()
        .filter(|(k, _)| !ignore.contains(&k.as_str()))
        .filter_map(|(k, want)| {
            let absent = absent_means(k);
            let got = r.get(k).or(absent.as_ref())?;
            (got != want).then(|| format!("{k}: {} recorded, {} here", show(got), show(want)))
        })
        .collect()
}

/// What a record without `key` was trained with, for settings added after records existed whose old
/// behaviour is known (every run before `bf16_mixed` trained in f32).
fn absent_means(key: &str) -> Option<Value> {
    (key == "bf16_mixed").then_some(Value::Bool(false))
}

/// A setting's value as the files write it: fractions in exponent form (1e-5, not 0.00001).
fn show(v: &Value) -> String {
    match v.as_f64() {
        Some(0.0) => "0".into(),
        Some(f) if !v.is_u64() && !v.is_i64() => format!("{f:e}"),
        _ => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every RL row committed under `benches/results/NAME/` was trained with `examples/NAME.toml`'s settings as
    /// this code builds them: the check refuses no row a file really trained (the step count aside, which
    /// needs the prepared data).
    #[test]
    fn every_committed_row_passes_its_own_files_check() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut checked = 0;
        for entry in std::fs::read_dir(root.join("examples")).unwrap() {
            let file = entry.unwrap().path();
            let stem = file.file_stem().unwrap().to_string_lossy().to_string();
            let results = root.join("benches/results").join(&stem);
            if file.extension().is_none_or(|x| x != "toml") || !results.join("rl").is_dir() {
                continue;
            }
            let mut e = Experiment::load(&file).unwrap();
            e.out = results.clone();
            for row in std::fs::read_dir(results.join("rl")).unwrap() {
                let name = row.unwrap().file_name().to_string_lossy().to_string();
                let Some((label, variant)) = crate::variant::VARIANTS
                    .iter()
                    .rev()
                    .find_map(|(v, _)| Some((name.strip_suffix(&format!("-{v}"))?, *v)))
                else {
                    continue;
                };
                let set = RlSet {
                    label: label.into(),
                    method: label.into(),
                    size: None,
                    ablation: None,
                    subset: None,
                };
                check_recorded(&e, &set, None, variant, &name)
                    .unwrap_or_else(|err| panic!("{stem}: {err:#}"));
                checked += 1;
            }
        }
        assert!(checked >= 20, "only {checked} committed rows found");
    }

    #[test]
    fn a_row_trained_at_another_learning_rate_is_named_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let toml =
            "out = \"o\"\n[data]\ndemo_users = 50\n[model]\npreset = \"tiny\"\n[rl]\nlr = 1e-6\n";
        let mut e: Experiment = toml::from_str(toml).unwrap();
        e.out = dir.path().to_path_buf();
        let set = RlSet {
            label: "full".into(),
            method: "full".into(),
            size: None,
            ablation: None,
            subset: None,
        };
        // No record: nothing to compare.
        check_recorded(&e, &set, Some(256), "riser", "full-riser").unwrap();
        let run = dir.path().join("rl/full-riser");
        std::fs::create_dir_all(&run).unwrap();
        let write = |cfg: &RlConfig, drop: &str| {
            let mut v = serde_json::to_value(cfg).unwrap();
            v.as_object_mut().unwrap().remove(drop);
            let m = serde_json::json!({"stage": "rl", "config": {"config": v, "prompts": 256}});
            std::fs::write(run.join("manifest.json"), m.to_string()).unwrap();
        };
        // The same settings, another checkpoint interval, and a key the record predates: it passes.
        let mut same = rl_config(&e, 256, "riser");
        same.checkpoint_every = 99;
        write(&same, "share_prompts");
        check_recorded(&e, &set, Some(256), "riser", "full-riser").unwrap();
        // Trained at 1e-5 (another file's row): refused, naming the setting.
        let mut other = rl_config(&e, 256, "riser");
        other.lr = 1e-5;
        write(&other, "");
        let err = check_recorded(&e, &set, Some(256), "riser", "full-riser").unwrap_err();
        assert!(
            err.to_string().contains("lr: 1e-5 recorded, 1e-6 here"),
            "{err}"
        );
        // The plain-GRPO record under a RISER row's name: SimPO and the rest differ.
        write(&rl_config(&e, 256, "grpo"), "");
        let err = check_recorded(&e, &set, Some(256), "riser", "full-riser").unwrap_err();
        assert!(
            err.to_string().contains("simpo: false recorded, true here"),
            "{err}"
        );
        // Another step count is another run, unless the set's size is unknown.
        write(&rl_config(&e, 128, "riser"), "");
        let err = check_recorded(&e, &set, Some(256), "riser", "full-riser").unwrap_err();
        assert!(err.to_string().contains("max_steps"), "{err}");
        check_recorded(&e, &set, None, "riser", "full-riser").unwrap();
        // A record from before `bf16_mixed` trained in f32: it passes an f32 file, and a mixed one refuses it.
        write(&rl_config(&e, 256, "riser"), "bf16_mixed");
        check_recorded(&e, &set, Some(256), "riser", "full-riser").unwrap();
        e.rl.bf16_mixed = true;
        let err = check_recorded(&e, &set, Some(256), "riser", "full-riser").unwrap_err();
        assert!(
            err.to_string()
                .contains("bf16_mixed: false recorded, true here"),
            "{err}"
        );
    }
}
