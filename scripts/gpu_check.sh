#!/usr/bin/env bash
# One GPU check for a fresh CUDA machine, about 6 minutes (most of it compiling Warp's kernels; each step is
# capped, 14 minutes at most): install, the gpu-marked tests, a few training
# iterations of the sinusoid, Omniglot and Navigation2D configs on cuda, and the GPU figures, printed as ONE
# JSON line at the end (also written to OUT/gpu_check.json):
#   warp_env_steps_per_s_{4096,16384}  MuJoCo Warp HalfCheetahVel, policy in the loop (bench_mujoco_rollout.py)
#   omniglot_speedup_vs_loop           5-way 1-shot second-order meta-gradient, 32 tasks (bench_omniglot.py)
#   maml_trpo_iteration_s              one paper-config HalfCheetahVel MAML-TRPO meta-iteration (Warp + cuda)
# A step that fails is named in "failures" and the others still run; the exit code is 1 if any failed.
#
#   bash scripts/gpu_check.sh [--python PY] [--wheels DIR] [--data DIR] [--out DIR] [--skip-install]
#                             [--dry-run]
#     --python PY      the interpreter whose torch (with CUDA) is used (default: python3); never replaced
#     --wheels DIR     install the project's missing packages from these wheels, offline (machines that
#                      reach no package index); else pip install -e ".[gpu,dev]"
#     --data DIR       the Omniglot archives (default: $METARL_DATA, else ../shared/data/omniglot)
#     --out DIR        where the logs and gpu_check.json go (default: gpu_check_out)
#     --skip-install   use the environment as it is
#     --dry-run        print the steps and the JSON line (figures null) without running anything
set -u
PY=python3 WHEELS="" DATA="${METARL_DATA:-}" OUT_DIR=gpu_check_out INSTALL=1 DRY=0
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }  # the header
while [ $# -gt 0 ]; do
  case "$1" in
    --python) PY="${2:?--python needs a value}"; shift 2 ;;
    --wheels) WHEELS="${2:?--wheels needs a directory}"; shift 2 ;;
    --data) DATA="${2:?--data needs a directory}"; shift 2 ;;
    --out) OUT_DIR="${2:?--out needs a directory}"; shift 2 ;;
    --skip-install) INSTALL=0; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.." || exit 2
mkdir -p "$OUT_DIR" || exit 2
[ -n "$DATA" ] && export METARL_DATA="$DATA"
FAILURES=()

# step NAME SECONDS CMD...: run CMD with a time limit, its output in OUT_DIR/NAME.log; a failure is recorded
step() {
  local name="$1" limit="$2"; shift 2
  echo "== $name: $*" >&2
  [ "$DRY" = 1 ] && return 0
  local t0=$SECONDS
  if timeout "$limit" "$@" >"$OUT_DIR/$name.log" 2>&1; then
    echo "   ok in $((SECONDS - t0)) s" >&2
  else
    echo "   FAILED ($((SECONDS - t0)) s): tail of $OUT_DIR/$name.log" >&2
    tail -n 15 "$OUT_DIR/$name.log" >&2
    FAILURES+=("$name")
  fi
}

if [ "$DRY" = 0 ]; then
  if [ "$INSTALL" = 1 ]; then
    if [ -n "$WHEELS" ]; then
      "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$OUT_DIR/site" "$WHEELS"/*.whl || exit 1
      export PYTHONPATH="$PWD/$OUT_DIR/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    else
      "$PY" -m pip install -q -e ".[gpu,dev]" || exit 1
    fi
  fi
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check.sh: $PY's torch sees no CUDA device (torch.cuda.is_available() is False): run it on a GPU" \
         "machine, or pass --python with a CUDA build of torch" >&2
    exit 3
  fi
fi

step pytest_gpu 300 "$PY" -m pytest -m gpu -q -p no:cacheprovider
RUN=/tmp/metarl-gpu-check
step train_sinusoid 45 "$PY" scripts/train.py --config configs/sinusoid_maml.yaml --device cuda \
  --train.iterations 20 --eval.num_tasks 50 --log.wandb disabled --run_dir $RUN/sinusoid
step train_omniglot 60 "$PY" scripts/train.py --config configs/omniglot_5way1shot.yaml --device cuda \
  --train.iterations 5 --train.eval_every 0 --eval.num_tasks 20 --log.wandb disabled --run_dir $RUN/omniglot
step train_navigation2d 60 "$PY" scripts/train.py --config configs/nav2d_maml_trpo.yaml --device cuda \
  --train.iterations 3 --eval.num_tasks 10 --log.wandb disabled --run_dir $RUN/nav2d
step warp_4096 150 "$PY" scripts/bench_mujoco_rollout.py --env HalfCheetahVel --backend warp --device cuda \
  --tasks 64 --episodes 64 --sync-steps 0
step warp_16384 60 "$PY" scripts/bench_mujoco_rollout.py --env HalfCheetahVel --backend warp --device cuda \
  --tasks 128 --episodes 128 --sync-steps 0
step omniglot_bench 60 "$PY" scripts/bench_omniglot.py --device cuda --tasks 32 --repeats 3 --rounds 1
step maml_trpo 120 "$PY" scripts/bench_mujoco_maml_trpo.py --env HalfCheetahVel --backend warp --device cuda \
  --iterations 2

# the one JSON line: figures from each log's last JSON line (null where a step failed or did not run)
"$PY" - "$OUT_DIR" "$DRY" "${FAILURES[@]}" <<'PYEOF'
import json, sys
from pathlib import Path

out, dry, failures = Path(sys.argv[1]), sys.argv[2] == "1", sys.argv[3:]

def last_json(name):
    try:
        lines = (out / f"{name}.log").read_text().splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}

def passed(name):
    return None if dry else name not in failures

gpu = None
if not dry:
    try:
        import torch
        gpu = torch.cuda.get_device_name(0)
    except Exception:
        pass
summary = {
    "dry_run": dry, "gpu": gpu,
    "pytest_gpu_passed": passed("pytest_gpu"),
    "train_sinusoid_ok": passed("train_sinusoid"), "train_omniglot_ok": passed("train_omniglot"),
    "train_navigation2d_ok": passed("train_navigation2d"),
    "warp_env_steps_per_s_4096": last_json("warp_4096").get("env_steps_per_s"),
    "warp_env_steps_per_s_16384": last_json("warp_16384").get("env_steps_per_s"),
    "omniglot_speedup_vs_loop": last_json("omniglot_bench").get("speedup_vs_loop"),
    "maml_trpo_iteration_s": last_json("maml_trpo").get("seconds_per_iteration"),
    "failures": failures,
}
(out / "gpu_check.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary))
PYEOF
[ ${#FAILURES[@]} -eq 0 ]
