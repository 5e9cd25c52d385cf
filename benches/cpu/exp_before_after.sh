#!/usr/bin/env bash
# The vector exp (bit for bit glibc's expf) against scalar expf, before (OLD) and after (NEW):
# 1. one beam-20 evaluation on a seeded subset of the Industrial test split, twice in alternation, as the
#    experiment files run it (batch 16, two lanes, bf16 weights); the ranked lists must be byte-identical;
# 2. three full-SFT steps on 32 training samples by each; the logged losses, gradient norms and validation
#    loss must be identical (the seconds aside);
# 3. one profiled evaluation of 16 samples by each (one lane).
# Run on an otherwise idle machine.
#   OLD=... NEW=target/release/minirec bash benches/cpu/exp_before_after.sh MODEL DATA [SAMPLES] [OUT_DIR]
set -euo pipefail
: "${OLD:?}" "${NEW:?}"; M=${1:?model}; D=${2:?prepared dataset}; N=${3:-64}; O=${4:-$(mktemp -d)}
mkdir -p "$O"
. "$(dirname "$0")/ab_eval.sh"
sft() { # name binary
  local s e; s=$(date +%s.%N)
  "$2" --quiet sft --model "$M" --data "$D" --out "$O/sft-$1" --max-train 32 --max-steps 3 --batch-size 8 \
    --max-valid 16 --valid-every 3 --lr 3e-4 --seed 42 --cpu > /dev/null
  e=$(date +%s.%N)
  printf 'sft %s: 3 steps in %.1f s\n' "$1" "$(echo "$e - $s" | bc)"
  sed -E 's/"seconds":[0-9.e+-]+,?//' "$O/sft-$1/train_log.jsonl" > "$O/sft-$1.log"
}
nproc; grep -m1 'model name' /proc/cpuinfo
for r in 1 2; do ab_eval old "$OLD" $r; ab_eval new "$NEW" $r; done
ab_same_lists
sft old "$OLD"; sft new "$NEW"
cmp "$O/sft-old.log" "$O/sft-new.log" && echo "same SFT log ($(wc -l < "$O/sft-new.log") lines):" && cat "$O/sft-new.log"
ab_profiles
