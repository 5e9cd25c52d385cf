#!/usr/bin/env bash
# Device run 3: clean phase profiles (after warm-up) for both shapes at batch 256.
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib:${LD_LIBRARY_PATH:-}
xz -d -c .gpu/minirec.xz > /tmp/minirec && chmod +x /tmp/minirec
M=/tmp/minirec; B=.bench
common="--tokenizer $B/tokenizer.json --info $B/info.txt --split $B/prompts.csv"
for arch in smollm2-135m qwen2-1.5b; do
  MINIREC_PROFILE=1 $M -q bench beam $common --arch $arch --prompts 512 --batch 256 2>&1 | tee -a $OUT/profile3.txt
done
