#!/usr/bin/env bash
# Device call B, at once after A. carry: .gguf2 .bench   (≈ 60 MB)
# Reassembles the GGUF, times beam search: ours at both shapes and with the real weights, then HF transformers'
# generate at batch 8 on the first 72 prompts (the harness's first batch is its warm-up).
set -u
source benches/gpu/common.sh
mkdir -p /tmp/sm && cat /tmp/smgguf.00 .gguf2/smgguf.01 > /tmp/sm/SmolLM2-135M-Instruct.Q4_1.gguf
[ "$(sha256sum /tmp/sm/SmolLM2-135M-Instruct.Q4_1.gguf | cut -d' ' -f1)" = "$(cat .gguf2/sha256)" ] || { echo "GGUF checksum differs"; exit 4; }
B=.bench; common="--tokenizer $B/tokenizer.json --info $B/info.txt --split $B/prompts.csv --json $OUT/beam.jsonl"
$M -q bench beam $common --arch qwen2-1.5b --prompts 5000 --batch 256 --max-seconds 100
$M -q bench beam $common --arch smollm2-135m --prompts 5000 --batch 256 --max-seconds 60
$M -q bench beam $common --model /tmp/sm/SmolLM2-135M-Instruct.Q4_1.gguf --prompts 1000 --batch 256 --max-seconds 30
# Where a 1.5B step's time goes (the device is synchronised around each phase).
MINIREC_PROFILE=1 $M -q bench beam --tokenizer $B/tokenizer.json --info $B/info.txt --split $B/prompts.csv \
  --arch qwen2-1.5b --prompts 512 --batch 256 2>&1 | tee $OUT/profile.txt
cat > /tmp/hf8.py <<'PY'
import sys
src = open(sys.argv[1]).read().replace("for bs in (1, 8):", "for bs in (8,):")  # batch 8, its faster setting
sys.argv = [sys.argv[1]] + sys.argv[2:]
exec(compile(src, "hf", "exec"))
PY
PYTHONUNBUFFERED=1 timeout 170 python3 /tmp/hf8.py $B/hf_constrained_beam.py $B/tokenizer.json $B/info.txt $B/prompts.csv 2>&1 | grep -v -i warn | tee $OUT/hf.txt
