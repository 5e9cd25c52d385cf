#!/usr/bin/env bash
# Device run 5: SFT throughput of SmolLM2-135M (GGUF) on the Industrial sample, then a first evaluation.
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib:${LD_LIBRARY_PATH:-}
mkdir -p /tmp/sm && cat /tmp/smgguf.00 .gguf2/smgguf.01 > /tmp/sm/sm.gguf && sha256sum /tmp/sm/sm.gguf
xz -d -c /tmp/minirec.xz > /tmp/minirec && chmod +x /tmp/minirec
M=/tmp/minirec
timeout 150 $M sft --data .bench/ind --model /tmp/sm/sm.gguf --out /tmp/sft --epochs 1 --batch-size 16 --lr 3e-4 --checkpoint-every 0 2>&1 | tail -3
cp /tmp/sft/train_log.jsonl $OUT/sft_train_log.jsonl 2>/dev/null
timeout 100 $M -q eval --model /tmp/sft --data .bench/ind --split test --limit 1000 --batch 64 --json $OUT/sft_eval.json 2>&1 | tail -6
