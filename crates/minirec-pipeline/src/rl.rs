//! The RL stage: GRPO / RISER from a starting policy on a list of training samples, into a run directory
//! with its manifest.

use std::path::Path;

use anyhow::{Context, Result};
use minirec_data::PreparedDataset;
use minirec_model::decode::ItemIndex;
use minirec_model::load::{default_dtype, pick_device};
use minirec_train::demos::{Demo, DemoPool, DemoSelect};
use minirec_train::rl::{prompts_for, train, RlConfig};
use minirec_train::sft::trainable;
use minirec_train::SftConfig;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// The samples RL trains on, in order: a subset file's, in its order, or every training sample shuffled
/// with `seed`.
pub fn training_order<'a>(
    ds: &'a PreparedDataset,
    subset: Option<&Path>,
    seed: u64,
) -> Result<Vec<&'a minirec_data::Sample>> {
    match subset {
        Some(p) => subset_samples(ds, p),
        None => {
            let mut v: Vec<&minirec_data::Sample> = ds.train.iter().collect();
            v.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
            Ok(v)
        }
    }
}

/// The train samples a subset file names, in its order.
pub fn subset_samples<'a>(
    ds: &'a PreparedDataset,
    path: &std::path::Path,
) -> Result<Vec<&'a minirec_data::Sample>> {
    minirec_select::read_subset(path)?
        .into_iter()
        .map(|id| {
            ds.train.get(id as usize).with_context(|| {
                format!(
                    "{}: sample_id {id} is not in the train split ({} samples)",
                    path.display(),
                    ds.train.len()
                )
            })
        })
        .collect()
}

/// Where an RL run reads and writes, and how it runs.
#[derive(Clone, Copy)]
pub struct RlJob<'a> {
    /// The prepared dataset's folder (for the manifest).
    pub data: &'a Path,
    /// The starting policy: an SFT run directory or any model path.
    pub init: &'a Path,
    pub out: &'a Path,
    /// The subset file the samples came from, if any (for the manifest).
    pub subset: Option<&'a Path>,
    /// Validation prompts for the HR@1 checks (`RlConfig::eval_every`).
    pub eval_samples: usize,
    /// Continue from the run's last checkpoint.
    pub resume: bool,
    pub cpu: bool,
    /// The MiniLM sentence encoder that retrieves demonstrations (`demo_select = similar`).
    pub demo_encoder: Option<&'a Path>,
}

/// RL on `samples` (in order) as `job` says, into `job.out` with a manifest; the shared core of `rl` and `run`.
pub fn train_rl(
    ds: &PreparedDataset,
    samples: &[&minirec_data::Sample],
    cfg: &RlConfig,
    job: &RlJob,
    progress: bool,
) -> Result<minirec_train::rl::RlSummary> {
    let RlJob {
        data,
        init,
        out,
        subset,
        eval_samples,
        resume,
        cpu,
        demo_encoder,
    } = *job;
    let device = pick_device(cpu)?;
    let dtype = default_dtype(&device);
    let mut loaded = crate::model::load_llm(init, "initial policy", &device, dtype)?;
    let reference = match cfg.kl_ref_beta {
        Some(_) => Some(
            crate::model::load_llm_for_inference(init, "reference model", &device, dtype)?.model,
        ),
        None => None,
    };
    let titles = ds.catalog.titles().to_vec();
    let index = ItemIndex::build(&loaded.tokenizer, &titles, |t| ds.prompt.response(t))?;
    let prompts = prompts_for(ds, samples, &loaded.tokenizer)?;
    let valid_samples: Vec<&minirec_data::Sample> = ds.valid.iter().take(eval_samples).collect();
    let valid = prompts_for(ds, &valid_samples, &loaded.tokenizer)?;
    let demos = demo_pool(
        ds,
        samples,
        &loaded.tokenizer,
        &index,
        cfg,
        demo_encoder,
        out,
    )?;
    let vars = trainable(
        &mut loaded.model,
        &SftConfig {
            lora: cfg.lora.clone(),
            seed: cfg.seed,
            ..Default::default()
        },
    )?;
    let base = std::fs::canonicalize(init)
        .unwrap_or(init.to_path_buf())
        .display()
        .to_string();
    let (summary, _) = train(
        &mut loaded.model,
        &loaded.tokenizer,
        vars,
        &index,
        &prompts,
        &valid,
        reference.as_ref(),
        demos.as_ref(),
        cfg,
        out,
        &base,
        resume,
        progress,
    )
    .with_context(|| format!("RL into {}", out.display()))?;
    crate::manifest::write_run_manifest(
        out,
        "rl",
        serde_json::json!({"config": cfg, "data": data, "init": init, "subset": subset, "prompts": prompts.len(),
            "trained_sample_ids": trained_ids(samples, cfg)}),
        serde_json::to_value(&summary)?,
    )?;
    Ok(summary)
}

/// The samples the steps train on, in order: step t takes prompts t·n .. (t+1)·n (mod the set's size), so a
/// full-data run of few steps sees only their first ones, and the record says which.
fn trained_ids(samples: &[&minirec_data::Sample], cfg: &RlConfig) -> Vec<u64> {
    (0..cfg.max_steps * cfg.prompts_per_step)
        .map(|i| samples[i % samples.len()].id)
        .collect()
}

/// In-context RL's demonstrations: every training sample's prompt and target title. With `similar`, each RL
/// prompt's are ranked by the cosine of MiniLM embeddings of the two histories (titles joined).
fn demo_pool(
    ds: &PreparedDataset,
    samples: &[&minirec_data::Sample],
    tok: &minirec_model::TextTokenizer,
    index: &ItemIndex,
    cfg: &RlConfig,
    encoder: Option<&Path>,
    run: &Path,
) -> Result<Option<DemoPool>> {
    if cfg.demos == 0 {
        return Ok(None);
    }
    let pool: Vec<&minirec_data::Sample> = ds.train.iter().collect();
    let demos: Vec<Demo> = prompts_for(ds, &pool, tok)?
        .into_iter()
        .map(|p| Demo {
            response: index.sequences[p.target as usize].clone(),
            prompt: p.prompt,
        })
        .collect();
    if cfg.demo_select == DemoSelect::Random {
        return Ok(Some(DemoPool::random(demos)?));
    }
    let dir =
        encoder.context("demo_select = similar needs a MiniLM encoder (--demo-encoder DIR)")?;
    let keys = history_embeddings(ds, &pool, dir, run)?;
    // RL prompts are training samples: their embeddings are rows of the pool's.
    let row_of: std::collections::HashMap<u64, u32> = pool
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id, i as u32))
        .collect();
    let rows: Vec<u32> = samples
        .iter()
        .map(|s| {
            row_of
                .get(&s.id)
                .copied()
                .context("an RL sample outside the train split")
        })
        .collect::<Result<_>>()?;
    let queries = keys.index_select(
        &candle_core::Tensor::new(rows.as_slice(), keys.device())?,
        0,
    )?;
    // One more than needed: a prompt's own sample is among its neighbours and is left out later.
    let want = (cfg.demos * cfg.demo_rollouts + 1).min(pool.len());
    let mut neighbours = Vec::with_capacity(samples.len());
    for start in (0..samples.len()).step_by(256) {
        let n = 256.min(samples.len() - start);
        let sims: Vec<Vec<f32>> = queries.narrow(0, start, n)?.matmul(&keys.t()?)?.to_vec2()?;
        for row in sims {
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.select_nth_unstable_by(want - 1, |&a, &b| row[b].total_cmp(&row[a]));
            order.truncate(want);
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            neighbours.push(order);
        }
    }
    Ok(Some(DemoPool::retrieved(demos, neighbours)?))
}

/// MiniLM embeddings of `texts`, batched in order of length so that little padding is computed; rows in the
/// texts' order.
fn encode_by_length(
    enc: &minirec_baselines::minilm::MiniLm,
    texts: &[String],
) -> Result<candle_core::Tensor> {
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].len());
    let sorted: Vec<String> = order.iter().map(|&i| texts[i].clone()).collect();
    let emb = enc.encode(&sorted, 32)?;
    let mut back = vec![0u32; texts.len()];
    for (k, &i) in order.iter().enumerate() {
        back[i] = k as u32;
    }
    Ok(emb.index_select(&candle_core::Tensor::new(back.as_slice(), emb.device())?, 0)?)
}

/// MiniLM embeddings of every pool sample's history (titles joined), kept in the run directory so that a
/// resumed run does not embed them again (keyed by the encoder's path and the pool's size).
fn history_embeddings(
    ds: &PreparedDataset,
    pool: &[&minirec_data::Sample],
    encoder: &Path,
    run: &Path,
) -> Result<candle_core::Tensor> {
    let file = run.join("demo_embeddings.safetensors");
    let key = format!(
        "{} {}",
        std::fs::canonicalize(encoder)
            .unwrap_or(encoder.to_path_buf())
            .display(),
        pool.len()
    );
    let key_file = file.with_extension("key");
    if std::fs::read_to_string(&key_file).is_ok_and(|k| k == key) {
        if let Some(t) = candle_core::safetensors::load(&file, &candle_core::Device::Cpu)
            .ok()
            .and_then(|mut m| m.remove("keys"))
        {
            return Ok(t);
        }
    }
    let enc = minirec_baselines::minilm::MiniLm::load(encoder, &candle_core::Device::Cpu)
        .with_context(|| format!("loading the demonstration encoder {}", encoder.display()))?;
    let t = std::time::Instant::now();
    let texts: Vec<String> = pool
        .iter()
        .map(|s| ds.history_titles(s).collect::<Vec<_>>().join("; "))
        .collect();
    let keys = encode_by_length(&enc, &texts)?;
    tracing::info!(
        "demonstrations: {} histories embedded with MiniLM in {:.1} s",
        texts.len(),
        t.elapsed().as_secs_f64()
    );
    std::fs::create_dir_all(run).with_context(|| format!("creating {}", run.display()))?;
    // Written aside and renamed, so that a kill mid-write leaves no file a later run would half-read.
    let tmp = file.with_extension("tmp");
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("keys".to_string(), keys.clone())]),
        &tmp,
    )?;
    std::fs::rename(&tmp, &file).with_context(|| format!("writing {}", file.display()))?;
    std::fs::write(&key_file, key).with_context(|| format!("writing {}", key_file.display()))?;
    Ok(keys)
}
