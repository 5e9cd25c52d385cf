#!/bin/bash
# RISER without its SimPO term (the ablation the run's numbers point at), same SFT model, seed and prompts
set -e
R=/work/runs/industrial-cpu-session
B=/work/bin/minirec-s10
start=$(date +%s)
$B rl --data $R/data --init $R/sft/model --out $R/rl/full-riser-no-simpo --no-simpo --max-steps 8 \
  --prompts-per-step 8 --rollouts 20 --keep 16 --lr 1e-5 --eval-every 0 --updates-per-batch 2 --seed 42
mid=$(date +%s)
$B eval --model $R/rl/full-riser-no-simpo/model --data $R/data --split test --beam 20 --batch 16 --sample 256 \
  --sample-seed 42 --cpu --predictions-out $R/eval/full-riser-no-simpo.predictions.jsonl --json $R/eval/full-riser-no-simpo.json
end=$(date +%s)
echo "rl_s $((mid-start)) eval_s $((end-mid))"
