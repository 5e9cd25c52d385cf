#!/usr/bin/env bash
# One full-weight RISER step (8 prompts × m = 20, n = 16, two updates, lr 1e-5) of SmolLM2-135M from an SFT
# model, by the binary before (OLD) and after (NEW), alternated twice: each step's rollout and update seconds
# and its logged values (rewards, losses, gradient norm; seconds aside), which should agree; then three
# full-SFT steps on 32 training samples by each (from the SFT model), whose logs should be identical.
# Run on an otherwise idle machine.
#   OLD=... NEW=target/release/minirec bash benches/cpu/rl_step_before_after.sh SFT_MODEL DATA [OUT_DIR]
# NEW_FLAGS: extra `rl` flags for NEW only (e.g. --bf16-mixed: one binary, two settings); SKIP_SFT=1 leaves
# out the SFT comparison.
set -euo pipefail
: "${OLD:?}" "${NEW:?}"; M=${1:?SFT model}; D=${2:?prepared dataset}; O=${3:-$(mktemp -d)}
mkdir -p "$O"
. "$(dirname "$0")/ab_eval.sh"
nproc; grep -m1 'model name' /proc/cpuinfo
step() { # name binary round [flags…]: one RISER step
  local run="$O/$1-$3" bin=$2 name=$1 round=$3; shift 3; rm -rf "$run"
  /usr/bin/time -f "%M" -o "$run.rss" "$bin" --quiet rl --data "$D" --init "$M" --out "$run" --max-steps 1 \
    --prompts-per-step 8 --rollouts 20 --keep 16 --eval-every 0 --lr 1e-5 --cpu "$@" > /dev/null
  python3 - "$run/rl_log.jsonl" "$name" "$round" "$(tail -1 "$run.rss")" <<'PY'
import json, sys
d = json.loads(open(sys.argv[1]).readline())
print(f"{sys.argv[2]} round {sys.argv[3]}: rollouts {d['rollout_s']:.1f} s, updates {d['update_s']:.1f} s, "
      f"peak RSS {int(sys.argv[4]) / 1048576:.2f} GB")
keep = {k: v for k, v in d.items() if not k.endswith('_s')}
print('  ', json.dumps(keep, sort_keys=True))
PY
  # The exported weights and checkpoints (≈ 2–3 GB a run) are not results; the log is.
  rm -rf "$run/model" "$run/checkpoints"
}
for r in 1 2; do step old "$OLD" $r; step new "$NEW" $r ${NEW_FLAGS:-}; done
[ -n "${SKIP_SFT:-}" ] && exit 0
ab_sft old-1 "$OLD"; ab_sft new-1 "$NEW"
cmp "$O/sft-old-1.log" "$O/sft-new-1.log" && echo "same SFT log ($(wc -l < "$O/sft-new-1.log") lines):" && cat "$O/sft-new-1.log"
