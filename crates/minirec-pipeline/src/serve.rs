//! The serving engine behind `minirec serve` (issue 16): one loaded model and catalog trie answering many
//! requests, several at a time in one batched beam search, and taking new items without a restart.

use std::collections::HashSet;

use anyhow::{bail, Result};
use minirec_data::PromptTemplate;
use minirec_model::decode::{beam_search, ItemIndex};
use minirec_model::{Decoder, TextTokenizer};

/// One recommendation request: a history of titles (oldest first) and what to return.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub history: Vec<String>,
    pub k: usize,
    pub beam: usize,
    /// Leave out titles the history already holds (the search is widened by their number to still give k).
    pub exclude_history: bool,
}

/// A request the engine cannot take: the field at fault and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for RequestError {}

/// A recommended title with its sequence log-probability and its index among the catalog's titles.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommended {
    pub title: String,
    pub title_index: u32,
    pub score: f32,
}

/// Checks a request against the limits a server takes (`max_beam`: the widest search allowed), naming the field
/// at fault.
pub fn check_request(r: &Request, max_beam: usize) -> std::result::Result<(), RequestError> {
    let bad = |field, message: String| Err(RequestError { field, message });
    if r.history.is_empty() {
        return bad("history", "must hold at least one title".into());
    }
    if let Some(i) = r.history.iter().position(|t| t.trim().is_empty()) {
        return bad("history", format!("entry {i} is empty"));
    }
    if r.k == 0 {
        return bad("k", "must be at least 1".into());
    }
    if r.beam == 0 || r.beam > max_beam {
        return bad("beam", format!("must be between 1 and {max_beam}"));
    }
    if r.k > r.beam {
        return bad(
            "k",
            format!("{} is more than the beam width {}", r.k, r.beam),
        );
    }
    Ok(())
}

pub struct Recommender {
    model: Decoder,
    tokenizer: TextTokenizer,
    prompt: PromptTemplate,
    titles: Vec<String>,
    known: HashSet<String>,
    index: ItemIndex,
}

impl Recommender {
    pub fn new(
        model: Decoder,
        tokenizer: TextTokenizer,
        prompt: PromptTemplate,
        titles: Vec<String>,
    ) -> Result<Self> {
        let index = ItemIndex::build(&tokenizer, &titles, |t| prompt.response(t))?;
        let known = titles.iter().cloned().collect();
        Ok(Recommender {
            model,
            tokenizer,
            prompt,
            titles,
            known,
            index,
        })
    }

    pub fn titles(&self) -> &[String] {
        &self.titles
    }

    /// Checks a request against the limits the engine serves (`max_beam`: the widest search allowed).
    pub fn check(&self, r: &Request, max_beam: usize) -> std::result::Result<(), RequestError> {
        check_request(r, max_beam)
    }

    /// The search width a request needs: its beam, widened by the history titles it excludes.
    fn width(&self, r: &Request) -> usize {
        let excluded = match r.exclude_history {
            true => r.history.iter().filter(|t| self.known.contains(*t)).count(),
            false => 0,
        };
        r.beam.max(r.k + excluded).min(self.titles.len().max(1))
    }

    /// Answers `requests` (each already `check`ed), those of one search width in one batched beam search.
    pub fn recommend(&self, requests: &[Request]) -> Result<Vec<Vec<Recommended>>> {
        let mut out = vec![Vec::new(); requests.len()];
        let widths: Vec<usize> = requests.iter().map(|r| self.width(r)).collect();
        let mut distinct = widths.clone();
        distinct.sort_unstable();
        distinct.dedup();
        for w in distinct {
            let members: Vec<usize> = (0..requests.len()).filter(|&i| widths[i] == w).collect();
            let prompts = members
                .iter()
                .map(|&i| {
                    let text = self
                        .prompt
                        .render(requests[i].history.iter().map(String::as_str));
                    Ok(self.tokenizer.encode(&text)?)
                })
                .collect::<Result<Vec<_>>>()?;
            let ranked = beam_search(&self.model, &self.index, &prompts, w)?;
            for (&i, list) in members.iter().zip(ranked) {
                out[i] = self.pick(&requests[i], list);
            }
        }
        Ok(out)
    }

    fn pick(&self, r: &Request, ranked: Vec<minirec_model::decode::Scored>) -> Vec<Recommended> {
        let history: HashSet<&str> = r.history.iter().map(String::as_str).collect();
        ranked
            .into_iter()
            .map(|s| Recommended {
                title: self.titles[s.title as usize].clone(),
                title_index: s.title,
                score: s.score,
            })
            .filter(|x| !(r.exclude_history && history.contains(x.title.as_str())))
            .take(r.k)
            .collect()
    }

    /// Adds titles to the catalog; each is recommendable from the next search on. Returns how many were new
    /// (titles already there are skipped). A title whose tokens equal another's cannot be told apart from it
    /// and is refused, naming both; nothing is added then.
    pub fn add_items(&mut self, titles: &[String]) -> Result<usize> {
        let mut fresh: Vec<&String> = Vec::new();
        let mut seen = HashSet::new();
        for t in titles {
            if t.trim().is_empty() {
                bail!("items: an empty title");
            }
            if !self.known.contains(t) && seen.insert(t.as_str()) {
                fresh.push(t);
            }
        }
        let texts: Vec<String> = fresh.iter().map(|t| self.prompt.response(t)).collect();
        let seqs = self.tokenizer.encode_batch(&texts)?;
        let mut probe: HashSet<&[u32]> = self.index.sequences.iter().map(Vec::as_slice).collect();
        for (t, s) in fresh.iter().zip(&seqs) {
            if !probe.insert(s.as_slice()) {
                let other = self
                    .index
                    .sequences
                    .iter()
                    .position(|x| x == s)
                    .map_or_else(
                        || "another new item".to_string(),
                        |i| self.titles[i].clone(),
                    );
                bail!("items: {t:?} tokenises exactly as {other:?}; they could not be told apart");
            }
        }
        for (t, s) in fresh.iter().zip(seqs) {
            let id = self.index.insert(s)?;
            debug_assert_eq!(id as usize, self.titles.len());
            self.titles.push((*t).clone());
            self.known.insert((*t).clone());
        }
        Ok(fresh.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minirec_model::load::{preset_config, random_model};

    fn engine(titles: &[&str]) -> Recommender {
        let prompt = PromptTemplate::default();
        let mut texts: Vec<String> = titles.iter().map(|t| prompt.response(t)).collect();
        texts.push(prompt.render(["Red Widget", "Blue Gadget", "Green Gizmo"]));
        texts.push(prompt.response("Purple Sprocket"));
        let tok = TextTokenizer::word_level(texts.iter().map(String::as_str)).unwrap();
        let cfg = preset_config("tiny-64", tok.vocab_size()).unwrap();
        let dev = candle_core::Device::Cpu;
        let model = random_model(cfg, candle_core::DType::F32, &dev, 7).unwrap();
        let titles = titles.iter().map(|t| t.to_string()).collect();
        Recommender::new(model, tok, prompt, titles).unwrap()
    }

    const TITLES: &[&str] = &[
        "Red Widget",
        "Blue Gadget",
        "Green Gizmo",
        "Red Gadget",
        "Blue Widget",
        "Green Widget",
        "Red Gizmo",
    ];

    fn req(history: &[&str], k: usize, beam: usize, exclude: bool) -> Request {
        Request {
            history: history.iter().map(|t| t.to_string()).collect(),
            k,
            beam,
            exclude_history: exclude,
        }
    }

    #[test]
    fn a_batch_answers_each_request_as_it_would_alone() {
        let e = engine(TITLES);
        let reqs = [
            req(&["Red Widget"], 3, 5, false),
            req(&["Blue Gadget", "Green Gizmo"], 2, 5, true),
            req(&["Green Gizmo", "Red Widget", "Blue Gadget"], 4, 7, false),
            req(&["Red Widget"], 3, 5, false),
        ];
        let together = e.recommend(&reqs).unwrap();
        for (r, got) in reqs.iter().zip(&together) {
            let alone = e.recommend(std::slice::from_ref(r)).unwrap().remove(0);
            assert_eq!(got.len(), r.k);
            let titles = |v: &[Recommended]| v.iter().map(|x| x.title.clone()).collect::<Vec<_>>();
            assert_eq!(titles(got), titles(&alone));
            for (a, b) in got.iter().zip(&alone) {
                assert!(
                    (a.score - b.score).abs() < 1e-4,
                    "{} vs {}",
                    a.score,
                    b.score
                );
            }
        }
        // Excluded history titles are absent and k titles still come back.
        assert!(together[1]
            .iter()
            .all(|x| x.title != "Blue Gadget" && x.title != "Green Gizmo"));
    }

    #[test]
    fn bad_requests_name_their_field() {
        let e = engine(TITLES);
        let field = |r: Request| e.check(&r, 50).unwrap_err().field;
        assert_eq!(field(req(&[], 3, 5, false)), "history");
        assert_eq!(field(req(&["Red Widget", " "], 3, 5, false)), "history");
        assert_eq!(field(req(&["Red Widget"], 0, 5, false)), "k");
        assert_eq!(field(req(&["Red Widget"], 6, 5, false)), "k");
        assert_eq!(field(req(&["Red Widget"], 3, 51, false)), "beam");
        assert!(e.check(&req(&["Red Widget"], 3, 5, false), 50).is_ok());
    }

    #[test]
    fn added_items_become_recommendable_at_once() {
        let mut e = engine(TITLES);
        let n = e.titles().len();
        let wide = req(&["Red Widget"], n + 1, n + 1, false);
        assert_eq!(
            e.recommend(std::slice::from_ref(&wide)).unwrap()[0].len(),
            n
        );
        let added = e
            .add_items(&["Purple Sprocket".into(), "Red Widget".into()])
            .unwrap();
        assert_eq!(added, 1);
        let got = e.recommend(&[wide]).unwrap().remove(0);
        assert_eq!(got.len(), n + 1);
        assert!(got.iter().any(|x| x.title == "Purple Sprocket"));
        // A title that tokenises exactly as one already there is refused, and nothing is added.
        let err = e
            .add_items(&["Red  Widget".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("Red Widget"), "{err}");
        assert_eq!(e.titles().len(), n + 1);
    }
}
