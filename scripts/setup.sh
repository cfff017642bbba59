#!/usr/bin/env bash
# Set up the development environment in .venv.
#
#   bash scripts/setup.sh            exactly the versions of requirements/dev-lock.txt, hash-checked (what CI runs)
#   bash scripts/setup.sh --latest   the newest versions that pyproject.toml allows (also: TRL_EXT_LATEST=1), to
#                                    check a new release of a dependency before the lock is refreshed
#
# Both install trl-ext itself in editable mode with every extra. torch is the CPU build 2.13.0 from the local wheel
# folder (TORCH_WHEELS, default /opt/wheels) when the machine ships one: a bare `torch` requirement would pull a
# multi-GB CUDA build. TORCH_SPEC=... installs another torch instead (then torch alone is not hash-checked).
# Idempotent: a second run only changes what differs from the lock. Refresh the lock with scripts/lock.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=lock
[ "${TRL_EXT_LATEST:-0}" = 1 ] && mode=latest
for arg in "$@"; do
  case "$arg" in
    --latest) mode=latest ;;
    --locked) mode=lock ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (use --latest, --locked or --help)" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
LOCK=requirements/dev-lock.txt
LOCK_PYTHON=3.11  # the lock is resolved for CPython 3.11 on Linux x86_64 (scripts/lock.sh)
EXTRAS="dev,deepspeed,quantization,wandb,tensorboard"
TORCH_WHEELS=${TORCH_WHEELS:-/opt/wheels}

if ! command -v uv >/dev/null 2>&1; then
  "$PY" -m pip install --quiet "uv>=0.9"
fi
UV=$(command -v uv || echo "$PY -m uv")
[ -x .venv/bin/python ] || $UV venv --quiet -p "$PY" .venv
VENV_PY=.venv/bin/python
uvpip() { $UV pip "$1" --quiet --python "$VENV_PY" --compile-bytecode "${@:2}"; }

local_torch=0
if [ -z "${TORCH_SPEC:-}" ] && compgen -G "$TORCH_WHEELS/torch-2.13.0+cpu-*.whl" >/dev/null; then
  local_torch=1
fi

if [ "$mode" = lock ]; then
  have=$("$VENV_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ "$have" != "$LOCK_PYTHON" ]; then
    echo "setup.sh: $LOCK is resolved for Python $LOCK_PYTHON, .venv has Python $have." >&2
    echo "  Use PYTHON=python$LOCK_PYTHON (and remove .venv), or 'bash scripts/setup.sh --latest'." >&2
    exit 2
  fi
  if [ "$local_torch" = 1 ]; then
    # Every package, torch included, at the locked version with its hash; anything else is removed.
    uvpip sync --find-links "$TORCH_WHEELS" "$LOCK"
  else
    # The lock's torch is the CPU wheel of the local folder: lock everything else, then install the torch asked for.
    spec=${TORCH_SPEC:-torch==2.13.0}
    echo "setup.sh: no $TORCH_WHEELS/torch-2.13.0+cpu wheel (or TORCH_SPEC set): installing '$spec' without a hash" >&2
    no_torch=$(mktemp)
    trap 'rm -f "$no_torch"' EXIT
    awk '/^torch==/ {skip = 1; next} skip && /^[^ ]/ {skip = 0} !skip' "$LOCK" >"$no_torch"
    uvpip sync "$no_torch"
    read -r -a torch_args <<<"$spec"
    uvpip install "${torch_args[@]}"
  fi
  # The package itself, with the locked setuptools (no download, no unpinned build environment).
  uvpip install --no-deps --no-build-isolation -e .
else
  if [ "$local_torch" = 1 ]; then
    torch_args=(--find-links "$TORCH_WHEELS" "torch==2.13.0+cpu")
  else
    read -r -a torch_args <<<"${TORCH_SPEC:-torch==2.13.0}"
  fi
  uvpip install --upgrade "${torch_args[@]}" -e ".[$EXTRAS]"
  echo "setup.sh --latest resolved:"
  "$VENV_PY" - <<'PY'
from importlib.metadata import version

names = ["torch", "transformers", "trl", "peft", "accelerate", "datasets", "deepspeed", "sentence-transformers"]
print("  " + ", ".join(f"{n} {version(n)}" for n in names))
PY
fi
