#!/usr/bin/env bash
# The GPU lane in one command, for a machine with a CUDA GPU:
#   1. the environment: $PYTHON if set, else .venv/bin/python (scripts/setup.sh makes it;
#      `LUMINET_SETUP=1` runs the set-up first), else python3 — it must import torch,
#      torchvision and detectron2;
#   2. stops at once, with a clear message, if torch sees no CUDA device;
#   3. the CUDA test lane (tests/gpu, about 1-2 minutes);
#   4. the GPU benchmark at COCO scale with random weights (benchmarks/gpu.py, a few
#      minutes), which writes benchmarks/results/<date>-gpu.md and .runs.json: commit them.
# Everything prints progress; the whole check is sized to finish within 10 minutes.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
step() { printf '\n[gpu_check %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if [ "${LUMINET_SETUP:-0}" = "1" ]; then
  step "set-up (scripts/setup.sh)"
  bash scripts/setup.sh
fi
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
step "environment: $PY"
"$PY" - <<'PYCHECK'
import sys
try:
    import torch, torchvision, detectron2
except ImportError as e:
    sys.exit(f"error: {e}. Set up the environment first (LUMINET_SETUP=1 bash scripts/gpu_check.sh, "
             "or PYTHON=/path/to/python with torch, torchvision and detectron2).")
if not torch.cuda.is_available():
    sys.exit(f"error: no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda}): "
             "scripts/gpu_check.sh needs a GPU machine.")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}, "
      f"detectron2 {detectron2.__version__}")
PYCHECK
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

step "CUDA test lane (tests/gpu)"
"$PY" -m pytest -q -p no:cacheprovider tests/gpu

step "GPU benchmark (benchmarks/gpu.py)"
PYTHONUNBUFFERED=1 "$PY" benchmarks/gpu.py "$@"
step "done: commit benchmarks/results/*-gpu.md and *-gpu.runs.json"
