//! The selection stage: MiniRec or a baseline picks `size` training samples for RL and writes them, in
//! training order, with every sample's scores and a manifest. The proxy model for learnability is trained
//! (once, cached) unless one is given.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use minirec_data::PreparedDataset;
use minirec_model::decode::ItemIndex;
use minirec_model::load::{default_dtype, pick_device};
use minirec_select::pipeline::{self, Models, ScoreCache, SelectOptions};
use minirec_select::proxy::{train_proxy, ProxyConfig};
use minirec_select::{write_subset, Method};

/// One selection: the method and size, its inputs and outputs, MiniRec's options and the proxy's training.
pub struct SelectJob {
    pub data: PathBuf,
    /// The (SFT) model whose hidden states and HVPs score the samples; not needed for `random`.
    pub model: Option<PathBuf>,
    pub method: Method,
    pub size: usize,
    /// The subset file; the scores go beside it (`.scores.jsonl`).
    pub out: PathBuf,
    /// Where scores, rewards and the proxy are cached (default: `select-cache/` beside `out`).
    pub cache: Option<PathBuf>,
    /// A trained proxy for learnability; without it one is trained from `model`.
    pub proxy: Option<PathBuf>,
    /// A DEALRec surrogate (a `minirec baseline --model sasrec` run); trained on the fly if absent.
    pub surrogate: Option<PathBuf>,
    pub seed: u64,
    pub cpu: bool,
    pub options: SelectOptions,
    pub proxy_config: ProxyConfig,
}

/// What the cached scores, rewards and proxy depend on: the content of the model's weights, config and
/// tokenizer, and of the prepared dataset (not paths or times), so a model trained again bit for bit — a run
/// restored on a new machine — finds the scores its first run cached.
fn cache_key(model: Option<&Path>, data: &Path) -> Result<String> {
    let data_files = [
        "catalog.jsonl",
        "train.jsonl",
        "valid.jsonl",
        "test.jsonl",
        "prompt.json",
    ];
    let data_key = content_digest(data, &|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| data_files.contains(&n))
    })?;
    Ok(match model {
        Some(m) => format!(
            "model={} data={data_key}",
            content_digest(m, &is_model_file)?
        ),
        None => format!("data={data_key}"),
    })
}

/// A model's content: weights, its config and tokenizer, an adapter's config; not logs or manifests (which
/// hold times), nor checkpoints.
fn is_model_file(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".safetensors")
        || name.ends_with(".gguf")
        || ["config.json", "tokenizer.json", "adapter_config.json"].contains(&name)
}

/// SHA-256 over the relative paths and bytes of the files under `path` that `keep` accepts, in path order
/// (a file on its own: its bytes). `checkpoints/` folders are skipped.
fn content_digest(path: &Path, keep: &dyn Fn(&Path) -> bool) -> Result<String> {
    use sha2::{Digest, Sha256};
    fn walk(dir: &Path, keep: &dyn Fn(&Path) -> bool, out: &mut Vec<PathBuf>) -> Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let p = entry?.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "checkpoints") {
                    walk(&p, keep, out)?;
                }
            } else if keep(&p) {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    if path.is_dir() {
        walk(path, keep, &mut files)?;
    } else {
        files.push(path.to_path_buf());
    }
    files.sort();
    let mut h = Sha256::new();
    for f in &files {
        h.update(
            f.strip_prefix(path)
                .unwrap_or(f)
                .to_string_lossy()
                .as_bytes(),
        );
        let mut r = std::fs::File::open(f).with_context(|| format!("reading {}", f.display()))?;
        std::io::copy(&mut r, &mut h).with_context(|| format!("reading {}", f.display()))?;
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The scoring model. Its pass is inference (closed-form gradients, no autograd), so with `[select]
/// bf16_weights` its frozen weights get bf16 copies; the f32 ones stay, since the closed forms multiply by the
/// f32 output layer. Its scores are then cached apart from f32 ones (`ScoreCache::for_scorer`).
fn load_scorer(
    path: &Path,
    device: &candle_core::Device,
    dtype: candle_core::DType,
) -> Result<minirec_model::load::LoadedModel> {
    let mut l = crate::model::load_llm(path, "scoring model", device, dtype)?;
    let packed = l.model.pack_frozen_bf16()?;
    if packed > 0 {
        tracing::info!(
            "scoring model: forward passes with bf16 weights ({:.0} MB); its scores are cached apart from f32 ones",
            packed as f64 / 1e6
        );
    }
    Ok(l)
}

/// Runs one selection and writes the subset, the scores and a manifest; returns a one-line summary.
pub fn select_into(a: &SelectJob, ds: &PreparedDataset, progress: bool) -> Result<String> {
    let opts = &a.options;
    let device = pick_device(a.cpu)?;
    let dtype = default_dtype(&device);
    let cache_dir = a.cache.clone().unwrap_or_else(|| {
        a.out
            .parent()
            .unwrap_or(Path::new("."))
            .join("select-cache")
    });
    if a.method == Method::Goracs && ds.valid.is_empty() {
        anyhow::bail!(
            "goracs needs validation samples, and {} has none: prepare it with --valid FILE or --hold-out-every N",
            a.data.display()
        );
    }
    let needs_model = pipeline::needs_llm_scores(a.method);
    let loaded = match (&a.model, needs_model) {
        (Some(p), true) => Some(load_scorer(p, &device, dtype)?),
        (None, true) => anyhow::bail!("--method {} needs --model", a.method),
        _ => None,
    };
    // After the model loaded: a model that is not there is named by the loader, not by the key's hashing.
    let keyed_model = a.model.as_deref().filter(|_| needs_model);
    let cache = ScoreCache::new(Some(&cache_dir), &cache_key(keyed_model, &a.data)?);
    let tok_holder;
    let tok = match &loaded {
        Some(l) => &l.tokenizer,
        None => {
            tok_holder = minirec_model::TextTokenizer::word_level(
                ds.catalog.titles().iter().map(String::as_str),
            )?;
            &tok_holder
        }
    };
    let titles = ds.catalog.titles().to_vec();
    let mut proxy_time = 0.0;
    let mut index = None;
    let mut proxy = None;
    if pipeline::needs_rewards(a.method, &opts.minirec)
        && cache
            .load_vec("rewards")?
            .is_none_or(|v| v.len() != ds.train.len())
    {
        if !opts.minirec.learnability {
            // Said up front: a user who drops L to save time would otherwise wait for a proxy they did not expect.
            tracing::warn!(
                "learnability is off, but the curriculum orders the picks by the proxy's rewards: the proxy runs \
                 anyway (trained unless --proxy gives one, then sampled; add --no-curriculum to skip it)"
            );
        }
        let idx = ItemIndex::build(tok, &titles, |t| ds.prompt.response(t))?;
        let t = std::time::Instant::now();
        let mut p = match &a.proxy {
            Some(p) => crate::model::load_llm(p, "proxy", &device, dtype)?.model,
            None if cache.key_ok("proxy")
                && cache_dir.join("proxy/rl/model/config.json").is_file() =>
            {
                // A proxy trained by an earlier run that stopped before its rollouts were cached.
                let p = cache_dir.join("proxy/rl/model");
                tracing::info!("re-using the proxy in {}", p.display());
                crate::model::load_llm(&p, "proxy", &device, dtype)?.model
            }
            None => {
                let base = a.model.as_ref().expect("checked above");
                let mut l = crate::model::load_llm(base, "proxy's starting model", &device, dtype)?;
                let dir = cache_dir.join("proxy");
                tracing::info!(
                    "training the proxy on {} random samples into {}",
                    a.proxy_config.samples,
                    dir.display()
                );
                train_proxy(
                    &mut l.model,
                    tok,
                    ds,
                    &idx,
                    &a.proxy_config,
                    a.seed,
                    &dir,
                    progress,
                )?;
                cache.write_key("proxy")?;
                l.model
            }
        };
        // The rollouts are inference: with --bf16-weights (`[select] bf16_weights`) the proxy samples on the
        // bf16 kernel.
        let packed = p.pack_frozen_bf16()?;
        if packed > 0 {
            p.drop_frozen_f32()?;
            tracing::info!(
                "proxy: rollouts with bf16 weights ({:.0} MB)",
                packed as f64 / 1e6
            );
        }
        proxy = Some(p);
        proxy_time = t.elapsed().as_secs_f64();
        index = Some(idx);
    }
    let models = Models {
        tok,
        scorer: loaded.as_ref().map(|l| &l.model),
        proxy: proxy.as_ref(),
        index: index.as_ref(),
    };
    let influence = |ds: &PreparedDataset| -> minirec_select::Result<Vec<f32>> {
        crate::baseline::dealrec_influence(ds, a.surrogate.as_deref(), &cache_dir, a.seed, progress)
            .map_err(|e| minirec_select::SelectError::Invalid(format!("{e:#}")))
    };
    let out = pipeline::select(
        ds,
        &models,
        a.method,
        a.size,
        opts,
        a.seed,
        &cache,
        Some(&influence),
        progress,
    )?;
    let mut rows = out.rows;
    write_subset(&a.out, &mut rows)?;
    let scores_path = a.out.with_extension("scores.jsonl");
    pipeline::write_scores(&scores_path, &out.scores)?;
    let mut manifest = minirec_data::Manifest::new(
        "select",
        serde_json::json!({
            "method": a.method, "size": a.size, "seed": a.seed, "data": a.data, "model": a.model,
            "proxy": a.proxy, "proxy_config": a.proxy_config, "options": opts,
        }),
        Vec::new(),
    );
    manifest.outputs.insert(
        "timings".into(),
        serde_json::json!({"proxy_training_s": proxy_time, "phases": out.timings}),
    );
    if let Some(g) = &out.goracs {
        manifest
            .outputs
            .insert("goracs".into(), serde_json::to_value(g)?);
    }
    manifest
        .outputs
        .insert("subset".into(), serde_json::json!(a.out));
    minirec_data::fsutil::write_json_atomic(&a.out.with_extension("manifest.json"), &manifest)?;
    let tm = &out.timings;
    let trace = out.goracs.as_ref().map_or(String::new(), |g| {
        format!(
            "; POO {:.5} -> {:.5} in {} swaps ({} EMDs)",
            g.greedy_poo, g.poo, g.swaps, g.trials
        )
    });
    Ok(format!(
        "select {}: {} of {} samples -> {} (proxy {:.1} s, scoring {:.1} s, rollouts {:.1} s, surrogate {:.1} s, selection {:.2} s{}){trace}",
        a.method,
        rows.len(),
        ds.train.len(),
        a.out.display(),
        proxy_time,
        tm.scoring_s,
        tm.rollouts_s,
        tm.surrogate_s,
        tm.select_s,
        if tm.cached.is_empty() {
            String::new()
        } else {
            format!("; cached: {}", tm.cached.join(", "))
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            let p = dir.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
    }

    #[test]
    fn the_cache_key_follows_content_not_paths_times_or_logs() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b, data) = (
            tmp.path().join("a"),
            tmp.path().join("b"),
            tmp.path().join("d"),
        );
        let model = [
            ("model/model.safetensors", "weights"),
            ("model/config.json", "{}"),
            ("manifest.json", "{\"created_unix\": 1}"),
            ("train_log.jsonl", "{\"seconds\": 1}"),
            ("checkpoints/step-1/model.safetensors", "old"),
        ];
        write(&a, &model);
        write(
            &data,
            &[("train.jsonl", "x"), ("manifest.json", "{\"t\": 1}")],
        );
        let key = cache_key(Some(&a), &data).unwrap();
        // Another copy, written later, with other logs, manifest and checkpoints: the same key.
        write(&b, &model);
        write(
            &b,
            &[
                ("manifest.json", "{\"created_unix\": 2}"),
                ("train_log.jsonl", "{\"seconds\": 2}"),
                ("checkpoints/step-2/model.safetensors", "other"),
            ],
        );
        assert_eq!(cache_key(Some(&b), &data).unwrap(), key);
        write(&data, &[("manifest.json", "{\"t\": 2}")]);
        assert_eq!(cache_key(Some(&b), &data).unwrap(), key);
        // Other weights or other data: another key.
        write(&b, &[("model/model.safetensors", "weightz")]);
        assert_ne!(cache_key(Some(&b), &data).unwrap(), key);
        write(&data, &[("train.jsonl", "y")]);
        assert_ne!(cache_key(Some(&a), &data).unwrap(), key);
    }
}
