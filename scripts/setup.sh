#!/usr/bin/env bash
# Set up a development environment in .venv: the CPU build of torch, then trl-ext (editable) with every extra.
# Idempotent: a second run only installs what changed. Override the torch requirement with TORCH_SPEC=...
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v uv >/dev/null 2>&1; then
  "$PY" -m pip install --quiet uv
fi
UV=$(command -v uv || echo "$PY -m uv")
[ -x .venv/bin/python ] || $UV venv --quiet -p "$PY" .venv
# A bare `torch` resolves to a multi-GB CUDA build: pin the CPU wheel when the machine ships one.
if [ -n "${TORCH_SPEC:-}" ]; then
  torch_args=("$TORCH_SPEC")
elif compgen -G "/opt/wheels/torch-2.13.0+cpu-*.whl" >/dev/null; then
  torch_args=(--find-links /opt/wheels "torch==2.13.0+cpu")
else
  torch_args=("torch==2.13.0")
fi
$UV pip install --quiet --python .venv/bin/python --compile-bytecode "${torch_args[@]}" \
  -e ".[dev,deepspeed,quantization,wandb,tensorboard]"
