#!/usr/bin/env bash
# Times `minirec prepare --format amazon` on synthetic raw Amazon 2018 dumps and reports peak memory.
# usage: benches/prepare.sh [N_REVIEWS ...]   (default: 1000000 4000000)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
cargo build --release -q --example synth_amazon -p minirec-data
work=${BENCH_DIR:-/tmp/minirec-bench}
mkdir -p "$work"
for n in "${@:-1000000 4000000}"; do
  for gz in "" --gzip; do
    dir="$work/n$n$gz"
    ./target/release/examples/synth_amazon "$dir" "$n" $gz
    r=$(ls "$dir"/reviews.*); m=$(ls "$dir"/meta.*)
    echo "== $n reviews, $(du -h "$r" | cut -f1) ${gz:-plain}"
    /usr/bin/time -f "wall %e s, max RSS %M KB" ./target/release/minirec -q prepare --format amazon \
      --reviews "$r" --meta "$m" --out "$dir/out" --force | grep -E "interactions|samples"
  done
done
