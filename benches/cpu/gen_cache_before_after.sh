#!/usr/bin/env bash
# The generated key/value cache kept step by step (beams reordered by indices) against the copied cache:
# one beam-20 evaluation on a seeded subset of the Industrial test split by the binary before (OLD) and
# after (NEW), twice in alternation, as the experiment files run it (batch 16, two lanes, bf16 weights);
# the ranked lists must be byte-identical. Then one profiled run of each (one lane, MINIREC_PROFILE=1).
# Run on an otherwise idle machine.
#   OLD=... NEW=target/release/minirec bash benches/cpu/gen_cache_before_after.sh MODEL DATA [SAMPLES] [OUT_DIR]
set -euo pipefail
: "${OLD:?}" "${NEW:?}"; M=${1:?model or run}; D=${2:?prepared dataset}; N=${3:-64}; O=${4:-$(mktemp -d)}
mkdir -p "$O"
ev() { # name binary round
  local s e; s=$(date +%s.%N)
  /usr/bin/time -f "  %P of the CPUs, peak RSS %M KB" -o "$O/time-$1-$3.txt" "$2" eval --model "$M" --data "$D" \
    --split test --beam 20 --batch 16 --lanes 2 --sample "$N" --bf16-weights --cpu --quiet \
    --json "$O/$1-$3.json" --predictions-out "$O/$1-$3.jsonl" > "$O/$1-$3.txt"
  e=$(date +%s.%N)
  printf '%s round %s: %.1f s (%.3f prompts/s)\n' "$1" "$3" "$(echo "$e - $s" | bc)" "$(echo "$N / ($e - $s)" | bc -l)"
  cat "$O/time-$1-$3.txt"
}
nproc; grep -m1 'model name' /proc/cpuinfo
for r in 1 2; do ev old "$OLD" $r; ev new "$NEW" $r; done
for f in "$O"/new-*.jsonl "$O"/old-2.jsonl; do cmp "$O/old-1.jsonl" "$f" && echo "same lists: $(basename "$f")"; done
for b in old new; do
  bin=$OLD; [ $b = new ] && bin=$NEW
  echo "profile, $b (one lane, first 16 of the subset):"
  MINIREC_PROFILE=1 "$bin" eval --model "$M" --data "$D" --split test --beam 20 --batch 16 --sample 16 \
    --bf16-weights --cpu --quiet 2>&1 | grep -E '^\s+(decode|beam)\.'
done
