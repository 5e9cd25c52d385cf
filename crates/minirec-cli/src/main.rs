//! `minirec`: prepare interaction logs, fine-tune, select RL data with MiniRec, train with GRPO + RISER,
//! evaluate with trie-constrained beam search.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "minirec",
    version,
    about = "Data-efficient, stable RL for LLM-based recommenders"
)]
struct Cli {
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// CPU threads for matrix products and the model's kernels (default: every core; the same as setting
    /// RAYON_NUM_THREADS).
    #[arg(long, global = true, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    threads: Option<usize>,
    /// Inference (eval, recommend, the runner's evaluations, bench beam) holds frozen weights also in bf16 and
    /// multiplies them on Intel AMX tiles or with AVX512_BF16 (AMD Zen 4), where the CPU has either (else
    /// f32, unchanged). Training stays f32.
    #[arg(long, global = true)]
    bf16_weights: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Turn interaction logs (D3 CSV, raw Amazon Reviews, generic CSV) into a prepared dataset.
    Prepare(commands::prepare::PrepareArgs),
    /// Score ranked predictions (HR@K, NDCG@K under the all-ranking protocol).
    Eval(commands::eval::EvalArgs),
    /// Compare two systems' predictions on the same samples: differences with paired-bootstrap intervals.
    Compare(commands::compare::CompareArgs),
    /// Run the pipeline on the embedded default dataset.
    Demo(commands::demo::DemoArgs),
    /// Supervised fine-tuning of the LLM on prepared samples.
    Sft(commands::sft::SftArgs),
    /// Pick a small, valuable RL training subset (MiniRec and baselines).
    Select(commands::select::SelectArgs),
    /// GRPO with the RISER stabilisers.
    Rl(commands::rl::RlArgs),
    /// Recommend items for a history with trie-constrained beam search.
    Recommend(commands::recommend::RecommendArgs),
    /// Serve recommendations over HTTP (POST /v1/recommend, POST /v1/items, GET /healthz, GET /metrics).
    Serve(commands::serve::ServeArgs),
    /// Write any loadable model (GGUF, adapter) as a plain HF directory with tokenizer.json.
    Convert(commands::convert::ConvertArgs),
    /// Benchmarks and device checks.
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
    /// Train a classic sequential recommender (SASRec, GRU4Rec, Caser).
    Baseline(commands::baseline::BaselineArgs),
    /// Run a whole experiment from a TOML file.
    Run(commands::run::RunArgs),
    /// Proactive path recommendation (ProRL): SFT on paths, then naive PG / +SRC / +PSAE / ProRL, evaluated.
    Proactive(commands::proactive::ProactiveArgs),
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => tracing::Level::WARN,
        (false, 0) => tracing::Level::INFO,
        (false, 1) => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .init();
}

/// candle allocates a fresh buffer for every tensor operation. With glibc's defaults the large ones are mmap'd
/// and unmapped each time, and the page faults cost a CPU training step almost half its time; keeping freed
/// memory in the heap instead made the demo model's SFT backward pass 1.8× faster (BENCHMARKS.md).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; it is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Rust ignores SIGPIPE, so `minirec run FILE --plan | head` ended in a panic on the closed pipe; the default
/// action ends the program quietly, as any Unix filter does. Not for `serve`, whose sockets must outlive a
/// client that hangs up.
fn die_quietly_on_closed_pipe() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: restores one signal's default disposition (process-wide); no handler of ours is replaced.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    memtrace::start();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        die_quietly_on_closed_pipe();
    }
    if let Some(n) = cli.threads {
        // candle's matrix products and rayon's pool (our kernels) both size themselves from this variable when
        // first used; nothing has run on another thread yet.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    minirec_model::kernels::bf16::set_wanted(cli.bf16_weights);
    init_logging(cli.verbose, cli.quiet);
    let progress = !cli.quiet;
    let result = match cli.command {
        Command::Prepare(a) => commands::prepare::run(a, progress),
        Command::Eval(a) => commands::eval::run(a, progress),
        Command::Compare(a) => commands::compare::run(a),
        Command::Demo(a) => commands::demo::run(a, progress),
        Command::Sft(a) => commands::sft::run(a, progress),
        Command::Select(a) => commands::select::run(a, progress),
        Command::Rl(a) => commands::rl::run(a, progress),
        Command::Recommend(a) => commands::recommend::run(a),
        Command::Serve(a) => commands::serve::run(a),
        Command::Convert(a) => commands::convert::run(a),
        Command::Bench(c) => {
            let r = commands::bench::run(c);
            minirec_model::profile::reset(); // bench prints its own phases
            r
        }
        Command::Baseline(a) => commands::baseline::run(a, progress),
        Command::Run(a) => commands::run::run(a, progress),
        Command::Proactive(a) => commands::proactive::run(a, progress),
    };
    // MINIREC_PROFILE=1: where any command's time went, phase by phase.
    for (name, secs, calls) in minirec_model::profile::report() {
        eprintln!("  {name:<32} {secs:>9.3} s  {calls:>8} calls");
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Live heap bytes, printed to stderr every 2 s when MINIREC_MEMTRACE is set: where the bytes go, phase by
/// phase, as opposed to RSS, which keeps what the allocator has not returned. Two relaxed atomics per
/// allocation; candle allocates per tensor, not per element.
mod memtrace {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering};
    static LIVE: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);
    pub struct Counting;
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            let n = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(n, Ordering::Relaxed);
            System.alloc(l)
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            LIVE.fetch_sub(l.size(), Ordering::Relaxed);
            System.dealloc(p, l)
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
            if new > l.size() {
                let n = LIVE.fetch_add(new - l.size(), Ordering::Relaxed) + new - l.size();
                PEAK.fetch_max(n, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(l.size() - new, Ordering::Relaxed);
            }
            System.realloc(p, l, new)
        }
    }
    pub fn start() {
        if std::env::var_os("MINIREC_MEMTRACE").is_some() {
            std::thread::spawn(|| loop {
                std::thread::sleep(std::time::Duration::from_secs(2));
                eprintln!(
                    "memtrace live {:.2} GB peak {:.2} GB",
                    LIVE.load(Ordering::Relaxed) as f64 / 1e9,
                    PEAK.swap(0, Ordering::Relaxed) as f64 / 1e9
                );
            });
        }
    }
}
#[global_allocator]
static ALLOC: memtrace::Counting = memtrace::Counting;
