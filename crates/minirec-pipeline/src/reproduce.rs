//! Runs that outlive their machine. A run directory restored from its compact outputs (the finished rows'
//! metrics and ranked lists, never weights) redoes its SFT on the new machine; before any new row is trained
//! from that model, it must rank the recorded SFT evaluation's first batch exactly as the old model did, or the
//! report would pair rows of two different models.

use std::path::Path;

use anyhow::{bail, Context, Result};
use minirec_data::PreparedDataset;
use minirec_eval::{read_predictions, Prediction};

use crate::experiment::Experiment;

/// Re-ranks the first `[eval] batch` samples of the recorded SFT evaluation with `model` (the SFT model just
/// trained) and fails, naming the first difference, unless every list is the same. Without a recorded SFT
/// evaluation there is nothing to check.
pub(crate) fn check_sft_lists(
    e: &Experiment,
    ds: &PreparedDataset,
    model: &Path,
    progress: bool,
) -> Result<()> {
    let recorded = e.out.join("eval").join("sft.predictions.jsonl");
    if !recorded.is_file() {
        return Ok(());
    }
    let loaded = crate::runner::load_for_eval(e, model)?;
    let n = check_recorded_lists(e, ds, &loaded, &recorded, progress).map_err(|why| {
        anyhow::anyhow!(
            "the SFT model trained now does not reproduce the recorded one ({why}): the run's finished rows came \
             from another model, so new rows cannot be paired with them. Start the experiment in a new run \
             directory, or run it where its SFT was trained"
        )
    })?;
    println!("sft: the model trained now ranks the recorded SFT evaluation's first {n} samples identically");
    Ok(())
}

/// Re-ranks, with `loaded`, the samples of the first `[eval] batch` lists of the predictions file `recorded`
/// (one batch, in the file's order, so the batch is composed as when it was written) and returns how many
/// agreed, or, in words, where the first list differs. An evaluation that continues a file another process
/// began checks this first: the model it has now must be the one that wrote the file.
pub(crate) fn check_recorded_lists(
    e: &Experiment,
    ds: &PreparedDataset,
    loaded: &minirec_model::load::LoadedModel,
    recorded: &Path,
    progress: bool,
) -> Result<usize> {
    let lists = complete_lists(recorded, e.eval.batch.max(1))?;
    let split = crate::runner::eval_split(e, ds)?;
    let head = &lists[..];
    let samples = head
        .iter()
        .map(|p| match p.sample {
            Some(i) if i < split.len() => Ok((i, &split[i])),
            other => bail!(
                "{}: a list of sample {other:?}, not a sample of the {} split",
                recorded.display(),
                e.eval.split
            ),
        })
        .collect::<Result<Vec<_>>>()?;
    let check = recorded.with_extension("reproduced.jsonl");
    let job = crate::eval::BeamJob {
        beam: e.eval.beam,
        batch: head.len(),
        ks: &[5, 10, 20],
        lanes: 1, // one batch
    };
    crate::eval::rank_samples(
        &loaded.model,
        &loaded.tokenizer,
        ds,
        &samples,
        &job,
        Some(&check),
        false,
        progress,
    )?;
    let fresh = read_predictions(&check)?;
    if let Some(why) = first_difference(head, &fresh) {
        bail!(
            "{}: {why}; this model's lists are in {}",
            recorded.display(),
            check.display()
        );
    }
    std::fs::remove_file(&check)?;
    Ok(head.len())
}

/// The first `n` whole lines of a predictions file (an interrupted writer may have left a last line cut off).
fn complete_lists(path: &Path, n: usize) -> Result<Vec<Prediction>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let whole = text.rfind('\n').map_or(0, |i| i + 1);
    let lists = text[..whole]
        .lines()
        .take(n)
        .enumerate()
        .map(|(k, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not a prediction", path.display(), k + 1))
        })
        .collect::<Result<Vec<Prediction>>>()?;
    if lists.is_empty() {
        bail!("{}: no whole list to check", path.display());
    }
    Ok(lists)
}

/// The first place where two runs' ranked lists of the same samples differ, in words; `None` if they agree.
fn first_difference(recorded: &[Prediction], fresh: &[Prediction]) -> Option<String> {
    if recorded.len() != fresh.len() {
        return Some(format!(
            "{} recorded lists, {} new ones",
            recorded.len(),
            fresh.len()
        ));
    }
    for (k, (a, b)) in recorded.iter().zip(fresh).enumerate() {
        if (a.sample, &a.target) != (b.sample, &b.target) {
            return Some(format!(
                "line {} holds sample {:?}, the new list sample {:?}",
                k + 1,
                a.sample,
                b.sample
            ));
        }
        if a.ranked != b.ranked {
            let rank = a
                .ranked
                .iter()
                .zip(&b.ranked)
                .position(|(x, y)| x != y)
                .unwrap_or(a.ranked.len().min(b.ranked.len()));
            return Some(format!(
                "sample {:?} differs first at rank {}: {:?} recorded, {:?} now",
                a.sample,
                rank + 1,
                a.ranked.get(rank),
                b.ranked.get(rank)
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(sample: usize, ranked: &[&str]) -> Prediction {
        Prediction {
            target: "t".into(),
            ranked: ranked.iter().map(|s| s.to_string()).collect(),
            sample: Some(sample),
        }
    }

    #[test]
    fn first_difference_names_the_sample_and_rank() {
        let a = vec![p(3, &["x", "y", "z"]), p(5, &["u", "v"])];
        assert_eq!(first_difference(&a, &a.clone()), None);
        let b = vec![p(3, &["x", "y", "z"]), p(5, &["u", "w"])];
        assert_eq!(
            first_difference(&a, &b).unwrap(),
            "sample Some(5) differs first at rank 2: Some(\"v\") recorded, Some(\"w\") now"
        );
        let shorter = vec![p(3, &["x", "y"]), p(5, &["u", "v"])];
        assert!(first_difference(&a, &shorter)
            .unwrap()
            .contains("rank 3: Some(\"z\") recorded, None now"));
        assert!(first_difference(&a, &a[..1])
            .unwrap()
            .contains("2 recorded lists, 1 new"));
        let other = vec![p(4, &["x", "y", "z"]), p(5, &["u", "v"])];
        assert!(first_difference(&a, &other)
            .unwrap()
            .contains("line 1 holds sample Some(3)"));
    }
}
