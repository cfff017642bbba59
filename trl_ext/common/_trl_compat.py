"""Couplings of the shared mechanics to TRL internals, and the :class:`Coupling` record every family uses.

A *coupling* is a place where trl_ext relies on something TRL does not promise: a private module global, a private
method it overrides or calls, a private attribute it reads. Each family keeps its couplings in its own
``_trl_compat`` module, each one with a comment naming the TRL code, and lists them in ``COUPLINGS``;
``tests/test_trl_compat.py`` runs every :meth:`Coupling.check` and fails naming the coupling when the installed TRL
no longer has what it relies on. ``pyproject.toml`` bounds ``trl`` below the next minor release not tested.

Couplings here (checked against TRL 1.16):

* ``lm_head_tile_global``: ``trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE``, the vocabulary tile width of the
  fused LM head (the forward that ``trl.trainer.utils.add_fused_lm_head`` installs reads it at call time and hands
  it to ``_ChunkedLogProbFunction``, which keeps it for the backward), set by :mod:`trl_ext.common.lm_head_tiles`;
* ``lm_head_triton_switch``: ``trl.kernels.chunked_logprob._use_triton(device)``, whether TRL folds the tiles in its
  Triton kernel;
* ``trainer_metrics``: ``self._metrics[mode][name]`` (a ``defaultdict(list)`` per mode) of TRL's trainers, which
  ``log()`` averages and clears: extension metrics are appended there so they are logged with TRL's own.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "COUPLINGS",
    "Coupling",
    "TRLCouplingError",
    "append_metric",
    "get_tile_width",
    "metrics_of",
    "set_tile_width",
    "source_of",
    "tile_supported",
    "use_triton",
]

CHUNK_SIZE_GLOBAL = "_CHUNKED_LOGPROB_CHUNK_SIZE"


class TRLCouplingError(RuntimeError):
    """The installed TRL no longer has something a trl_ext coupling relies on."""


@dataclass(frozen=True)
class Coupling:
    """One reliance on a TRL internal: ``name``, the TRL code it depends on, and a check that raises
    :class:`TRLCouplingError` (naming the coupling) when that code changed."""

    name: str
    trl_code: str
    check_fn: Callable[[], None]

    def check(self) -> None:
        try:
            self.check_fn()
        except TRLCouplingError as err:
            raise self.error(str(err)) from err
        except Exception as err:  # an import or attribute that moved
            raise self.error(f"{type(err).__name__}: {err}") from err

    def error(self, what: str) -> TRLCouplingError:
        import trl

        return TRLCouplingError(
            f"TRL coupling {self.name!r} ({self.trl_code}) broke with TRL {trl.__version__}: {what}"
        )


def source_of(obj: Any) -> str:
    """The source text of a TRL function or class (for checks of what it reads)."""
    return inspect.getsource(obj)


def require_params(coupling: str, function: Any, names: tuple[str, ...]) -> None:
    """Raise naming ``coupling`` unless ``function`` takes every parameter in ``names``."""
    params = inspect.signature(function).parameters
    missing = [n for n in names if n not in params]
    if missing:
        raise TRLCouplingError(
            f"{coupling}: {function.__qualname__} no longer takes {missing} (it takes {list(params)})"
        )


def require_source(coupling: str, obj: Any, patterns: tuple[str, ...]) -> None:
    """Raise naming ``coupling`` unless the source of ``obj`` matches every regular expression in ``patterns``."""
    text = source_of(obj)
    missing = [p for p in patterns if not re.search(p, text)]
    if missing:
        raise TRLCouplingError(
            f"{coupling}: {getattr(obj, '__qualname__', getattr(obj, '__name__', obj))} no longer matches {missing}"
        )


# ---------------------------------------------------------------------- the fused LM head's tile width


def _trl_utils():
    import trl.trainer.utils as trl_utils

    return trl_utils


def tile_supported() -> bool:
    """Whether the installed TRL exposes the tile width (``trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE``)."""
    return isinstance(getattr(_trl_utils(), CHUNK_SIZE_GLOBAL, None), int)


def get_tile_width() -> int:
    return getattr(_trl_utils(), CHUNK_SIZE_GLOBAL)


def set_tile_width(width: int) -> None:
    setattr(_trl_utils(), CHUNK_SIZE_GLOBAL, width)


def use_triton(device: Any) -> bool:
    """Whether TRL folds the LM-head tiles in its Triton kernel on ``device`` (CUDA/XPU with Triton)."""
    try:
        from trl.kernels.chunked_logprob import _use_triton
    except ImportError:  # another TRL layout: assume the accelerator path
        return device.type in ("cuda", "xpu")
    return bool(_use_triton(device))


def _check_tile_global() -> None:
    if not tile_supported():
        raise TRLCouplingError(f"lm_head_tile_global: trl.trainer.utils.{CHUNK_SIZE_GLOBAL} is gone or not an int")
    # read at call time by the fused forward that add_fused_lm_head installs, and passed to the autograd function
    require_source("lm_head_tile_global", _trl_utils().add_fused_lm_head, (r"Function\.apply\(", CHUNK_SIZE_GLOBAL))


def _check_triton_switch() -> None:
    from trl.kernels.chunked_logprob import _use_triton

    require_params("lm_head_triton_switch", _use_triton, ("device",))


# ---------------------------------------------------------------------- trainer metrics


def metrics_of(trainer: Any, mode: str) -> dict[str, list[float]]:
    """The host's metric lists of ``mode`` (``"train"``/``"eval"``): append to them, ``log()`` averages them."""
    return trainer._metrics[mode]


def append_metric(trainer: Any, name: str, value: float) -> None:
    """Append ``value`` to the host's metric ``name`` (averaged and cleared at its next ``log``)."""
    metrics_of(trainer, "train" if trainer.model.training else "eval")[name].append(value)


def _check_metrics() -> None:
    from trl import DPOTrainer, GRPOTrainer, SFTTrainer

    for host in (SFTTrainer, DPOTrainer, GRPOTrainer):
        require_source("trainer_metrics", host.__init__, (r"self\._metrics\s*=",))
        require_source("trainer_metrics", host.log, (r"self\._metrics\[mode\]", r"\.clear\(\)"))


COUPLINGS = (
    Coupling("lm_head_tile_global", f"trl.trainer.utils.{CHUNK_SIZE_GLOBAL}", _check_tile_global),
    Coupling("lm_head_triton_switch", "trl.kernels.chunked_logprob._use_triton", _check_triton_switch),
    Coupling("trainer_metrics", "SFTTrainer/DPOTrainer/GRPOTrainer._metrics and their log()", _check_metrics),
)
