#!/bin/bash
# The LLM scoring pass of a selection (hidden states, closed-form HVP, EL2N, GraNd), before and after, on the
# first N training samples of a prepared dataset, with the long experiment paused (SIGSTOP) for the whole script.
# Usage: BEFORE=bin AFTER=bin MODEL=hf-dir DATA=prepared-dir N=128 bash benches/cpu/scoring_before_after.sh OUT.txt
set -u
OUT=$1; N=${N:-128}; W=$(mktemp -d)
cp "$DATA"/*.json* "$W"/ && head -"$N" "$DATA/train.jsonl" > "$W/train.jsonl"
P=$(pgrep -f "run examples/" | tr '\n' ' ')
[ -n "$P" ] && kill -STOP $P
for i in 1 2; do
 for v in "before:$BEFORE:" "after:$AFTER:" "after-bf16:$AFTER:--bf16-weights"; do
  IFS=: read -r name bin flag <<< "$v"
  rm -rf "$W/cache-$name"
  /usr/bin/time -f "$name wall %e s peak RSS %M KB" "$bin" --threads 2 $flag select --method el2n --size 16 \
    --model "$MODEL" --data "$W" --out "$W/$name.jsonl" --cache "$W/cache-$name" 2>&1 | grep -E "wall|select el2n"
 done
done > "$OUT"
[ -n "$P" ] && kill -CONT $P
echo "scores and subsets in $W"
