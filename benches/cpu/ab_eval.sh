# Sourced by the before/after evaluation scripts: `ab_eval NAME BINARY ROUND` runs one beam-20 evaluation as the
# experiment files run it (batch 16, two lanes, bf16 weights) on the seeded subset of $N test samples of the
# prepared dataset $D with model $M, writing its lists and timing under $O; `ab_same_lists` checks every list
# file against old-1's; `ab_profiles` prints the phase profile of OLD and NEW on the first 16 samples (one lane);
# `ab_sft NAME BINARY` trains three full-SFT steps with $M on $D and keeps the log without its seconds.
ab_eval() { # name binary round
  local s e; s=$(date +%s.%N)
  /usr/bin/time -f "  %P of the CPUs, peak RSS %M KB" -o "$O/time-$1-$3.txt" "$2" eval --model "$M" --data "$D" \
    --split test --beam 20 --batch 16 --lanes 2 --sample "$N" --bf16-weights --cpu --quiet \
    --json "$O/$1-$3.json" --predictions-out "$O/$1-$3.jsonl" > "$O/$1-$3.txt"
  e=$(date +%s.%N)
  printf '%s round %s: %.1f s (%.3f prompts/s)\n' "$1" "$3" "$(echo "$e - $s" | bc)" "$(echo "$N / ($e - $s)" | bc -l)"
  cat "$O/time-$1-$3.txt"
}
ab_same_lists() {
  for f in "$O"/new-*.jsonl "$O"/old-2.jsonl; do cmp "$O/old-1.jsonl" "$f" && echo "same lists: $(basename "$f")"; done
}
ab_profiles() {
  local b bin
  for b in old new; do
    bin=$OLD; [ $b = new ] && bin=$NEW
    echo "profile, $b (one lane, first 16 of the subset):"
    MINIREC_PROFILE=1 "$bin" eval --model "$M" --data "$D" --split test --beam 20 --batch 16 --sample 16 \
      --bf16-weights --cpu --quiet 2>&1 | grep -E '^\s+(decode|beam)\.'
  done
}
ab_sft() { # name binary: three full-SFT steps on 32 training samples; the log without its seconds in $O/sft-NAME.log
  local s e; s=$(date +%s.%N)
  "$2" --quiet sft --model "$M" --data "$D" --out "$O/sft-$1" --max-train 32 --max-steps 3 --batch-size 8 \
    --max-valid 16 --valid-every 3 --lr 3e-4 --seed 42 --cpu > /dev/null
  e=$(date +%s.%N)
  printf 'sft %s: 3 steps in %.1f s\n' "$1" "$(echo "$e - $s" | bc)"
  sed -E 's/"seconds":[0-9.e+-]+,?//' "$O/sft-$1/train_log.jsonl" > "$O/sft-$1.log"
  # Weights and checkpoints (≈ 2–5 GB) are not results: the log is.
  rm -rf "$O/sft-$1/model" "$O/sft-$1/checkpoints" "$O/sft-$1/best.safetensors"
}
