"""One registry from strategy names to trainer classes, for config-driven runs and sweeps."""

from __future__ import annotations

import inspect
from functools import cache

from trl_ext.selective.config import STRATEGIES, check_strategy

PLAIN_TRAINERS = ("ppo", "sft")
"""Trainers without a selective strategy."""
TRAINERS = PLAIN_TRAINERS + STRATEGIES
"""Every name :func:`get_trainer` knows."""
BASES = ("sft", "dpo", "ppo")
"""Host trainers of the selective strategies: SFT (default), DPO and PPO."""


def get_trainer(name: str, base: str | None = None) -> type:
    """The trainer class for ``name``: ``"ppo"``, ``"sft"`` or one of the twelve selective strategies.

    A strategy name returns a subclass of the selective trainer on ``base``: ``"sft"`` (default)
    :class:`~trl_ext.selective.sft.SelectiveSFTTrainer`, ``"dpo"``
    :class:`~trl_ext.selective.dpo.SelectiveDPOTrainer` or ``"ppo"``
    :class:`~trl_ext.selective.ppo.SelectivePPOTrainer`. Its config must select that strategy
    (e.g. ``SelectiveDPOConfig(strategy=name)``), so a sweep can build the trainer from the name alone. The same
    ``(name, base)`` always returns the same class.

    Raises:
        ValueError: an unknown name or base (listing the known ones), ``base`` given for a plain trainer, or a
            strategy the base cannot run (``naive`` on PPO).
    """
    if base is not None and base not in BASES:
        raise ValueError(f"unknown base trainer {base!r}; known: {', '.join(BASES)}")
    if name in PLAIN_TRAINERS:
        if base is not None:
            raise ValueError(
                f"{name!r} is a plain trainer: base= applies only to the selective strategies "
                f"({', '.join(STRATEGIES)})"
            )
        return _plain_trainer(name)
    if name not in STRATEGIES:
        raise ValueError(f"unknown trainer {name!r}; known: {', '.join(TRAINERS)}")
    return _strategy_trainer(check_strategy(name), base or "sft")


def _plain_trainer(name: str) -> type:
    if name == "ppo":
        from trl_ext.ppo.trainer import PPOTrainer

        return PPOTrainer
    from trl import SFTTrainer

    return SFTTrainer


def _host(base: str) -> tuple[type, type]:
    """(selective trainer, its config class) of ``base``."""
    if base == "dpo":
        from trl_ext.selective.config import SelectiveDPOConfig
        from trl_ext.selective.dpo import SelectiveDPOTrainer

        return SelectiveDPOTrainer, SelectiveDPOConfig
    if base == "ppo":
        from trl_ext.selective.ppo import SelectivePPOConfig, SelectivePPOTrainer

        return SelectivePPOTrainer, SelectivePPOConfig
    from trl_ext.selective.config import SelectiveConfig
    from trl_ext.selective.sft import SelectiveSFTTrainer

    return SelectiveSFTTrainer, SelectiveConfig


@cache
def _strategy_trainer(name: str, base: str) -> type:
    """A subclass of the ``base`` host that checks ``args.strategy == name``; cached per ``(name, base)``."""
    host, config_class = _host(base)
    unsupported = config_class._unsupported_strategies
    if name in unsupported:
        raise ValueError(f"strategy {name!r} is not available on base {base!r}: {unsupported[name]}")
    signature = inspect.signature(host.__init__)

    def __init__(self, *args, **kwargs):
        bound = signature.bind_partial(self, *args, **kwargs).arguments
        config = bound.get("args")
        if config is not None and getattr(config, "strategy", name) != name:
            raise ValueError(f"{cls.__name__} runs strategy {name!r}, but args.strategy is {config.strategy!r}")
        host.__init__(self, *args, **kwargs)

    camel = "".join(part.capitalize() for part in name.split("_"))
    suffix = "" if base == "sft" else base.upper()
    cls = type(f"{camel}{suffix}Trainer", (host,), {"__init__": __init__, "strategy": name, "__module__": __name__})
    return cls
