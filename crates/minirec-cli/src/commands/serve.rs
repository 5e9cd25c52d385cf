//! `minirec serve`: recommendations over HTTP. One worker thread owns the model and the catalog trie and
//! answers requests gathered into batches (up to `--max-batch` or `--max-wait-ms`); the HTTP side (axum on
//! tokio) parses, checks and waits for its answer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clap::Args;
use minirec_data::dataset::load_catalog;
use minirec_data::PromptTemplate;
use minirec_model::load::{default_dtype, pick_device};
use minirec_pipeline::serve::{Recommended, Recommender, Request as Ask, RequestError};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;

#[derive(Args)]
pub struct ServeArgs {
    /// A GGUF file, an HF directory, a LoRA adapter directory, or a run directory.
    #[arg(long)]
    model: PathBuf,
    /// A prepared dataset: its catalog is what can be recommended, its prompt.json the wording.
    #[arg(long)]
    data: PathBuf,
    /// Address to listen on (port 0: any free port; the one taken is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Most requests answered in one batched beam search.
    #[arg(long, default_value_t = 16)]
    max_batch: usize,
    /// Longest a request waits for others to join its batch.
    #[arg(long, default_value_t = 10)]
    max_wait_ms: u64,
    /// A request not answered within this many milliseconds gets 503.
    #[arg(long, default_value_t = 60_000)]
    timeout_ms: u64,
    /// A request body not received within this many milliseconds gets 408 (a client that sends it too slowly
    /// must not hold a connection open for ever).
    #[arg(long, default_value_t = 10_000)]
    read_timeout_ms: u64,
    /// Widest beam a request may ask for.
    #[arg(long, default_value_t = 100)]
    max_beam: usize,
    /// Largest request body accepted (413 beyond).
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Most recent history titles put in the prompt (older ones are left out, as in training); default: the
    /// prepared data's `max_history`, else 10.
    #[arg(long)]
    max_history: Option<usize>,
    /// Longest history title accepted (422 beyond), so that no request can make a prompt of unbounded length.
    #[arg(long, default_value_t = 1000)]
    max_title_chars: usize,
    /// Run on the CPU even when a GPU is available.
    #[arg(long)]
    cpu: bool,
}

enum Job {
    Recommend(Ask, oneshot::Sender<Result<Vec<Recommended>, String>>),
    Add(Vec<String>, oneshot::Sender<Result<usize, String>>),
}

struct Shared {
    jobs: Mutex<mpsc::Sender<Job>>,
    /// Item ids by title (catalog items and those added), for answers and `history_ids`.
    ids_of: Mutex<HashMap<String, Vec<String>>>,
    title_of: Mutex<HashMap<String, String>>,
    model: String,
    max_beam: usize,
    max_body: usize,
    max_history: usize,
    max_title_chars: usize,
    timeout: Duration,
    read_timeout: Duration,
    /// Shared with the worker, which must not hold the job queue's sender (it stops when the queue closes).
    metrics: Arc<Mutex<Metrics>>,
}

pub fn run(a: ServeArgs) -> Result<()> {
    let catalog = load_catalog(&a.data.join("catalog.jsonl"))
        .with_context(|| format!("reading the catalog of {}", a.data.display()))?;
    let prompt: PromptTemplate = minirec_data::fsutil::read_json(&a.data.join("prompt.json"))?;
    let device = pick_device(a.cpu)?;
    let loaded = minirec_pipeline::model::load_llm_for_inference(
        &a.model,
        "model",
        &device,
        default_dtype(&device),
    )?;
    let mut ids_of: HashMap<String, Vec<String>> = HashMap::new();
    let mut title_of = HashMap::new();
    for i in 0..catalog.len() as u32 {
        let (id, title) = (
            catalog.id(i).to_string(),
            catalog.title_of_item(i).to_string(),
        );
        ids_of.entry(title.clone()).or_default().push(id.clone());
        title_of.insert(id, title);
    }
    let engine = Recommender::new(
        loaded.model,
        loaded.tokenizer,
        prompt,
        catalog.titles().to_vec(),
    )?;
    let (tx, rx) = mpsc::channel();
    let metrics = Arc::new(Mutex::new(Metrics::default()));
    let shared = Arc::new(Shared {
        jobs: Mutex::new(tx),
        ids_of: Mutex::new(ids_of),
        title_of: Mutex::new(title_of),
        model: loaded.description,
        max_beam: a.max_beam,
        max_body: a.max_body_bytes,
        max_history: match a.max_history {
            Some(n) => n.max(1),
            None => trained_history_length(&a.data),
        },
        max_title_chars: a.max_title_chars,
        timeout: Duration::from_millis(a.timeout_ms),
        read_timeout: Duration::from_millis(a.read_timeout_ms),
        metrics: metrics.clone(),
    });
    let (max_batch, wait) = (a.max_batch.max(1), Duration::from_millis(a.max_wait_ms));
    let worker = std::thread::spawn(move || work(engine, rx, max_batch, wait, &metrics));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(listen(&a.addr, shared.clone()))?;
    // Closing the queue lets the worker finish what it holds and stop.
    drop(shared);
    worker.join().ok();
    Ok(())
}

/// The history length the data was prepared with (its manifest's `protocol.max_history`), else 10.
fn trained_history_length(data: &std::path::Path) -> usize {
    let manifest: Option<Value> = std::fs::read_to_string(data.join("manifest.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    manifest
        .and_then(|m| m.pointer("/config/options/protocol/max_history")?.as_u64())
        .map_or(10, |n| (n as usize).max(1))
}

async fn listen(addr: &str, shared: Arc<Shared>) -> Result<()> {
    let app = Router::new()
        .route("/v1/recommend", post(recommend))
        .route("/v1/items", post(add_items))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(stop_signal())
        .await?;
    println!("stopped: in-flight requests answered");
    Ok(())
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.ok();
}

/// The worker: takes the first waiting job, gathers recommendations until the batch is full or the first has
/// waited `wait`, answers them in one call; an item addition first answers what was gathered before it.
fn work(
    mut engine: Recommender,
    rx: mpsc::Receiver<Job>,
    max_batch: usize,
    wait: Duration,
    metrics: &Mutex<Metrics>,
) {
    let mut pending: Option<Job> = None;
    loop {
        let first = match pending.take() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            },
        };
        let mut batch = match first {
            Job::Add(titles, reply) => {
                reply
                    .send(engine.add_items(&titles).map_err(|e| e.to_string()))
                    .ok();
                continue;
            }
            Job::Recommend(r, reply) => vec![(r, reply)],
        };
        let deadline = Instant::now() + wait;
        while batch.len() < max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Job::Recommend(r, reply)) => batch.push((r, reply)),
                Ok(add) => {
                    pending = Some(add);
                    break;
                }
                Err(_) => break,
            }
        }
        metrics.lock().unwrap().batch(batch.len());
        let (asks, replies): (Vec<Ask>, Vec<_>) = batch.into_iter().unzip();
        match engine.recommend(&asks) {
            Ok(lists) => lists
                .into_iter()
                .zip(replies)
                .for_each(|(l, r)| drop(r.send(Ok(l)))),
            Err(e) => replies
                .into_iter()
                .for_each(|r| drop(r.send(Err(format!("{e:#}"))))),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecommendBody {
    history: Option<Vec<String>>,
    history_ids: Option<Vec<String>>,
    #[serde(default = "ten")]
    k: usize,
    #[serde(default = "twenty")]
    beam: usize,
    #[serde(default)]
    exclude_history: bool,
    /// Accept history titles that are not in the catalog (used as given).
    #[serde(default)]
    allow_unknown: bool,
}

fn ten() -> usize {
    10
}

fn twenty() -> usize {
    20
}

fn error(status: StatusCode, field: Option<&str>, message: impl Into<String>) -> Response {
    let body = json!({"error": message.into(), "field": field});
    (status, axum::Json(body)).into_response()
}

/// The body as JSON of type T, or the 4xx response that says what is wrong with it.
async fn parse<T: serde::de::DeserializeOwned>(req: Request, s: &Shared) -> Result<T, Response> {
    let read = tokio::time::timeout(s.read_timeout, to_bytes(req.into_body(), s.max_body));
    let bytes = match read.await {
        Err(_) => {
            let m = format!("body not received within {} ms", s.read_timeout.as_millis());
            return Err(error(StatusCode::REQUEST_TIMEOUT, None, m));
        }
        Ok(Err(_)) => {
            let m = format!("body larger than {} bytes", s.max_body);
            return Err(error(StatusCode::PAYLOAD_TOO_LARGE, None, m));
        }
        Ok(Ok(b)) => b,
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        let m = format!("malformed request: {e}");
        error(StatusCode::BAD_REQUEST, field_of(&e.to_string()), m)
    })
}

/// The field a serde error names (`unknown field `x``, `missing field `x``), if any.
fn field_of(msg: &str) -> Option<&str> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(&msg[start..start + len])
}

async fn recommend(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let t = Instant::now();
    let resp = match parse::<RecommendBody>(req, &s).await {
        Ok(body) => answer(&s, body, t).await,
        Err(r) => r,
    };
    s.metrics
        .lock()
        .unwrap()
        .request("recommend", resp.status(), t.elapsed());
    resp
}

async fn answer(s: &Shared, b: RecommendBody, t: Instant) -> Response {
    let mut history = match history_titles(s, &b) {
        Ok(h) => h,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, Some(e.field), e.message),
    };
    if let Some(i) = history
        .iter()
        .position(|t| t.chars().count() > s.max_title_chars)
    {
        let m = format!("entry {i} is longer than {} characters", s.max_title_chars);
        return error(StatusCode::UNPROCESSABLE_ENTITY, Some("history"), m);
    }
    let used = history.len().min(s.max_history);
    history.drain(..history.len() - used);
    let ask = Ask {
        history,
        k: b.k,
        beam: b.beam,
        exclude_history: b.exclude_history,
    };
    if let Err(e) = check(&ask, s.max_beam) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, Some(e.field), e.message);
    }
    let (tx, rx) = oneshot::channel();
    if s.jobs
        .lock()
        .unwrap()
        .send(Job::Recommend(ask, tx))
        .is_err()
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, None, "shutting down");
    }
    let items = match tokio::time::timeout(s.timeout, rx).await {
        Ok(Ok(Ok(items))) => items,
        Ok(Ok(Err(e))) => return error(StatusCode::INTERNAL_SERVER_ERROR, None, e),
        Ok(Err(_)) => return error(StatusCode::SERVICE_UNAVAILABLE, None, "shutting down"),
        Err(_) => {
            let m = format!("not answered within {} ms", s.timeout.as_millis());
            return error(StatusCode::SERVICE_UNAVAILABLE, None, m);
        }
    };
    let ids = s.ids_of.lock().unwrap();
    let items: Vec<Value> = items
        .iter()
        .map(|x| json!({"title": x.title, "ids": ids.get(&x.title).cloned().unwrap_or_default(), "score": x.score}))
        .collect();
    let took = t.elapsed().as_secs_f64() * 1e3;
    let body = json!({"items": items, "model": s.model, "history_used": used, "took_ms": took});
    axum::Json(body).into_response()
}

/// The engine's checks, without the engine (it lives on the worker thread).
fn check(r: &Ask, max_beam: usize) -> Result<(), RequestError> {
    minirec_pipeline::serve::check_request(r, max_beam)
}

/// The request's history as titles, or the field at fault (422).
fn history_titles(s: &Shared, b: &RecommendBody) -> Result<Vec<String>, RequestError> {
    let unprocessable = |field, message: String| RequestError { field, message };
    match (&b.history, &b.history_ids) {
        (Some(_), Some(_)) => Err(unprocessable(
            "history",
            "give history or history_ids, not both".into(),
        )),
        (None, None) => Err(unprocessable(
            "history",
            "give history (titles) or history_ids".into(),
        )),
        (None, Some(ids)) => {
            let title_of = s.title_of.lock().unwrap();
            ids.iter()
                .map(|id| {
                    title_of.get(id).cloned().ok_or_else(|| {
                        unprocessable("history_ids", format!("unknown item id {id:?}"))
                    })
                })
                .collect()
        }
        (Some(titles), None) => {
            if !b.allow_unknown {
                let ids = s.ids_of.lock().unwrap();
                if let Some(t) = titles.iter().find(|t| !ids.contains_key(*t)) {
                    let m = format!(
                        "{t:?} is not in the catalog (\"allow_unknown\": true uses it as given)"
                    );
                    return Err(unprocessable("history", m));
                }
            }
            Ok(titles.clone())
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemsBody {
    items: Vec<NewItem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewItem {
    title: String,
    id: Option<String>,
}

async fn add_items(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let t = Instant::now();
    let resp = match parse::<ItemsBody>(req, &s).await {
        Ok(b) => add(&s, b).await,
        Err(r) => r,
    };
    s.metrics
        .lock()
        .unwrap()
        .request("items", resp.status(), t.elapsed());
    resp
}

async fn add(s: &Shared, b: ItemsBody) -> Response {
    if b.items.is_empty() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, Some("items"), "no items");
    }
    let titles: Vec<String> = b.items.iter().map(|i| i.title.clone()).collect();
    let (tx, rx) = oneshot::channel();
    if s.jobs.lock().unwrap().send(Job::Add(titles, tx)).is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, None, "shutting down");
    }
    match rx.await {
        Ok(Ok(added)) => {
            let (mut ids, mut title_of) = (s.ids_of.lock().unwrap(), s.title_of.lock().unwrap());
            for i in &b.items {
                let entry = ids.entry(i.title.clone()).or_default();
                if let Some(id) = &i.id {
                    entry.push(id.clone());
                    title_of.insert(id.clone(), i.title.clone());
                }
            }
            axum::Json(json!({"added": added, "titles": ids.len()})).into_response()
        }
        Ok(Err(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, Some("items"), e),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, None, "shutting down"),
    }
}

async fn health(State(s): State<Arc<Shared>>) -> Response {
    let titles = s.ids_of.lock().unwrap().len();
    axum::Json(json!({"status": "ok", "model": s.model, "titles": titles})).into_response()
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let text = s.metrics.lock().unwrap().prometheus();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        Body::from(text),
    )
        .into_response()
}

const LATENCY_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Default)]
struct Metrics {
    requests: HashMap<(&'static str, u16), u64>,
    latency: Vec<u64>,
    latency_sum: f64,
    latency_count: u64,
    batches: HashMap<usize, u64>,
}

impl Metrics {
    fn request(&mut self, endpoint: &'static str, status: StatusCode, took: Duration) {
        *self
            .requests
            .entry((endpoint, status.as_u16()))
            .or_default() += 1;
        if endpoint == "recommend" && status.is_success() {
            self.latency.resize(LATENCY_BUCKETS.len(), 0);
            let secs = took.as_secs_f64();
            for (b, n) in LATENCY_BUCKETS.iter().zip(self.latency.iter_mut()) {
                *n += u64::from(secs <= *b);
            }
            self.latency_sum += secs;
            self.latency_count += 1;
        }
    }

    fn batch(&mut self, size: usize) {
        *self.batches.entry(size).or_default() += 1;
    }

    fn prometheus(&self) -> String {
        let mut out = String::from("# TYPE minirec_requests_total counter\n");
        let mut reqs: Vec<_> = self.requests.iter().collect();
        reqs.sort();
        for ((e, code), n) in reqs {
            out += &format!("minirec_requests_total{{endpoint=\"{e}\",code=\"{code}\"}} {n}\n");
        }
        let errors: u64 = self
            .requests
            .iter()
            .filter(|((_, c), _)| *c >= 400)
            .map(|(_, n)| n)
            .sum();
        out += &format!("# TYPE minirec_errors_total counter\nminirec_errors_total {errors}\n");
        out += "# TYPE minirec_recommend_seconds histogram\n";
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            let n = self.latency.get(i).copied().unwrap_or(0);
            out += &format!("minirec_recommend_seconds_bucket{{le=\"{b}\"}} {n}\n");
        }
        out += &format!(
            "minirec_recommend_seconds_bucket{{le=\"+Inf\"}} {c}\nminirec_recommend_seconds_sum {}\n\
             minirec_recommend_seconds_count {c}\n",
            self.latency_sum,
            c = self.latency_count
        );
        out += "# TYPE minirec_batches_total counter\n";
        let mut sizes: Vec<_> = self.batches.iter().collect();
        sizes.sort();
        for (size, n) in sizes {
            out += &format!("minirec_batches_total{{size=\"{size}\"}} {n}\n");
        }
        out
    }
}
