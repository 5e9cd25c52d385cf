#!/usr/bin/env bash
# The README's command chain on real data, as a new user runs it: prepare (a slice of the Industrial D3
# sample) -> LoRA SFT -> rl --init RUN (twice: the second finds it finished) -> select -> eval -> recommend
# --history A B C. Each step's wall time and the SFT's peak RSS are printed; any failing step stops the chain.
#   BIN=target/release/minirec GGUF=SmolLM2-135M-Instruct.Q4_1.gguf benches/cpu/readme_chain.sh WORK_DIR
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
W=${1:?work dir}; : "${BIN:?}" "${GGUF:?}"
D=${DATA:-$HERE/../../../shared/data/industrial}
rm -rf "$W"; mkdir -p "$W/csv"; cd "$W"
head -n 81 "$D/valid.csv" > csv/valid.csv; head -n 41 "$D/test.csv" > csv/test.csv
step() { local s=$(date +%s.%N); "$@"; printf '  [%.1f s] %s\n' "$(echo "$(date +%s.%N) - $s" | bc)" "$*" | cut -c1-200; }
step "$BIN" prepare --format d3 --info "$D/info.txt" --train csv/valid.csv --test csv/test.csv --domain industrial --out data --quiet
step /usr/bin/time -f "  SFT peak RSS %M KB" "$BIN" sft --data data --model "$GGUF" --out runs/sft --lora-rank 8 --max-train 16 --batch-size 8 --epochs 1 --quiet
rl=(rl --data data --init runs/sft --out runs/rl --max-steps 2 --prompts-per-step 1 --rollouts 4 --keep 3 --lora-rank 8 --eval-every 0 --quiet)
step "$BIN" "${rl[@]}"
step "$BIN" "${rl[@]}" --resume
step "$BIN" select --data data --model runs/sft --method el2n --size 16 --out sel/el2n-16.jsonl --quiet
step "$BIN" eval --model runs/rl --data data --split test --limit 8 --batch 8 --json eval-rl.json --quiet
# Three catalog titles as the history (A B C after one flag, as the README shows).
mapfile -t hist < <(python3 -c "import json;[print(json.loads(l)['title']) for l in list(open('data/catalog.jsonl'))[:3]]")
step "$BIN" recommend --model runs/rl --data data --history "${hist[@]}" --top-k 5 --quiet
