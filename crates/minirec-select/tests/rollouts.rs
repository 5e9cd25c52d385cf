//! The proxy rollouts (r̄, MiniRec Eq. 6) resume: a run stopped after some calls and continued from the values
//! it kept ends with exactly the values of an uninterrupted run; and the cache's partial file keeps whole
//! parts, ignores a cut last line and is dropped when made under another key.

use candle_core::{DType, Device};
use minirec_model::decode::ItemIndex;
use minirec_model::load::{preset_config, random_model};
use minirec_select::learnability::mean_rewards;
use minirec_select::pipeline::ScoreCache;
use minirec_train::rl::RlPrompt;

fn setup() -> (minirec_model::Decoder, ItemIndex, Vec<RlPrompt>) {
    let model = random_model(
        preset_config("tiny", 30).unwrap(),
        DType::F32,
        &Device::Cpu,
        3,
    )
    .unwrap();
    // Five titles that share prefixes, so sampling has choices at several depths.
    let index = ItemIndex::from_sequences(vec![
        vec![4, 5, 2],
        vec![4, 6, 2],
        vec![4, 6, 7, 2],
        vec![8, 2],
        vec![9, 5, 2],
    ])
    .unwrap();
    let prompts = (0..11)
        .map(|i| RlPrompt {
            prompt: vec![1, 10 + i % 7, 20 + i % 5, 3],
            target: i % 5,
        })
        .collect();
    (model, index, prompts)
}

#[test]
fn stopped_rollouts_resume_to_the_uninterrupted_values() {
    let (model, index, prompts) = setup();
    let run = |done: Vec<f32>, stop_after: Option<usize>, kept: &mut Vec<Vec<f32>>| {
        let mut calls = 0;
        mean_rewards(
            &model,
            &index,
            &prompts,
            6,
            1.0,
            3,
            42,
            done,
            &mut |b| {
                if stop_after == Some(calls) {
                    return Err(minirec_select::SelectError::Invalid("stopped".into()));
                }
                calls += 1;
                kept.push(b.to_vec());
                Ok(())
            },
            false,
        )
    };
    let mut parts = Vec::new();
    let whole = run(Vec::new(), None, &mut parts).unwrap();
    assert_eq!(whole.len(), prompts.len());
    assert_eq!(parts.len(), 4, "11 prompts, 3 per call");
    assert!(whole.iter().all(|r| (0.0..=1.0).contains(r)));
    assert!(
        whole.iter().any(|&r| r > 0.0) && whole.iter().any(|&r| r < 1.0),
        "a degenerate test: {whole:?}"
    );

    let mut kept = Vec::new();
    assert!(run(Vec::new(), Some(2), &mut kept).is_err());
    assert_eq!(kept.len(), 2);
    let done: Vec<f32> = kept.concat();
    let mut rest = Vec::new();
    assert_eq!(run(done.clone(), None, &mut rest).unwrap(), whole);
    assert_eq!(rest.len(), 2, "only the calls not kept run again");

    // Values of a cut call (not a whole number of calls) are dropped and that call runs again.
    let mut again = Vec::new();
    assert_eq!(run(done[..4].to_vec(), None, &mut again).unwrap(), whole);
    assert_eq!(again.len(), 3);
}

#[test]
fn the_partial_file_keeps_whole_parts_under_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ScoreCache::new(Some(dir.path()), "model=a data=b");
    assert!(cache.load_partial("rewards", "k1").unwrap().is_empty());
    cache.append_partial("rewards", "k1", &[0.25, 0.5]).unwrap();
    cache.append_partial("rewards", "k1", &[1.0]).unwrap();
    assert_eq!(
        cache.load_partial("rewards", "k1").unwrap(),
        vec![0.25, 0.5, 1.0]
    );

    // A write cut off mid-line is ignored.
    let file = dir.path().join("rewards.partial.jsonl");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("[0.75, 0.");
    std::fs::write(&file, &text).unwrap();
    assert_eq!(
        cache.load_partial("rewards", "k1").unwrap(),
        vec![0.25, 0.5, 1.0]
    );

    // Another key (another model, data or rollout setting): nothing is kept and the file goes.
    assert!(cache.load_partial("rewards", "k2").unwrap().is_empty());
    assert!(!file.exists());
    cache.append_partial("rewards", "k2", &[0.0]).unwrap();
    assert_eq!(cache.load_partial("rewards", "k2").unwrap(), vec![0.0]);
    cache.remove_partial("rewards").unwrap();
    assert!(!file.exists());
}
