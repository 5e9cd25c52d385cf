#!/usr/bin/env bash
# CPU stand-in for issue 4: the tiny-64 Industrial SFT model (session 2), then plain GRPO vs GRPO + RISER, 48 steps of
# 8 prompts each (m = 20, n = 16), the same training prompts, lr 2e-5, 2 updates per batch; first 1,500 test samples.
set -e
M=/work/main/target/release/minirec
D=/work/main/.bench/ind
I=/tmp/indcpu/run/sft/model
common="--data $D --init $I --max-steps 48 --prompts-per-step 8 --rollouts 20 --keep 16 --lr 2e-5 --eval-every 0 --checkpoint-every 0 --seed 42 --cpu"
/usr/bin/time -f "riser wall %e s, RSS %M KB" $M -q rl $common --out /tmp/r4/riser
/usr/bin/time -f "grpo wall %e s, RSS %M KB" $M -q rl $common --no-dedup --no-mask --no-kl-cov --no-simpo --out /tmp/r4/grpo
for r in riser grpo; do $M -q eval --model /tmp/r4/$r --data $D --split test --limit 1500 --batch 64 --json /tmp/r4/$r.json | tail -4; done
