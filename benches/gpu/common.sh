# Sourced by the device calls: the CUDA libraries, the binary unpacked once per warm machine, result copying.
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib:${LD_LIBRARY_PATH:-}
M=/tmp/minirec
if [ -f .gpu/minirec.xz ] && [ ! -x $M ]; then xz -d -c .gpu/minirec.xz > $M && chmod +x $M; fi
[ -x $M ] || { echo "no binary: the machine went cold; start again with call-a.sh"; exit 3; }
RUNS=/tmp/runs/industrial
# Everything but weights and checkpoints, under $OUT/exp.
save_runs() {
  [ -d $RUNS ] || return 0
  (cd $RUNS && find . -type f \( -name '*.json' -o -name '*.jsonl' -o -name '*.md' -o -name '*.svg' \
    -o -name '*.toml' -o -name '*.txt' \) -size -8M -not -path '*checkpoint*' -print0 |
    while IFS= read -r -d '' f; do mkdir -p "$OUT/exp/$(dirname "$f")" && cp "$f" "$OUT/exp/$f"; done)
}
# Starts or resumes the budget experiment for at most $1 seconds (finished stages are skipped, RL resumes).
experiment() {
  sed -e "s#\"RUNS\"#\"$RUNS\"#" -e "s#\"DATA\"#\"$PWD/.bench/ind\"#" -e "s#\"GGUF\"#\"/tmp/sm/SmolLM2-135M-Instruct.Q4_1.gguf\"#" \
    benches/gpu/industrial-budget.toml > /tmp/industrial-budget.toml
  [ -d .bench/ind ] || cp -r /tmp/ind .bench/ind
  timeout "$1" $M run /tmp/industrial-budget.toml 2>&1 | grep -v -E '^\s*$' | tail -40 | tee -a $OUT/experiment.txt
  save_runs
}
