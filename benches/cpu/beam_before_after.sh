#!/usr/bin/env bash
# Beam-20 evaluation with two binaries, one after the other, on an otherwise idle machine: wall time, peak
# RSS, the phase profile (MINIREC_PROFILE) and whether both ranked the same titles.
#   OLD=minirec-before NEW=target/release/minirec RUN=<an SFT run of SmolLM2-135M> DATA=<prepared Industrial> \
#     benches/cpu/beam_before_after.sh OUT_DIR [PROMPTS] [BATCH]
set -euo pipefail
OUT=${1:?output dir}; N=${2:-32}; B=${3:-16}; mkdir -p "$OUT"
: "${OLD:?}" "${NEW:?}" "${RUN:?}" "${DATA:?}"
for which in old new; do
  bin=$OLD; [ $which = new ] && bin=$NEW
  MINIREC_PROFILE=1 /usr/bin/time -f "%e s wall, %M KB peak RSS" "$bin" eval --model "$RUN" --data "$DATA" \
    --limit "$N" --batch "$B" --beam 20 --cpu --quiet --predictions-out "$OUT/$which.predictions.jsonl" \
    > "$OUT/$which.metrics.txt" 2> "$OUT/$which.profile.txt"
  echo "$which: $(tail -1 "$OUT/$which.profile.txt")"
done
# Older binaries write no "sample" field: compare targets and ranked lists only (needs jq).
if cmp -s <(jq -c '{target, ranked}' "$OUT/old.predictions.jsonl") <(jq -c '{target, ranked}' "$OUT/new.predictions.jsonl"); then
  echo "same ranked titles for all $N prompts"
else
  echo "ranked titles differ"
fi
