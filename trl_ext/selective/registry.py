"""The one registry of selective strategies, and of the trainer classes that run them.

A strategy is a name and a function ``args -> list[Mechanism]`` (:mod:`trl_ext.selective.mechanisms`): its extra
loss terms, gradient surgery and weight edits, built with the weights of the config. The twelve strategies of
``docs/selective.md`` are registered here; :func:`register_strategy` adds one from the user's own code, without
editing the package, and every host (SFT, DPO, PPO), :func:`get_trainer`, the recipe and the sweeps then accept
its name::

    from trl_ext.selective import Mechanism, register_strategy

    class L2Pull(Mechanism):
        name = "l2_pull"

        def __init__(self, weight):
            self.weight = weight

        def loss(self, host, model, inputs):
            return {"l2_pull": self.weight * sum((p**2).sum() for p in host.trainable_parameters().values())}

    register_strategy("l2_pull", lambda args: [L2Pull(1e-3)])

Two built-in names are also handled by the hosts themselves: ``naive`` (the host trains on the union of the
outcome and proxy data) and ``safe_lora`` (a SafeLoRA projection at the end of training).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from trl_ext.common.errors import UnknownNameError
from trl_ext.selective.config import STRATEGIES
from trl_ext.selective.mechanisms import (
    EndSteering,
    GradientProjection,
    GradientSteering,
    Mechanism,
    PlanePenalty,
    PrecomputedProjection,
    ProxyCE,
    ProxyDPO,
    ProxyKL,
    RepresentationConstraint,
)

__all__ = [
    "BASES",
    "PLAIN_TRAINERS",
    "Strategy",
    "available_strategies",
    "build_mechanisms",
    "get_strategy",
    "get_trainer",
    "register_strategy",
    "unregister_strategy",
]

PLAIN_TRAINERS = ("ppo", "sft")
"""Trainers without a selective strategy."""
BASES = ("sft", "dpo", "ppo")
"""Host trainers of the selective strategies: SFT (default), DPO and PPO."""

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Strategy:
    """A registered strategy: its ``name``, the ``build`` function ``args -> list[Mechanism]`` and a one-line
    ``description``."""

    name: str
    build: Callable[[Any], list[Mechanism]]
    description: str = ""


_REGISTRY: dict[str, Strategy] = {}


def register_strategy(
    name: str,
    build: Callable[[Any], list[Mechanism]] | None = None,
    *,
    description: str = "",
    overwrite: bool = False,
):
    """Register strategy ``name``, built by ``build(args) -> list[Mechanism]`` (``args``: the trainer's config).

    Usable as a call (``register_strategy("mine", build)``) or a decorator (``@register_strategy("mine")``); returns
    ``build``. Afterwards ``Selective*Config(strategy=name)``, :func:`get_trainer` and the recipes accept the name.

    Raises:
        ValueError: a name that is not lower-case ``snake_case``, the name of a plain trainer (``ppo``, ``sft``), or
            a name already registered (pass ``overwrite=True`` to replace a strategy of your own; the built-in
            ones cannot be replaced).
        TypeError: ``build`` is not callable.
    """

    def decorate(function: Callable[[Any], list[Mechanism]]) -> Callable[[Any], list[Mechanism]]:
        if not callable(function):
            raise TypeError(f"register_strategy({name!r}): build must be callable, got {type(function).__name__}")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"strategy name must be lower-case snake_case (e.g. 'my_strategy'), got {name!r}")
        if name in PLAIN_TRAINERS:
            raise ValueError(f"{name!r} is the name of a plain trainer; choose another strategy name")
        if name in _REGISTRY and (not overwrite or name in STRATEGIES):
            what = "a built-in strategy" if name in STRATEGIES else "already registered (pass overwrite=True)"
            raise ValueError(f"strategy {name!r} is {what}")
        _REGISTRY[name] = Strategy(name, function, description)
        _strategy_trainer.cache_clear()
        return function

    return decorate if build is None else decorate(build)


def unregister_strategy(name: str) -> None:
    """Remove a strategy added with :func:`register_strategy` (built-in ones stay)."""
    if name in STRATEGIES:
        raise ValueError(f"strategy {name!r} is built in and cannot be unregistered")
    get_strategy(name)
    del _REGISTRY[name]
    _strategy_trainer.cache_clear()


def available_strategies() -> tuple[str, ...]:
    """Every registered strategy: the twelve built-in ones in their document order, then the user's."""
    return tuple(_REGISTRY)


def get_strategy(name: str) -> Strategy:
    """The registered strategy ``name``; ``ValueError`` listing the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownNameError(f"unknown strategy {name!r}; known strategies: {', '.join(_REGISTRY)}") from None


def build_mechanisms(args: Any) -> list[Mechanism]:
    """The mechanisms of ``args.strategy``, with the weights of ``args`` (a ``Selective*Config``)."""
    mechanisms = list(get_strategy(args.strategy).build(args))
    bad = [m for m in mechanisms if not isinstance(m, Mechanism)]
    if bad:
        raise TypeError(f"strategy {args.strategy!r} built {bad!r}: every item must be a trl_ext Mechanism")
    return mechanisms


# ---------------------------------------------------------------------- the twelve strategies of docs/selective.md


def _positive_negative_proxy(args: Any) -> list[Mechanism]:
    mechanisms: list[Mechanism] = [ProxyCE("positive", args.lambda_proxy)]
    if args.beta_kl:
        mechanisms.append(ProxyKL(args.lambda_proxy * args.beta_kl))
    if args.lambda_negative:
        mechanisms.append(ProxyCE("negative", args.lambda_negative, sign=-1.0))
    return mechanisms


_BUILTIN: dict[str, tuple[Callable[[Any], list[Mechanism]], str]] = {
    "naive": (lambda args: [], "CE on the shuffled union of T and A⁺ (the host builds the union)"),
    "positive_negative_proxy": (_positive_negative_proxy, "CE(T) + λ_p·[CE(A⁺) + β_kl·KL(A⁺)] − λ_n·CE(A⁻)"),
    "kl_divergence": (lambda args: [ProxyKL(args.beta_kl)], "CE(T) + β_kl·KL(p_θ‖p_base) on A⁺"),
    "representation_constraint": (
        lambda args: [RepresentationConstraint(args.beta_representation)],
        "CE(T) + β·Σ_l MSE(h_θ^l, h_base^l) on A⁺",
    ),
    "dpo": (lambda args: [ProxyDPO(args.lambda_dpo, args.dpo_beta)], "CE(T) + λ_dpo·DPO on pairs (A⁺[i], A⁻[i])"),
    "grad_project": (
        lambda args: [GradientProjection(args.grad_project_strict, args.grad_project_source)],
        "g_T minus its component along g_A, per tensor",
    ),
    "grad_project_precomputed_proxy_grad": (
        lambda args: [PrecomputedProjection()],
        "g minus its component along a cached mean proxy gradient",
    ),
    "orth_penalty": (lambda args: [PlanePenalty(args.lambda_plane, "orth")], "CE(T) + λ₁·Σ|A·S_Aᵀ|"),
    "directional_penalty": (lambda args: [PlanePenalty(args.lambda_plane, "directional")], "CE(T) − λ₁·Σ A·S_Aᵀ"),
    "steering_weights": (
        lambda args: [
            GradientSteering(
                args.steering_alpha, args.final_steering_alpha, args.alpha_warmup_steps, args.direct_steering
            )
        ],
        "g ← g + α·S before every optimizer step (or θ ← θ − lr·α·S after it)",
    ),
    "steering_weights_add_alignment_plane": (
        lambda args: [EndSteering(args.steering_alpha)],
        "θ ← θ − α·S once at the end of training",
    ),
    "safe_lora": (lambda args: [], "SafeLoRA projection of the outcome LoRA at the end (a callback)"),
}
assert tuple(_BUILTIN) == STRATEGIES
for _name, (_build, _description) in _BUILTIN.items():
    _REGISTRY[_name] = Strategy(_name, _build, _description)


# ---------------------------------------------------------------------- trainer classes by name


def get_trainer(name: str, base: str | None = None) -> type:
    """The trainer class for ``name``: ``"ppo"``, ``"sft"`` or a registered selective strategy.

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
        raise UnknownNameError(f"unknown base trainer {base!r}; known: {', '.join(BASES)}")
    if name in PLAIN_TRAINERS:
        if base is not None:
            raise ValueError(
                f"{name!r} is a plain trainer: base= applies only to the selective strategies "
                f"({', '.join(available_strategies())})"
            )
        return _plain_trainer(name)
    if name not in _REGISTRY:
        raise UnknownNameError(
            f"unknown trainer {name!r}; known: {', '.join(PLAIN_TRAINERS + available_strategies())}"
        )
    return _strategy_trainer(name, base or "sft")


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
