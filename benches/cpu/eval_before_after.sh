#!/usr/bin/env bash
# An evaluation-engine change, before and after (used for the generated key/value cache kept step by step,
# the bf16 product without zeroing and the prefill of each prompt alone): one beam-20 evaluation on a seeded
# subset of the Industrial test split by the binary before (OLD) and after (NEW), twice in alternation, as
# the experiment files run it (batch 16, two lanes, bf16 weights); the ranked lists must be byte-identical.
# Then one profiled run of each (one lane, MINIREC_PROFILE=1).
# Run on an otherwise idle machine.
#   OLD=... NEW=target/release/minirec bash benches/cpu/eval_before_after.sh MODEL DATA [SAMPLES] [OUT_DIR]
set -euo pipefail
: "${OLD:?}" "${NEW:?}"; M=${1:?model or run}; D=${2:?prepared dataset}; N=${3:-64}; O=${4:-$(mktemp -d)}
mkdir -p "$O"
. "$(dirname "$0")/ab_eval.sh"
nproc; grep -m1 'model name' /proc/cpuinfo
for r in 1 2; do ab_eval old "$OLD" $r; ab_eval new "$NEW" $r; done
ab_same_lists || echo "lists differ (above)"
ab_profiles
