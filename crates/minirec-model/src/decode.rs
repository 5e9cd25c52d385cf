//! Trie-constrained decoding over an item catalog: beam search (ranking) and temperature sampling (RL rollouts).
//!
//! Each step runs the model on B·W rows, then gathers on the device only the log-probabilities of the tokens
//! the trie allows after each row's prefix (a handful per row, a few thousand at the widest node), and moves
//! just those to the host to pick the next beams. The vocabulary is never sorted or copied to the host.
//! Scores are full-vocabulary log-probabilities, as in HF `generate` with a `prefix_allowed_tokens_fn`, so a
//! title's score is its sequence log-probability under the model.

use candle_core::{Tensor, D};
use minirec_data::trie::{Inserted, Trie, TrieCsr};
use rand::Rng;

use crate::error::{ModelError, Result};
use crate::model::{Decoder, GenCache, PromptCache};
use crate::profile::phase;
use crate::tokenizer::TextTokenizer;

const NONE: u32 = u32::MAX;

/// The catalog as a trie over token ids: each distinct title's response tokens, valued by title index.
pub struct ItemIndex {
    trie: Trie<u32>,
    csr: TrieCsr<u32>,
    /// Token sequence of each title.
    pub sequences: Vec<Vec<u32>>,
    /// Each title's place in a depth-first walk of the trie, and each node's range of places: a node's subtree
    /// holds exactly the titles whose place is in its range, which is what excluding titles asks.
    place: Vec<u32>,
    span: Vec<(u32, u32)>,
}

/// Titles a search may not produce for one prompt (the history, a path's earlier steps), as sorted places.
#[derive(Debug, Clone, Default)]
pub struct Excluded(Vec<u32>);

impl Excluded {
    pub fn new(index: &ItemIndex, titles: impl IntoIterator<Item = u32>) -> Self {
        let mut v: Vec<u32> = titles
            .into_iter()
            .filter_map(|t| index.place.get(t as usize).copied())
            .collect();
        v.sort_unstable();
        v.dedup();
        Excluded(v)
    }

    fn holds(&self, index: &ItemIndex, title: u32) -> bool {
        self.0.binary_search(&index.place[title as usize]).is_ok()
    }

    /// Whether the subtree of `node` still holds a title that is not excluded.
    fn open(&self, index: &ItemIndex, node: u32) -> bool {
        let (a, b) = index.span[node as usize];
        let lo = self.0.partition_point(|&p| p < a);
        let hi = self.0.partition_point(|&p| p < b);
        ((hi - lo) as u32) < b - a
    }
}

/// Depth-first places of the titles (a node's own title before its children's) and each node's range.
fn places(csr: &TrieCsr<u32>, titles: usize) -> (Vec<u32>, Vec<(u32, u32)>) {
    let nodes = csr.offsets.len() - 1;
    let mut place = vec![u32::MAX; titles];
    let mut span = vec![(0u32, 0u32); nodes];
    let mut next = 0u32;
    // (node, whether its children have been pushed)
    let mut stack = vec![(0u32, false)];
    while let Some((node, expanded)) = stack.pop() {
        if expanded {
            span[node as usize].1 = next;
            continue;
        }
        span[node as usize].0 = next;
        if csr.values[node as usize] != NONE {
            place[csr.values[node as usize] as usize] = next;
            next += 1;
        }
        stack.push((node, true));
        let (_, kids) = csr.children(node);
        stack.extend(kids.iter().rev().map(|&c| (c, false)));
    }
    (place, span)
}

impl ItemIndex {
    /// Tokenises each title's response (`"Title"\n` under the default template) with `render`.
    pub fn build(
        tok: &TextTokenizer,
        titles: &[String],
        render: impl Fn(&str) -> String,
    ) -> Result<Self> {
        let texts: Vec<String> = titles.iter().map(|t| render(t)).collect();
        let seqs = tok.encode_batch(&texts)?;
        Self::from_sequences(seqs)
    }

    /// From token sequences; sequence i belongs to title i.
    pub fn from_sequences(sequences: Vec<Vec<u32>>) -> Result<Self> {
        let mut trie = Trie::new();
        for (i, s) in sequences.iter().enumerate() {
            match trie.insert(s, i as u32).map_err(|e| ModelError::Invalid(format!("title {i}: {e}")))? {
                Inserted::New(_) => {}
                Inserted::Exists(_, other) => {
                    return Err(ModelError::Invalid(format!(
                        "titles {other} and {i} tokenise to the same sequence; they cannot be told apart"
                    )))
                }
            }
        }
        let csr = trie.to_csr();
        let (place, span) = places(&csr, sequences.len());
        Ok(ItemIndex {
            trie,
            csr,
            sequences,
            place,
            span,
        })
    }

    pub fn trie(&self) -> &Trie<u32> {
        &self.trie
    }

    pub fn len(&self) -> usize {
        self.sequences.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sequences.is_empty()
    }

    /// Adds a new title; returns its index.
    pub fn insert(&mut self, seq: Vec<u32>) -> Result<u32> {
        let id = self.sequences.len() as u32;
        match self
            .trie
            .insert(&seq, id)
            .map_err(|e| ModelError::Invalid(e.to_string()))?
        {
            Inserted::New(_) => {
                self.sequences.push(seq);
                self.csr = self.trie.to_csr();
                (self.place, self.span) = places(&self.csr, self.sequences.len());
                Ok(id)
            }
            Inserted::Exists(_, other) => Ok(other),
        }
    }

    pub fn max_len(&self) -> usize {
        self.sequences.iter().map(Vec::len).max().unwrap_or(0)
    }
}

/// A ranked title: its index in the catalog's distinct titles and its sequence log-probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub title: u32,
    pub score: f32,
}

/// Log-probabilities of the (row, token) pairs in `picks` under `logits` [N, V]; computed on the device.
fn gather_logprobs(logits: &Tensor, picks: &[u32], rows_of: &[u32]) -> Result<Vec<f32>> {
    if picks.is_empty() {
        return Ok(Vec::new());
    }
    let dev = logits.device();
    let lse = crate::kernels::log_sum_exp::log_sum_exp_rows(logits)?; // [N]
    let idx = Tensor::from_slice(picks, picks.len(), dev)?;
    let rows = Tensor::from_slice(rows_of, rows_of.len(), dev)?;
    let vals = logits.flatten_all()?.index_select(&idx, 0)?;
    let norm = lse.index_select(&rows, 0)?;
    Ok((vals - norm)?.to_vec1::<f32>()?)
}

/// The decoding batch of a search: the prompts' cache, the generated cache, and which prompts are still in.
/// Each step lays the rows to continue out prompt-major (see `lay_out`); prompts with no row left drop out for
/// good, so finished prompts cost nothing, and on the CPU kernel neither do a prompt's finished beams.
struct Batch<'a> {
    model: &'a Decoder,
    /// The cache of the prompts still in, and their indices among the search's prompts.
    cache: PromptCache,
    in_cache: Vec<usize>,
    gen: GenCache,
}

impl<'a> Batch<'a> {
    /// Prefills `prompts`; returns the batch and the logits of each prompt's last position (row i: prompt i).
    fn start(model: &'a Decoder, prompts: &[Vec<u32>]) -> Result<(Self, Tensor)> {
        let (cache, last) = {
            let _p = phase("decode.prefill", model.device());
            model.prefill(prompts)?
        };
        let logits = model.logits(&last)?;
        let batch = Batch {
            model,
            cache,
            in_cache: (0..prompts.len()).collect(),
            gen: GenCache::default(),
        };
        Ok((batch, logits))
    }

    /// The step's rows, prompt-major over the prompts `keep`: their tokens, their parents (rows of the current
    /// logits), each prompt's places among them (empty for prompts not kept) and the rows per kept prompt.
    /// Where the model decodes uneven rows each prompt has exactly its own; elsewhere every prompt gets as
    /// many slots as the busiest, idle ones repeating the prompt's first row (computed, then ignored).
    #[allow(clippy::type_complexity)]
    fn lay_out(
        &self,
        rows: &[Vec<(u32, u32)>],
        keep: &[usize],
    ) -> (Vec<u32>, Vec<u32>, Vec<Vec<u32>>, Vec<usize>) {
        let slots = keep.iter().map(|&i| rows[i].len()).max().unwrap_or(1);
        let uneven = self.model.decodes_uneven_rows();
        let (mut tokens, mut parents) = (Vec::new(), Vec::new());
        let mut placed = vec![Vec::new(); rows.len()];
        let mut counts = Vec::with_capacity(keep.len());
        for &i in keep {
            let count = if uneven { rows[i].len() } else { slots };
            placed[i] = (0..rows[i].len())
                .map(|q| (tokens.len() + q) as u32)
                .collect();
            for q in 0..count {
                let (parent, t) = rows[i].get(q).copied().unwrap_or(rows[i][0]);
                tokens.push(t);
                parents.push(parent);
            }
            counts.push(count);
        }
        (tokens, parents, placed, counts)
    }

    /// Decodes one token for every row in `rows[i]` (prompt i's rows to continue, as (row in the current
    /// logits, token)). Returns the new logits and, per prompt, its rows' places in them (None: nothing to
    /// decode).
    fn step(
        &mut self,
        rows: &[Vec<(u32, u32)>],
        stats: &mut SearchStats,
    ) -> Result<Option<(Tensor, Vec<Vec<u32>>)>> {
        let keep: Vec<usize> = (0..rows.len()).filter(|&i| !rows[i].is_empty()).collect();
        if keep.is_empty() {
            return Ok(None);
        }
        let (tokens, parents, placed, counts) = self.lay_out(rows, &keep);
        let dev = self.model.device();
        if keep != self.in_cache {
            // A prompt without rows never gets any again, so `keep` is a subsequence of `in_cache`.
            let _p = phase("decode.shrink_batch", dev);
            let at: Vec<usize> = keep
                .iter()
                .map(|i| {
                    self.in_cache
                        .binary_search(i)
                        .expect("kept prompts are in the cache")
                })
                .collect();
            self.cache = self.cache.select(&at)?;
            self.in_cache = keep;
        }
        if self.gen.len > 0 {
            let _p = phase("decode.reorder_cache", dev);
            self.gen.reorder(&parents)?;
        }
        let h = {
            let _p = phase("decode.step", dev);
            self.model
                .decode_rows(&self.cache, &mut self.gen, &tokens, &counts)?
        };
        stats.steps += 1;
        stats.rows += tokens.len();
        let logits = {
            let _p = phase("decode.logits", dev);
            self.model.logits(&h)?
        };
        Ok(Some((logits, placed)))
    }
}

#[derive(Clone)]
struct Beam {
    node: u32,
    score: f32,
    /// This beam's row in the current logits.
    row: u32,
}

struct PromptState {
    live: Vec<Beam>,
    finished: Vec<Scored>,
    done: bool,
}

/// Work done by one beam search call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchStats {
    /// Decoding steps (model calls after the prefill).
    pub steps: usize,
    /// Rows decoded, summed over steps.
    pub rows: usize,
    /// Allowed (row, token) candidates gathered, summed over steps.
    pub candidates: usize,
}

/// Beam search of width `width` for each prompt (token ids), returning up to `width` distinct titles per
/// prompt, best first. No length penalty; a beam ends where a title ends.
pub fn beam_search(
    model: &Decoder,
    index: &ItemIndex,
    prompts: &[Vec<u32>],
    width: usize,
) -> Result<Vec<Vec<Scored>>> {
    Ok(beam_search_stats(model, index, prompts, width)?.0)
}

/// `beam_search`, also reporting the work done.
pub fn beam_search_stats(
    model: &Decoder,
    index: &ItemIndex,
    prompts: &[Vec<u32>],
    width: usize,
) -> Result<(Vec<Vec<Scored>>, SearchStats)> {
    beam_search_excluding(model, index, prompts, width, &[])
}

/// `beam_search_stats` where prompt i may not produce the titles in `exclude[i]` (an empty slice, or a
/// missing entry, excludes nothing): a beam only enters a subtree that still holds an allowed title, so the
/// result is the best `width` allowed titles, as if the excluded ones were not in the catalog.
pub fn beam_search_excluding(
    model: &Decoder,
    index: &ItemIndex,
    prompts: &[Vec<u32>],
    width: usize,
    exclude: &[Excluded],
) -> Result<(Vec<Vec<Scored>>, SearchStats)> {
    let none = Excluded::default();
    let banned = |i: usize| exclude.get(i).unwrap_or(&none);
    let mut stats = SearchStats::default();
    if width == 0 {
        return Err(ModelError::Invalid("beam width must be at least 1".into()));
    }
    if prompts.is_empty() {
        return Ok((Vec::new(), stats));
    }
    let csr = &index.csr;
    let vocab = model.cfg.vocab_size as u32;
    if let Some(&t) = csr.tokens.iter().find(|&&t| t >= vocab) {
        return Err(ModelError::Invalid(format!(
            "catalog token {t} is outside the model's vocabulary ({vocab})"
        )));
    }
    let b = prompts.len();
    let dev = model.device().clone();
    let (mut batch, mut logits) = Batch::start(model, prompts)?; // row i: prompt i's only beam
    let mut states: Vec<PromptState> = (0..b)
        .map(|i| PromptState {
            live: vec![Beam {
                node: 0,
                score: 0.0,
                row: i as u32,
            }],
            finished: Vec::new(),
            done: false,
        })
        .collect();
    for _step in 0..=index.max_len() {
        // Every allowed continuation of every live beam.
        let (mut picks, mut rows, mut meta) = (Vec::new(), Vec::new(), Vec::new());
        for (i, st) in states.iter().enumerate().filter(|(_, s)| !s.done) {
            for (k, beam) in st.live.iter().enumerate() {
                let (toks, kids) = csr.children(beam.node);
                for (&t, &c) in toks.iter().zip(kids) {
                    if !banned(i).open(index, c) {
                        continue;
                    }
                    picks.push(beam.row * vocab + t);
                    rows.push(beam.row);
                    meta.push((i as u32, k as u32, t, c));
                }
            }
        }
        stats.candidates += picks.len();
        let lp = {
            let _p = phase("beam.gather_logprobs", &dev);
            gather_logprobs(&logits, &picks, &rows)?
        };
        let _host = phase("beam.host_select", &dev);
        // Per prompt, candidates (score, beam, token, child) best first.
        let mut by_prompt: Vec<Vec<(f32, u32, u32, u32)>> = vec![Vec::new(); b];
        for (j, &(i, k, t, c)) in meta.iter().enumerate() {
            let score = states[i as usize].live[k as usize].score + lp[j];
            by_prompt[i as usize].push((score, k, t, c));
        }
        if by_prompt.iter().all(Vec::is_empty) {
            break;
        }
        // Beams of the next step and, per beam, the token it took.
        let mut taken: Vec<Vec<u32>> = vec![Vec::new(); b];
        let mut any_live = false;
        for (i, cands) in by_prompt.iter_mut().enumerate() {
            let st = &mut states[i];
            if st.done {
                continue;
            }
            cands.sort_by(|x, y| y.0.total_cmp(&x.0));
            let mut next = Vec::with_capacity(width);
            for &(score, k, t, c) in cands.iter() {
                let value = csr.values[c as usize];
                if value != NONE && !banned(i).holds(index, value) {
                    st.finished.push(Scored {
                        title: csr.values[c as usize],
                        score,
                    });
                }
                let has_children = csr.offsets[c as usize + 1] > csr.offsets[c as usize];
                if has_children && next.len() < width {
                    next.push(Beam {
                        node: c,
                        score,
                        row: st.live[k as usize].row,
                    });
                    taken[i].push(t);
                }
            }
            st.finished.sort_by(|x, y| y.score.total_cmp(&x.score));
            st.finished.truncate(width);
            // Extending a beam only lowers its score, so once `width` titles are finished a beam at or below
            // the worst of them can never enter the list: it stops here. It could only have taken a slot from
            // beams below it, equally hopeless, so the live beams that can still matter, and so the result,
            // are those of the search that decodes it (tested against that search and brute force).
            if st.finished.len() >= width {
                let floor = st.finished[width - 1].score;
                let keep: Vec<bool> = next.iter().map(|b| b.score > floor).collect();
                let mut it = keep.iter();
                next.retain(|_| *it.next().expect("one flag per beam"));
                let mut it = keep.iter();
                taken[i].retain(|_| *it.next().expect("one flag per beam"));
            }
            st.done = next.is_empty();
            st.live = if st.done { Vec::new() } else { next };
            any_live |= !st.done;
        }
        drop(_host);
        if !any_live {
            break;
        }
        let rows: Vec<Vec<(u32, u32)>> = states
            .iter()
            .zip(&taken)
            .map(|(st, t)| {
                st.live
                    .iter()
                    .map(|x| x.row)
                    .zip(t.iter().copied())
                    .collect()
            })
            .collect();
        let Some((next, placed)) = batch.step(&rows, &mut stats)? else {
            break;
        };
        logits = next;
        for (st, places) in states.iter_mut().zip(placed) {
            for (beam, r) in st.live.iter_mut().zip(places) {
                beam.row = r;
            }
        }
    }
    Ok((states.into_iter().map(|s| s.finished).collect(), stats))
}

/// One sampled completion: the title, its tokens, and its log-probability under the model (temperature 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub title: u32,
    pub tokens: Vec<u32>,
    pub logprob: f32,
}

/// Draws `m` trie-constrained samples per prompt at temperature `temperature`.
pub fn sample(
    model: &Decoder,
    index: &ItemIndex,
    prompts: &[Vec<u32>],
    m: usize,
    temperature: f32,
    rng: &mut impl Rng,
) -> Result<Vec<Vec<Sampled>>> {
    sample_excluding(model, index, prompts, m, temperature, &[], rng)
}

/// `sample` where prompt i's samples may not be the titles in `exclude[i]`: at each token the softmax runs over
/// the allowed tokens whose subtree still holds an allowed title (the distribution of the catalog without them).
pub fn sample_excluding(
    model: &Decoder,
    index: &ItemIndex,
    prompts: &[Vec<u32>],
    m: usize,
    temperature: f32,
    exclude: &[Excluded],
    rng: &mut impl Rng,
) -> Result<Vec<Vec<Sampled>>> {
    let none = Excluded::default();
    let banned = |r: usize| exclude.get(r / m).unwrap_or(&none);
    if let Some(i) = (0..prompts.len()).find(|&i| !banned(i * m).open(index, 0)) {
        return Err(ModelError::Invalid(format!(
            "prompt {i}: every title of the catalog is excluded, nothing is left to sample"
        )));
    }
    if m == 0 || temperature.is_nan() || temperature <= 0.0 {
        return Err(ModelError::Invalid(
            "need at least one sample and a positive temperature".into(),
        ));
    }
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    let csr = &index.csr;
    let vocab = model.cfg.vocab_size as u32;
    let b = prompts.len();
    let n = b * m;
    let (mut batch, mut logits) = Batch::start(model, prompts)?;
    let mut stats = SearchStats::default();
    // Each sample's row in the current logits: its prompt's, before the first step.
    let mut row: Vec<u32> = (0..n).map(|r| (r / m) as u32).collect();
    let mut node = vec![0u32; n];
    let mut toks: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut logprob = vec![0f32; n];
    let mut result: Vec<Option<u32>> = vec![None; n];
    for _step in 0..=index.max_len() {
        let (mut picks, mut rows, mut owner) = (Vec::new(), Vec::new(), Vec::new());
        // Each candidate's place among its node's children.
        let mut choice: Vec<u32> = Vec::new();
        for r in (0..n).filter(|&r| result[r].is_none()) {
            let lr = row[r];
            let (ts, kids) = csr.children(node[r]);
            for (q, (&t, &c)) in ts.iter().zip(kids).enumerate() {
                if !banned(r).open(index, c) {
                    continue;
                }
                picks.push(lr * vocab + t);
                rows.push(lr);
                owner.push(r);
                choice.push(q as u32);
            }
        }
        if picks.is_empty() {
            break;
        }
        let lp = gather_logprobs(&logits, &picks, &rows)?;
        let mut tokens = vec![0u32; n];
        let mut j = 0;
        while j < owner.len() {
            let r = owner[j];
            let end = owner[j..]
                .iter()
                .position(|&o| o != r)
                .map_or(owner.len(), |e| j + e);
            // Softmax over the allowed tokens at the temperature (the masked softmax HF computes).
            let scaled: Vec<f32> = lp[j..end].iter().map(|&x| x / temperature).collect();
            let mx = scaled.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let w: Vec<f64> = scaled.iter().map(|&x| ((x - mx) as f64).exp()).collect();
            let total: f64 = w.iter().sum();
            let mut u = rng.random::<f64>() * total;
            let mut pick = end - j - 1;
            for (q, &wq) in w.iter().enumerate() {
                if u < wq {
                    pick = q;
                    break;
                }
                u -= wq;
            }
            let (ts, kids) = csr.children(node[r]);
            let q = choice[j + pick] as usize;
            let (t, c) = (ts[q], kids[q]);
            toks[r].push(t);
            logprob[r] += lp[j + pick];
            node[r] = c;
            tokens[r] = t;
            // A title that is also the prefix of another ends here: the response format makes this rare.
            let value = csr.values[c as usize];
            if value != NONE && !banned(r).holds(index, value) {
                result[r] = Some(value);
            }
            j = end;
        }
        // Finished samples leave the batch.
        let rows: Vec<Vec<(u32, u32)>> = (0..b)
            .map(|i| {
                (i * m..(i + 1) * m)
                    .filter(|&r| result[r].is_none())
                    .map(|r| (row[r], tokens[r]))
                    .collect()
            })
            .collect();
        let Some((next, placed)) = batch.step(&rows, &mut stats)? else {
            break;
        };
        logits = next;
        for (i, places) in placed.into_iter().enumerate() {
            let open = (i * m..(i + 1) * m).filter(|&r| result[r].is_none());
            for (r, p) in open.zip(places) {
                row[r] = p;
            }
        }
    }
    let mut out: Vec<Vec<Sampled>> = vec![Vec::with_capacity(m); b];
    for r in 0..n {
        let title = result[r].ok_or_else(|| {
            ModelError::Invalid("a sample did not reach the end of a title".into())
        })?;
        out[r / m].push(Sampled {
            title,
            tokens: std::mem::take(&mut toks[r]),
            logprob: logprob[r],
        });
    }
    Ok(out)
}

/// Keeps the first sample of each distinct title, in order, at most `n` of them.
pub fn dedup(samples: &[Sampled], n: usize) -> Vec<Sampled> {
    let mut seen = rustc_hash::FxHashSet::default();
    samples
        .iter()
        .filter(|s| seen.insert(s.title))
        .take(n)
        .cloned()
        .collect()
}

/// Sequence log-probability of each title for one prompt, by teacher forcing (the brute-force reference for
/// beam search, and the scorer for a given list of candidates).
pub fn score_titles(
    model: &Decoder,
    index: &ItemIndex,
    prompt: &[u32],
    titles: &[u32],
    batch: usize,
) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(titles.len());
    for chunk in titles.chunks(batch.max(1)) {
        let seqs: Vec<Vec<u32>> = chunk
            .iter()
            .map(|&t| {
                prompt
                    .iter()
                    .chain(&index.sequences[t as usize])
                    .copied()
                    .collect()
            })
            .collect();
        let len = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let ids: Vec<Vec<u32>> = seqs
            .iter()
            .map(|s| {
                s.iter()
                    .copied()
                    .chain(std::iter::repeat_n(0, len - s.len()))
                    .collect()
            })
            .collect();
        let mask: Vec<Vec<u8>> = seqs
            .iter()
            .map(|s| {
                std::iter::repeat_n(1u8, s.len())
                    .chain(std::iter::repeat_n(0, len - s.len()))
                    .collect()
            })
            .collect();
        let (h, _) = model.forward(&ids, &mask, true, false)?;
        let logits = model.logits(&h)?;
        let lsm = candle_nn::ops::log_softmax(&logits, D::Minus1)?.to_vec3::<f32>()?;
        for (r, &t) in chunk.iter().enumerate() {
            let seq = &index.sequences[t as usize];
            let mut s = 0f32;
            for (k, &tok) in seq.iter().enumerate() {
                s += lsm[r][prompt.len() + k - 1][tok as usize];
            }
            out.push(s);
        }
    }
    Ok(out)
}
