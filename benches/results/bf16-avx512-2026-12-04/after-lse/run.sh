# beam-20 eval of SmolLM2-135M on the first 32 Industrial test samples, f32 then --bf16-weights, then bench beam with a profile
B=/work/exp/minirec-s13b; G=/work/models/SmolLM2-135M-Instruct.Q4_1.gguf; D=/work/shared/data/industrial
for mode in f32 bf16; do
  flag=""; [ $mode = bf16 ] && flag=--bf16-weights
  s=$(date +%s.%N)
  /usr/bin/time -f "%M KB" -o rss-$mode $B $flag eval --model $G --data /work/exp/ind --split test --limit 32 --batch 16 --beam 20 --cpu --quiet --predictions-out pred-$mode.jsonl --json m-$mode.json > out-$mode 2>&1
  echo "$mode wall $(echo "$(date +%s.%N) - $s" | bc) s rss $(cat rss-$mode)"
done
MINIREC_PROFILE=1 $B --bf16-weights bench beam --model $G --info $D/info.txt --split $D/test.csv --prompts 16 --batch 16 --beam 20 --cpu 2>&1 | grep -v INFO
