#!/usr/bin/env bash
# The load test of `minirec serve` (issue 16) in its three configurations, on an otherwise idle machine:
#   BIN=/abs/target/release/minirec TINY=DEMO_RUN/sft/model TINY_DATA=DEMO_RUN/data \
#   GGUF=models/SmolLM2-135M-Instruct.Q4_1.gguf DATA=data/ind bash benches/serve/run.sh OUT_DIR
# TINY is the model `minirec demo` trains (88k parameters), to measure the server's own overhead at high rates;
# GGUF with a prepared Industrial dataset is the real model. PAUSE=PID stops that process (a background
# experiment) for the duration; ONLY=tiny or ONLY=real runs one part and continues it afterwards, so that the numbers are the server's alone.
set -euo pipefail
out=${1:?output directory}
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
if [[ -n "${PAUSE:-}" ]]; then
  kill -STOP "$PAUSE"
  trap 'kill -CONT "$PAUSE"' EXIT
fi
only=${ONLY:-tiny,real}
lt() { python3 "$here/load_test.py" --bin "$BIN" "$@"; }
{
  echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) × $(nproc); $("$BIN" --version)"
  if [[ $only == *tiny* ]]; then
  lt --model "$TINY" --data "$TINY_DATA" --out "$out/tiny-wait10" --label "tiny (88k), --max-wait-ms 10" \
     --clients 1,2,4,8,16 --requests 50 --references 50 --beam 20 --k 10 --max-batch 16 --max-wait-ms 10
  lt --model "$TINY" --data "$TINY_DATA" --out "$out/tiny-wait0" --label "tiny (88k), --max-wait-ms 0" \
     --clients 1,2,4,8,16 --requests 50 --references 50 --beam 20 --k 10 --max-batch 16 --max-wait-ms 0
  fi
  if [[ $only == *real* ]]; then
  lt --model "$GGUF" --data "$DATA" --out "$out/smollm2-bf16" --label "SmolLM2-135M, --bf16-weights" \
     --clients 1,4,8 --requests 2 --references 8 --repeats 2 --beam 20 --k 10 --max-batch 8 --max-wait-ms 50 \
     --server-args=--bf16-weights --time-limit 1500
  # The way before the server: a process per request (model load + trie + one beam search).
  for i in 1 2 3; do
    /usr/bin/time -f "minirec recommend, a process per request: %e s wall, %M KB max RSS" "$BIN" recommend \
      --model "$GGUF" --data "$DATA" --bf16-weights --history "Super Glue 15187 Super Glue, 12-Pack" \
      "Gorilla Super Glue Gel" --top-k 10 --beam 20 --quiet > /dev/null
  done
  fi
} 2>&1 | tee -a "$out/load_test.log"
