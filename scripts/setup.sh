#!/usr/bin/env bash
# Sets up a virtual environment in .venv with mlpl and its extras.
# The local CPU build of torch is installed first where the machine offers one, so that
# resolving `torch` never pulls a multi-GB CUDA build (see README, "Installing").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS=${MLPL_EXTRAS:-dev,demo}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
  if pip install -q "torch==${MLPL_TORCH_VERSION:-2.13.0}" 2>/dev/null; then
    echo "[setup] installed torch $(python -c 'import torch; print(torch.__version__)')"
  else
    echo "[setup] no local torch ${MLPL_TORCH_VERSION:-2.13.0} build offered; pip will resolve torch itself"
  fi
fi
# The versions the last clean-clone CI run passed with, for this Python (constraints/tested-py311.txt says why);
# MLPL_CONSTRAINTS= (empty) resolves the newest releases instead, MLPL_CONSTRAINTS=FILE uses another file.
CONSTRAINTS=${MLPL_CONSTRAINTS-constraints/tested-py$(python -c 'import sys; print("%d%d" % sys.version_info[:2])').txt}
if [ -n "$CONSTRAINTS" ] && [ -f "$CONSTRAINTS" ]; then
  echo "[setup] installing with the tested versions of $CONSTRAINTS"
  CONSTRAINT_ARGS=(-c "$CONSTRAINTS")
else
  [ -n "$CONSTRAINTS" ] && echo "[setup] no $CONSTRAINTS for this Python; pip resolves the newest releases the ranges admit"
  CONSTRAINT_ARGS=()
fi
pip install -q "${CONSTRAINT_ARGS[@]}" -e ".[${EXTRAS}]" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
python -c "import modeling_mlpl, mlpl, torch, transformers; print('[setup] mlpl ready: torch', torch.__version__, '| transformers', transformers.__version__)"
