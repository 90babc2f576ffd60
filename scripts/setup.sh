#!/usr/bin/env bash
# Install metarl and what it needs into .venv (idempotent; fast when already done).
#
# torch: a torch you already have is kept. Inside an active virtualenv / conda env, .venv points at it;
# otherwise .venv sees the system's site-packages. With no torch anywhere, a GPU machine gets PyPI's
# default build and a CPU-only machine a CPU build (never the multi-GB CUDA build).
# Extras: METARL_EXTRAS (default "dev,mujoco"; add "gpu" for MuJoCo Warp).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${METARL_EXTRAS:-dev,mujoco}

if [ ! -e .venv ]; then
  ACTIVE_ENV=${VIRTUAL_ENV:-${CONDA_PREFIX:-}}
  if [ -n "$ACTIVE_ENV" ] && [ -x "$ACTIVE_ENV/bin/python" ]; then
    echo "setup: using the active environment $ACTIVE_ENV"
    ln -s "$ACTIVE_ENV" .venv
  else
    echo "setup: creating .venv"
    "$PY" -m venv --system-site-packages .venv
  fi
fi
VPY=.venv/bin/python
"$VPY" -c 'import sys; assert sys.version_info >= (3, 10), "metarl needs Python >= 3.10"'

if "$VPY" -c "import torch" 2>/dev/null; then
  echo "setup: keeping torch $("$VPY" -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  "$VPY" -m pip install -q torch
else
  # CPU only: a local CPU wheel if pip knows one (no network), else PyTorch's CPU index.
  "$VPY" -m pip install -q --no-index "torch==2.13.0" 2>/dev/null \
    || "$VPY" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
fi

"$VPY" -m pip install -q --disable-pip-version-check -e ".[${EXTRAS}]"
"$VPY" -c "import metarl, envs, torch; print('setup: ok (torch', torch.__version__ + ')')"
