//! Trie-constrained decoding over an item catalog: beam search (ranking) and temperature sampling (RL rollouts).
//!
//! Each step runs the model on B·W rows, then gathers on the device only the log-probabilities of the tokens
//! the trie allows after each row's prefix (a handful per row, a few thousand at the widest node), and moves
//! just those to the host to pick the next beams. The vocabulary is never sorted or copied to the host.
//! Scores are full-vocabulary log-probabilities, as in HF `generate` with a `prefix_allowed_tokens_fn`, so a
//! title's score is its sequence log-probability under the model.

use std::rc::Rc;

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
    /// Per trie node: how many titles pass through it, and one of them.
    through: Vec<(u32, u32)>,
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
        let mut index = ItemIndex {
            trie: Trie::new(),
            csr: Trie::<u32>::new().to_csr(),
            sequences: Vec::with_capacity(sequences.len()),
            through: Vec::new(),
        };
        for (i, s) in sequences.into_iter().enumerate() {
            match index
                .trie
                .insert(&s, i as u32)
                .map_err(|e| ModelError::Invalid(format!("title {i}: {e}")))?
            {
                Inserted::New(_) => index.count_path(&s, i as u32),
                Inserted::Exists(_, other) => {
                    return Err(ModelError::Invalid(format!(
                        "titles {other} and {i} tokenise to the same sequence; they cannot be told apart"
                    )))
                }
            }
            index.sequences.push(s);
        }
        index.csr = index.trie.to_csr();
        Ok(index)
    }

    fn count_path(&mut self, seq: &[u32], title: u32) {
        self.through.resize(self.trie.num_nodes(), (0, NONE));
        let mut node = 0;
        self.through[0] = (self.through[0].0 + 1, title);
        for &t in seq {
            node = self
                .trie
                .child(node, t)
                .expect("the title was just inserted");
            let e = &mut self.through[node as usize];
            *e = (e.0 + 1, title);
        }
    }

    /// The one title below `node` when the trie no longer branches there (its rest is forced).
    fn forced_title(&self, node: u32) -> Option<u32> {
        let (n, title) = self.through[node as usize];
        (n == 1 && self.csr.values[node as usize] == NONE).then_some(title)
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
                self.count_path(&seq, id);
                self.sequences.push(seq);
                self.csr = self.trie.to_csr();
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
    let lse = logits.log_sum_exp(D::Minus1)?; // [N]
    let idx = Tensor::from_slice(picks, picks.len(), dev)?;
    let rows = Tensor::from_slice(rows_of, rows_of.len(), dev)?;
    let vals = logits.flatten_all()?.index_select(&idx, 0)?;
    let norm = lse.index_select(&rows, 0)?;
    Ok((vals - norm)?.to_vec1::<f32>()?)
}

#[derive(Clone)]
struct Beam {
    node: u32,
    score: f32,
    /// Tokens taken so far.
    depth: usize,
    /// This beam's row in the current logits, or NONE once its rest is forced.
    row: u32,
    /// For a forced beam: the log-probability of each of its title's tokens (valid from `depth` on).
    forced: Option<Rc<Vec<f32>>>,
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
    /// Beams whose rest was scored in one pass once the trie stopped branching below them.
    pub forced_beams: usize,
    /// Tokens run in those passes (without padding).
    pub forced_tokens: usize,
}

/// How a beam search runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeamOptions {
    /// Beams kept per prompt, and titles returned.
    pub width: usize,
    /// Once a beam's prefix leads to a single title, score the rest of that title in one batched pass
    /// instead of one decoding step per token. The search and its result stay the same (up to float
    /// rounding); prompts and beams with nothing left to decode leave the decoding batch.
    pub fast_forward: bool,
    /// Rows × padded length of one fast-forward pass (bounds its memory).
    pub chunk_tokens: usize,
}

impl BeamOptions {
    pub fn new(width: usize) -> Self {
        BeamOptions {
            width,
            fast_forward: true,
            chunk_tokens: 8192,
        }
    }
}

/// Beam search of width `width` for each prompt (token ids), returning up to `width` distinct titles per
/// prompt, best first. No length penalty; a beam ends where a title ends.
pub fn beam_search(
    model: &Decoder,
    index: &ItemIndex,
    prompts: &[Vec<u32>],
    width: usize,
) -> Result<Vec<Vec<Scored>>> {
    Ok(beam_search_with(model, index, prompts, &BeamOptions::new(width))?.0)
}

/// `beam_search`, also reporting the work done.
pub fn beam_search_stats(
    model: &Decoder,
    index: &ItemIndex,
    prompts: &[Vec<u32>],
    width: usize,
) -> Result<(Vec<Vec<Scored>>, SearchStats)> {
    beam_search_with(model, index, prompts, &BeamOptions::new(width))
}

/// Beam search with explicit options, reporting the work done.
pub fn beam_search_with(
    model: &Decoder,
    index: &ItemIndex,
    prompts: &[Vec<u32>],
    opts: &BeamOptions,
) -> Result<(Vec<Vec<Scored>>, SearchStats)> {
    let mut stats = SearchStats::default();
    let width = opts.width;
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
    let (pc_all, last) = {
        let _p = phase("beam.prefill", &dev);
        model.prefill(prompts)?
    };
    // The prompts still decoding, in the order of the current cache (`None`: all of them, `pc_all`).
    let mut subset: Option<(Vec<usize>, PromptCache)> = None;
    let mut logits = model.logits(&last)?; // [B, V]: row b is prompt b's only beam
    let mut states: Vec<PromptState> = (0..b)
        .map(|i| PromptState {
            live: vec![Beam {
                node: 0,
                score: 0.0,
                depth: 0,
                row: i as u32,
                forced: None,
            }],
            finished: Vec::new(),
            done: false,
        })
        .collect();
    let mut gen = GenCache::default();
    for _step in 0..=index.max_len() {
        // Every allowed continuation of every decoded beam.
        let (mut picks, mut rows, mut meta) = (Vec::new(), Vec::new(), Vec::new());
        for (i, st) in states.iter().enumerate().filter(|(_, s)| !s.done) {
            for (k, beam) in st.live.iter().enumerate().filter(|(_, x)| x.row != NONE) {
                let (toks, kids) = csr.children(beam.node);
                for (&t, &c) in toks.iter().zip(kids) {
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
        // A forced beam's one continuation comes with its precomputed log-probability.
        for (i, st) in states.iter().enumerate().filter(|(_, s)| !s.done) {
            for (k, beam) in st.live.iter().enumerate() {
                if let Some(f) = &beam.forced {
                    let (toks, kids) = csr.children(beam.node);
                    by_prompt[i].push((beam.score + f[beam.depth], k as u32, toks[0], kids[0]));
                }
            }
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
                if csr.values[c as usize] != NONE {
                    st.finished.push(Scored {
                        title: csr.values[c as usize],
                        score,
                    });
                }
                let has_children = csr.offsets[c as usize + 1] > csr.offsets[c as usize];
                if has_children && next.len() < width {
                    let parent = &st.live[k as usize];
                    next.push(Beam {
                        node: c,
                        score,
                        depth: parent.depth + 1,
                        row: parent.row,
                        forced: parent.forced.clone(),
                    });
                    taken[i].push(t);
                }
            }
            st.finished.sort_by(|x, y| y.score.total_cmp(&x.score));
            st.finished.truncate(width);
            // Extending a beam only lowers its score: stop once no live beam can enter the top `width`.
            let full = st.finished.len() >= width;
            st.done = next.is_empty() || (full && next[0].score <= st.finished[width - 1].score);
            st.live = if st.done { Vec::new() } else { next };
            any_live |= !st.done;
        }
        drop(_host);
        if !any_live {
            break;
        }
        let positions: Vec<usize> = match &subset {
            Some((keep, _)) => {
                let mut pos = vec![usize::MAX; b];
                for (p, &i) in keep.iter().enumerate() {
                    pos[i] = p;
                }
                pos
            }
            None => (0..b).collect(),
        };
        let pc = subset.as_ref().map_or(&pc_all, |s| &s.1);
        if opts.fast_forward {
            let _p = phase("beam.fast_forward", &dev);
            fast_forward(model, index, pc, &positions, &mut states, opts, &mut stats)?;
        }
        for beam in states.iter_mut().flat_map(|s| s.live.iter_mut()) {
            if beam.forced.is_some() {
                beam.row = NONE;
            }
        }
        // The beams still to decode, W' slots per prompt (the most any prompt has), prompts without any left out.
        let keep: Vec<usize> = (0..b)
            .filter(|&i| states[i].live.iter().any(|x| x.forced.is_none()))
            .collect();
        if keep.is_empty() {
            continue;
        }
        let slots = keep
            .iter()
            .map(|&i| states[i].live.iter().filter(|x| x.forced.is_none()).count())
            .max()
            .unwrap_or(1);
        let mut tokens = vec![0u32; keep.len() * slots];
        let mut parents = vec![0u32; keep.len() * slots];
        for (p, &i) in keep.iter().enumerate() {
            let mut s = 0;
            for (beam, &t) in states[i].live.iter_mut().zip(&taken[i]) {
                if beam.forced.is_some() {
                    continue;
                }
                tokens[p * slots + s] = t;
                parents[p * slots + s] = beam.row;
                beam.row = (p * slots + s) as u32;
                s += 1;
            }
            // Idle slots repeat a live row so their (ignored) computation stays well-formed.
            for q in s..slots {
                tokens[p * slots + q] = tokens[p * slots];
                parents[p * slots + q] = parents[p * slots];
            }
        }
        let current: Vec<usize> = subset.as_ref().map_or((0..b).collect(), |s| s.0.clone());
        if keep != current {
            let _p = phase("beam.shrink_batch", &dev);
            subset = Some((keep.clone(), pc_all.select(&keep)?));
        }
        if gen.len > 0 {
            let _p = phase("beam.reorder_cache", &dev);
            gen.reorder(&Tensor::from_slice(&parents, parents.len(), &dev)?)?;
        }
        let pc = subset.as_ref().map_or(&pc_all, |s| &s.1);
        let h = {
            let _p = phase("beam.decode_step", &dev);
            model.decode_step(pc, &mut gen, &tokens)?
        };
        stats.steps += 1;
        stats.rows += tokens.len();
        logits = {
            let _p = phase("beam.logits", &dev);
            model.logits(&h)?
        };
    }
    Ok((states.into_iter().map(|s| s.finished).collect(), stats))
}

/// Scores the forced rest of every live beam that has just reached a node with one title below it, in
/// batched passes over the prompt cache (`positions[i]`: prompt i's place in `pc`).
fn fast_forward(
    model: &Decoder,
    index: &ItemIndex,
    pc: &PromptCache,
    positions: &[usize],
    states: &mut [PromptState],
    opts: &BeamOptions,
    stats: &mut SearchStats,
) -> Result<()> {
    // (prompt, beam, title), shortest titles first so a pass pads little.
    let mut todo: Vec<(usize, usize, u32)> = Vec::new();
    for (i, st) in states.iter().enumerate().filter(|(_, s)| !s.done) {
        for (k, beam) in st.live.iter().enumerate() {
            if beam.forced.is_none() {
                if let Some(title) = index.forced_title(beam.node) {
                    todo.push((i, k, title));
                }
            }
        }
    }
    todo.sort_by_key(|&(_, _, t)| index.sequences[t as usize].len());
    let vocab = model.cfg.vocab_size as u32;
    let mut start = 0;
    while start < todo.len() {
        // The title's tokens but the last are the input; position j predicts token j + 1.
        let mut end = start + 1;
        while end < todo.len()
            && (end + 1 - start) * (index.sequences[todo[end].2 as usize].len() - 1)
                <= opts.chunk_tokens
        {
            end += 1;
        }
        let group = &todo[start..end];
        let t_max = group
            .iter()
            .map(|g| index.sequences[g.2 as usize].len() - 1)
            .max()
            .unwrap_or(0);
        let rows: Vec<(usize, &[u32])> = group
            .iter()
            .map(|&(i, _, t)| {
                let seq = &index.sequences[t as usize];
                (positions[i], &seq[..seq.len() - 1])
            })
            .collect();
        let h = model.extend_prompts(pc, &rows)?;
        let h = h.reshape((group.len() * t_max, ()))?;
        // The hidden rows that predict each beam's remaining tokens, and those tokens.
        let (mut at, mut want) = (Vec::new(), Vec::new());
        for (r, &(i, k, t)) in group.iter().enumerate() {
            let seq = &index.sequences[t as usize];
            let depth = states[i].live[k].depth;
            for (j, &tok) in seq.iter().enumerate().skip(depth) {
                at.push((r * t_max + j - 1) as u32);
                want.push(tok);
            }
            stats.forced_tokens += seq.len() - 1;
        }
        let mut lp = Vec::with_capacity(at.len());
        for (a, w) in at.chunks(LOGIT_ROWS).zip(want.chunks(LOGIT_ROWS)) {
            let hs = h.index_select(&Tensor::from_slice(a, a.len(), h.device())?, 0)?;
            let logits = model.logits(&hs)?;
            let rows: Vec<u32> = (0..a.len() as u32).collect();
            let picks: Vec<u32> = rows.iter().zip(w).map(|(&r, &t)| r * vocab + t).collect();
            lp.extend(gather_logprobs(&logits, &picks, &rows)?);
        }
        let mut off = 0;
        for &(i, k, t) in group {
            let len = index.sequences[t as usize].len();
            let beam = &mut states[i].live[k];
            let mut f = vec![0f32; len];
            f[beam.depth..].copy_from_slice(&lp[off..off + len - beam.depth]);
            off += len - beam.depth;
            beam.forced = Some(Rc::new(f));
        }
        stats.forced_beams += group.len();
        start = end;
    }
    Ok(())
}

/// Hidden states turned into vocabulary logits at once by a fast-forward pass (bounds its memory).
const LOGIT_ROWS: usize = 1024;

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
    let (pc, last) = model.prefill(prompts)?;
    let mut logits = model.logits(&last)?;
    let mut node = vec![0u32; n];
    let mut toks: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut logprob = vec![0f32; n];
    let mut result: Vec<Option<u32>> = vec![None; n];
    let mut gen = GenCache::default();
    let mut first = true;
    for _step in 0..=index.max_len() {
        let (mut picks, mut rows, mut owner) = (Vec::new(), Vec::new(), Vec::new());
        for r in (0..n).filter(|&r| result[r].is_none()) {
            let lr = if first { r / m } else { r } as u32;
            let (ts, _) = csr.children(node[r]);
            for &t in ts {
                picks.push(lr * vocab + t);
                rows.push(lr);
                owner.push(r);
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
            let (t, c) = (ts[pick], kids[pick]);
            toks[r].push(t);
            logprob[r] += lp[j + pick];
            node[r] = c;
            tokens[r] = t;
            // A title that is also the prefix of another ends here: the response format makes this rare.
            if csr.values[c as usize] != NONE {
                result[r] = Some(csr.values[c as usize]);
            }
            j = end;
        }
        if result.iter().all(Option::is_some) {
            break;
        }
        let h = model.decode_step(&pc, &mut gen, &tokens)?;
        logits = model.logits(&h)?;
        first = false;
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
