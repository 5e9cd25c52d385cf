#!/usr/bin/env bash
# `minirec eval --lanes`: one beam-20 evaluation on a seeded subset of the Industrial test split, one batch at a
# time on every thread (--lanes 1) against two batches at once on half the threads each (--lanes 2), twice in
# alternation; the ranked lists must be byte-identical. Run on an otherwise idle machine.
#   BIN=target/release/minirec bash benches/cpu/eval_lanes.sh MODEL DATA [SAMPLES] [OUT_DIR]
set -euo pipefail
: "${BIN:?}"; M=${1:?model or run}; D=${2:?prepared dataset}; N=${3:-96}; O=${4:-$(mktemp -d)}
mkdir -p "$O"
ev() { # lanes round
  local s; s=$(date +%s.%N)
  /usr/bin/time -f "  %P of the CPUs, peak RSS %M KB" -o "$O/time$1-$2.txt" "$BIN" eval --model "$M" --data "$D" --split test --beam 20 --batch 16 --sample "$N" --bf16-weights --cpu \
    --lanes "$1" --quiet --json "$O/lanes$1-$2.json" --predictions-out "$O/lanes$1-$2.jsonl" > "$O/lanes$1-$2.txt"
  printf 'lanes %s round %s: %.1f s (%.3f prompts/s)\n' "$1" "$2" "$(echo "$(date +%s.%N) - $s" | bc)" \
    "$(echo "$N / ($(date +%s.%N) - $s)" | bc -l)"
  cat "$O/time$1-$2.txt"
}
nproc; grep -m1 'model name' /proc/cpuinfo
for r in 1 2; do ev 1 $r; ev 2 $r; done
for f in "$O"/lanes2-*.jsonl "$O"/lanes1-2.jsonl; do cmp "$O/lanes1-1.jsonl" "$f" && echo "same lists: $(basename "$f")"; done
