#!/usr/bin/env bash
# Device run 2: phase profile of beam search at batch 256, and HF transformers' Qwen2-1.5B shape at batch 8.
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib:${LD_LIBRARY_PATH:-}
xz -d -c .gpu/minirec.xz > /tmp/minirec && chmod +x /tmp/minirec
rm -rf /tmp/bench && cp -r .bench /tmp/bench
M=/tmp/minirec; B=/tmp/bench
common="--tokenizer $B/tokenizer.json --info $B/info.txt --split $B/prompts.csv"
for arch in smollm2-135m qwen2-1.5b; do
  MINIREC_PROFILE=1 $M -q bench beam $common --arch $arch --prompts 512 --batch 256 2>&1 | tee -a $OUT/profile.txt
done
cat > /tmp/hf8.py <<'PY'
import runpy, sys
src = open(sys.argv[1]).read()
# Only the Qwen2-1.5B shape at batch 8 (the first run was cut off there).
src = src.replace('for bs in (1, 8):', 'for bs in ((8,) if name.startswith("qwen") else ()):')
sys.argv = [sys.argv[1]] + sys.argv[2:]
exec(compile(src, "hf", "exec"))
PY
PYTHONUNBUFFERED=1 timeout 200 python3 /tmp/hf8.py $B/hf_constrained_beam.py $B/tokenizer.json $B/info.txt $B/prompts.csv 2>&1 | grep -v -i warn | tee $OUT/hf_qwen_b8.txt
