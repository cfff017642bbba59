"""The learned ``log Z`` of the trajectory-balance loss, one per prompt (docs/diversity.md, "loss_type='tb'").

``log Z_x`` is the log-partition function of prompt ``x``; trajectory balance drives it to
``log Σ_y R(x, y)``. It is learned by Adam on the gradient ``g = ∂L_TB/∂ log Z_x`` of the whole generation batch
(computed by the trainer from the gathered batch, so it is the same on every process), with its own learning rate
(GFlowNet practice: ``log Z`` moves faster than the policy) and no schedule:

    m ← β₁ m + (1 − β₁) g,   v ← β₂ v + (1 − β₂) g²,   log Z ← log Z − lr · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)

with a step count ``t`` per prompt. A prompt seen for the first time starts at ``t = 0`` with ``log Z = init``, or,
with ``init=None`` (the default of :class:`~trl_ext.diversity.config.DiversityConfig`), with the value that minimises
trajectory balance on its first batch, ``log Z = mean_i (log R_i − Σ_t log p_θ(y_{i,t}))`` (:meth:`initialize`):
with 30-token completions ``Σ_t log p`` is around −100, and a start at 0 would spend the first hundreds of steps
moving ``log Z`` while the policy receives the large, uninformative gradient of that offset.
The state is plain numbers (JSON in checkpoints); no process communicates, and every process holds the same values.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["LogPartition"]


class LogPartition:
    """``log Z`` per prompt key with its Adam state.

    Args:
        lr: Adam learning rate. betas, eps: Adam's.
        init: ``log Z`` of a prompt seen for the first time.
    """

    def __init__(
        self, lr: float = 1e-2, init: float | None = None, betas: tuple[float, float] = (0.9, 0.999), eps=1e-8
    ):
        self.lr, self.betas, self.eps = float(lr), tuple(betas), float(eps)
        self.init = None if init is None else float(init)
        self.keys: list[str] = []
        self.values: list[float | None] = []
        self._m: list[float] = []
        self._v: list[float] = []
        self._t: list[int] = []

    def index(self, key: str) -> int:
        """The index of ``key`` (added with ``init`` when new)."""
        try:
            return self.keys.index(key)
        except ValueError:
            self.keys.append(key)
            self.values.append(self.init)
            self._m.append(0.0)
            self._v.append(0.0)
            self._t.append(0)
            return len(self.keys) - 1

    def needs_init(self, i: int) -> bool:
        """Whether prompt ``i`` still waits for its first-batch value (``init=None``)."""
        return self.values[i] is None

    def initialize(self, i: int, value: float) -> None:
        """Set the starting ``log Z`` of prompt ``i`` (only before its first step)."""
        if self._t[i] != 0:
            raise ValueError(f"log Z of prompt {i} was already trained; it cannot be initialised again")
        self.values[i] = float(value)

    def tensor(self, indices: list[int], device: Any = None) -> torch.Tensor:
        """``(len(indices),)`` float32 ``log Z`` of those prompts."""
        return torch.tensor([self.values[i] for i in indices], dtype=torch.float32, device=device)

    def step(self, indices: list[int], grads: torch.Tensor) -> None:
        """One Adam step of the prompts ``indices`` with their gradients ``grads`` (same order)."""
        b1, b2 = self.betas
        for i, g in zip(indices, grads.detach().double().cpu().tolist()):
            self._t[i] += 1
            self._m[i] = b1 * self._m[i] + (1 - b1) * g
            self._v[i] = b2 * self._v[i] + (1 - b2) * g * g
            m_hat = self._m[i] / (1 - b1 ** self._t[i])
            v_hat = self._v[i] / (1 - b2 ** self._t[i])
            self.values[i] -= self.lr * m_hat / (math.sqrt(v_hat) + self.eps)

    def state_dict(self) -> dict[str, Any]:
        return {
            "keys": list(self.keys),
            "values": list(self.values),
            "m": list(self._m),
            "v": list(self._v),
            "t": list(self._t),
            "lr": self.lr,
            "init": self.init,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.keys = list(state["keys"])
        self.values = [None if x is None else float(x) for x in state["values"]]
        self._m = [float(x) for x in state["m"]]
        self._v = [float(x) for x in state["v"]]
        self._t = [int(x) for x in state["t"]]
