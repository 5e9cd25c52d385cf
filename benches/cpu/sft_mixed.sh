#!/usr/bin/env bash
# Full-weight SFT of SmolLM2-135M-Instruct in f32 and in mixed precision (`--bf16-mixed`: products of trainable
# weights on the CPU's bf16 units), beside PyTorch + HF transformers in f32 and under bf16 autocast, in one
# script on an otherwise idle machine: the first SAMPLES Industrial training samples at batch 8, 2 threads both
# sides, the same weights (the GGUF dequantised by `minirec convert` for the peer), the same rendered samples.
# Each row: wall time, samples/s and tokens/s as the job prints them (over every step, the first one included),
# peak RSS, the per-batch losses, and the step times: the first step (which grows the heap) and the mean of
# the rest, which is what a long run sees.
#   BIN=target/release/minirec GGUF=SmolLM2-135M-Instruct.Q4_1.gguf VENV=/work/venv-peer \
#     bash benches/cpu/sft_mixed.sh OUT_DIR        (benches/cpu/peer_venv.sh makes the venv)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:?out dir}; mkdir -p "$OUT"; cd "$OUT"
D=${DATA:-$HERE/../../../shared/data/industrial}
: "${BIN:?}" "${GGUF:?}" "${VENV:?}"
T=${THREADS:-$(nproc)}; N=${SAMPLES:-64}; ROUNDS=${ROUNDS:-2}
PY="$VENV/bin/python"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs);" \
  "$(grep -o 'amx_bf16\|avx512_bf16' /proc/cpuinfo | sort -u | xargs); threads $T; $N samples, batch 8"
"$PY" -c 'import torch, transformers; print("peer: torch", torch.__version__, "transformers", transformers.__version__)'
[ -d data ] || "$BIN" prepare --format d3 --info "$D/info.txt" --train "$D/valid.csv" --test "$D/test.csv" --domain industrial --out data --quiet
[ -f hf/model.safetensors ] || "$BIN" convert --model "$GGUF" --out hf > /dev/null
row() { # name command...
  local name=$1; shift
  local s=$(date +%s.%N)
  if /usr/bin/time -f "%M" -o "rss-$name" "$@" > "out-$name" 2>&1; then st=ok; else st=failed; fi
  local wall=$(echo "$(date +%s.%N) - $s" | bc)
  printf '%-22s %-6s wall %6.1f s  peak RSS %5.2f GB  %s\n' "$name" "$st" "$wall" \
    "$(echo "$(tail -1 rss-$name) / 1048576" | bc -l)" "$(grep -h '^peer sft\|^sft: ' out-$name | head -1)"
}
ours() { # run name, extra flags: prints the command (row runs it under /usr/bin/time)
  local n=$1; shift; rm -rf "run-$n"
  echo "$BIN" --threads "$T" sft --data data --model "$GGUF" --out "run-$n" --epochs 1 --checkpoint-every 0 \
    --max-train "$N" --batch-size 8 --max-valid 0 --quiet "$@"; }
steps() { # the losses and step times a run of ours logged
  python3 - "run-$1/train_log.jsonl" <<'PY'
import json, sys
L = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
s = [b["seconds"] - a["seconds"] for a, b in zip(L, L[1:])]
print("  losses " + " ".join(f"{x['loss']:.4f}" for x in L))
print(f"  step seconds: first {L[0]['seconds']:.1f}, then mean {sum(s) / len(s):.2f} ({' '.join(f'{x:.1f}' for x in s)})")
PY
}
echo "## the machine's limit: an SFT-sized product (2,048 rows × 576 → 1,536), best of 5"
"$BIN" --threads "$T" bench gemm --shape 2048,576,1536 --reps 5 --bf16 2>&1 | grep -h "GFLOP/s" | sed 's/^/  ours: /'
"$PY" - "$T" <<'PY'
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
for dt in (torch.float32, torch.bfloat16):
    x = torch.randn(2048, 576).to(dt); w = torch.randn(1536, 576).to(dt)
    x @ w.T
    best = min((lambda t: (x @ w.T, time.time() - t)[1])(time.time()) for _ in range(5))
    print(f"  torch {str(dt).split('.')[1]}: {2 * 2048 * 576 * 1536 / best / 1e9:.1f} GFLOP/s")
PY
for r in $(seq "$ROUNDS"); do  # alternated, so a drift in the machine's speed shows
  echo "## round $r"
  row minirec-f32 $(ours minirec-f32); steps minirec-f32
  row minirec-bf16-mixed $(ours minirec-bf16-mixed --bf16-mixed); steps minirec-bf16-mixed
  row torch-f32 "$PY" "$HERE/peer/hf_sft.py" --model hf --data data --samples "$N" --batch 8 --threads "$T"
  { grep -h "^step seconds" out-torch-f32 || true; } | sed "s/^/  /"
  row torch-bf16-autocast "$PY" "$HERE/peer/hf_sft.py" --model hf --data data --samples "$N" --batch 8 \
    --threads "$T" --bf16-autocast
  { grep -h "^step seconds" out-torch-bf16-autocast || true; } | sed "s/^/  /"
done
