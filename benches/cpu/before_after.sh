#!/usr/bin/env bash
# The same SmolLM2-135M-Instruct jobs on real Industrial samples with two minirec binaries, one after the other
# on an otherwise idle machine: full and LoRA r 8 SFT at batch 8 (32 samples, 4 steps) and beam-20 evaluation
# of 32 test prompts. Prints wall time, peak RSS (from /usr/bin/time) and the figure each job reports; the two
# evaluations' ranked lists are compared line by line.
#   OLD=path/to/old/minirec NEW=target/release/minirec GGUF=SmolLM2-135M-Instruct.Q4_1.gguf \
#     benches/cpu/before_after.sh OUT_DIR
set -euo pipefail
D=${DATA:-$(cd "$(dirname "$0")/../../../shared/data/industrial" && pwd)}
OUT=${1:?out dir}; mkdir -p "$OUT"; cd "$OUT"
: "${OLD:?}" "${NEW:?}" "${GGUF:?}"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), avx512f: $(grep -c -m1 avx512f /proc/cpuinfo || true)"
[ -d data ] || "$NEW" prepare --format d3 --info "$D/info.txt" --train "$D/valid.csv" --test "$D/test.csv" --domain industrial --out data --quiet
row() { # name binary args...
  local name=$1 bin=$2; shift 2
  rm -rf "run-$name"
  local s=$(date +%s.%N)
  if /usr/bin/time -f "%M" -o "rss-$name" "$bin" "$@" --quiet > "out-$name" 2>&1; then st=ok; else st=failed; fi
  local wall=$(echo "$(date +%s.%N) - $s" | bc)
  printf '%-16s %-7s wall %7.1f s  peak RSS %6.2f GB  %s\n' "$name" "$st" "$wall" "$(echo "$(tail -1 rss-$name) / 1048576" | bc -l)" "$(grep -ho 'sft: [0-9]* steps.*\|NDCG@10.*\|samples/s.*' out-$name | head -1)"
}
sft() { echo sft --data data --model "$GGUF" --out "run-$1" --epochs 1 --checkpoint-every 0 --max-train 32 --batch-size 8 ${2:-}; }
for side in old new; do
  bin=$OLD; [ $side = new ] && bin=$NEW
  row $side-full-b8  "$bin" $(sft $side-full-b8)
  row $side-lora8-b8 "$bin" $(sft $side-lora8-b8 "--lora-rank 8")
  row $side-beam20   "$bin" eval --model "$GGUF" --data data --split test --limit 32 --batch 16 --beam 20 --cpu --predictions-out pred-$side.jsonl
done
for s in old new; do grep -h 'loss' out-$s-full-b8 out-$s-lora8-b8 | tail -2 | sed "s/^/$s: /"; done
if cmp -s <(jq -c .ranked pred-old.jsonl 2>/dev/null) <(jq -c .ranked pred-new.jsonl 2>/dev/null); then echo "ranked lists: identical"; else echo "ranked lists: differ"; fi
