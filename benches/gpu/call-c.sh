#!/usr/bin/env bash
# Device calls C, D, ..., each at once after the last (no carry): resume the experiment for nine minutes.
set -u
source benches/gpu/common.sh
[ -f /tmp/sm/SmolLM2-135M-Instruct.Q4_1.gguf ] || { echo "the machine went cold: start again with call-a.sh"; exit 3; }
experiment 540
