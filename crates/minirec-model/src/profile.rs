//! Opt-in phase timing (`MINIREC_PROFILE=1`): each phase synchronises the device before and after, so the
//! numbers are real device time; off by default, when it costs one branch per phase.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use candle_core::Device;

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("MINIREC_PROFILE").is_some_and(|v| v != "0"))
}

fn table() -> &'static Mutex<BTreeMap<&'static str, (Duration, u64)>> {
    static T: OnceLock<Mutex<BTreeMap<&'static str, (Duration, u64)>>> = OnceLock::new();
    T.get_or_init(Default::default)
}

pub struct Phase<'a> {
    name: &'static str,
    device: &'a Device,
    start: Option<Instant>,
}

/// Times the enclosing scope as phase `name` when profiling is on.
pub fn phase<'a>(name: &'static str, device: &'a Device) -> Phase<'a> {
    let start = enabled().then(|| {
        device.synchronize().ok();
        Instant::now()
    });
    Phase {
        name,
        device,
        start,
    }
}

impl Drop for Phase<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.start {
            self.device.synchronize().ok();
            let mut t = table().lock().expect("profile lock");
            let e = t.entry(self.name).or_default();
            e.0 += s.elapsed();
            e.1 += 1;
        }
    }
}

/// The accumulated phases, most expensive first: (name, total seconds, calls).
pub fn report() -> Vec<(&'static str, f64, u64)> {
    let t = table().lock().expect("profile lock");
    let mut v: Vec<_> = t
        .iter()
        .map(|(k, (d, n))| (*k, d.as_secs_f64(), *n))
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

/// Forgets everything recorded so far (after a warm-up, say).
pub fn reset() {
    table().lock().expect("profile lock").clear();
}
