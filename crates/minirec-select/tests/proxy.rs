//! The proxy leaves training frozen: its rollouts over every training sample are inference, and only frozen
//! weights take the bf16 kernel (a trainable proxy sampled in f32, 2.1× slower on the AMX Xeon).

use candle_core::{DType, Device};
use minirec_data::{demo, prepare_generic, PrepareOptions, PreparedDataset};
use minirec_model::decode::ItemIndex;
use minirec_model::kernels::bf16;
use minirec_model::load::{preset_config, random_model};
use minirec_model::TextTokenizer;
use minirec_select::proxy::{train_proxy, ProxyConfig};
use minirec_train::rl::RlConfig;

#[test]
fn a_trained_proxy_is_frozen_and_packs_its_weights_in_bf16() {
    let tmp = tempfile::tempdir().unwrap();
    let files = demo::write(&tmp.path().join("raw"), 80, 7).unwrap();
    let mut o = PrepareOptions::new(tmp.path().join("data"));
    o.force = true;
    prepare_generic(&files, &o).unwrap();
    let ds = PreparedDataset::load(&tmp.path().join("data")).unwrap();
    let prompt = ds.prompt.render(["x"]);
    let titles = ds.catalog.titles().to_vec();
    let tok = TextTokenizer::word_level(titles.iter().map(String::as_str).chain([prompt.as_str()]))
        .unwrap();
    let index = ItemIndex::build(&tok, &titles, |t| ds.prompt.response(t)).unwrap();
    let mut model = random_model(
        preset_config("tiny", tok.vocab_size()).unwrap(),
        DType::F32,
        &Device::Cpu,
        3,
    )
    .unwrap();
    let cfg = ProxyConfig {
        samples: 8,
        sft_epochs: 1,
        rl: RlConfig {
            max_steps: 1,
            prompts_per_step: 2,
            rollouts: 4,
            keep: 4,
            checkpoint_every: 0,
            eval_every: 0,
            ..Default::default()
        },
        ..Default::default()
    };
    train_proxy(&mut model, &tok, &ds, &index, &cfg, 42, tmp.path(), false).unwrap();
    if !bf16::available() {
        eprintln!("skipped the packing: no bf16 kernel on this CPU");
        return;
    }
    bf16::set_wanted(true);
    let packed = model.pack_frozen_bf16().unwrap();
    bf16::set_wanted(false);
    assert!(packed > 0, "the trained proxy's weights stayed trainable");
}
