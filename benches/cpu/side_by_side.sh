#!/usr/bin/env bash
# Issue 12's side-by-side benchmark, both sides in one script on an otherwise idle machine, the same thread count
# (THREADS, default every core) and the same SmolLM2-135M-Instruct weights (the GGUF dequantised to an HF
# directory by `minirec convert`), the same Industrial samples rendered the same way:
#   1. the machine's GEMM limit: candle f32 and our bf16-weight kernel (`minirec bench gemm --bf16`), PyTorch f32
#      and bf16, 2048³;
#   2. beam-20 evaluation over the Industrial catalog: minirec (batch 16; `bench beam` for the decode rate, `eval`
#      for its metrics; each in f32 and with `--bf16-weights`) vs HF transformers' constrained beam search, one
#      prompt at a time;
#   3. SFT at batch 8 on the first 32 training samples, LoRA r 8 (f32 and `--bf16-weights`) and full: minirec vs
#      PyTorch (+ peft);
#   4. one RISER step of P prompts × m = 20 (two updates, LoRA r 8) with one prompt pass per group vs per
#      sequence (TRL's way), from SFT_RUN if given, else from the base model; the shared way also with
#      `--bf16-weights` (LoRA bases, rollouts and the reference model in bf16).
# Each row: wall time, the job's own rate, peak RSS (/usr/bin/time).
#   BIN=target/release/minirec GGUF=SmolLM2-135M-Instruct.Q4_1.gguf VENV=/work/venv-peer \
#     bash benches/cpu/side_by_side.sh OUT_DIR   (benches/cpu/peer_venv.sh makes the venv)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:?out dir}; mkdir -p "$OUT"; cd "$OUT"
D=${DATA:-$HERE/../../../shared/data/industrial}
: "${BIN:?}" "${GGUF:?}" "${VENV:?}"
T=${THREADS:-$(nproc)}; BEAM_PROMPTS=${BEAM_PROMPTS:-32}; PEER_BEAM_PROMPTS=${PEER_BEAM_PROMPTS:-4}; P=${P:-8}
PY="$VENV/bin/python"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), avx512f: $(grep -c -m1 avx512f /proc/cpuinfo || true), avx512_bf16: $(grep -c -m1 avx512_bf16 /proc/cpuinfo || true); threads $T"
"$PY" -c 'import torch, transformers, peft; print("peer: torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)'
[ -d data ] || "$BIN" prepare --format d3 --info "$D/info.txt" --train "$D/valid.csv" --test "$D/test.csv" --domain industrial --out data --quiet
[ -f hf/model.safetensors ] || "$BIN" convert --model "$GGUF" --out hf
row() { # name command...
  local name=$1; shift
  local s=$(date +%s.%N)
  if /usr/bin/time -f "%M" -o "rss-$name" "$@" > "out-$name" 2>&1; then st=ok; else st=failed; fi
  local wall=$(echo "$(date +%s.%N) - $s" | bc)
  printf '%-24s %-6s wall %7.1f s  peak RSS %6.2f GB  %s\n' "$name" "$st" "$wall" \
    "$(echo "$(tail -1 rss-$name) / 1048576" | bc -l)" \
    "$(grep -ho '"prompts_per_s":[0-9.]*\|[0-9.]* GFLOP/s.*\|^peer.*\|sft: [0-9]* steps.*\|samples/s.*\|NDCG@10.*\|prompts/s.*\|^rl:.*' out-$name | head -1)"
  return 0
}
echo "## 1. GEMM limit, 2048³"
row gemm-candle-f32 "$BIN" --threads "$T" bench gemm --size 2048 --reps 5 --bf16
grep "bf16 weights" out-gemm-candle-f32 || true
"$PY" - "$T" <<'PY'
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
for dt in (torch.float32, torch.bfloat16):
    a = torch.randn(2048, 2048).to(dt); b = torch.randn(2048, 2048).to(dt)
    a @ b
    t = time.time(); n = 5
    for _ in range(n): a @ b
    print(f"gemm-torch-{str(dt).split('.')[1]:<9} {2 * 2048**3 * n / (time.time() - t) / 1e9:7.1f} GFLOP/s")
PY
echo "## 2. beam 20 over the catalog"
row beam20-minirec-rate "$BIN" --threads "$T" bench beam --model "$GGUF" --info "$D/info.txt" --split "$D/test.csv" --prompts "$BEAM_PROMPTS" --batch 16 --beam 20 --cpu
row beam20-minirec "$BIN" --threads "$T" eval --model "$GGUF" --data data --split test --limit "$BEAM_PROMPTS" --batch 16 --beam 20 --cpu --quiet --predictions-out pred-f32.jsonl
row beam20-minirec-bf16-rate "$BIN" --threads "$T" --bf16-weights bench beam --model "$GGUF" --info "$D/info.txt" --split "$D/test.csv" --prompts "$BEAM_PROMPTS" --batch 16 --beam 20 --cpu
row beam20-minirec-bf16 "$BIN" --threads "$T" --bf16-weights eval --model "$GGUF" --data data --split test --limit "$BEAM_PROMPTS" --batch 16 --beam 20 --cpu --quiet --predictions-out pred-bf16.jsonl
"$PY" - <<'PY'
import json
a = [json.loads(l) for l in open("pred-f32.jsonl")]; b = [json.loads(l) for l in open("pred-bf16.jsonl")]
top1 = sum(x["ranked"][0] == y["ranked"][0] for x, y in zip(a, b))
overlap = sum(len(set(x["ranked"][:20]) & set(y["ranked"][:20])) for x, y in zip(a, b)) / (20 * len(a))
same = sum(x["ranked"][:20] == y["ranked"][:20] for x, y in zip(a, b))
print(f"bf16 vs f32 beam lists: top-1 agree {top1}/{len(a)}, top-20 overlap {overlap:.3f}, identical top 20 {same}/{len(a)}")
PY
row beam20-hf "$PY" "$HERE/peer/hf_beam.py" --model hf --data data --prompts "$PEER_BEAM_PROMPTS" --threads "$T"
echo "## 3. SFT, batch 8, 32 samples"
sft() { rm -rf "run-$1"; echo "$BIN" --threads "$T" sft --data data --model "$GGUF" --out "run-$1" --epochs 1 --checkpoint-every 0 --max-train 32 --batch-size 8 --quiet ${2:-}; }
row sft-lora8-minirec $(sft sft-lora8 "--lora-rank 8")
row sft-lora8-minirec-bf16 "$BIN" --bf16-weights $(sft sft-lora8-bf16 "--lora-rank 8" | cut -d' ' -f2-)
row sft-lora8-torch "$PY" "$HERE/peer/hf_sft.py" --model hf --data data --samples 32 --batch 8 --lora-rank 8 --threads "$T"
row sft-full-minirec $(sft sft-full)
row sft-full-torch "$PY" "$HERE/peer/hf_sft.py" --model hf --data data --samples 32 --batch 8 --threads "$T"
echo "## 4. one RISER step, $P prompts × 20 rollouts, LoRA r 8"
rl() { rm -rf "run-$1"; echo "$BIN" --threads "$T" rl --data data --init "${SFT_RUN:-$GGUF}" --out "run-$1" --lora-rank 8 --max-steps 1 --prompts-per-step "$P" --rollouts 20 --keep 16 --eval-every 0 --lr 1e-5 --quiet ${2:-}; }
row riser-shared $(rl riser-shared)
row riser-shared-bf16 "$BIN" --bf16-weights $(rl riser-shared-bf16 | cut -d' ' -f2-)
row riser-per-sequence $(rl riser-per-sequence --per-sequence)
for r in riser-shared riser-shared-bf16 riser-per-sequence; do echo "$r: $(cat run-$r/rl_log.jsonl)"; done
grep -h "loss" out-sft-* | head -4 || true
