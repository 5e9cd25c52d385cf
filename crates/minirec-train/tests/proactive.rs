//! ProRL's path generator and training on a tiny random model: sampled paths stay in the catalog with no title
//! twice, path beam search is the exact ranking of all paths when wide enough, and RL raises the return that a
//! synthetic user model pays.

use candle_core::{DType, Device};
use minirec_model::decode::{score_titles, ItemIndex};
use minirec_model::load::{preset_config, random_model};
use minirec_model::Decoder;
use minirec_train::proactive::policy::{
    beam_paths, per_token, sample_paths, Path, PathIndex, PathQuery,
};
use minirec_train::proactive::reward::UserModel;
use minirec_train::proactive::rl::{train, ProRlConfig, ProRlPrompt};
use minirec_train::sft::trainable;
use minirec_train::SftConfig;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn tiny(seed: u64) -> Decoder {
    let cfg = preset_config("tiny", 24).unwrap();
    random_model(cfg, DType::F32, &Device::Cpu, seed).unwrap()
}

/// Six titles sharing first tokens (one a prefix-sharing pair) and END (id 6, token 12).
fn path_index() -> PathIndex {
    let mut seqs: Vec<Vec<u32>> = (0..6u32).map(|t| vec![1 + t / 3, 3 + t % 3, 9]).collect();
    seqs.push(vec![12]);
    PathIndex {
        index: ItemIndex::from_sequences(seqs).unwrap(),
        end: 6,
    }
}

fn queries() -> Vec<PathQuery> {
    vec![
        PathQuery {
            prompt: vec![10, 14, 20],
            banned: vec![0, 5],
        },
        PathQuery {
            prompt: vec![11, 15, 20, 21],
            banned: vec![2],
        },
    ]
}

#[test]
fn sampled_paths_stay_in_the_catalog_without_repeats_or_banned_titles() {
    let m = tiny(1);
    let pi = path_index();
    let qs = queries();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let paths = sample_paths(&m, &pi, &qs, 40, 3, 1.5, &mut rng).unwrap();
    let mut lengths = std::collections::BTreeSet::new();
    for (q, group) in qs.iter().zip(&paths) {
        assert_eq!(group.len(), 40);
        for p in group {
            assert!(
                (1..=3).contains(&p.titles.len()),
                "a path holds 1 to 3 titles"
            );
            assert!(
                p.ended || p.titles.len() == 3,
                "a path stops by END or at the limit"
            );
            let mut seen = std::collections::HashSet::new();
            for &t in &p.titles {
                assert!(t < pi.end, "off-catalog step {t}");
                assert!(!q.banned.contains(&t), "banned title {t}");
                assert!(seen.insert(t), "title {t} twice");
            }
            lengths.insert(p.titles.len());
        }
    }
    assert!(lengths.len() >= 3, "paths of several lengths: {lengths:?}");
}

/// Every path of 1..=`max_len` allowed distinct titles, with END after it, scored by teacher forcing and
/// ranked by log-probability per token.
fn all_paths(m: &Decoder, pi: &PathIndex, q: &PathQuery, max_len: usize) -> Vec<(Vec<u32>, f32)> {
    let mut out = Vec::new();
    let mut stack: Vec<Vec<u32>> = vec![vec![]];
    while let Some(p) = stack.pop() {
        if !p.is_empty() {
            let whole = ItemIndex::from_sequences(vec![pi.response(&p, true)]).unwrap();
            let s = score_titles(m, &whole, &q.prompt, &[0], 1).unwrap()[0];
            out.push((p.clone(), s));
        }
        if p.len() < max_len {
            for t in 0..pi.end {
                if !p.contains(&t) && !q.banned.contains(&t) {
                    let mut n = p.clone();
                    n.push(t);
                    stack.push(n);
                }
            }
        }
    }
    let norm = |(t, s): &(Vec<u32>, f32)| {
        per_token(
            pi,
            &Path {
                titles: t.clone(),
                ended: true,
                logprob: *s,
            },
        )
    };
    out.sort_by(|a, b| norm(b).total_cmp(&norm(a)));
    out
}

#[test]
fn a_wide_path_beam_search_ranks_every_path_exactly() {
    let m = tiny(2);
    let pi = path_index();
    let qs = queries();
    let got = beam_paths(&m, &pi, &qs, 64, 2).unwrap();
    for (q, g) in qs.iter().zip(&got) {
        let want = all_paths(&m, &pi, q, 2);
        assert_eq!(g.len(), want.len(), "every path is found");
        for (a, (titles, score)) in g.iter().zip(&want) {
            assert_eq!(&a.titles, titles);
            assert!((a.logprob - score).abs() < 1e-4);
            assert!(a.ended);
        }
    }
    // A narrow search returns the best paths it found, best first, each a valid path.
    let narrow = beam_paths(&m, &pi, &qs, 3, 2).unwrap();
    for (q, g) in qs.iter().zip(&narrow) {
        assert_eq!(g.len(), 3);
        assert!(g
            .windows(2)
            .all(|w| per_token(&pi, &w[0]) >= per_token(&pi, &w[1])));
        assert!(g
            .iter()
            .all(|p| !p.titles.is_empty() && p.titles.len() <= 2));
        let all = all_paths(&m, &pi, q, 2);
        let best = &all[0];
        let found = all
            .iter()
            .find(|(t, _)| t == &g[0].titles)
            .expect("a real path");
        assert!(
            (found.1 - g[0].logprob).abs() < 1e-4,
            "its score is its log-probability"
        );
        assert!(
            per_token(&pi, &g[0])
                <= per_token(
                    &pi,
                    &Path {
                        titles: best.0.clone(),
                        ended: true,
                        logprob: best.1
                    }
                ) + 1e-5
        );
    }
}

/// A user whose interest in the target (row 0 of every query) rises by 4 once item row 3 (title 2) is in
/// the history; every other item scores 0.
struct Toy;

impl UserModel for Toy {
    fn scores(&self, histories: &[Vec<u32>]) -> minirec_train::Result<Vec<Vec<f32>>> {
        Ok(histories
            .iter()
            .map(|h| {
                let mut s = vec![0f32; 8];
                if h.contains(&3) {
                    s[0] = 4.0;
                }
                s
            })
            .collect())
    }
}

fn prompts() -> Vec<ProRlPrompt> {
    (0..4u32)
        .map(|i| ProRlPrompt {
            query: PathQuery {
                prompt: vec![10 + i, 14, 20],
                banned: vec![],
            },
            history: vec![7],
            target: 0,
        })
        .collect()
}

fn returns(cfg: &ProRlConfig) -> (f64, f64) {
    let mut m = tiny(3);
    let vars = trainable(&mut m, &SftConfig::default()).unwrap();
    let before: Vec<f32> = vars[0]
        .1
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let rows: Vec<u32> = (1..=6).collect();
    let dir = tempfile::tempdir().unwrap();
    let reference = tiny(3);
    let log = train(
        &mut m,
        vars.clone(),
        Some(&reference),
        &path_index(),
        &Toy,
        &rows,
        &prompts(),
        cfg,
        dir.path(),
    )
    .unwrap();
    assert!(dir.path().join("prorl_log.jsonl").exists());
    let moved = vars.iter().any(|(_, v)| {
        let now: Vec<f32> = v.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        now.len() == before.len() && now != before
    });
    assert!(moved, "{}: training changed no weight", cfg.arm());
    let hit = |s: &[minirec_train::proactive::rl::ProRlStep]| {
        s.iter().map(|l| l.mean_ioi).sum::<f64>() / s.len() as f64
    };
    (hit(&log[..5]), hit(&log[log.len() - 5..]))
}

#[test]
fn every_estimator_learns_the_step_that_moves_the_user() {
    for (src, psae) in [(false, false), (true, true)] {
        let cfg = ProRlConfig {
            steps: 40,
            prompts_per_step: 4,
            rollouts: 8,
            max_len: 2,
            lr: 3e-3,
            src,
            psae,
            ..Default::default()
        };
        let (first, last) = returns(&cfg);
        eprintln!("{}: mean IoI per step {first:.3} → {last:.3}", cfg.arm());
        assert!(
            last > first + 0.3,
            "{}: mean IoI per step {first:.3} → {last:.3}",
            cfg.arm()
        );
    }
}
