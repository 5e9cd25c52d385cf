#!/usr/bin/env bash
# Device call A. carry: .gpu .gguf1 .bench/ind   (≈ 59 MB)
# Unpacks the binary, keeps GGUF part one and the data in /tmp, then the H100 column of the selection benchmark.
set -u
source benches/gpu/common.sh
cp .gguf1/smgguf.00 /tmp/ && rm -rf /tmp/ind && cp -r .bench/ind /tmp/ind
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee $OUT/gpu.txt
timeout 400 $M -q bench select --arch smollm2-135m --users 1050 --rollouts 4 2>&1 | tee $OUT/bench_select.txt
