#!/usr/bin/env bash
# SFT and beam evaluation of SmolLM2-135M-Instruct on real Industrial samples, one binary after the other on an
# otherwise idle machine: OLD (composed candle ops) against NEW (the CPU kernels). Peak RSS from /usr/bin/time.
#   OLD=path/to/old/minirec NEW=target/release/minirec GGUF=SmolLM2-135M-Instruct.Q4_1.gguf \
#     benches/cpu/kernels_before_after.sh OUT_DIR
set -euo pipefail
OUT=${1:?out dir}; mkdir -p "$OUT"; cd "$OUT"
D=${DATA:-$(dirname "$0")/../../../shared/data/industrial}
: "${OLD:?}" "${NEW:?}" "${GGUF:?}"
[ -d data ] || "$NEW" prepare --format d3 --info "$D/info.txt" --train "$D/valid.csv" --test "$D/test.csv" --domain industrial --out data --quiet
row() { # name binary args...
  local name=$1 bin=$2; shift 2
  rm -rf "run-$name"
  local s=$(date +%s.%N)
  if /usr/bin/time -f "%M" -o "rss-$name" "$bin" "$@" --quiet > "out-$name" 2>&1; then st=ok; else st=failed; fi
  local wall=$(echo "$(date +%s.%N) - $s" | bc)
  printf '%-28s %-7s wall %7.1f s  peak RSS %6.2f GB  %s\n' "$name" "$st" "$wall" "$(echo "$(tail -1 rss-$name) / 1048576" | bc -l)" "$(grep -ho 'sft:.*samples/s\|NDCG@K' out-$name | head -1)"
}
sft() { echo sft --data data --model "$GGUF" --out "run-$1" --epochs 1 --checkpoint-every 0 --max-train "$2" --batch-size "$3" ${4:-}; }
row old-lora8-b4 "$OLD" $(sft old-lora8-b4 16 4 "--lora-rank 8")
row new-lora8-b4 "$NEW" $(sft new-lora8-b4 16 4 "--lora-rank 8")
row new-lora8-b8 "$NEW" $(sft new-lora8-b8 32 8 "--lora-rank 8")
row new-full-b8  "$NEW" $(sft new-full-b8 32 8)
row old-beam20-32 "$OLD" eval --model "$GGUF" --data data --split test --limit 32 --batch 16 --beam 20
row new-beam20-32 "$NEW" eval --model "$GGUF" --data data --split test --limit 32 --batch 16 --beam 20
