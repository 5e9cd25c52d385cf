#!/usr/bin/env bash
# The first long run of the real-LLM experiment (issue 13): full SFT of SmolLM2-135M-Instruct on all 4,532
# Industrial training samples, one epoch, effective batch 16 (8 × 2 accumulated), lr 3e-4 as in
# examples/industrial.toml; checkpoints every 25 optimiser steps, so a run cut off resumes (run it again).
#   BIN=path/to/minirec GGUF=SmolLM2-135M-Instruct.Q4_1.gguf nohup benches/cpu/industrial_sft.sh EXP_DIR &
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
EXP=${1:?experiment dir (outside the work tree)}; mkdir -p "$EXP"; cd "$EXP"
D=${DATA:-$HERE/../../../shared/data/industrial}
: "${BIN:?}" "${GGUF:?}"
[ -d data ] || "$BIN" prepare --format d3 --info "$D/info.txt" --train "$D/valid.csv" --test "$D/test.csv" --domain industrial --out data --quiet
resume=""; [ -d sft/checkpoints ] && resume="--resume"
/usr/bin/time -f "%M KB peak RSS, %e s" "$BIN" sft --data data --model "$GGUF" --out sft --epochs 1 \
  --batch-size 8 --grad-accum 2 --lr 3e-4 --checkpoint-every 25 --seed 42 --quiet $resume 2>&1 | tee -a sft.log
