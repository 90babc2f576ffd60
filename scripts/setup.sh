#!/usr/bin/env bash
# Install metarl and what it needs into .venv (idempotent; fast when already done).
#
# torch: a torch you already have is kept. Inside an active virtualenv / conda env, .venv points at it;
# otherwise .venv sees the system's site-packages. With no torch anywhere, a GPU machine gets PyPI's
# default build and a CPU-only machine a CPU build (never the multi-GB CUDA build):
#   1. torch==2.13.0+cpu from pip's configured sources (a local wheel, a mirror), no network index needed;
#   2. PyTorch's CPU index, tried once with a short timeout (no long retry loop when it is unreachable).
# If both fail, the errors of both attempts are printed and setup stops.
# Extras: METARL_EXTRAS (default "dev,mujoco,warp": the tests run MuJoCo Warp on its CPU device; "gpu" on a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${METARL_EXTRAS:-dev,mujoco,warp}
CPU_TORCH=${METARL_CPU_TORCH:-2.13.0+cpu}
CPU_INDEX=${METARL_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}

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

PIP=("$VPY" -m pip --disable-pip-version-check)
why() {  # the lines of a pip log that say why it failed (its errors; an unreachable index once)
  grep -oE "ERROR: .*|Failed to establish a new connection: [^']*|Name or service not known|timed out" "$1" \
    | awk '!seen[$0]++' | head -4 | sed 's/^/       /' || true
}
if "$VPY" -c "import torch" 2>/dev/null; then
  echo "setup: keeping torch $("$VPY" -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  "${PIP[@]}" install -q torch
else
  LOG1=$(mktemp) LOG2=$(mktemp)
  trap 'rm -f "$LOG1" "$LOG2"' EXIT
  if "${PIP[@]}" install -q --retries 1 --timeout 20 "torch==${CPU_TORCH}" >"$LOG1" 2>&1; then
    echo "setup: installed torch ${CPU_TORCH} (CPU build)"
  else
    echo "setup: torch==${CPU_TORCH} is not available from pip's configured sources; trying ${CPU_INDEX}"
    if "${PIP[@]}" install -q --retries 0 --timeout 20 torch --index-url "$CPU_INDEX" >"$LOG2" 2>&1; then
      echo "setup: installed a CPU build of torch from ${CPU_INDEX}"
    else
      echo "setup: could not install a CPU build of torch. Tried:" >&2
      echo "  1. pip install 'torch==${CPU_TORCH}' (pip's configured sources):" >&2
      why "$LOG1" >&2
      echo "  2. pip install torch --index-url ${CPU_INDEX}:" >&2
      why "$LOG2" >&2
      echo "  Install torch yourself (any build), then run this script again: it keeps an installed torch." >&2
      exit 1
    fi
  fi
fi

"${PIP[@]}" install -q -e ".[${EXTRAS}]"
"$VPY" -c "import metarl, envs, torch; print('setup: ok (torch', torch.__version__ + ')')"
