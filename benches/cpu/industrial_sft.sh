#!/usr/bin/env bash
# The first long run of the real-LLM experiment (issue 13): full SFT of SmolLM2-135M-Instruct on Industrial.
# The D3 sample has no train.csv, so valid.csv (4,532 samples) is the training split; every 20th of its rows
# (226) is held back as validation for early stopping inside the one epoch (validated every 45 optimiser steps,
# the best weights exported). Effective batch 16 (8 × 2 accumulated), lr 3e-4 as in examples/industrial.toml.
# Checkpoints every 5 optimiser steps (≈ 5 min; the two newest are kept), so a run cut off resumes where it
# stopped: run the same command again.
#   BIN=path/to/minirec GGUF=SmolLM2-135M-Instruct.Q4_1.gguf nohup benches/cpu/industrial_sft.sh EXP_DIR &
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
EXP=${1:?experiment dir (outside the work tree)}; mkdir -p "$EXP"; cd "$EXP"
D=${DATA:-$HERE/../../../shared/data/industrial}
: "${BIN:?}" "${GGUF:?}"
if [ ! -d data ]; then
  mkdir -p csv
  awk 'NR == 1 || (NR - 1) % 20 != 0' "$D/valid.csv" > csv/train.csv
  awk 'NR == 1 || (NR - 1) % 20 == 0' "$D/valid.csv" > csv/heldout.csv
  "$BIN" prepare --format d3 --info "$D/info.txt" --train csv/train.csv --valid csv/heldout.csv \
    --test "$D/test.csv" --domain industrial --out data --quiet
fi
resume=""; [ -d sft/checkpoints ] && resume="--resume"
/usr/bin/time -f "%M KB peak RSS, %e s" "$BIN" sft --data data --model "$GGUF" --out sft --epochs 1 \
  --batch-size 8 --grad-accum 2 --lr 3e-4 --valid-every 45 --patience 2 --checkpoint-every 5 --seed 42 \
  --quiet $resume 2>&1 | tee -a sft.log
