"""Learning-rate schedules with warm-up that decay to a final learning rate instead of 0 (docs/diversity.md).

With ``r = final_learning_rate / learning_rate``, ``W`` warm-up steps and ``N`` training steps, the factor applied to
the base learning rate at step ``s`` is

* warm-up (``s < W``): ``s / W`` (from 0 up to the base rate, as transformers' schedules);
* then, with progress ``p = (s − W) / max(1, N − W)`` clipped to [0, 1]:
  ``cosine``: ``r + (1 − r) · (1 + cos(π p)) / 2``; ``linear``: ``r + (1 − r) · (1 − p)``; ``constant``: ``1``.

At ``s = N`` cosine and linear reach exactly ``r`` (the final learning rate). ``constant`` keeps the base rate
after warm-up (the final learning rate does not apply to it).
"""

from __future__ import annotations

import math
from functools import partial

from trl_ext.common.errors import ConfigError, UnknownNameError

__all__ = ["FLOOR_SCHEDULES", "floor_schedule", "floor_schedule_factor"]

FLOOR_SCHEDULES = ("cosine", "linear", "constant")


def floor_schedule_factor(step: int, kind: str, warmup_steps: int, total_steps: int, final_ratio: float) -> float:
    """The multiplier of the base learning rate at ``step`` (see the module docstring)."""
    if warmup_steps > 0 and step < warmup_steps:
        return step / warmup_steps
    if kind == "constant":
        return 1.0
    progress = min(1.0, max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    if kind == "cosine":
        return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return final_ratio + (1.0 - final_ratio) * (1.0 - progress)


def floor_schedule(optimizer, kind: str, warmup_steps: int, total_steps: int, final_ratio: float):
    """A ``LambdaLR`` over ``optimizer`` following :func:`floor_schedule_factor` (every parameter group).

    Raises:
        UnknownNameError: ``kind`` is not one of :data:`FLOOR_SCHEDULES`.
        ConfigError: ``final_ratio`` outside [0, 1], negative ``warmup_steps`` or ``total_steps < 1``.
    """
    from torch.optim.lr_scheduler import LambdaLR

    if kind not in FLOOR_SCHEDULES:
        raise UnknownNameError(f"lr_scheduler_type {kind!r} has no final learning rate; use one of {FLOOR_SCHEDULES}")
    if not 0.0 <= final_ratio <= 1.0:
        raise ConfigError(f"final_learning_rate / learning_rate must be in [0, 1], got {final_ratio:g}")
    if warmup_steps < 0 or total_steps < 1:
        raise ConfigError(f"need warmup_steps >= 0 and total steps >= 1, got {warmup_steps} and {total_steps}")
    return LambdaLR(
        optimizer,
        partial(
            floor_schedule_factor,
            kind=kind,
            warmup_steps=warmup_steps,
            total_steps=total_steps,
            final_ratio=final_ratio,
        ),
    )
