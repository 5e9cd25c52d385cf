#!/usr/bin/env bash
# RecBole 1.2.1 (the peer for the classic baselines) in a venv outside the work tree. RecBole 1.2.1 predates
# pandas 3 and NumPy 2 / torch 2.6 changes; the shims it needs are applied at run time by recbole_peer.py.
#   VENV=/work/venv-recbole bash benches/classic/recbole_venv.sh
set -euo pipefail
VENV=${VENV:-/work/venv-recbole}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet torch "pandas<3" "recbole==1.2.1" "numpy<2.3" scipy tqdm colorlog colorama tabulate texttable thop plotly tensorboard
"$VENV/bin/python" -c 'import torch, recbole, pandas, numpy; print("torch", torch.__version__, "recbole", recbole.__version__, "pandas", pandas.__version__, "numpy", numpy.__version__)'
