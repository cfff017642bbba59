"""One registry from strategy names to trainer classes, for config-driven runs and sweeps."""

from __future__ import annotations

from functools import cache

from trl_ext.trainers.selective_config import STRATEGIES, check_strategy

TRAINERS = ("ppo", "sft") + STRATEGIES
"""Every name :func:`get_trainer` knows."""


@cache
def get_trainer(name: str) -> type:
    """The trainer class for ``name``: ``"ppo"``, ``"sft"`` or one of the twelve selective strategies.

    A strategy name returns a :class:`~trl_ext.trainers.selective_trainer.SelectiveSFTTrainer` subclass whose
    config must select that strategy (``SelectiveConfig(strategy=name)``), so a sweep can build the trainer from
    the name alone. An unknown name raises ``ValueError`` listing the known ones.
    """
    if name == "ppo":
        from trl_ext.trainers.ppo_trainer import PPOTrainer

        return PPOTrainer
    if name == "sft":
        from trl import SFTTrainer

        return SFTTrainer
    if name not in STRATEGIES:
        raise ValueError(f"unknown trainer {name!r}; known: {', '.join(TRAINERS)}")
    check_strategy(name)
    from trl_ext.trainers.selective_trainer import SelectiveSFTTrainer

    def __init__(self, *args, **kwargs):
        config = kwargs.get("args")
        if config is not None and getattr(config, "strategy", name) != name:
            raise ValueError(f"{cls.__name__} runs strategy {name!r}, but args.strategy is {config.strategy!r}")
        SelectiveSFTTrainer.__init__(self, *args, **kwargs)

    camel = "".join(part.capitalize() for part in name.split("_"))
    cls = type(f"{camel}Trainer", (SelectiveSFTTrainer,), {"__init__": __init__, "strategy": name})
    return cls
