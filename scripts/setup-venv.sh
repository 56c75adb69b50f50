#!/usr/bin/env bash
# Create .venv with diffprobe installed (editable) and its test tools, without pulling a multi-GB CUDA torch
# onto a machine that has no GPU.
#   - torch already importable by the chosen python (e.g. your CUDA build): kept (the venv sees it).
#   - a GPU (nvidia-smi works): pip's default torch build.
#   - otherwise: torch==${DIFFPROBE_TORCH_VERSION:-2.13.0}; set PIP_INDEX_URL / PIP_EXTRA_INDEX_URL to a CPU wheel
#     index if your pip would otherwise resolve a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import diffprobe, torch, pytest" 2>/dev/null \
   && [ "$VENV/.installed" -nt pyproject.toml ] && [ "$VENV/.installed" -nt constraints.txt ]; then
  exit 0
fi
if "$PY" -c "import torch" 2>/dev/null; then
  echo "setup: keeping the torch that $PY already has ($("$PY" -c 'import torch; print(torch.__version__)'))"
  [ -d "$VENV" ] || "$PY" -m venv --system-site-packages "$VENV"
else
  [ -d "$VENV" ] || "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install -q torch
  else
    "$VENV/bin/python" -m pip install -q "torch==${DIFFPROBE_TORCH_VERSION:-2.13.0}"
  fi
fi
# the versions the suite last passed with (constraints.txt); DIFFPROBE_CONSTRAINTS= (empty) lifts them
CONSTRAINTS=${DIFFPROBE_CONSTRAINTS-constraints.txt}
"$VENV/bin/python" -m pip install -q ${CONSTRAINTS:+-c "$CONSTRAINTS"} -e ".[test,ray]"
touch "$VENV/.installed"
