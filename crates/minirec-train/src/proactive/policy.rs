//! The LLM as a path generator: the prompt, the path's response text, and trie-constrained path decoding.
//!
//! A path is up to `max_len` titles, each the response text of one title (`"Title"\n`), then `END\n`. Every
//! step is one constrained title from a trie of the catalog's titles plus END: the trie restarts after each
//! title, ending the path is an action (END), and a step never repeats a title of the history, of the path so
//! far or the target (those titles are excluded from the step's trie). Steps are tokenised separately and
//! concatenated, as the trie does; the prompt ends in a newline, so SFT, sampling and scoring see the same
//! tokens.

use minirec_data::PromptTemplate;
use minirec_model::decode::{beam_search_excluding, sample_excluding, Excluded, ItemIndex};
use minirec_model::{Decoder, TextTokenizer};
use rand::Rng;

use crate::error::{Result, TrainError};

/// The response text that ends a path.
pub const END: &str = "END\n";

/// The proactive task's wording, built on a dataset's prompt template.
pub struct PathPrompt<'a> {
    pub template: &'a PromptTemplate,
    pub max_len: usize,
}

impl PathPrompt<'_> {
    /// The prompt for a history and a target, titles oldest first.
    pub fn render<'b>(&self, history: impl IntoIterator<Item = &'b str>, target: &str) -> String {
        let t = self.template;
        let mut s = format!(
            "Given the items a user has interacted with and a target item, recommend up to {} items, one per line, that lead the user step by step toward the target; write END after the last one.\n{}",
            self.max_len, t.history_intro
        );
        for h in history {
            s.push_str(" \"");
            s.push_str(h);
            s.push('"');
        }
        s.push_str(&format!("\nTarget: \"{target}\"\n{}\n", t.response_header));
        s
    }
}

/// The catalog's titles (ids 0..n) and END (id n) as one trie over response tokens.
pub struct PathIndex {
    pub index: ItemIndex,
    pub end: u32,
}

impl PathIndex {
    pub fn build(
        tok: &TextTokenizer,
        template: &PromptTemplate,
        titles: &[String],
    ) -> Result<Self> {
        let mut texts: Vec<String> = titles.iter().map(|t| template.response(t)).collect();
        texts.push(END.to_string());
        let seqs = tok.encode_batch(&texts)?;
        Ok(PathIndex {
            index: ItemIndex::from_sequences(seqs)?,
            end: titles.len() as u32,
        })
    }

    /// The response tokens of a path (titles, then END when it ended).
    pub fn response(&self, titles: &[u32], ended: bool) -> Vec<u32> {
        let seq = |t: u32| self.index.sequences[t as usize].iter().copied();
        let mut r: Vec<u32> = titles.iter().flat_map(|&t| seq(t)).collect();
        if ended {
            r.extend(seq(self.end));
        }
        r
    }

    /// The token count of each action of a path: its titles, then END when it ended.
    pub fn action_lengths(&self, titles: &[u32], ended: bool) -> Vec<usize> {
        let len = |t: u32| self.index.sequences[t as usize].len();
        let mut v: Vec<usize> = titles.iter().map(|&t| len(t)).collect();
        if ended {
            v.push(len(self.end));
        }
        v
    }
}

/// One generated path: catalog title ids in order, whether it chose END (false: it hit `max_len`), and its
/// log-probability (summed over tokens) under the model that generated it.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    pub titles: Vec<u32>,
    pub ended: bool,
    pub logprob: f32,
}

/// A path query: the prompt's tokens and the titles no step may produce (the history's and the target's).
pub struct PathQuery {
    pub prompt: Vec<u32>,
    pub banned: Vec<u32>,
}

fn prefix(pi: &PathIndex, q: &PathQuery, titles: &[u32]) -> Vec<u32> {
    let mut p = q.prompt.clone();
    p.extend(pi.response(titles, false));
    p
}

/// What the next step of a path may not produce: the query's titles and the path's so far, END before the
/// first title (**[P]** a path recommends at least one item: SFT's paths all do, and an empty path has nothing
/// to score), and every title once the path is `max_len` long (`allow_titles` false: only END is left).
fn banned_for(pi: &PathIndex, q: &PathQuery, titles: &[u32], allow_titles: bool) -> Excluded {
    let mut b: Vec<u32> = q.banned.iter().chain(titles).copied().collect();
    if !allow_titles {
        b.extend(0..pi.end);
    }
    if titles.is_empty() {
        b.push(pi.end);
    }
    Excluded::new(&pi.index, b)
}

/// HF `generate`'s ranking of finished beams (length_penalty 1): the log-probability per generated token.
pub fn per_token(pi: &PathIndex, p: &Path) -> f32 {
    p.logprob / pi.response(&p.titles, p.ended).len().max(1) as f32
}

/// `m` paths per query sampled at `temperature`, one constrained title per step (the trie restarts after
/// each), at most `max_len` titles.
pub fn sample_paths(
    model: &Decoder,
    pi: &PathIndex,
    queries: &[PathQuery],
    m: usize,
    max_len: usize,
    temperature: f32,
    rng: &mut impl Rng,
) -> Result<Vec<Vec<Path>>> {
    let mut paths: Vec<Vec<Path>> = queries
        .iter()
        .map(|_| {
            vec![
                Path {
                    titles: Vec::new(),
                    ended: false,
                    logprob: 0.0
                };
                m
            ]
        })
        .collect();
    for step in 0..max_len {
        let open: Vec<(usize, usize)> = (0..queries.len())
            .flat_map(|i| (0..m).map(move |j| (i, j)))
            .filter(|&(i, j)| !paths[i][j].ended)
            .collect();
        if open.is_empty() {
            break;
        }
        let drawn = if step == 0 {
            // Every rollout of a query shares its prompt: one prefill for the group.
            let ex: Vec<Excluded> = queries
                .iter()
                .map(|q| banned_for(pi, q, &[], true))
                .collect();
            let prompts: Vec<Vec<u32>> = queries.iter().map(|q| q.prompt.clone()).collect();
            sample_excluding(model, &pi.index, &prompts, m, temperature, &ex, rng)?
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
        } else {
            let prompts: Vec<Vec<u32>> = open
                .iter()
                .map(|&(i, j)| prefix(pi, &queries[i], &paths[i][j].titles))
                .collect();
            let ex: Vec<Excluded> = open
                .iter()
                .map(|&(i, j)| banned_for(pi, &queries[i], &paths[i][j].titles, true))
                .collect();
            sample_excluding(model, &pi.index, &prompts, 1, temperature, &ex, rng)?
                .into_iter()
                .flatten()
                .collect()
        };
        for (&(i, j), s) in open.iter().zip(drawn) {
            let p = &mut paths[i][j];
            p.logprob += s.logprob;
            if s.title == pi.end {
                p.ended = true;
            } else {
                p.titles.push(s.title);
            }
        }
    }
    Ok(paths)
}

#[derive(Clone)]
struct Partial {
    query: usize,
    titles: Vec<u32>,
    score: f32,
}

/// Beam search over paths for each query: every live path is extended by its `width` best next actions (a
/// constrained title beam search from its prefix, END included), the `width` best partial paths of each query
/// (by summed log-probability) go on, and a path ends with END (forced after `max_len` titles). Finished paths
/// are ranked as HF `generate` ranks finished beams with its default length penalty, by log-probability per
/// token ([`per_token`]): summed log-probabilities would favour the shortest paths. Returns up to `width`
/// finished paths per query, best first; `logprob` stays the sum.
pub fn beam_paths(
    model: &Decoder,
    pi: &PathIndex,
    queries: &[PathQuery],
    width: usize,
    max_len: usize,
) -> Result<Vec<Vec<Path>>> {
    if width == 0 {
        return Err(TrainError::Invalid(
            "path beam width must be at least 1".into(),
        ));
    }
    let mut done: Vec<Vec<Path>> = vec![Vec::new(); queries.len()];
    let mut live: Vec<Partial> = (0..queries.len())
        .map(|query| Partial {
            query,
            titles: Vec::new(),
            score: 0.0,
        })
        .collect();
    while !live.is_empty() {
        let prompts: Vec<Vec<u32>> = live
            .iter()
            .map(|p| prefix(pi, &queries[p.query], &p.titles))
            .collect();
        let ex: Vec<Excluded> = live
            .iter()
            .map(|p| banned_for(pi, &queries[p.query], &p.titles, p.titles.len() < max_len))
            .collect();
        let (next, _) = beam_search_excluding(model, &pi.index, &prompts, width, &ex)?;
        let mut grown: Vec<Vec<Partial>> = vec![Vec::new(); queries.len()];
        for (p, cands) in live.iter().zip(next) {
            for c in cands {
                let score = p.score + c.score;
                if c.title == pi.end {
                    done[p.query].push(Path {
                        titles: p.titles.clone(),
                        ended: true,
                        logprob: score,
                    });
                } else {
                    let mut titles = p.titles.clone();
                    titles.push(c.title);
                    grown[p.query].push(Partial {
                        query: p.query,
                        titles,
                        score,
                    });
                }
            }
        }
        live = Vec::new();
        for (q, mut g) in grown.into_iter().enumerate() {
            rank(pi, &mut done[q], width);
            g.sort_by(|a, b| b.score.total_cmp(&a.score));
            g.truncate(width);
            live.extend(g);
        }
    }
    Ok(done)
}

/// Best `width` finished paths first, by log-probability per token.
fn rank(pi: &PathIndex, done: &mut Vec<Path>, width: usize) {
    done.sort_by(|a, b| per_token(pi, b).total_cmp(&per_token(pi, a)));
    done.truncate(width);
}
