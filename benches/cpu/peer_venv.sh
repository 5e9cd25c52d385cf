#!/usr/bin/env bash
# The Python peer for side-by-side CPU numbers: PyTorch (the default PyPI wheel, run on the CPU),
# HF transformers and peft, in a venv outside the work tree. Prints the versions it installed.
#   VENV=/work/venv-peer bash benches/cpu/peer_venv.sh
set -euo pipefail
VENV=${VENV:-/work/venv-peer}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet torch transformers peft safetensors
"$VENV/bin/python" -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__, "threads", torch.get_num_threads())'
