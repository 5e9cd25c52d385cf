//! Prediction files: JSON Lines `{"target": "...", "ranked": ["...", ...]}`, best first, from any system.

use std::path::Path;

use minirec_data::error::{DataError, Result, SkipReason};
use minirec_data::input::{utf8, Input};
use serde::{Deserialize, Serialize};

use crate::metrics::{MetricsReport, RankingMetrics};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Prediction {
    pub target: String,
    pub ranked: Vec<String>,
    /// The sample's position in its split, so two systems' files pair sample by sample (`minirec compare`)
    /// even when each evaluated a subset; absent in files from elsewhere (then lines pair in order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<usize>,
}

/// Scores every line of a predictions file. Blank lines are ignored; any other unusable line is an error
/// naming the file and line.
pub fn score_predictions_file(path: &Path, ks: &[usize]) -> Result<MetricsReport> {
    let mut m = RankingMetrics::new(ks);
    for p in read_predictions(path)? {
        m.add(&p.target, &p.ranked);
    }
    Ok(m.report())
}

/// Every prediction of a file, in order. Blank lines are ignored; any other unusable line is an error naming
/// the file and line, and so is a file without predictions.
pub fn read_predictions(path: &Path) -> Result<Vec<Prediction>> {
    let (mut lines, _) = Input::open(path, false)?.lines();
    let mut out = Vec::new();
    while let Some((line, bytes)) = lines.next_line()? {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let text = utf8(path, line, bytes)?;
        let p: Prediction = serde_json::from_str(text).map_err(|e| DataError::Row {
            path: path.to_path_buf(),
            line,
            reason: SkipReason::BadJson,
            msg: format!("expected {{\"target\": \"...\", \"ranked\": [...]}}: {e}"),
        })?;
        out.push(p);
    }
    if out.is_empty() {
        return Err(DataError::file(path, "no predictions in the file"));
    }
    Ok(out)
}

/// A prediction without a sample index, for tests.
#[cfg(test)]
pub(crate) fn pred(target: &str, ranked: &[&str]) -> Prediction {
    Prediction {
        target: target.into(),
        ranked: ranked.iter().map(|s| s.to_string()).collect(),
        sample: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn scores_a_file_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.jsonl");
        let mut f = std::fs::File::create(&p).unwrap();
        writeln!(f, r#"{{"target": "b", "ranked": ["a", "b"]}}"#).unwrap();
        writeln!(f).unwrap();
        writeln!(f, r#"{{"target": "x", "ranked": []}}"#).unwrap();
        drop(f);
        let r = score_predictions_file(&p, &[1, 2]).unwrap();
        assert_eq!(r.n, 2);
        assert_eq!(r.get("hr@2"), Some(0.5));
        assert_eq!(r.get("hr@1"), Some(0.0));

        std::fs::write(
            &p,
            "{\"target\": \"a\", \"ranked\": [\"a\"]}\n{\"ranked\": []}\n",
        )
        .unwrap();
        let e = score_predictions_file(&p, &[1]).unwrap_err().to_string();
        assert!(e.contains("p.jsonl:2:"), "{e}");

        std::fs::write(&p, "").unwrap();
        assert!(score_predictions_file(&p, &[1])
            .unwrap_err()
            .to_string()
            .contains("empty"));
        std::fs::write(&p, "\n\n").unwrap();
        assert!(score_predictions_file(&p, &[1])
            .unwrap_err()
            .to_string()
            .contains("no predictions"));
    }

    #[test]
    fn random_bytes_give_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.jsonl");
        let good = "{\"target\": \"a\", \"ranked\": [\"b\", \"a\"]}\n".repeat(3);
        // A fixed linear congruential stream: damaged copies of a good file, cut and overwritten.
        let mut x: u64 = 12345;
        let mut next = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 20
        };
        for round in 0..200 {
            let mut b = good.as_bytes().to_vec();
            b.truncate(next() as usize % (b.len() + 1));
            for _ in 0..round % 5 {
                let r = next();
                if !b.is_empty() {
                    let i = r as usize % b.len();
                    b[i] = r as u8;
                }
            }
            std::fs::write(&p, &b).unwrap();
            let _ = score_predictions_file(&p, &[1, 5]);
        }
    }
}
