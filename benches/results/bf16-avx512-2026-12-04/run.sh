B=/work/main/target/release/minirec; G=/work/models/SmolLM2-135M-Instruct.Q4_1.gguf
for mode in f32 bf16; do
  flag=""; [ $mode = bf16 ] && flag=--bf16-weights
  s=$(date +%s.%N)
  /usr/bin/time -f "%M KB" -o rss-$mode $B $flag eval --model $G --data /work/exp/ind --split test --limit 32 --batch 16 --beam 20 --cpu --quiet --predictions-out pred-$mode.jsonl --json m-$mode.json > out-$mode 2>&1
  echo "$mode wall $(echo "$(date +%s.%N) - $s" | bc) s rss $(cat rss-$mode)"
done
