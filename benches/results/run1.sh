#!/usr/bin/env bash
# Device run 1: GPU parity with HF fixtures and CPU, then beam-search throughput, ours then HF transformers'.
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib:${LD_LIBRARY_PATH:-}
xz -d -c .gpu/minirec.xz > /tmp/minirec && chmod +x /tmp/minirec
rm -rf /tmp/bench && cp -r .bench /tmp/bench
M=/tmp/minirec; B=/tmp/bench
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader
echo "== parity"; $M -q bench parity --fixtures crates/minirec-model/tests/fixtures 2>&1 | tee $OUT/parity.jsonl
common="--tokenizer $B/tokenizer.json --info $B/info.txt --split $B/prompts.csv --json $OUT/ours.jsonl"
echo "== ours"
$M -q bench beam $common --arch smollm2-135m --prompts 1000 --batch 64 --max-seconds 40
$M -q bench beam $common --arch smollm2-135m --prompts 5000 --batch 256 --max-seconds 40
$M -q bench beam $common --arch qwen2-1.5b --prompts 5000 --batch 256 --max-seconds 70
echo "== hf"
PYTHONUNBUFFERED=1 timeout 230 python3 $B/hf_constrained_beam.py $B/tokenizer.json $B/info.txt $B/prompts.csv 2>&1 | grep -v -i warn | tee $OUT/hf.txt
echo done
