"""The curriculum family's couplings to TRL and transformers internals (checked by ``tests/test_trl_compat.py``).

* ``train_sampler_hook``: ``transformers.Trainer._get_train_sampler(train_dataset)`` (GRPO's: ``dataset``) builds
  the sampler of the train dataloader; the curriculum trainers return their :class:`CurriculumSampler` there;
* ``grpo_repeat_layout``: ``trl.GRPOTrainer._get_train_sampler`` draws with ``RepeatSampler(mini_repeat_count=
  num_generations, batch_size=generation_batch_size // num_generations, repeat_count=num_iterations ·
  steps_per_generation)``; the curriculum sampler reproduces that layout (:func:`grpo_repeat_structure`) so that
  prompt groups and reused rollouts stay intact.
"""

from __future__ import annotations

import inspect
from typing import Any

from trl_ext.common._trl_compat import Coupling, TRLCouplingError, require_source

__all__ = ["COUPLINGS", "grpo_repeat_structure"]


def grpo_repeat_structure(trainer: Any) -> dict[str, int]:
    """The ``RepeatSampler`` layout of a GRPO-based trainer, as keyword arguments of ``CurriculumSampler``."""
    return {
        "mini_repeat_count": trainer.num_generations,
        "batch_size": trainer.args.generation_batch_size // trainer.num_generations,
        "repeat_count": trainer.num_iterations * trainer.args.steps_per_generation,
    }


def _check_sampler_hook() -> None:
    from transformers import Trainer
    from trl import GRPOTrainer

    # one dataset argument (``train_dataset`` in transformers, ``dataset`` in GRPO), passed positionally
    for host in (Trainer, GRPOTrainer):
        params = list(inspect.signature(host._get_train_sampler).parameters)[1:]
        if len(params) != 1:
            raise TRLCouplingError(f"train_sampler_hook: {host.__name__}._get_train_sampler takes {params}")
    require_source("train_sampler_hook", Trainer, (r"sampler_fn=self\._get_train_sampler", r"sampler_fn\(dataset\)"))


def _check_repeat_layout() -> None:
    from trl import GRPOTrainer

    require_source(
        "grpo_repeat_layout",
        GRPOTrainer._get_train_sampler,
        (
            r"RepeatSampler\(",
            r"mini_repeat_count\s*=\s*self\.num_generations",
            r"batch_size\s*=\s*self\.args\.generation_batch_size\s*//\s*self\.num_generations",
            r"repeat_count\s*=\s*self\.num_iterations\s*\*\s*self\.args\.steps_per_generation",
        ),
    )


COUPLINGS = (
    Coupling("train_sampler_hook", "transformers.Trainer._get_train_sampler", _check_sampler_hook),
    Coupling("grpo_repeat_layout", "trl.GRPOTrainer._get_train_sampler (RepeatSampler)", _check_repeat_layout),
)
