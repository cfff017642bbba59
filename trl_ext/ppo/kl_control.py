"""KL-penalty coefficient controllers for PPO (docs/ppo.md): fixed, or adaptive as in Ziegler et al. (2019).

The coefficient is ``controller.value``; the trainer calls ``controller.update(current_kl, n_steps)`` once per
rollout batch with the batch's mean (sequence-level) KL and the number of samples/steps it covered, and
checkpoints ``state_dict()`` (plain floats) next to the optimizer state.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["AdaptiveKLController", "FixedKLController", "KLController", "make_kl_controller"]


def _to_float(x: Any, name: str) -> float:
    if hasattr(x, "item"):  # 0-dim tensors / numpy scalars
        x = x.item()
    try:
        value = float(x)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a real number, got {x!r}") from err
    return value


def _check_coef(value: float, name: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


class KLController:
    """Base class: ``value`` is the current KL coefficient."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, float]:
        return {"value": float(self.value)}

    def load_state_dict(self, state: dict[str, float]) -> None:
        if "value" not in state:
            raise ValueError(f"{type(self).__name__}.load_state_dict: missing key 'value' in {sorted(state)}")
        self.value = _check_coef(_to_float(state["value"], "value"), "value")

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.state_dict().items())
        return f"{type(self).__name__}({fields})"


class FixedKLController(KLController):
    """Constant coefficient: ``update`` does nothing."""

    def __init__(self, kl_coef: float):
        self.value = _check_coef(_to_float(kl_coef, "kl_coef"), "kl_coef")

    def update(self, current_kl: float, n_steps: int) -> None:
        return None


class AdaptiveKLController(KLController):
    """Adaptive coefficient (Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences").

    ``update(current_kl, n_steps)``::

        e = clip(current_kl / target − 1, −0.2, 0.2)
        value ← value · (1 + e · n_steps / horizon)

    so the coefficient grows when the KL is above ``target`` and shrinks below it, by at most 20 % per
    ``horizon`` steps. ``state_dict()`` holds ``value``, ``target`` and ``horizon``; ``load_state_dict`` restores
    ``value`` and, when present, ``target`` and ``horizon`` (so a resumed run continues exactly).
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        self.value = _check_coef(_to_float(init_kl_coef, "init_kl_coef"), "init_kl_coef")
        self.target = self._check_positive(target, "target")
        self.horizon = self._check_positive(horizon, "horizon")

    @staticmethod
    def _check_positive(x: Any, name: str) -> float:
        value = _to_float(x, name)
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {value}")
        return value

    def update(self, current_kl: float, n_steps: int) -> None:
        kl = _to_float(current_kl, "current_kl")
        if not math.isfinite(kl):
            raise ValueError(f"current_kl must be finite, got {kl}; refusing to corrupt the KL coefficient")
        n = _to_float(n_steps, "n_steps")
        if n < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}")
        proportional_error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.value = self.value * (1.0 + proportional_error * n / self.horizon)

    def state_dict(self) -> dict[str, float]:
        return {"value": float(self.value), "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        super().load_state_dict(state)
        if "target" in state:
            self.target = self._check_positive(state["target"], "target")
        if "horizon" in state:
            self.horizon = self._check_positive(state["horizon"], "horizon")


def make_kl_controller(
    kl_coef: float, adaptive: bool = False, target_kl: float | None = None, horizon: float | None = None
) -> KLController:
    """``AdaptiveKLController(kl_coef, target_kl, horizon)`` if ``adaptive`` else ``FixedKLController(kl_coef)``.

    ``target_kl`` and ``horizon`` are required (``ValueError`` otherwise) when ``adaptive`` and ignored when not.
    """
    if not adaptive:
        return FixedKLController(kl_coef)
    missing = [name for name, v in (("target_kl", target_kl), ("horizon", horizon)) if v is None]
    if missing:
        raise ValueError(f"adaptive KL control needs {' and '.join(missing)}")
    return AdaptiveKLController(kl_coef, target_kl, horizon)
