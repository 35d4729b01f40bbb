#!/usr/bin/env bash
# One idempotent set-up step behind `make demo` and `make test`.
#
#   1. creates .venv with Python 3.11 (if missing);
#   2. installs the pins of requirements.txt (torch 2.14.1, torchvision 0.29.1, ...) with uv
#      (pinned below; from its cache, a second environment takes seconds where pip took a
#      minute for torch's CUDA wheels), compiling the bytecode as pip does: without it, and
#      with PYTHONDONTWRITEBYTECODE set, every process would recompile torch on import;
#   3. installs detectron2: keeps an importable one; otherwise re-packs PyPI's
#      sal-detectron2==0.7.2 wheel (cp310-only tag, stale _C) as a pure-Python py3-none-any
#      wheel and installs it. LUMINET_D2=git builds the official source instead (needs
#      internet access to GitHub and, for CUDA ops, a CUDA toolchain);
#   4. installs luminet_det itself in editable mode.
#
# A stamp in .venv records a hash of the inputs; a second run with nothing to do exits in
# seconds. Delete .venv (or run `make clean-env`) to start over.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
VENV="${LUMINET_VENV:-$ROOT/.venv}"
PY_BOOT="${LUMINET_PYTHON:-python3.11}"
D2_MODE="${LUMINET_D2:-wheel}"
D2_WHEEL_VERSION="0.7.2"
UV_VERSION="0.13.9"
PY="$VENV/bin/python"

step() { printf '\n[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

case "$D2_MODE" in
  wheel|git) ;;
  *) echo "LUMINET_D2=$D2_MODE is not understood; use 'wheel' (default, PyPI sal-detectron2" \
          "re-packed) or 'git' (official source build)." >&2; exit 2 ;;
esac

stamp_hash() {
  cat requirements.txt setup.py scripts/setup.sh | sha256sum | cut -c1-16
  echo "$D2_MODE"
}
HASH="$(stamp_hash | sha256sum | cut -c1-16)"
STAMP="$VENV/.luminet-setup-$HASH"

if [ -f "$STAMP" ] && "$PY" -c "import detectron2, luminet_det" 2>/dev/null; then
  echo "[setup] environment up to date ($VENV); nothing to do."
  exit 0
fi

T0=$(date +%s)
if [ ! -x "$PY" ]; then
  if ! command -v "$PY_BOOT" >/dev/null 2>&1; then
    echo "Python 3.11 ('$PY_BOOT') not found. Install it or set LUMINET_PYTHON=/path/to/python3.11." >&2
    exit 2
  fi
  step "creating virtual environment $VENV with $($PY_BOOT --version)"
  "$PY_BOOT" -m venv "$VENV"
fi
rm -f "$VENV"/.luminet-setup-*

# pip's warnings about this machine's unused local find-links folders are dropped (harmless)
pip_quiet() { "$PY" -m pip "$@" --quiet 2>&1 | { grep -v "WARNING: Location" || true; }; }
uv_install() { "$PY" -m uv pip install --quiet --compile-bytecode --python "$PY" "$@"; }

step "installing pinned requirements with uv $UV_VERSION (torch, torchvision, numpy, fvcore, ...)"
pip_quiet install --upgrade "pip>=24" "uv==$UV_VERSION"
uv_install -r requirements.txt

if "$PY" -c "import detectron2.modeling, detectron2.engine" 2>/dev/null; then
  step "detectron2 already importable: $("$PY" -c 'import detectron2; print(detectron2.__version__, detectron2.__file__)')"
elif [ "$D2_MODE" = "git" ]; then
  step "building detectron2 from the official source (LUMINET_D2=git)"
  "$PY" -m pip install --no-build-isolation "git+https://github.com/facebookresearch/detectron2.git"
else
  step "re-packing PyPI sal-detectron2==$D2_WHEEL_VERSION as a pure-Python wheel (README: How detectron2 gets installed)"
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
  pip_quiet download --no-deps --only-binary=:all: --python-version 3.10 \
    -d "$WORK/dl" "sal-detectron2==$D2_WHEEL_VERSION"
  WHL="$(ls "$WORK"/dl/sal_detectron2-*.whl)"
  "$PY" -m wheel unpack --dest "$WORK/unpacked" "$WHL" >/dev/null
  SRC="$(ls -d "$WORK"/unpacked/sal_detectron2-*)"
  rm -f "$SRC"/detectron2/_C*.so
  WHEEL_META="$(ls "$SRC"/*.dist-info/WHEEL)"
  # exactly one Tag line, replaced in place (the file ends with a blank line: no appending)
  sed -i -e 's/^Root-Is-Purelib:.*/Root-Is-Purelib: true/' -e 's/^Tag:.*/Tag: py3-none-any/' \
    "$WHEEL_META"
  mkdir -p "$WORK/packed"
  "$PY" -m wheel pack --dest-dir "$WORK/packed" "$SRC" >/dev/null
  step "installing $(basename "$(ls "$WORK"/packed/*.whl)") with its runtime dependencies"
  uv_install "$WORK"/packed/*.whl -r requirements.txt
fi

step "installing luminet_det in editable mode"
uv_install --no-deps --no-build-isolation -e .

step "checking the environment"
"$PY" - <<'PYCHECK'
import torch, torchvision, detectron2, luminet_det
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"detectron2 {detectron2.__version__}, luminet_det {luminet_det.__version__}")
PYCHECK
touch "$STAMP"
echo "[setup] done in $(( $(date +%s) - T0 )) s"
