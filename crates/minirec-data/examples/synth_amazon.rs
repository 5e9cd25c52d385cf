//! Writes a synthetic raw Amazon 2018 reviews file and its metadata, for the `prepare` benchmark.
//! usage: synth_amazon OUT_DIR N_REVIEWS [--gzip]
//! Users and items follow a skewed popularity so k-core filtering has real work to do; each review line
//! carries a review text of realistic length, as real dumps do.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: synth_amazon OUT_DIR N_REVIEWS [--gzip]");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[1]);
    let n: u64 = args[2].parse().expect("N_REVIEWS is a number");
    let gzip = args.iter().any(|a| a == "--gzip");
    std::fs::create_dir_all(&dir)?;
    let n_users = (n / 8).max(10);
    let n_items = (n / 40).max(10);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let open = |name: &str| -> std::io::Result<Box<dyn Write>> {
        let f = File::create(dir.join(name))?;
        Ok(if gzip {
            Box::new(flate2::write::GzEncoder::new(
                BufWriter::new(f),
                flate2::Compression::fast(),
            ))
        } else {
            Box::new(BufWriter::new(f))
        })
    };
    let ext = if gzip { ".json.gz" } else { ".json" };
    let mut w = open(&format!("reviews{ext}"))?;
    let text =
        "Works as described. The build quality is fine and it arrived on time; would buy again. "
            .repeat(3);
    for _ in 0..n {
        // Squaring a uniform draw skews popularity towards low ids.
        let u = ((rng.random::<f64>().powi(2)) * n_users as f64) as u64;
        let i = ((rng.random::<f64>().powi(2)) * n_items as f64) as u64;
        let t = 1_400_000_000 + rng.random_range(0..200_000_000u64);
        writeln!(
            w,
            r#"{{"overall": 5.0, "verified": true, "reviewTime": "01 1, 2016", "reviewerID": "A{u:013}", "asin": "B{i:09}", "reviewerName": "Someone", "reviewText": "{text}", "summary": "Five Stars", "unixReviewTime": {t}}}"#
        )?;
    }
    w.flush()?;
    drop(w);
    let mut m = open(&format!("meta{ext}"))?;
    for i in 0..n_items {
        writeln!(
            m,
            r#"{{"asin": "B{i:09}", "title": "Synthetic Part {i} Stainless Steel, Pack of {}", "brand": "Acme", "price": "$9.99"}}"#,
            i % 50 + 1
        )?;
    }
    m.flush()
}
