#!/usr/bin/env bash
# Refresh requirements/dev-lock.txt: resolve the newest versions that pyproject.toml allows, for every extra that
# scripts/setup.sh installs, on CPython 3.11 / Linux x86_64, with the CPU build of torch 2.13.0, and write them with
# their sha256 hashes. Then run `bash scripts/setup.sh && .venv/bin/python -m pytest -q -n 2 --dist loadfile` and commit the lock.
#
#   bash scripts/lock.sh                          upgrade everything to the newest allowed versions
#   bash scripts/lock.sh --upgrade-package trl    move only trl (any flag is passed to `uv pip compile`)
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_WHEELS=${TORCH_WHEELS:-/opt/wheels}
command -v uv >/dev/null 2>&1 || { echo "lock.sh: needs uv (bash scripts/setup.sh installs it)" >&2; exit 2; }
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--upgrade)
# uv keeps the versions pinned in its output file unless told to upgrade them: start from the current lock
cp requirements/dev-lock.txt requirements/dev-lock.txt.body
uv pip compile pyproject.toml \
  --extra dev --extra deepspeed --extra quantization --extra wandb --extra tensorboard \
  --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  --find-links "$TORCH_WHEELS" --constraint requirements/torch-cpu.txt \
  --generate-hashes --no-header --quiet \
  "${args[@]}" -o requirements/dev-lock.txt.body >/dev/null
{
  echo "# The locked development and CI environment of trl-ext: every package that scripts/setup.sh installs, with"
  echo "# hashes, for CPython 3.11 on Linux x86_64 (torch: the CPU wheel 2.13.0+cpu). Written by scripts/lock.sh;"
  echo "# do not edit by hand. The package's own requirements stay ranges in pyproject.toml."
  cat requirements/dev-lock.txt.body
} >requirements/dev-lock.txt
rm requirements/dev-lock.txt.body
echo "lock.sh: wrote requirements/dev-lock.txt ($(grep -c '^[a-z0-9].*==' requirements/dev-lock.txt) packages)"
