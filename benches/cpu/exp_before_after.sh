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
nproc; grep -m1 'model name' /proc/cpuinfo
for r in 1 2; do ab_eval old "$OLD" $r; ab_eval new "$NEW" $r; done
ab_same_lists
ab_sft old "$OLD"; ab_sft new "$NEW"
cmp "$O/sft-old.log" "$O/sft-new.log" && echo "same SFT log ($(wc -l < "$O/sft-new.log") lines):" && cat "$O/sft-new.log"
ab_profiles
