#!/usr/bin/env bash
# Our classic baselines on a prepared dataset, each configuration over several seeds, evaluated on the test
# split at the title and item level; prints one mean ± std table (benches/classic/table.py).
#   BIN=target/release/minirec DATA=/work/exp/ind OUT=/work/exp/classic bash benches/classic/ours.sh [NAME ...]
# Configurations: benches/classic/configs/$SET.txt (SET=main by default; SET=controlled is the one-factor-
# at-a-time comparison). With names, only those run. Finished runs are kept (rerunning resumes).
set -euo pipefail
BIN=${BIN:-target/release/minirec}
DATA=${DATA:?prepared dataset}
OUT=${OUT:?output folder}
SEEDS=${SEEDS:-42,1,2,3}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
SET=${SET:-main}
CONFIGS=$(grep -v '^#' "$HERE/configs/$SET.txt")
want=" $* "
while IFS='|' read -r name flags; do
  [ -z "$name" ] && continue
  if [ $# -gt 0 ] && [[ "$want" != *" $name "* ]]; then continue; fi
  run="$OUT/$name"
  if [ ! -f "$run/test.json" ]; then
    start=$(date +%s)
    # shellcheck disable=SC2086
    "$BIN" baseline $flags --data "$DATA" --out "$run" --seeds "$SEEDS" --cpu --resume >"$run.train.log" 2>&1
    "$BIN" eval --model "$run" --data "$DATA" --split test --cpu --json "$run/test.json" \
      --predictions-out "$run/test_predictions.jsonl" >"$run.eval.log" 2>&1
    echo "$name: $(( $(date +%s) - start )) s ($flags)"
    echo "$flags" >"$run/flags.txt"
  fi
done <<<"$CONFIGS"
python3 "$HERE/table.py" "$OUT"
