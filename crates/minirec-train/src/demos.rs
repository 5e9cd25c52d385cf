//! In-Context RLVR (related-methods.md §2): R of a group's m rollouts are sampled with K demonstrations —
//! other training samples, each a history's prompt followed by its next title — placed before the prompt.
//! Demonstrations are drawn at random once per batch and shared by its prompts (the authors' way), or retrieved
//! per prompt by embedding similarity (ours). A prompt never sees itself as a demonstration.

use rand::seq::index::sample as sample_indices;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::rl::RlPrompt;

/// How demonstrations are chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DemoSelect {
    /// Uniformly, once per batch, shared by all its prompts.
    #[default]
    Random,
    /// Each prompt's nearest training samples.
    Similar,
}

/// One demonstration: a training sample's prompt and its target title's response tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Demo {
    pub prompt: Vec<u32>,
    pub response: Vec<u32>,
}

/// The demonstrations RL may place before prompts.
#[derive(Debug, Clone)]
pub struct DemoPool {
    demos: Vec<Demo>,
    /// For each RL training prompt, by its position in the training order, demo indices nearest first.
    neighbours: Option<Vec<Vec<usize>>>,
}

impl DemoPool {
    /// Demonstrations drawn at random.
    pub fn random(demos: Vec<Demo>) -> Result<Self> {
        if demos.is_empty() {
            return Err(TrainError::Invalid(
                "in-context RL needs demonstrations".into(),
            ));
        }
        Ok(DemoPool {
            demos,
            neighbours: None,
        })
    }

    /// Demonstrations retrieved per prompt: `neighbours[i]` lists the demos for training prompt i, nearest first.
    pub fn retrieved(demos: Vec<Demo>, neighbours: Vec<Vec<usize>>) -> Result<Self> {
        let mut pool = DemoPool::random(demos)?;
        if let Some(bad) = neighbours
            .iter()
            .flatten()
            .find(|&&d| d >= pool.demos.len())
        {
            return Err(TrainError::Invalid(format!(
                "demonstration {bad} is not in the pool of {}",
                pool.demos.len()
            )));
        }
        pool.neighbours = Some(neighbours);
        Ok(pool)
    }

    pub fn len(&self) -> usize {
        self.demos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.demos.is_empty()
    }

    /// For each prompt of a batch (with its position in the training order), `r` prompts each preceded by its
    /// own set of `k` demonstrations.
    pub fn augment(
        &self,
        batch: &[(usize, &RlPrompt)],
        k: usize,
        r: usize,
        rng: &mut impl Rng,
    ) -> Result<Vec<Vec<Vec<u32>>>> {
        let sets: Vec<Vec<Vec<usize>>> = match &self.neighbours {
            None => {
                let shared = self.random_sets(batch, k, r, rng)?;
                vec![shared; batch.len()]
            }
            Some(nb) => batch
                .iter()
                .map(|&(i, p)| self.nearest_sets(nb, i, p, k, r))
                .collect::<Result<_>>()?,
        };
        Ok(batch
            .iter()
            .zip(sets)
            .map(|((_, p), sets)| {
                sets.iter()
                    .map(|set| {
                        let mut t = Vec::new();
                        for &d in set {
                            t.extend_from_slice(&self.demos[d].prompt);
                            t.extend_from_slice(&self.demos[d].response);
                        }
                        t.extend_from_slice(&p.prompt);
                        t
                    })
                    .collect()
            })
            .collect())
    }

    /// `r` disjoint sets of `k` demos drawn uniformly from those that are none of the batch's own prompts.
    fn random_sets(
        &self,
        batch: &[(usize, &RlPrompt)],
        k: usize,
        r: usize,
        rng: &mut impl Rng,
    ) -> Result<Vec<Vec<usize>>> {
        let allowed: Vec<usize> = (0..self.demos.len())
            .filter(|&d| batch.iter().all(|(_, p)| p.prompt != self.demos[d].prompt))
            .collect();
        if allowed.len() < k * r {
            return Err(TrainError::Invalid(format!(
                "{} demonstration-augmented rollouts × {k} demonstrations need {} distinct demonstrations \
                 outside the batch; the pool has {}",
                r,
                k * r,
                allowed.len()
            )));
        }
        let picks = sample_indices(rng, allowed.len(), k * r).into_vec();
        Ok(picks
            .chunks(k)
            .map(|c| c.iter().map(|&j| allowed[j]).collect())
            .collect())
    }

    /// The prompt's `k·r` nearest demos (itself left out), `k` to a set, nearest sets first.
    fn nearest_sets(
        &self,
        neighbours: &[Vec<usize>],
        i: usize,
        p: &RlPrompt,
        k: usize,
        r: usize,
    ) -> Result<Vec<Vec<usize>>> {
        let list = neighbours.get(i).ok_or_else(|| {
            TrainError::Invalid(format!(
                "no retrieved demonstrations for training prompt {i} (lists for {})",
                neighbours.len()
            ))
        })?;
        let near: Vec<usize> = list
            .iter()
            .copied()
            .filter(|&d| self.demos[d].prompt != p.prompt)
            .take(k * r)
            .collect();
        if near.len() < k * r {
            return Err(TrainError::Invalid(format!(
                "training prompt {i} has {} retrieved demonstrations; {r} × {k} are needed",
                near.len()
            )));
        }
        Ok(near.chunks(k).map(<[usize]>::to_vec).collect())
    }
}
