//! Rows whose model is byte-for-byte another row's. An RL run in which every group failed makes no update, so
//! it exports the SFT weights unchanged; ranking them again (≈ 36 minutes for 2,000 samples on 2 cores)
//! would only rewrite the SFT row's lists. Such a row takes its twin's finished lists instead.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Whether `a` and `b` hold the same files with the same bytes: two model directories (weights, config,
/// tokenizer; an adapter with its base reference), or two files.
pub(crate) fn same_model(a: &Path, b: &Path) -> Result<bool> {
    if a.is_file() || b.is_file() {
        return same_bytes(a, b);
    }
    let (fa, fb) = (files(a)?, files(b)?);
    if fa != fb {
        return Ok(false);
    }
    for f in &fa {
        if !same_bytes(&a.join(f), &b.join(f))? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The names of `dir`'s regular files, sorted.
fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            out.push(PathBuf::from(entry.file_name()));
        }
    }
    out.sort();
    Ok(out)
}

/// Compares two files in 1 MiB blocks, stopping at the first difference (after RL it is in the first block).
fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    let open = |p: &Path| File::open(p).with_context(|| format!("opening {}", p.display()));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let len = fa.metadata()?.len();
    if len != fb.metadata()?.len() {
        return Ok(false);
    }
    const BLOCK: u64 = 1 << 20;
    let (mut ba, mut bb) = (vec![0u8; BLOCK as usize], vec![0u8; BLOCK as usize]);
    let mut left = len;
    while left > 0 {
        let n = left.min(BLOCK) as usize;
        fa.read_exact(&mut ba[..n])
            .with_context(|| format!("reading {}", a.display()))?;
        fb.read_exact(&mut bb[..n])
            .with_context(|| format!("reading {}", b.display()))?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
        left -= n as u64;
    }
    Ok(true)
}

/// Whether every list already in `written` (an interrupted evaluation of this row) is the list `twin` holds
/// for the same sample. A list that differs was ranked by another model (a retrained row, an edited file): the
/// row then goes the ranking way, which names the difference, instead of being overwritten.
pub(crate) fn agrees_with(written: &Path, twin: &Path) -> Result<bool> {
    let Ok(text) = std::fs::read_to_string(written) else {
        return Ok(true); // nothing written yet
    };
    let lines = |t: &str, p: &Path| -> Result<Vec<(u64, serde_json::Value)>> {
        t.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                let v: serde_json::Value = serde_json::from_str(l)
                    .with_context(|| format!("{} line {}", p.display(), i + 1))?;
                let sample = v["sample"]
                    .as_u64()
                    .with_context(|| format!("{} line {}: no sample index", p.display(), i + 1))?;
                Ok((sample, v))
            })
            .collect()
    };
    let theirs: std::collections::HashMap<u64, serde_json::Value> = lines(
        &std::fs::read_to_string(twin).with_context(|| format!("reading {}", twin.display()))?,
        twin,
    )?
    .into_iter()
    .collect();
    Ok(lines(&text, written)?
        .iter()
        .all(|(sample, v)| theirs.get(sample) == Some(v)))
}

/// Copies row `twin`'s finished evaluation (lists and metrics, in `dir`) to row `name`, atomically.
pub(crate) fn copy_evaluation(dir: &Path, twin: &str, name: &str) -> Result<()> {
    for ext in ["predictions.jsonl", "json"] {
        let (from, to) = (
            dir.join(format!("{twin}.{ext}")),
            dir.join(format!("{name}.{ext}")),
        );
        let bytes = std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
        minirec_data::fsutil::write_atomic(&to, |w| std::io::Write::write_all(w, &bytes))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(root: &Path, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for (f, bytes) in files {
            std::fs::write(d.join(f), bytes).unwrap();
        }
        d
    }

    #[test]
    fn same_model_needs_every_file_and_byte() {
        let t = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut late = big.clone();
        *late.last_mut().unwrap() ^= 1; // differs only in the third block
        let a = dir_with(t.path(), "a", &[("w", &big), ("config.json", b"{}")]);
        let b = dir_with(t.path(), "b", &[("w", &big), ("config.json", b"{}")]);
        let c = dir_with(t.path(), "c", &[("w", &late), ("config.json", b"{}")]);
        let d = dir_with(t.path(), "d", &[("w", &big)]);
        let e = dir_with(
            t.path(),
            "e",
            &[("w", &big[..big.len() - 1]), ("config.json", b"{}")],
        );
        assert!(same_model(&a, &b).unwrap());
        assert!(!same_model(&a, &c).unwrap(), "a byte in the last block");
        assert!(!same_model(&a, &d).unwrap(), "a missing file");
        assert!(!same_model(&a, &e).unwrap(), "a shorter file");
        assert!(same_model(&a.join("w"), &b.join("w")).unwrap());
        assert!(same_model(&a, &t.path().join("missing")).is_err());
    }

    #[test]
    fn written_lists_must_be_the_twins_own() {
        let t = tempfile::tempdir().unwrap();
        let twin = t.path().join("sft.predictions.jsonl");
        std::fs::write(
            &twin,
            "{\"sample\":3,\"ranked\":[\"a\",\"b\"]}\n{\"sample\":1,\"ranked\":[\"c\"]}\n",
        )
        .unwrap();
        let row = t.path().join("row.predictions.jsonl");
        assert!(agrees_with(&row, &twin).unwrap(), "nothing written");
        std::fs::write(&row, "{\"sample\":1,\"ranked\":[\"c\"]}\n").unwrap();
        assert!(
            agrees_with(&row, &twin).unwrap(),
            "a prefix in another order"
        );
        std::fs::write(&row, "{\"sample\":3,\"ranked\":[\"b\",\"a\"]}\n").unwrap();
        assert!(!agrees_with(&row, &twin).unwrap(), "two titles swapped");
        std::fs::write(&row, "{\"sample\":9,\"ranked\":[\"c\"]}\n").unwrap();
        assert!(
            !agrees_with(&row, &twin).unwrap(),
            "a sample the twin lacks"
        );
        std::fs::write(&row, "{\"ranked\":[\"c\"]}\n").unwrap();
        let e = agrees_with(&row, &twin).unwrap_err();
        assert!(
            format!("{e:#}").contains("line 1: no sample index"),
            "{e:#}"
        );
    }

    #[test]
    fn copy_evaluation_copies_lists_and_metrics() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("sft.predictions.jsonl"), b"{\"a\":1}\n").unwrap();
        std::fs::write(t.path().join("sft.json"), b"{\"n\":1}\n").unwrap();
        copy_evaluation(t.path(), "sft", "el2n-256-grpo").unwrap();
        let read = |f: &str| std::fs::read(t.path().join(f)).unwrap();
        assert_eq!(read("el2n-256-grpo.predictions.jsonl"), b"{\"a\":1}\n");
        assert_eq!(read("el2n-256-grpo.json"), b"{\"n\":1}\n");
        assert!(copy_evaluation(t.path(), "missing", "x").is_err());
    }
}
