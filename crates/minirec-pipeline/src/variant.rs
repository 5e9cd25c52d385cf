//! The RL trainers an experiment compares on one training set (RISER's Table 2): RISER, plain GRPO, RISER with
//! in-context demonstrations, and RISER with each of its four components off in turn.

use anyhow::{bail, Result};
use minirec_train::rl::RlConfig;

/// Every `[rl] variants` name with its row title, in the report's order.
pub const VARIANTS: &[(&str, &str)] = &[
    ("grpo", "+ GRPO"),
    ("riser", "+ RISER"),
    ("riser-demos", "+ RISER, in-context demos"),
    ("riser-no-dedup", "+ RISER w/o de-duplication"),
    ("riser-no-mask", "+ RISER w/o certainty mask"),
    ("riser-no-klcov", "+ RISER w/o KL-Cov"),
    ("riser-no-simpo", "+ RISER w/o SimPO"),
];

/// A clear error for a name that is not a variant, listing the ones that are.
pub fn check(name: &str) -> Result<()> {
    if VARIANTS.iter().any(|(v, _)| *v == name) {
        return Ok(());
    }
    let known: Vec<&str> = VARIANTS.iter().map(|(v, _)| *v).collect();
    bail!("[rl] unknown variant {name:?} ({})", known.join(", "))
}

/// The trainer a variant names, from RISER's configuration (demonstrations are set by the caller, which holds
/// their settings).
pub fn configure(riser: RlConfig, name: &str) -> RlConfig {
    match name {
        "grpo" => riser.plain_grpo(),
        "riser-no-dedup" => RlConfig {
            dedup: false,
            ..riser
        },
        "riser-no-mask" => RlConfig {
            mask_decay: None,
            ..riser
        },
        "riser-no-klcov" => RlConfig {
            kl_cov: false,
            ..riser
        },
        "riser-no-simpo" => RlConfig {
            simpo: false,
            ..riser
        },
        _ => riser,
    }
}

/// The variant a row of this variant is paired with besides SFT: RISER for what changes one thing in RISER.
pub fn reference(name: &str) -> Option<&'static str> {
    (name != "riser" && name.starts_with("riser-")).then_some("riser")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The four switches RISER's ablations turn off, as (dedup, mask, KL-Cov, SimPO).
    fn switches(c: &RlConfig) -> [bool; 4] {
        [c.dedup, c.mask_decay.is_some(), c.kl_cov, c.simpo]
    }

    #[test]
    fn each_ablation_turns_off_exactly_its_component() {
        let riser = RlConfig::default();
        assert_eq!(switches(&riser), [true; 4]);
        let cases = [
            ("riser-no-dedup", 0),
            ("riser-no-mask", 1),
            ("riser-no-klcov", 2),
            ("riser-no-simpo", 3),
        ];
        for (name, off) in cases {
            let mut want = [true; 4];
            want[off] = false;
            assert_eq!(switches(&configure(riser.clone(), name)), want, "{name}");
            assert_eq!(reference(name), Some("riser"));
        }
        assert_eq!(switches(&configure(riser.clone(), "grpo")), [false; 4]);
        assert_eq!(
            switches(&configure(riser.clone(), "riser-demos")),
            [true; 4]
        );
        assert_eq!(reference("riser"), None);
        assert_eq!(reference("grpo"), None);
    }

    #[test]
    fn unknown_names_are_refused_with_the_known_ones() {
        for (v, _) in VARIANTS {
            check(v).unwrap();
        }
        let err = check("riser-no-kl").unwrap_err().to_string();
        assert!(
            err.contains("\"riser-no-kl\"") && err.contains("riser-no-klcov"),
            "{err}"
        );
    }
}
