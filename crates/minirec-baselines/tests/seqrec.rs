//! The three recommenders: gradients reach every parameter, training beats chance by a wide margin on the
//! embedded demo shop, an interrupted run resumed gives the same model, ranking returns titles in score order
//! without repeats, PCA recovers known components, and the surrogate influence is defined for every sample.

use candle_core::{Device, Tensor};
use minirec_baselines::nn::Dropout;
use minirec_baselines::pca::pca_project;
use minirec_baselines::train::{cross_entropy, evaluate, load_run, rank_titles, train, RowSample};
use minirec_baselines::{Act, Kind, ModelShape, Norm, SeqRec, TrainConfig};
use minirec_data::{demo, prepare_generic, PrepareOptions, PreparedDataset};

fn demo_data(dir: &std::path::Path, users: usize) -> PreparedDataset {
    let files = demo::write(&dir.join("raw"), users, 3).unwrap();
    let mut o = PrepareOptions::new(dir.join("data"));
    o.force = true;
    prepare_generic(&files, &o).unwrap();
    PreparedDataset::load(&dir.join("data")).unwrap()
}

fn shape(kind: Kind, rows: usize) -> ModelShape {
    ModelShape {
        kind,
        num_rows: rows,
        dim: 16,
        max_len: 10,
        ..Default::default()
    }
}

/// Every trainable tensor of `m` gets a non-zero gradient from `loss`.
fn assert_every_parameter_has_a_gradient(m: &SeqRec, loss: &Tensor, what: &str) {
    let g = loss.backward().unwrap();
    for (name, v) in &m.params.vars {
        let gv = g
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("{what}: no gradient for {name}"));
        let norm = gv
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(norm > 0.0, "{what}: zero gradient for {name}");
    }
}

#[test]
fn gradients_reach_every_parameter() {
    let hist = vec![vec![3, 4, 5], vec![7], (1..15).collect::<Vec<u32>>()];
    for kind in [Kind::Sasrec, Kind::Gru4rec, Kind::Caser] {
        // The 2026-11 shape (pre-norm, ReLU, FFN = width, one head), no dropout, a pairwise loss.
        let m = SeqRec::new(shape(kind, 30), None, 1, &Device::Cpu).unwrap();
        let rep = m.represent(&hist).unwrap();
        let s = m.score_pairs(&rep, &[2, 9, 11]).unwrap();
        let loss = (s.sqr().unwrap().sum_all().unwrap() + s.sum_all().unwrap()).unwrap();
        assert_every_parameter_has_a_gradient(&m, &loss, &format!("{kind}, old shape"));
        // Bad rows are errors, not panics.
        assert!(m.represent(&[vec![0]]).is_err());
        assert!(m.represent(&[vec![30]]).is_err());

        // RecBole's shape (post-norm, GELU, two heads, a wider FFN) in training: dropout, cross-entropy.
        let wide = ModelShape {
            heads: 2,
            ffn: 48,
            norm: Norm::Post,
            act: Act::Gelu,
            emb_scale: false,
            dropout: 0.3,
            init_std: 0.02,
            ..shape(kind, 30)
        };
        let m = SeqRec::new(wide, None, 1, &Device::Cpu).unwrap();
        let rep = m.represent_train(&hist, &mut Dropout::new(0.3, 5)).unwrap();
        let loss = cross_entropy(&m, &rep, &[2, 9, 11]).unwrap();
        assert_every_parameter_has_a_gradient(&m, &loss, &format!("{kind}, RecBole's shape"));
    }
}

#[test]
fn ranking_is_score_order_by_title() {
    let dir = tempfile::tempdir().unwrap();
    let ds = demo_data(dir.path(), 120);
    let rows = ds.catalog.len() + 1;
    let m = SeqRec::new(shape(Kind::Gru4rec, rows), None, 5, &Device::Cpu).unwrap();
    let s = RowSample {
        history: vec![1, 2, 3],
        target: 4,
    };
    let ranked = rank_titles(&m, &ds, std::slice::from_ref(&s), 15, 8).unwrap();
    let scores: Vec<f32> = m
        .score_all(&[s.history])
        .unwrap()
        .get(0)
        .unwrap()
        .to_vec1()
        .unwrap();
    let mut order: Vec<usize> = (1..rows).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut want: Vec<String> = Vec::new();
    for r in order {
        let t = ds.catalog.title_of_item(r as u32 - 1).to_string();
        if !want.contains(&t) {
            want.push(t);
        }
    }
    want.truncate(15);
    assert_eq!(ranked[0], want);
}

#[test]
fn every_model_learns_the_demo_shop_and_resume_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let ds = demo_data(dir.path(), 300);
    let rows = ds.catalog.len() + 1;
    let chance = 10.0 / ds.catalog.num_titles() as f64;
    for kind in [Kind::Sasrec, Kind::Gru4rec, Kind::Caser] {
        let cfg = TrainConfig {
            epochs: 6,
            batch_size: 64,
            lr: 5e-3,
            patience: 10,
            seed: 3,
            ..Default::default()
        };
        let run = dir.path().join(kind.name());
        let m = SeqRec::new(shape(kind, rows), None, 3, &Device::Cpu).unwrap();
        let summary = train(&m, &ds, &cfg, None, &run, false, false).unwrap();
        let (loaded, _) = load_run(&run, &Device::Cpu).unwrap();
        let (report, _) = evaluate(&loaded, &ds, &ds.test, &[10]).unwrap();
        let hr = report.get("hr@10").unwrap();
        println!(
            "{kind}: test HR@10 {hr:.3} (chance {chance:.3}), best epoch {}",
            summary.best_epoch
        );
        assert!(hr > 3.0 * chance, "{kind}: HR@10 {hr} vs chance {chance}");

        // Interrupted after epoch 3, then resumed: the same weights as the uninterrupted run.
        let run2 = dir.path().join(format!("{}-resumed", kind.name()));
        let m2 = SeqRec::new(shape(kind, rows), None, 3, &Device::Cpu).unwrap();
        let crash = TrainConfig {
            interrupt_after: Some(3),
            ..cfg.clone()
        };
        assert!(train(&m2, &ds, &crash, None, &run2, false, false).is_err());
        let m3 = SeqRec::new(shape(kind, rows), None, 99, &Device::Cpu).unwrap();
        train(&m3, &ds, &cfg, None, &run2, true, false).unwrap();
        let (a, _) = load_run(&run, &Device::Cpu).unwrap();
        let (b, _) = load_run(&run2, &Device::Cpu).unwrap();
        for ((n, x), (_, y)) in a.params.vars.iter().zip(&b.params.vars) {
            let d = (x.as_tensor() - y.as_tensor())
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(d, 0.0, "{kind}: {n} differs after resume");
        }
    }
}

#[test]
fn pca_recovers_the_dominant_directions() {
    // Points spread mostly along (1,1,0,0)/√2, less along (0,0,1,0), noise elsewhere.
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let n = 500;
    let mut x = Vec::new();
    let mut a_vals = Vec::new();
    for _ in 0..n {
        let a: f32 = rng.random::<f32>() * 10.0 - 5.0;
        let b: f32 = rng.random::<f32>() * 2.0 - 1.0;
        let e: f32 = (rng.random::<f32>() - 0.5) * 0.01;
        x.extend([a / 2f32.sqrt(), a / 2f32.sqrt(), b, e]);
        a_vals.push(a);
    }
    let p = pca_project(&x, n, 4, 2, 1.0).unwrap();
    let am = a_vals.iter().sum::<f32>() / n as f32;
    a_vals.iter_mut().for_each(|a| *a -= am);
    // First component ∝ a (up to sign and scale).
    let c: Vec<f32> = (0..n).map(|i| p[i * 2]).collect();
    let dot: f64 = c.iter().zip(&a_vals).map(|(x, y)| (*x * *y) as f64).sum();
    let nc: f64 = c.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
    let na: f64 = a_vals
        .iter()
        .map(|v| (*v as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!((dot / (nc * na)).abs() > 0.9999);
    let std = (p.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / p.len() as f64).sqrt();
    assert!((std - 1.0).abs() < 1e-4);
    assert!(pca_project(&x, n, 4, 5, 1.0).is_err());
}

#[test]
fn influence_is_defined_for_every_training_sample() {
    let dir = tempfile::tempdir().unwrap();
    let ds = demo_data(dir.path(), 60);
    let m = SeqRec::new(
        shape(Kind::Sasrec, ds.catalog.len() + 1),
        None,
        2,
        &Device::Cpu,
    )
    .unwrap();
    let inf = minirec_baselines::influence::influence_scores(&m, &ds, false).unwrap();
    assert_eq!(inf.len(), ds.train.len());
    assert!(inf.iter().all(|x| x.is_finite()));
    assert!(inf.iter().any(|&x| x != inf[0]), "scores vary");
    assert_eq!(
        inf,
        minirec_baselines::influence::influence_scores(&m, &ds, false).unwrap()
    );
    let _ = Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu);
}
