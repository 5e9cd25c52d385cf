#!/usr/bin/env bash
# Our classic baselines on a prepared dataset, each configuration over several seeds, evaluated on the test
# split at the title and item level; prints one mean ± std table (benches/classic/table.py).
#   BIN=target/release/minirec DATA=/work/exp/ind OUT=/work/exp/classic bash benches/classic/ours.sh [NAME ...]
# With names, only those configurations run. Finished runs are kept (rerunning resumes).
set -euo pipefail
BIN=${BIN:-target/release/minirec}
DATA=${DATA:?prepared dataset}
OUT=${OUT:?output folder}
SEEDS=${SEEDS:-42,1,2,3}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
# name | flags. "ours-2026-11" is the model RESULTS.md reported before this work (pre-norm, √d-scaled
# embeddings, ReLU, N(0, 1/d) weights, 1 head, FFN 64, no dropout, BCE, patience 5).
CONFIGS=$(cat <<'END'
pop|--model pop
sasrec-ce|--model sasrec
sasrec-bce-recbole-matched|--model sasrec --loss bce --heads 1 --ffn 64 --dropout 0
sasrec-bce-recbole-default|--model sasrec --loss bce
sasrec-bpr|--model sasrec --loss bpr
sasrec-ours-2026-11|--model sasrec --loss bce --heads 1 --ffn 64 --dropout 0 --norm pre --act relu --emb-scale true --init-std 0 --patience 5
gru4rec-ce|--model gru4rec --dropout 0.3
gru4rec-bce|--model gru4rec --loss bce --dropout 0.3
caser-ce|--model caser --dropout 0.4
caser-bce|--model caser --loss bce --dropout 0.4
END
)
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
