#!/usr/bin/env bash
# One RISER step of SmolLM2-135M-Instruct on real Industrial prompts (paper defaults: m = 20, n = 16, two
# updates, LoRA r 8, from a LoRA SFT run), with one prompt pass per group (the default) and per sequence
# (`--per-sequence`, TRL's way), one after the other on an otherwise idle machine; then LoRA and full SFT at
# batch 8 for memory. Peak RSS from /usr/bin/time; MINIREC_MEMTRACE's live-heap trace beside each log.
#   BIN=target/release/minirec GGUF=SmolLM2-135M-Instruct.Q4_1.gguf SFT_RUN=runs/sft-lora \
#     benches/cpu/rl_step.sh OUT_DIR [PROMPTS]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:?out dir}; P=${2:-8}; mkdir -p "$OUT"; cd "$OUT"
D=${DATA:-$HERE/../../../shared/data/industrial}
: "${BIN:?}" "${GGUF:?}" "${SFT_RUN:?}"
[ -d data ] || "$BIN" prepare --format d3 --info "$D/info.txt" --train "$D/valid.csv" --test "$D/test.csv" --domain industrial --out data --quiet
row() { # name args...
  local name=$1; shift
  rm -rf "run-$name"
  local s=$(date +%s.%N)
  if MINIREC_MEMTRACE=1 /usr/bin/time -f "%M" -o "rss-$name" "$BIN" "$@" --quiet > "out-$name" 2>&1; then st=ok; else st=failed; fi
  local wall=$(echo "$(date +%s.%N) - $s" | bc)
  local live=$(grep -o 'peak [0-9.]* GB' "out-$name" | awk '{if ($2>m) m=$2} END {print m}')
  printf '%-22s %-7s wall %7.1f s  peak RSS %6.2f GB  live heap peak %s GB  %s\n' "$name" "$st" "$wall" \
    "$(echo "$(tail -1 rss-$name) / 1048576" | bc -l)" "$live" "$(grep -ho '^rl:.*\|sft:.*samples/s' out-$name | head -1)"
  [ -f "run-$name/rl_log.jsonl" ] && cat "run-$name/rl_log.jsonl"
  return 0
}
rl() { echo rl --data data --init "$SFT_RUN" --out "run-$1" --lora-rank 8 --max-steps 1 --prompts-per-step "$P" --rollouts 20 --keep 16 --eval-every 0 --lr 1e-5 ${2:-}; }
row "riser-${P}x20-shared" $(rl "riser-${P}x20-shared")
row "riser-${P}x20-perseq" $(rl "riser-${P}x20-perseq" --per-sequence)
sft() { echo sft --data data --model "$GGUF" --out "run-$1" --epochs 1 --checkpoint-every 0 --max-train 32 --batch-size 8 ${2:-}; }
row sft-lora8-b8 $(sft sft-lora8-b8 "--lora-rank 8")
row sft-full-b8 $(sft sft-full-b8)
