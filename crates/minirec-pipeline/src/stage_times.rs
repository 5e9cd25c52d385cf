//! Wall time per stage (`stages.json`), summed over every invocation that ran the stage. Long stages span
//! sessions: a process killed mid-stage runs no exit code, so while a stage runs its time so far is flushed to
//! `stages.partial.json` every [`FLUSH_EVERY`], and the invocation that finishes the stage adds the earlier
//! invocations' time to its own. At most one flush interval of a killed invocation goes unrecorded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;
use minirec_data::fsutil::{read_json, write_json_atomic};
use serde::{Deserialize, Serialize};

/// How often a running stage's time reaches the disk.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(30);

const FINISHED: &str = "stages.json";
const PARTIAL: &str = "stages.partial.json";

type Seconds = BTreeMap<String, f64>;

/// Wall time of each finished stage, and of the unfinished invocations of stages not finished yet.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct StageTimes(Seconds);

impl StageTimes {
    pub(crate) fn load(out: &Path) -> Self {
        read_json(&out.join(FINISHED)).unwrap_or_default()
    }

    pub(crate) fn record(&mut self, out: &Path, stage: &str, secs: f64) -> Result<()> {
        self.0.insert(stage.to_string(), secs);
        write_json_atomic(&out.join(FINISHED), self)?;
        Ok(())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }

    pub(crate) fn get(&self, stage: &str) -> Option<f64> {
        self.0.get(stage).copied()
    }
}

/// Time spent so far in stages that no invocation has finished yet.
pub(crate) fn unfinished(out: &Path) -> Vec<(String, f64)> {
    read_partial(out).into_iter().collect()
}

fn read_partial(out: &Path) -> Seconds {
    read_json(&out.join(PARTIAL)).unwrap_or_default()
}

/// Serialises the read-modify-write of the unfinished record between clocks of one process.
static PARTIAL_LOCK: Mutex<()> = Mutex::new(());

fn write_partial(out: &Path, stage: &str, secs: Option<f64>) -> Result<()> {
    let _only_writer = PARTIAL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut all = read_partial(out);
    match secs {
        Some(s) => all.insert(stage.to_string(), s),
        None => all.remove(stage),
    };
    let path = out.join(PARTIAL);
    if all.is_empty() {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => return Ok(()),
        }
    }
    write_json_atomic(&path, &all)?;
    Ok(())
}

/// Times one invocation of a stage, counting the earlier invocations that did not finish it. Dropped without
/// [`StageClock::stop`] (the stage failed), its time stays among the unfinished for the next invocation.
pub(crate) struct StageClock {
    out: PathBuf,
    stage: String,
    earlier: f64,
    started: Instant,
    ticker: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

impl StageClock {
    pub(crate) fn start(out: &Path, stage: &str) -> Self {
        Self::start_flushing(out, stage, FLUSH_EVERY)
    }

    fn start_flushing(out: &Path, stage: &str, every: Duration) -> Self {
        let earlier = read_partial(out).get(stage).copied().unwrap_or(0.0);
        let started = Instant::now();
        let (tx, rx) = mpsc::channel::<()>();
        let (dir, name) = (out.to_path_buf(), stage.to_string());
        let flush = move || {
            let secs = earlier + started.elapsed().as_secs_f64();
            if let Err(err) = write_partial(&dir, &name, Some(secs)) {
                tracing::warn!("stage {name}: could not record its time so far: {err:#}");
            }
        };
        let handle = std::thread::spawn(move || {
            // Flushes on every tick and once more when the clock stops or is dropped.
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                flush();
            }
            flush();
        });
        Self {
            out: out.to_path_buf(),
            stage: stage.to_string(),
            earlier,
            started,
            ticker: Some((tx, handle)),
        }
    }

    fn halt_ticker(&mut self) {
        if let Some((tx, handle)) = self.ticker.take() {
            drop(tx);
            let _ = handle.join();
        }
    }

    /// The stage finished: its time over every invocation, in seconds. Clears its unfinished record.
    pub(crate) fn stop(mut self) -> Result<f64> {
        self.halt_ticker();
        let secs = self.earlier + self.started.elapsed().as_secs_f64();
        write_partial(&self.out, &self.stage, None)?;
        Ok(secs)
    }
}

impl Drop for StageClock {
    fn drop(&mut self) {
        self.halt_ticker();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(10);

    #[test]
    fn a_stage_resumed_after_an_interruption_counts_every_invocation() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let first = StageClock::start_flushing(out, "rl:x", TICK);
        std::thread::sleep(Duration::from_millis(60));
        // While it runs, the time so far is on disk.
        let so_far = unfinished(out);
        assert_eq!(so_far.len(), 1);
        assert!(so_far[0].1 >= 0.03, "flushed {so_far:?}");
        drop(first); // the invocation ends before the stage finishes
        let interrupted = read_partial(out)["rl:x"];
        assert!(interrupted >= 0.06, "{interrupted}");

        let other = StageClock::start_flushing(out, "eval:y", TICK);
        let second = StageClock::start_flushing(out, "rl:x", TICK);
        std::thread::sleep(Duration::from_millis(40));
        let total = second.stop().unwrap();
        assert!(total >= interrupted + 0.04, "{total} after {interrupted}");
        assert!(total < interrupted + 5.0, "{total}");
        // The finished stage leaves the unfinished record; the other running stage stays in it.
        let left: Vec<String> = unfinished(out).into_iter().map(|(k, _)| k).collect();
        assert_eq!(left, ["eval:y"]);
        other.stop().unwrap();
        assert!(!out.join(PARTIAL).exists());
    }

    #[test]
    fn a_stage_finished_in_one_invocation_records_its_own_time() {
        let dir = tempfile::tempdir().unwrap();
        let clock = StageClock::start(dir.path(), "sft");
        std::thread::sleep(Duration::from_millis(20));
        let secs = clock.stop().unwrap();
        assert!((0.02..5.0).contains(&secs), "{secs}");
        assert!(unfinished(dir.path()).is_empty());
        let mut times = StageTimes::load(dir.path());
        times.record(dir.path(), "sft", secs).unwrap();
        assert_eq!(StageTimes::load(dir.path()).get("sft"), Some(secs));
    }
}
