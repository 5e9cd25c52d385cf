//! Free-space checks for training runs. A full SmolLM2-135M checkpoint is 1.6 GB and a run keeps two while it
//! writes a third, so a disk that cannot hold them fails hours into a run with "No space left on device"; these
//! checks say so before the first step, and before each checkpoint, naming the folder and the bytes.

use std::path::{Path, PathBuf};

use candle_core::Var;

use crate::error::{Result, TrainError};

/// Bytes one training checkpoint takes: each trainable variable in its dtype and two f32 optimiser moments.
pub fn checkpoint_bytes(vars: &[(String, Var)]) -> u64 {
    vars.iter()
        .map(|(_, v)| {
            let n = v.elem_count() as u64;
            n * v.dtype().size_in_bytes() as u64 + 2 * n * 4
        })
        .sum()
}

/// Bytes a run still needs on disk at its peak: `KEEP` checkpoints plus the one being written (one, the final
/// save, when it checkpoints only at the end), and the exported weights, less what its checkpoints already hold.
pub fn run_needs(vars: &[(String, Var)], checkpoint_every: usize, run: &Path) -> u64 {
    let ckpt = checkpoint_bytes(vars);
    let copies = if checkpoint_every > 0 {
        crate::checkpoint::KEEP as u64 + 1
    } else {
        1
    };
    let weights: u64 = vars.iter().map(|(_, v)| v.elem_count() as u64 * 4).sum();
    (copies * ckpt + weights).saturating_sub(dir_bytes(&run.join("checkpoints")))
}

/// Fails with the folder, the bytes needed and the bytes free when `dir`'s filesystem has less than `need`
/// free. Filesystems that cannot say (non-Unix) pass.
pub fn ensure_room(dir: &Path, need: u64, what: &str) -> Result<()> {
    match free_bytes(dir) {
        Some(free) => check(dir, need, free, what),
        None => Ok(()),
    }
}

fn check(dir: &Path, need: u64, free: u64, what: &str) -> Result<()> {
    if free >= need {
        return Ok(());
    }
    Err(TrainError::NoRoom {
        dir: dir.to_path_buf(),
        what: what.to_string(),
        need,
        free,
    })
}

/// Bytes as a person reads them: GB from 1 GB up, MB below.
pub fn human_bytes(b: u64) -> String {
    if b >= 1_000_000_000 {
        format!("{:.2} GB", b as f64 / 1e9)
    } else {
        format!("{:.1} MB", b as f64 / 1e6)
    }
}

/// Free bytes for an unprivileged writer on the filesystem holding `dir` (or its nearest existing parent).
#[cfg(unix)]
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let existing: PathBuf = dir.ancestors().find(|p| p.exists())?.to_path_buf();
    let existing = if existing.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        existing
    };
    let c = std::ffi::CString::new(existing.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a properly sized, writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(not(unix))]
pub fn free_bytes(_dir: &Path) -> Option<u64> {
    None
}

/// Bytes of every file below `dir` (0 when it is missing).
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};

    fn vars() -> Vec<(String, Var)> {
        let dev = Device::Cpu;
        vec![
            (
                "a".into(),
                Var::from_tensor(&Tensor::ones((64, 32), DType::F32, &dev).unwrap()).unwrap(),
            ),
            (
                "b".into(),
                Var::from_tensor(&Tensor::ones(100, DType::F32, &dev).unwrap()).unwrap(),
            ),
        ]
    }

    /// The estimate is what a written checkpoint holds, to within the files' headers and the loop state.
    #[test]
    fn checkpoint_bytes_match_a_written_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let vars = vars();
        let opt = crate::optim::AdamW::new(vars.clone(), Default::default()).unwrap();
        let p = crate::checkpoint::save_training(dir.path(), 1, &1usize, &opt, &[]).unwrap();
        let written = dir_bytes(&p);
        let est = checkpoint_bytes(&vars);
        assert_eq!(est, (64 * 32 + 100) * 4 * 3);
        assert!(
            written >= est && written < est + 4096,
            "estimated {est} bytes, wrote {written}"
        );
    }

    /// A run needs KEEP + 1 checkpoints and its weights, less the checkpoints it already wrote.
    #[test]
    fn a_resumed_run_needs_less() {
        let dir = tempfile::tempdir().unwrap();
        let vars = vars();
        let ckpt = checkpoint_bytes(&vars);
        let weights = (64 * 32 + 100) * 4;
        assert_eq!(run_needs(&vars, 4, dir.path()), 3 * ckpt + weights);
        assert_eq!(run_needs(&vars, 0, dir.path()), ckpt + weights);
        let opt = crate::optim::AdamW::new(vars.clone(), Default::default()).unwrap();
        let p = crate::checkpoint::save_training(dir.path(), 4, &4usize, &opt, &[]).unwrap();
        let held = dir_bytes(&dir.path().join("checkpoints"));
        assert!(held >= dir_bytes(&p));
        assert_eq!(run_needs(&vars, 4, dir.path()), 3 * ckpt + weights - held);
    }

    #[test]
    fn too_little_room_names_the_folder_and_the_sizes() {
        let e = check(Path::new("/runs/x"), 3_200_000_000, 1_100_000_000, "rl").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("/runs/x"), "{msg}");
        assert!(msg.contains("3.20 GB") && msg.contains("1.10 GB"), "{msg}");
        assert!(check(Path::new("/runs/x"), 10, 10, "rl").is_ok());
        assert_eq!(human_bytes(3_145_728), "3.1 MB");
    }

    /// The real filesystem: a temporary folder has some room, and not an exabyte; a folder not made yet is
    /// measured on its parent's filesystem.
    #[test]
    fn the_filesystem_reports_its_free_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).expect("unix filesystems report free space");
        assert!(free > 0);
        assert_eq!(
            free_bytes(&dir.path().join("not/made/yet")).map(|f| f > 0),
            Some(true)
        );
        assert!(ensure_room(dir.path(), 1, "test").is_ok());
        assert!(ensure_room(dir.path(), u64::MAX, "test").is_err());
    }
}
