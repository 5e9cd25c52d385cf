#!/usr/bin/env bash
# The bf16 kernel's input rounding, two binaries one after the other on an otherwise idle machine: the bf16
# product at model shapes (best of 5), then a beam-20 bf16 evaluation of 16 Industrial test prompts with each
# binary (the ranked lists must be identical).
#   OLD=… NEW=target/release/minirec GGUF=… DATA=prepared-industrial-dir bash benches/cpu/bf16_pack_before_after.sh
set -euo pipefail
: "${OLD:?}" "${NEW:?}" "${GGUF:?}" "${DATA:?}"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(grep -o 'amx_bf16' /proc/cpuinfo | sort -u)"
for s in 2048,576,1536 2048,1536,576 230,576,1536 230,576,192 230,576,49152; do
  for b in OLD NEW; do printf '%s ' "$b"; "${!b}" --threads 2 bench gemm --shape "$s" --reps 5 --bf16 2>&1 | grep "bf16 weights"; done
done
for b in OLD NEW; do
  s=$(date +%s.%N)
  "${!b}" --threads 2 --bf16-weights eval --model "$GGUF" --data "$DATA" --split test --limit 16 --batch 16 --beam 20 --cpu --quiet --predictions-out "pred-$b.jsonl" > /dev/null
  printf '%s eval 16 prompts, beam 20, bf16 weights: %.1f s\n' "$b" "$(echo "$(date +%s.%N) - $s" | bc)"
done
cmp pred-OLD.jsonl pred-NEW.jsonl && echo "ranked lists identical"
