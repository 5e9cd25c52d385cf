#!/usr/bin/env bash
# Beam-20 evaluation before (OLD) and after (NEW) a session's engine changes, beside the peer and the machine's
# limit, in one script on an otherwise idle machine:
#   1. the limit: the decode step's largest products (MLP gate/up, LM head) with bf16 weights, ours
#      (`bench gemm --bf16`) and PyTorch's bf16 matmul on the same shapes;
#   2. minirec OLD and NEW, beam 20 over the catalog on a seeded subset of the test split as the experiment files
#      run it (batch 16, two lanes, bf16 weights), alternated twice; the ranked lists must be byte-identical;
#   3. HF transformers' constrained beam search (benches/cpu/peer/hf_beam.py), one prompt at a time, the same
#      weights (the GGUF dequantised by `minirec convert`).
#   OLD=... NEW=... GGUF=... VENV=/work/venv-peer bash benches/cpu/eval_engine_session.sh DATA [N] [PEER_N] [OUT]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
: "${OLD:?}" "${NEW:?}" "${GGUF:?}" "${VENV:?}"; M=$GGUF
D=${1:?prepared dataset}; N=${2:-64}; PN=${3:-4}; O=${4:-$(mktemp -d)}
mkdir -p "$O"; PY="$VENV/bin/python"; T=$(nproc)
echo "machine: $T cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
"$PY" -c 'import torch, transformers; print("peer: torch", torch.__version__, "transformers", transformers.__version__)'
[ -f "$O/hf/model.safetensors" ] || "$NEW" --quiet convert --model "$GGUF" --out "$O/hf"
echo "## 1. limit (GFLOP/s)"
for s in 320,576,1536 320,1536,576 320,576,49152; do
  echo "ours $s: $("$NEW" bench gemm --shape $s --reps 10 --bf16 2>&1 | grep -i "gflop" | tr '\n' ' ')"
done
"$PY" - "$T" <<'PY'
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
for m, k, n in [(320, 576, 1536), (320, 1536, 576), (320, 576, 49152)]:
    for dt in (torch.float32, torch.bfloat16):
        x = torch.randn(m, k).to(dt); w = torch.randn(n, k).to(dt)
        x @ w.t()
        reps = 10; t = time.time()
        for _ in range(reps): x @ w.t()
        print(f"torch {m},{k},{n} {str(dt).split('.')[1]}: {2 * m * k * n * reps / (time.time() - t) / 1e9:.1f} GFLOP/s")
PY
echo "## 2. minirec, $N samples"
. "$(dirname "$0")/ab_eval.sh"
for r in 1 2; do ab_eval old "$OLD" $r; ab_eval new "$NEW" $r; done
ab_same_lists
echo "## 3. peer, $PN prompts"
(cd "$HERE/peer" && /usr/bin/time -f "  peak RSS %M KB" "$PY" hf_beam.py --model "$O/hf" --data "$D" --prompts "$PN" --threads "$T")
