//! Checkpoints: `checkpoints/step-NNNNNNNN/` holding the trainable tensors, the optimiser moments and the loop
//! state, written into a temporary directory and renamed into place, with `checkpoints/latest` (also replaced
//! atomically) naming the newest complete one. An interrupted write leaves the previous checkpoint intact.
//!
//! A checkpoint also records how long each of the run's logs was when it was written (`logs.json`), and a
//! resumed run cuts its logs back to those lengths before it appends: the lines written after the checkpoint
//! are written again by the resumed run, so they must not stay twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Tensor, Var};
use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Result, TrainError};

fn write_text_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| TrainError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
}

pub fn save_vars(vars: &[(String, Var)], path: &Path) -> Result<()> {
    let t: HashMap<String, Tensor> = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    let tmp = path.with_extension("tmp");
    candle_core::safetensors::save(&t, &tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
}

pub fn load_vars(vars: &[(String, Var)], path: &Path) -> Result<()> {
    let dev = vars
        .first()
        .map(|(_, v)| v.device().clone())
        .unwrap_or(candle_core::Device::Cpu);
    let st = candle_core::safetensors::load(path, &dev).map_err(|e| TrainError::File {
        path: path.into(),
        msg: e.to_string(),
    })?;
    for (n, v) in vars {
        let t = st.get(n).ok_or_else(|| TrainError::File {
            path: path.into(),
            msg: format!("no tensor {n}"),
        })?;
        v.set(&t.to_dtype(v.dtype())?)?;
    }
    Ok(())
}

/// Writes a checkpoint for `step`; `write` fills the (temporary) directory. Returns its final path.
pub fn save<S: Serialize>(
    run: &Path,
    step: usize,
    state: &S,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let dir = run.join("checkpoints");
    std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
    let name = format!("step-{step:08}");
    let tmp = dir.join(format!(".{name}.partial"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    write(&tmp)?;
    let state_text = serde_json::to_string_pretty(state).expect("state serialises");
    std::fs::write(tmp.join("state.json"), state_text)
        .map_err(|e| TrainError::io(tmp.join("state.json"), e))?;
    let fin = dir.join(&name);
    if fin.exists() {
        std::fs::remove_dir_all(&fin).map_err(|e| TrainError::io(&fin, e))?;
    }
    std::fs::rename(&tmp, &fin).map_err(|e| TrainError::io(&fin, e))?;
    write_text_atomic(&dir.join("latest"), &name)?;
    prune(&dir, KEEP)?;
    Ok(fin)
}

/// Checkpoints kept in a run: the newest and the one before it. A full SmolLM2-135M checkpoint (weights and two
/// optimiser moments) is 1.6 GB, so keeping every one would fill the disk over a long run.
pub const KEEP: usize = 2;

/// Removes all but the `keep` newest `step-*` checkpoints in `dir` (names sort by step: zero-padded).
fn prune(dir: &Path, keep: usize) -> Result<()> {
    let mut steps: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| TrainError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("step-"))
        })
        .collect();
    steps.sort();
    let old = steps.len().saturating_sub(keep);
    for p in &steps[..old] {
        std::fs::remove_dir_all(p).map_err(|e| TrainError::io(p, e))?;
    }
    Ok(())
}

/// The newest complete checkpoint and its state, if any.
pub fn latest<S: DeserializeOwned>(run: &Path) -> Result<Option<(PathBuf, S)>> {
    let pointer = run.join("checkpoints").join("latest");
    if !pointer.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&pointer).map_err(|e| TrainError::io(&pointer, e))?;
    let dir = run.join("checkpoints").join(name.trim());
    let sp = dir.join("state.json");
    let text = std::fs::read_to_string(&sp).map_err(|e| TrainError::io(&sp, e))?;
    let state = serde_json::from_str(&text).map_err(|e| TrainError::File {
        path: sp.clone(),
        msg: e.to_string(),
    })?;
    Ok(Some((dir, state)))
}

/// Writes a training checkpoint: the optimiser's variables and moments, the loop state, and the current length
/// of each of `logs` (files inside `run`; every line they hold must belong to the state saved).
pub fn save_training<S: Serialize>(
    run: &Path,
    step: usize,
    state: &S,
    opt: &crate::optim::AdamW,
    logs: &[&Path],
) -> Result<PathBuf> {
    let lengths = log_lengths(logs)?;
    crate::disk::ensure_room(
        run,
        crate::disk::checkpoint_bytes(&opt.vars),
        &format!("the checkpoint at step {step}"),
    )?;
    save(run, step, state, |dir| {
        save_vars(&opt.vars, &dir.join("trainable.safetensors"))?;
        opt.save(&dir.join("optimizer.safetensors"))?;
        let text = serde_json::to_string_pretty(&lengths).expect("lengths serialise");
        std::fs::write(dir.join(LOGS_FILE), text)
            .map_err(|e| TrainError::io(dir.join(LOGS_FILE), e))
    })
}

const LOGS_FILE: &str = "logs.json";

/// Byte length of each log by file name (0 for one not written yet).
fn log_lengths(logs: &[&Path]) -> Result<HashMap<String, u64>> {
    logs.iter()
        .map(|p| {
            let len = match std::fs::metadata(p) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                Err(e) => return Err(TrainError::io(p, e)),
            };
            Ok((log_key(p), len))
        })
        .collect()
}

fn log_key(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The JSON lines of a training log.
pub fn read_log(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| TrainError::File {
                path: path.into(),
                msg: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

/// Opens a run's log for appending. A run that starts afresh (`from` is `None`) empties it; a resumed one cuts
/// it back to its length when checkpoint `from` was written, so its lines equal an uninterrupted run's.
pub fn open_log(path: &Path, from: Option<&Path>) -> Result<std::fs::File> {
    let keep = match from {
        None => 0,
        Some(dir) => {
            let lp = dir.join(LOGS_FILE);
            match std::fs::read_to_string(&lp) {
                Ok(text) => {
                    let lengths: HashMap<String, u64> =
                        serde_json::from_str(&text).map_err(|e| TrainError::File {
                            path: lp.clone(),
                            msg: e.to_string(),
                        })?;
                    lengths.get(&log_key(path)).copied().unwrap_or(0)
                }
                // A checkpoint from before log lengths were recorded: keep the log as it is.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => u64::MAX,
                Err(e) => return Err(TrainError::io(&lp, e)),
            }
        }
    };
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TrainError::io(path, e))?;
    let len = f.metadata().map_err(|e| TrainError::io(path, e))?.len();
    if keep < len {
        f.set_len(keep).map_err(|e| TrainError::io(path, e))?;
    }
    Ok(f)
}

/// Restores the newest training checkpoint into `opt` (variables and moments, at the optimiser step `step_of`
/// gives for its state); returns its directory and state, or `None` when there is none.
pub fn restore_training<S: DeserializeOwned>(
    run: &Path,
    opt: &mut crate::optim::AdamW,
    step_of: impl Fn(&S) -> usize,
) -> Result<Option<(PathBuf, S)>> {
    let Some((dir, s)) = latest::<S>(run)? else {
        return Ok(None);
    };
    load_vars(&opt.vars, &dir.join("trainable.safetensors"))?;
    opt.load(&dir.join("optimizer.safetensors"), step_of(&s))?;
    Ok(Some((dir, s)))
}
