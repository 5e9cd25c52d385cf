//! What the classic-baseline options promise: cross-entropy is the log-softmax over every real item,
//! dropout is seeded and inverted, and the popularity baseline ranks by training-target counts with
//! item-level metrics as counted by hand.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use minirec_baselines::nn::Dropout;
use minirec_baselines::train::{cross_entropy, encode, evaluate_levels, load_run, rank, train};
use minirec_baselines::{Act, Kind, ModelShape, Norm, SeqRec, TrainConfig};
use minirec_data::{demo, prepare_generic, PrepareOptions, PreparedDataset};

fn recbole_like(kind: Kind, rows: usize) -> ModelShape {
    ModelShape {
        kind,
        num_rows: rows,
        dim: 16,
        max_len: 10,
        heads: 2,
        ffn: 48,
        norm: Norm::Post,
        act: Act::Gelu,
        emb_scale: false,
        init_std: 0.02,
        ..Default::default()
    }
}

fn to_vec2(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2().unwrap()
}

#[test]
fn cross_entropy_is_the_log_softmax_over_real_items() {
    let m = SeqRec::new(
        ModelShape {
            init_std: 0.5,
            ..recbole_like(Kind::Sasrec, 23)
        },
        None,
        4,
        &Device::Cpu,
    )
    .unwrap();
    let hist = vec![vec![3, 4, 5], vec![7], (1..15).collect::<Vec<u32>>()];
    let pos = [2u32, 22, 11];
    let rep = m.represent(&hist).unwrap();
    let got = cross_entropy(&m, &rep, &pos)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    // Brute force in f64 over rows 1.. (row 0 pads and is never a candidate).
    let scores = to_vec2(&m.score_all(&hist).unwrap());
    let mut want = 0.0;
    for (row, &p) in scores.iter().zip(&pos) {
        let lse = row[1..].iter().map(|&s| (s as f64).exp()).sum::<f64>().ln();
        want += lse - row[p as usize] as f64;
    }
    want /= pos.len() as f64;
    assert!((got - want).abs() < 1e-4, "cross-entropy {got} vs {want}");
    assert!(want > 0.0);
}

#[test]
fn dropout_is_seeded_and_inverted() {
    let x = Tensor::ones((50, 40), candle_core::DType::F32, &Device::Cpu).unwrap();
    let draw = |p: f32, seed: u64| to_vec2(&Dropout::new(p, seed).apply(&x).unwrap());
    assert_eq!(draw(0.4, 7), draw(0.4, 7), "same seed, same mask");
    assert_ne!(draw(0.4, 7), draw(0.4, 8), "another seed, another mask");
    assert_eq!(draw(0.0, 7), to_vec2(&x), "p = 0 is the identity");
    let v: Vec<f32> = draw(0.4, 7).into_iter().flatten().collect();
    let zeros = v.iter().filter(|&&e| e == 0.0).count() as f64 / v.len() as f64;
    assert!((zeros - 0.4).abs() < 0.04, "dropped fraction {zeros}");
    let keep = 1.0 / (1.0 - 0.4f32);
    assert!(v.iter().all(|&e| e == 0.0 || (e - keep).abs() < 1e-6));
    // Two draws from one stream differ: each batch gets its own mask.
    let mut d = Dropout::new(0.4, 7);
    let a = to_vec2(&d.apply(&x).unwrap());
    assert_ne!(a, to_vec2(&d.apply(&x).unwrap()));
}

#[test]
fn popularity_ranks_by_training_target_counts() {
    let dir = tempfile::tempdir().unwrap();
    let files = demo::write(&dir.path().join("raw"), 120, 3).unwrap();
    let mut o = PrepareOptions::new(dir.path().join("data"));
    o.force = true;
    prepare_generic(&files, &o).unwrap();
    let ds = PreparedDataset::load(&dir.path().join("data")).unwrap();
    let rows = ds.catalog.len() + 1;
    let m = SeqRec::new(
        ModelShape {
            kind: Kind::Pop,
            num_rows: rows,
            ..Default::default()
        },
        None,
        1,
        &Device::Cpu,
    )
    .unwrap();
    let run = dir.path().join("pop");
    let summary = train(&m, &ds, &TrainConfig::default(), None, &run, false, false).unwrap();
    assert_eq!(
        summary.train_samples,
        ds.train.len(),
        "pop counts every training sample"
    );
    let (pop, _) = load_run(&run, &Device::Cpu).unwrap();

    // By hand: count targets over all of train, order by count then by row.
    let train_rows = encode(&ds, &ds.train).unwrap();
    let mut count: HashMap<u32, usize> = HashMap::new();
    for r in &train_rows {
        *count.entry(r.target).or_default() += 1;
    }
    let mut order: Vec<u32> = (1..rows as u32).collect();
    order.sort_by_key(|r| (std::cmp::Reverse(count.get(r).copied().unwrap_or(0)), *r));
    let test_rows = encode(&ds, &ds.test).unwrap();
    let ranked = rank(&pop, &ds, &test_rows, 10, 64).unwrap();
    assert!(
        ranked.iter().all(|r| r.rows == order[..10]),
        "every user gets the same top items"
    );

    // Item-level HR@10 and NDCG@10 counted by hand from those positions.
    let (mut hr, mut ndcg) = (0.0, 0.0);
    for s in &test_rows {
        if let Some(i) = order[..10].iter().position(|&r| r == s.target) {
            hr += 1.0;
            ndcg += 1.0 / ((i + 2) as f64).log2();
        }
    }
    let n = test_rows.len() as f64;
    let e = evaluate_levels(&pop, &ds, &ds.test, &[10]).unwrap();
    assert!((e.items.get("hr@10").unwrap() - hr / n).abs() < 1e-12);
    assert!((e.items.get("ndcg@10").unwrap() - ndcg / n).abs() < 1e-12);
    assert!(hr > 0.0, "the demo's popular items are hit");
}
