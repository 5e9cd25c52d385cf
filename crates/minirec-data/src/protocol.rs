//! The papers' protocol from raw interactions to next-item samples: drop items without a usable title,
//! k-core filtering iterated to a fixed point, one sample per interaction after each user's first with the
//! previous ≤ `max_history` items as history, samples sorted globally by target time and split 8:1:1.
//!
//! Interactions are held as compact `(user, item, time)` triples over interned ids (16 bytes each), so memory
//! grows with the number of interactions and distinct ids, never with the size of the raw file.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::dataset::{DatasetWriter, Sample, Split};
use crate::error::{DataError, Result};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProtocolConfig {
    /// Minimum interactions per user and per item; 0 or 1 turns filtering off.
    pub k_core: u32,
    pub max_history: usize,
    /// Fractions of samples for train and valid; test takes the rest.
    pub train_ratio: f64,
    pub valid_ratio: f64,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            k_core: 5,
            max_history: 10,
            train_ratio: 0.8,
            valid_ratio: 0.1,
        }
    }
}

impl ProtocolConfig {
    pub fn validate(&self) -> Result<()> {
        let ok = |r: f64| (0.0..=1.0).contains(&r);
        if !ok(self.train_ratio)
            || !ok(self.valid_ratio)
            || self.train_ratio + self.valid_ratio > 1.0
        {
            return Err(DataError::Invalid(format!(
                "split ratios train={} valid={} must be in [0, 1] and sum to at most 1",
                self.train_ratio, self.valid_ratio
            )));
        }
        if self.max_history == 0 {
            return Err(DataError::Invalid("max history must be at least 1".into()));
        }
        Ok(())
    }

    /// Sizes of (train, valid, test) for `n` samples: train = ⌊0.8 n⌋, valid = ⌊0.9 n⌋ − train, as D3 does.
    pub fn split_sizes(&self, n: usize) -> (usize, usize, usize) {
        let train = (n as f64 * self.train_ratio).floor() as usize;
        let upto_valid =
            ((n as f64 * (self.train_ratio + self.valid_ratio)).floor() as usize).min(n);
        (train, upto_valid - train, n - upto_valid)
    }
}

/// String ids interned to dense `u32`s in order of first appearance.
#[derive(Debug, Default)]
pub struct Interner {
    map: FxHashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

impl Interner {
    pub fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.map.get(s) {
            return i;
        }
        let i = self.names.len() as u32;
        self.map.insert(s.into(), i);
        self.names.push(s.into());
        i
    }

    pub fn get(&self, s: &str) -> Option<u32> {
        self.map.get(s).copied()
    }

    pub fn name(&self, i: u32) -> &str {
        &self.names[i as usize]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[derive(Debug, Clone, Copy)]
struct Interaction {
    user: u32,
    item: u32,
    time: i64,
}

/// Raw interactions as read, in file order, plus the titles found for items.
#[derive(Debug, Default)]
pub struct InteractionLog {
    pub users: Interner,
    pub items: Interner,
    rows: Vec<Interaction>,
    titles: Vec<Option<Box<str>>>,
}

impl InteractionLog {
    pub fn push(&mut self, user: &str, item: &str, time: i64) {
        let user = self.users.intern(user);
        let item = self.items.intern(item);
        self.rows.push(Interaction { user, item, time });
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Records an item's title if the item occurs in the interactions and has none yet. Returns whether the
    /// item is one the log knows.
    pub fn set_title(&mut self, item: &str, title: String) -> bool {
        let Some(i) = self.items.get(item) else {
            return false;
        };
        if self.titles.len() < self.items.len() {
            self.titles.resize(self.items.len(), None);
        }
        let slot = &mut self.titles[i as usize];
        if slot.is_none() {
            *slot = Some(title.into_boxed_str());
        }
        true
    }

    fn title(&self, item: u32) -> Option<&str> {
        self.titles.get(item as usize).and_then(|t| t.as_deref())
    }
}

/// Cleans a raw title: HTML entities decoded, control characters and runs of whitespace made one space.
/// `None` when nothing usable is left, or when the text is markup or script rather than a title (some
/// Amazon metadata carries page fragments in the title field).
pub fn clean_title(raw: &str) -> Option<String> {
    let decoded = raw
        .replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", " ");
    let mut out = String::with_capacity(decoded.len());
    for word in decoded
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    let lower = out.to_ascii_lowercase();
    let markup = lower.contains("<span")
        || lower.contains("<div")
        || lower.contains("<script")
        || lower.contains("</")
        || lower.contains("gettime()");
    (!out.is_empty() && !markup).then_some(out)
}

/// Counts of what the protocol removed, for `stats.json`'s `filtered`.
pub type Filtered = BTreeMap<String, u64>;

/// Applies the protocol to `log` and streams the samples into `writer`. Returns the catalog of kept items
/// (in order of first appearance) and the number of interactions kept.
pub fn build_samples(
    log: &InteractionLog,
    cfg: &ProtocolConfig,
    writer: &mut DatasetWriter,
    filtered: &mut Filtered,
) -> Result<(Catalog, u64)> {
    cfg.validate()?;
    if log.is_empty() {
        return Err(DataError::Invalid("no interactions were read".into()));
    }
    let n_items = log.items.len();
    let n_users = log.users.len();

    // 1. Items without a usable title go first: their interactions would otherwise count towards k-core.
    let titled: Vec<bool> = (0..n_items as u32)
        .map(|i| log.title(i).is_some())
        .collect();
    let mut alive: Vec<bool> = log.rows.iter().map(|r| titled[r.item as usize]).collect();
    let untitled_items = titled.iter().filter(|&&t| !t).count() as u64;
    let untitled_rows = alive.iter().filter(|&&a| !a).count() as u64;
    filtered.insert("items_without_title".into(), untitled_items);
    filtered.insert("interactions_of_items_without_title".into(), untitled_rows);

    // 2. k-core to a fixed point.
    let (mut removed_rows, mut rounds) = (0u64, 0u32);
    if cfg.k_core > 1 {
        let k = cfg.k_core;
        loop {
            let mut user_deg = vec![0u32; n_users];
            let mut item_deg = vec![0u32; n_items];
            for (r, _) in log.rows.iter().zip(&alive).filter(|(_, &a)| a) {
                user_deg[r.user as usize] += 1;
                item_deg[r.item as usize] += 1;
            }
            let mut changed = 0u64;
            for (r, a) in log.rows.iter().zip(alive.iter_mut()) {
                if *a && (user_deg[r.user as usize] < k || item_deg[r.item as usize] < k) {
                    *a = false;
                    changed += 1;
                }
            }
            if changed == 0 {
                break;
            }
            removed_rows += changed;
            rounds += 1;
        }
    }
    filtered.insert("kcore_interactions".into(), removed_rows);
    tracing::info!(
        "k-core (k = {}) removed {removed_rows} interactions in {rounds} rounds",
        cfg.k_core
    );

    // 3. The catalog of surviving items, in order of first appearance.
    let mut item_kept = vec![false; n_items];
    let mut user_rows = vec![0u32; n_users];
    for (r, _) in log.rows.iter().zip(&alive).filter(|(_, &a)| a) {
        item_kept[r.item as usize] = true;
        user_rows[r.user as usize] += 1;
    }
    let mut catalog = Catalog::new();
    for i in (0..n_items as u32).filter(|&i| item_kept[i as usize]) {
        let title = log.title(i).expect("kept items have titles");
        catalog.push(log.items.name(i), title)?;
    }
    let kept_users = user_rows.iter().filter(|&&c| c > 0).count() as u64;
    filtered.insert("kcore_users".into(), n_users as u64 - kept_users);
    filtered.insert(
        "kcore_items".into(),
        (n_items as u64 - untitled_items) - catalog.len() as u64,
    );
    let single = user_rows.iter().filter(|&&c| c == 1).count() as u64;
    filtered.insert("users_with_one_interaction".into(), single);

    // 4. Each user's timeline, by time then file order, users in order of first appearance (CSR layout).
    let mut start = vec![0usize; n_users + 1];
    for u in 0..n_users {
        start[u + 1] = start[u] + user_rows[u] as usize;
    }
    let kept = start[n_users];
    let mut fill = start.clone();
    let mut timeline = vec![0u32; kept]; // row indices
    for (idx, (r, _)) in log
        .rows
        .iter()
        .zip(&alive)
        .enumerate()
        .filter(|(_, (_, &a))| a)
    {
        let u = r.user as usize;
        timeline[fill[u]] = idx as u32;
        fill[u] += 1;
    }
    for u in 0..n_users {
        // Stable: equal times keep file order.
        timeline[start[u]..start[u + 1]].sort_by_key(|&idx| log.rows[idx as usize].time);
    }
    let mut owner = vec![0u32; kept];
    for u in 0..n_users {
        owner[start[u]..start[u + 1]].fill(u as u32);
    }

    // 5. One sample per position after a user's first; sorted by target time, ties by user then position.
    let mut samples: Vec<u32> = (0..kept as u32)
        .filter(|&p| p as usize != start[owner[p as usize] as usize])
        .collect();
    samples.sort_by_key(|&p| log.rows[timeline[p as usize] as usize].time);

    let (n_train, n_valid, _) = cfg.split_sizes(samples.len());
    let pb = crate::progress::bar(samples.len() as u64, "writing samples");
    for (rank, &p) in samples.iter().enumerate() {
        let p = p as usize;
        let u = owner[p] as usize;
        let from = p.saturating_sub(cfg.max_history).max(start[u]);
        let row = |q: usize| &log.rows[timeline[q] as usize];
        let mut sample = Sample {
            id: 0,
            user: log.users.name(u as u32).to_string(),
            history: (from..p)
                .map(|q| log.items.name(row(q).item).to_string())
                .collect(),
            target: log.items.name(row(p).item).to_string(),
            timestamp: row(p).time,
        };
        let split = if rank < n_train {
            Split::Train
        } else if rank < n_train + n_valid {
            Split::Valid
        } else {
            Split::Test
        };
        writer.write_sample(split, &mut sample)?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok((catalog, kept as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_sizes_follow_d3() {
        let c = ProtocolConfig::default();
        assert_eq!(c.split_sizes(180), (144, 18, 18));
        assert_eq!(c.split_sizes(10), (8, 1, 1));
        assert_eq!(c.split_sizes(7), (5, 1, 1));
        assert_eq!(c.split_sizes(0), (0, 0, 0));
    }

    #[test]
    fn titles_are_cleaned_or_refused() {
        assert_eq!(
            clean_title("  Acme\tDrill \n 18V "),
            Some("Acme Drill 18V".into())
        );
        assert_eq!(
            clean_title("Salt &amp; Pepper"),
            Some("Salt & Pepper".into())
        );
        assert_eq!(clean_title("   "), None);
        assert_eq!(clean_title(""), None);
        assert_eq!(clean_title("<span class=\"a\">x</span>"), None);
        assert_eq!(clean_title("var a = (new Date()).getTime();"), None);
    }
}
