#!/usr/bin/env bash
# SFT of SmolLM2-135M-Instruct on real Industrial samples at batch 8, with and without layer recomputation
# (`sft --recompute`), full and LoRA r 8, on an otherwise idle machine: wall time, peak RSS, loss. Then a
# 12-step LoRA run with MINIREC_MEMTRACE, whose live heap must stay flat from step to step.
#   BIN=target/release/minirec GGUF=SmolLM2-135M-Instruct.Q4_1.gguf benches/cpu/recompute.sh OUT_DIR
set -euo pipefail
D=${DATA:-$(cd "$(dirname "$0")/../../../shared/data/industrial" && pwd)}
OUT=${1:?out dir}; mkdir -p "$OUT"; cd "$OUT"
: "${BIN:?}" "${GGUF:?}"
[ -d data ] || "$BIN" prepare --format d3 --info "$D/info.txt" --train "$D/valid.csv" --test "$D/test.csv" --domain industrial --out data --quiet
row() { # name max_train extra-args...
  local name=$1 n=$2; shift 2
  rm -rf "run-$name"
  local s=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "rss-$name" "$BIN" sft --data data --model "$GGUF" --out "run-$name" --epochs 1 \
    --checkpoint-every 0 --max-train "$n" --batch-size 8 "$@" --quiet > "out-$name" 2>&1
  printf '%-22s wall %6.1f s  peak RSS %5.2f GB  %s\n' "$name" "$(echo "$(date +%s.%N) - $s" | bc)" \
    "$(echo "$(tail -1 rss-$name) / 1048576" | bc -l)" "$(grep -o 'sft: .*tokens/s' "out-$name")"
}
row full 32
row full-recompute 32 --recompute
row lora8 32 --lora-rank 8
row lora8-recompute 32 --lora-rank 8 --recompute
rm -rf run-trace
MINIREC_MEMTRACE=1 "$BIN" sft --data data --model "$GGUF" --out run-trace --epochs 1 --checkpoint-every 0 \
  --max-train 96 --batch-size 8 --lora-rank 8 --recompute > out-trace 2>&1
echo "lora8-recompute, 12 steps, live heap every 2 s (GB): $(grep -o 'live [0-9.]*' out-trace | cut -d' ' -f2 | tr '\n' ' ')"
