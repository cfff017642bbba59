"""A frozen copy of a model (:func:`frozen_copy`): eval mode, no gradient, computing with its own weights.

Used for p_base by the selective strategies and by the curriculum's rolling frozen model
(:mod:`trl_ext.curriculum.difficulty`).
"""

from __future__ import annotations

import copy

import torch

__all__ = ["frozen_copy"]


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen (eval, no-grad) deep copy of ``model`` that computes with its own weights.

    TRL's ``add_fused_lm_head`` (applied by ``SFTTrainer``/``DPOTrainer`` at construction) replaces the instance's
    ``forward`` by a closure over the *original bound* ``forward``; ``copy.deepcopy`` copies the closure by reference,
    so the copy's non-fused forward would silently run the live model. The instance attribute is dropped, so the copy
    uses its class's ``forward`` (plain logits), on its own weights.
    """
    frozen = copy.deepcopy(model)
    frozen.__dict__.pop("forward", None)
    return frozen.eval().requires_grad_(False)
