#!/usr/bin/env bash
# Device run 4: with event tracking off and a caching memory pool: throughput, then a clean profile of 1.5B.
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib:${LD_LIBRARY_PATH:-}
xz -d -c .gpu/minirec.xz > /tmp/minirec && chmod +x /tmp/minirec
M=/tmp/minirec; B=.bench
common="--tokenizer $B/tokenizer.json --info $B/info.txt --split $B/prompts.csv --json $OUT/ours4.jsonl"
$M -q bench beam $common --arch smollm2-135m --prompts 1000 --batch 64 --max-seconds 30
$M -q bench beam $common --arch smollm2-135m --prompts 5000 --batch 256 --max-seconds 30
$M -q bench beam $common --arch qwen2-1.5b --prompts 5000 --batch 256 --max-seconds 45
MINIREC_PROFILE=1 $M -q bench beam --tokenizer $B/tokenizer.json --info $B/info.txt --split $B/prompts.csv --arch qwen2-1.5b --prompts 512 --batch 256 2>&1 | tee $OUT/profile4.txt
