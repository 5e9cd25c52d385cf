#!/usr/bin/env bash
# RecBole 1.2.1 and minirec's classic baselines on the same split of a prepared dataset, 4 seeds each, one
# table (title- and item-level NDCG@10 / HR@10, mean ± std over seeds). Both train on train minus its
# newest tenth, early-stop on NDCG@10 of that tenth (patience 10, at most 200 epochs), batch 256, lr 1e-3,
# and rank the test samples over every item.
#   DATA=/work/exp/ind OUT=/work/exp/side BIN=target/release/minirec VENV=/work/venv-recbole \
#     bash benches/classic/side_by_side.sh [NAME ...]
# Prepare Industrial first: minirec prepare --format d3 --info info.txt --train valid.csv --test test.csv.
# Finished runs are kept; names restrict the RecBole configurations (ours: benches/classic/ours.sh).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DATA=${DATA:?prepared dataset}
OUT=${OUT:?output folder}
VENV=${VENV:-/work/venv-recbole}
SEEDS=${SEEDS:-42,1,2,3}
[ -x "$VENV/bin/python" ] || VENV="$VENV" bash "$HERE/recbole_venv.sh"
mkdir -p "$OUT/recbole"
# name | model | loss | RecBole options (its defaults otherwise: SASRec 2 layers, 2 heads, 64 wide, FFN 256,
# dropout 0.5, GELU, post-norm, N(0, 0.02) init; GRU4Rec 64/128, dropout 0.3; Caser nv 8, nh 16, dropout 0.4)
PEERS=$(cat <<'END'
sasrec-ce|SASRec|CE|
sasrec-bce-recbole-matched|SASRec|BCE|--set n_heads=1 --set inner_size=64 --set hidden_dropout_prob=0 --set attn_dropout_prob=0
sasrec-bce-recbole-default|SASRec|BCE|
sasrec-bpr|SASRec|BPR|
gru4rec-ce|GRU4Rec|CE|
gru4rec-bce|GRU4Rec|BCE|
caser-ce|Caser|CE|
caser-bce|Caser|BCE|
END
)
want=" $* "
while IFS='|' read -r name model loss opts; do
  [ -z "$name" ] && continue
  if [ $# -gt 0 ] && [[ "$want" != *" $name "* ]]; then continue; fi
  [ -f "$OUT/recbole/$name/test.json" ] && continue
  start=$(date +%s)
  # shellcheck disable=SC2086
  "$VENV/bin/python" "$HERE/recbole_peer.py" --data "$DATA" --out "$OUT/recbole" --model "$model" \
    --loss "$loss" --seeds "$SEEDS" --name "$name" $opts >"$OUT/recbole/$name.log" 2>&1
  echo "recbole $name: $(( $(date +%s) - start )) s"
done <<<"$PEERS"
[ $# -gt 0 ] || BIN=${BIN:-target/release/minirec} DATA="$DATA" OUT="$OUT/minirec" SEEDS="$SEEDS" \
  bash "$HERE/ours.sh" >/dev/null
python3 "$HERE/table.py" "$OUT/minirec" "$OUT/recbole"
