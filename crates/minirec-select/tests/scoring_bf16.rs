//! The scoring pass on a model holding bf16 copies of its weights (`[select] bf16_weights`): its scores stay
//! close to the f32 pass's, and they are cached apart from f32 scores. A file of its own: the bf16 switch is
//! process-wide.

use candle_core::{DType, Device};
use minirec_model::kernels::bf16;
use minirec_model::load::{preset_config, random_model};
use minirec_select::features::llm_scores;
use minirec_select::pipeline::ScoreCache;
use minirec_train::sft::Example;

fn examples() -> Vec<Example> {
    (0..12)
        .map(|i| Example {
            prompt: (0..3 + i % 7)
                .map(|j| ((i * 7 + j * 3) % 38 + 1) as u32)
                .collect(),
            response: (0..1 + i % 3)
                .map(|j| ((i * 11 + j) % 38 + 1) as u32)
                .collect(),
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (n(a) * n(b))
}

#[test]
fn bf16_scores_are_close_to_f32_ones_and_cached_apart() {
    if !bf16::available() {
        eprintln!("skipped: no bf16 kernel on this CPU");
        return;
    }
    let mut m = random_model(
        preset_config("tiny", 40).unwrap(),
        DType::F32,
        &Device::Cpu,
        7,
    )
    .unwrap();
    let ex = examples();
    let f32_scores = llm_scores(&m, &ex, 4, None, false).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = ScoreCache::new(Some(dir.path()), "model=a data=b");
    cache.for_scorer(Some(&m)).save_scores(&f32_scores).unwrap();

    bf16::set_wanted(true);
    let packed = m.pack_frozen_bf16().unwrap();
    bf16::set_wanted(false);
    assert!(packed > 0 && m.holds_bf16());
    // An f32 run's scores are not a bf16 run's, nor the other way round.
    assert!(cache.for_scorer(Some(&m)).load_scores().unwrap().is_none());
    assert!(cache.for_scorer(None).load_scores().unwrap().is_some());

    let b = llm_scores(&m, &ex, 4, None, false).unwrap();
    assert_ne!(
        b.hidden.data, f32_scores.hidden.data,
        "the pass did not run in bf16"
    );
    for i in 0..ex.len() {
        for (what, x, y) in [
            ("hidden", b.hidden.row(i), f32_scores.hidden.row(i)),
            ("grad", b.grad.row(i), f32_scores.grad.row(i)),
            ("hvp", b.hvp.row(i), f32_scores.hvp.row(i)),
        ] {
            let c = cosine(x, y);
            assert!(c > 0.999, "sample {i}: {what} cosine {c}");
        }
        let rel = (b.nll[i] - f32_scores.nll[i]).abs() / f32_scores.nll[i];
        assert!(
            rel < 1e-2,
            "sample {i}: NLL {} vs {}",
            b.nll[i],
            f32_scores.nll[i]
        );
    }
    cache.for_scorer(Some(&m)).save_scores(&b).unwrap();
    let back = cache.for_scorer(Some(&m)).load_scores().unwrap().unwrap();
    assert_eq!(back.hidden.data, b.hidden.data);
}
