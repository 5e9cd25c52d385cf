//! The LLM scoring pass stopped part-way and continued from its saved part gives the uninterrupted scores, bit
//! for bit; a saved part from another batch size or key is not used; the pass on bf16 weights stays close to
//! f32 and is cached apart. (Only the bf16 test here packs weights: the bf16 switch is process-wide.)

use candle_core::{DType, Device};
use minirec_model::kernels::bf16;
use minirec_model::load::{preset_config, random_model};
use minirec_model::Decoder;
use minirec_select::error::SelectError;
use minirec_select::features::{llm_scores, llm_scores_resumable, LlmScores, PART_BATCHES};
use minirec_select::pipeline::ScoreCache;
use minirec_train::sft::Example;

fn model() -> Decoder {
    random_model(
        preset_config("tiny", 40).unwrap(),
        DType::F32,
        &Device::Cpu,
        7,
    )
    .unwrap()
}

/// 3 × PART_BATCHES + 5 examples of varied lengths.
fn examples() -> Vec<Example> {
    (0..3 * PART_BATCHES + 5)
        .map(|i| Example {
            prompt: (0..1 + i % 5)
                .map(|j| ((i * 7 + j * 3) % 38 + 1) as u32)
                .collect(),
            response: (0..1 + i % 3)
                .map(|j| ((i * 11 + j) % 38 + 1) as u32)
                .collect(),
        })
        .collect()
}

fn same(a: &LlmScores, b: &LlmScores) {
    assert_eq!(a.hidden.data, b.hidden.data);
    assert_eq!(a.grad.data, b.grad.data);
    assert_eq!(a.hvp.data, b.hvp.data);
    assert_eq!(a.nll, b.nll);
    assert_eq!(a.el2n, b.el2n);
    assert_eq!(a.grand, b.grand);
}

/// The first part the pass hands out, then the pass stops as a killed run would.
fn stopped_after_first_part(m: &Decoder, ex: &[Example], batch: usize) -> LlmScores {
    let mut saved = None;
    let r = llm_scores_resumable(
        m,
        ex,
        batch,
        None,
        None,
        &mut |p| {
            saved = Some(p.clone());
            Err(SelectError::Invalid("stopped".into()))
        },
        false,
    );
    assert!(r.is_err());
    saved.expect("a part was handed out")
}

#[test]
fn a_continued_pass_gives_the_uninterrupted_scores() {
    let (m, ex) = (model(), examples());
    let whole = llm_scores(&m, &ex, 1, None, false).unwrap();
    let part = stopped_after_first_part(&m, &ex, 1);
    assert_eq!(part.nll.len(), PART_BATCHES);
    let mut parts = 0;
    let resumed = llm_scores_resumable(
        &m,
        &ex,
        1,
        None,
        Some(part),
        &mut |_| {
            parts += 1;
            Ok(())
        },
        false,
    )
    .unwrap();
    same(&whole, &resumed);
    assert_eq!(
        parts, 2,
        "two more parts (at 2 and 3 × PART_BATCHES) before the end"
    );
}

/// A part that ends inside a batch of another batch size (16 samples at batch 3) is dropped: the pass
/// starts over.
#[test]
fn a_part_from_another_batch_size_is_not_used() {
    let (m, ex) = (model(), examples());
    let part = stopped_after_first_part(&m, &ex, 1);
    let whole3 = llm_scores(&m, &ex, 3, None, false).unwrap();
    let mut first = None;
    let resumed = llm_scores_resumable(
        &m,
        &ex,
        3,
        None,
        Some(part),
        &mut |p| {
            first.get_or_insert(p.nll.len());
            Ok(())
        },
        false,
    )
    .unwrap();
    same(&whole3, &resumed);
    assert_eq!(first, Some(3 * PART_BATCHES), "counted from the start");
}

#[test]
fn the_cache_keeps_a_part_under_its_key_until_removed() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ScoreCache::new(Some(dir.path()), "model-a");
    let (m, ex) = (model(), examples());
    let part = stopped_after_first_part(&m, &ex, 1);
    assert!(cache.load_scores_partial("k1").unwrap().is_none());
    cache.save_scores_partial("k1", &part).unwrap();
    same(&cache.load_scores_partial("k1").unwrap().unwrap(), &part);
    assert!(
        cache.load_scores_partial("k2").unwrap().is_none(),
        "another key"
    );
    cache.remove_scores_partial().unwrap();
    assert!(cache.load_scores_partial("k1").unwrap().is_none());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn scores_come_back_in_the_samples_order_whatever_their_lengths() {
    // The pass runs the samples shortest first; each row must still be its own sample's.
    let (m, ex) = (model(), examples());
    let batched = llm_scores(&m, &ex, 4, None, false).unwrap();
    for (i, e) in ex.iter().enumerate() {
        let alone = llm_scores(&m, std::slice::from_ref(e), 1, None, false).unwrap();
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4);
        assert!(
            close(alone.hidden.row(0), batched.hidden.row(i)),
            "sample {i}: hidden state"
        );
        assert!(
            close(alone.hvp.row(0), batched.hvp.row(i)),
            "sample {i}: HVP"
        );
        assert!(
            (alone.nll[0] - batched.nll[i]).abs() < 1e-4,
            "sample {i}: NLL"
        );
    }
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
    let (mut m, ex) = (model(), examples());
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
