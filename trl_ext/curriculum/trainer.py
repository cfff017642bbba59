"""Curriculum trainers: any ``transformers.Trainer`` (TRL's SFT/DPO/GRPO, trl_ext's PPO) trained over several
datasets whose sampling weights follow the auto-curriculum of docs/curriculum.md.

``train_dataset`` is a mapping ``name -> Dataset`` (or a list, named ``dataset_0``, …). The datasets are concatenated
(they must share their columns) and handed to the host, which processes them as usual; the host's train sampler is
replaced by a :class:`~trl_ext.curriculum.sampler.CurriculumSampler` (with GRPO's repetition structure for
GRPO-based hosts, so prompt groups stay intact), and a :class:`~trl_ext.curriculum.callback.CurriculumCallback`
updates its weights. Checkpoints get ``curriculum_state.json`` (weight schedule, bookkeeping, history) and
``curriculum_frozen.safetensors`` (the frozen weights), and resuming restores both, so a resumed run draws the same
batches with the same weights as an uninterrupted one.

Before the host's ``__init__`` runs (so before any model is loaded), the trainer refuses, naming what is wrong
(docs/curriculum.md, "Errors"): a config of the wrong class (an :class:`~trl_ext.common.errors.InputTypeError`, a
``TypeError``: ``args`` must combine ``CurriculumArguments`` with the host's config, e.g. ``CurriculumSFTConfig``,
unless ``curriculum_args=`` is given, then the host's plain config is enough), and datasets without the columns the
host reads (a :class:`~trl_ext.common.errors.DataError`, a ``ValueError`` naming the dataset, its columns and the
formats the host takes). At the end of ``train()`` the main process writes ``curriculum.json`` and
``curriculum_weights.png`` into ``args.output_dir`` (:class:`~trl_ext.curriculum.callback.CurriculumCallback`);
``curriculum_report_extra`` adds fields to the JSON (the SFT recipe's ``split``).

``with_curriculum(HostTrainer)`` builds the curriculum version of any other ``Trainer`` subclass.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import Trainer
from trl import DPOTrainer, GRPOTrainer, SFTTrainer

from trl_ext.common.checkpoint import ExtensionStateMixin, read_json, write_json
from trl_ext.common.errors import InputTypeError, MissingPathError
from trl_ext.common.inputs import (
    PREFERENCE_FORMATS,
    PREFERENCE_HINT,
    PROMPT_FORMATS,
    PROMPT_HINT,
    check_dataset_columns,
    check_model_argument,
    sft_formats,
)
from trl_ext.common.lm_head_tiles import LMHeadTileMixin
from trl_ext.curriculum._trl_compat import grpo_repeat_structure
from trl_ext.curriculum.callback import CurriculumCallback
from trl_ext.curriculum.config import (
    CURRICULUM_FIELDS,
    CurriculumArguments,
    CurriculumDPOConfig,
    CurriculumGRPOConfig,
    CurriculumPPOConfig,
    CurriculumSFTConfig,
    CurriculumTrainingArguments,
)
from trl_ext.curriculum.sampler import CurriculumSampler
from trl_ext.ppo.trainer import PPOTrainer

__all__ = [
    "CURRICULUM_FROZEN_FILE",
    "CURRICULUM_STATE_FILE",
    "CurriculumDPOTrainer",
    "CurriculumGRPOTrainer",
    "CurriculumMixin",
    "CurriculumPPOTrainer",
    "CurriculumSFTTrainer",
    "CurriculumTrainer",
    "with_curriculum",
]

CURRICULUM_STATE_FILE = "curriculum_state.json"
CURRICULUM_FROZEN_FILE = "curriculum_frozen.safetensors"

_HOST_CONFIGS: tuple[tuple[type, type], ...] = (
    (PPOTrainer, CurriculumPPOConfig),
    (GRPOTrainer, CurriculumGRPOConfig),
    (DPOTrainer, CurriculumDPOConfig),
    (SFTTrainer, CurriculumSFTConfig),
    (Trainer, CurriculumTrainingArguments),
)
"""(host, its curriculum config), the most derived host first (PPO's host is GRPO). The host's plain config is
the curriculum config's last base (``CurriculumSFTConfig(CurriculumArguments, ExtensionArguments, SFTConfig)``)."""


def _named_datasets(train_dataset: Any) -> dict[str, Any]:
    import datasets

    if train_dataset is None:
        raise ValueError("a curriculum trainer needs train_dataset: a mapping name -> Dataset (or a list of them)")
    if isinstance(train_dataset, Mapping):
        named = dict(train_dataset)
    elif isinstance(train_dataset, Sequence) and not isinstance(train_dataset, (str, datasets.Dataset)):
        named = {f"dataset_{i}": d for i, d in enumerate(train_dataset)}
    else:
        raise TypeError(
            f"a curriculum trainer's train_dataset must be a mapping name -> Dataset or a list of Datasets, got "
            f"{type(train_dataset).__name__}"
        )
    if not named:
        raise ValueError("train_dataset has no datasets")
    for name, data in named.items():
        if not isinstance(data, datasets.Dataset):
            raise TypeError(f"curriculum dataset {name!r} is a {type(data).__name__}; a map-style Dataset is needed")
        if len(data) == 0:
            raise ValueError(f"curriculum dataset {name!r} is empty")
    first_name, first = next(iter(named.items()))
    for name, data in named.items():
        if set(data.column_names) != set(first.column_names):
            raise ValueError(
                f"curriculum datasets must share their columns: {name!r} has {sorted(data.column_names)}, "
                f"{first_name!r} has {sorted(first.column_names)}"
            )
    return named


def _concatenate(named: Mapping[str, Any]):
    import datasets

    parts = list(named.values())
    columns = parts[0].column_names
    parts = [p.select_columns(columns) for p in parts]  # same column order everywhere
    try:
        return datasets.concatenate_datasets(parts)
    except ValueError as err:
        features = {name: str(p.features) for name, p in zip(named, parts)}
        raise ValueError(f"curriculum datasets have incompatible column types: {features}") from err


class CurriculumMixin(ExtensionStateMixin):
    """Put before the host trainer in the bases (see the module docstring).

    Extra keyword arguments:

    * ``curriculum_args`` (:class:`CurriculumArguments`): the curriculum knobs; default: the curriculum fields of
      ``args``. ``args`` must then be a config with :class:`CurriculumArguments` in its bases and the host's config
      (``CurriculumSFTConfig`` for ``CurriculumSFTTrainer``, ...); with ``curriculum_args`` the host's plain config
      (``SFTConfig``) is enough. ``args=None`` keeps the host's default config and the default knobs. Anything else
      raises :class:`~trl_ext.common.errors.InputTypeError` (a ``TypeError``) naming the class expected.
    * ``curriculum_report_extra`` (mapping): fields added to ``curriculum.json`` (e.g. the SFT recipe's ``split``);
      kept as the attribute of that name, which may also be changed before ``train()``.

    Attributes: ``curriculum_datasets`` (name -> raw dataset), ``curriculum_sampler``, ``curriculum`` (the callback),
    ``curriculum_report_extra``.
    """

    def __init__(
        self,
        *args: Any,
        train_dataset: Any = None,
        curriculum_args: CurriculumArguments | None = None,
        curriculum_report_extra: Mapping[str, Any] | None = None,
        **kw,
    ):
        config = self._host_argument("args", args, kw)
        self._check_config_class(config, curriculum_args)
        named = _named_datasets(train_dataset)
        self._check_dataset_formats(named, config, args, kw)
        # a model given as a path: resolved like the recipes' model_name_or_path ("tiny", a folder, or a clear error)
        if "model" in kw:
            kw["model"] = check_model_argument(kw["model"])
        elif args:
            args = (check_model_argument(args[0]), *args[1:])  # every host takes the model first
        self.curriculum_datasets = named
        self.curriculum_report_extra: dict[str, Any] = dict(curriculum_report_extra or {})
        super().__init__(*args, train_dataset=_concatenate(named), **kw)
        self.curriculum_args = curriculum_args if curriculum_args is not None else self._args_from_config()
        self.curriculum_args.check_curriculum_args()
        if getattr(self.args, "packing", False):
            raise ValueError("a curriculum trainer cannot pack sequences (packing=True): packing mixes datasets' rows")
        sizes = [len(d) for d in named.values()]
        if len(self.train_dataset) != sum(sizes):
            raise ValueError(
                f"the host's processing changed the number of rows ({sum(sizes)} -> {len(self.train_dataset)}); "
                "the curriculum needs one processed row per input row"
            )
        self._check_distributed_support()
        cfg = self.curriculum_args
        seed = cfg.curriculum_seed if cfg.curriculum_seed is not None else self.args.seed
        self.curriculum_sampler = CurriculumSampler(
            sizes,
            cfg.curriculum_initial_weights,
            num_samples=cfg.curriculum_epoch_size,
            seed=seed,
            names=list(named),
            **self._repeat_structure(),
        )
        self.curriculum = CurriculumCallback(self, named, self.curriculum_sampler, cfg, self.processing_class, seed)
        self.add_callback(self.curriculum)

    # ------------------------------------------------------------------ input checks (before the host's __init__)

    def _host_argument(self, name: str, args: Sequence[Any], kw: Mapping[str, Any]) -> Any:
        """The value the caller gave the host's ``__init__`` parameter ``name`` (keyword or positional), or None."""
        if name in kw:
            return kw[name]
        for klass in type(self).__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or klass is CurriculumMixin:
                continue
            params = list(inspect.signature(init).parameters.values())[1:]  # without self
            names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            if name in names:
                index = names.index(name)
                return args[index] if index < len(args) else None
        return None

    @classmethod
    def _host_configs(cls) -> tuple[type, type]:
        """(the host's plain config class, the matching curriculum config class)."""
        curriculum = next(config for host, config in _HOST_CONFIGS if issubclass(cls, host))  # every host: a Trainer
        return curriculum.__bases__[-1], curriculum

    def _check_config_class(self, config: Any, curriculum_args: CurriculumArguments | None) -> None:
        """Refuse a config the curriculum cannot read its knobs from, or one of another host (see the class)."""
        if config is None:
            return
        name = type(self).__name__
        plain, curriculum = self._host_configs()
        got = type(config).__name__
        if curriculum_args is not None:
            if not isinstance(curriculum_args, CurriculumArguments):
                raise InputTypeError(
                    f"{name}: curriculum_args must be a CurriculumArguments, got {type(curriculum_args).__name__}"
                )
            if not isinstance(config, plain):
                raise InputTypeError(
                    f"{name} needs a {plain.__name__} or a {curriculum.__name__} (got {got}) as args "
                    "(docs/curriculum.md)"
                )
            return
        if isinstance(config, CurriculumArguments) and isinstance(config, plain):
            return
        message = f"{name} needs a {curriculum.__name__} (got {got})"
        if isinstance(config, plain):  # the host's plain config: the knobs are missing
            message += (
                f": the curriculum knobs (curriculum_*, freeze_interval, difficulty_*) are fields of "
                f"{curriculum.__name__}. Pass args={curriculum.__name__}(...), or keep the {plain.__name__} and add "
                "curriculum_args=CurriculumArguments(...)"
            )
        raise InputTypeError(message + " (docs/curriculum.md)")

    def _dataset_formats(
        self, config: Any, args: Sequence[Any], kw: Mapping[str, Any]
    ) -> tuple[tuple[tuple[str, ...], ...], str] | None:
        """The column sets one of which the host reads (and a hint), or None when the host takes any columns.

        SFT (TRL's ``SFTTrainer``): the ``dataset_text_field`` column (``text``), ``messages``, ``prompt`` +
        ``completion``, ``conversations`` (ShareGPT, converted by TRL) or tokenized ``input_ids``; not checked with
        a ``formatting_func`` or ``dataset_kwargs={'skip_prepare_dataset': True}``. DPO: ``chosen`` + ``rejected``
        (with or without ``prompt``). GRPO and PPO: ``prompt``. A plain ``Trainer``: not checked (its collator
        decides).
        """
        if isinstance(self, GRPOTrainer):  # PPO's host too
            return PROMPT_FORMATS, PROMPT_HINT
        if isinstance(self, DPOTrainer):
            return PREFERENCE_FORMATS, PREFERENCE_HINT
        if isinstance(self, SFTTrainer):
            return sft_formats(config, self._host_argument("formatting_func", args, kw))
        return None

    def _check_dataset_formats(
        self, named: Mapping[str, Any], config: Any, args: Sequence[Any], kw: Mapping[str, Any]
    ) -> None:
        """Raise :class:`~trl_ext.common.errors.DataError` (a ``ValueError``) naming the first curriculum dataset
        without the columns the host reads, its columns and the formats expected (:meth:`_dataset_formats`)."""
        formats = self._dataset_formats(config, args, kw)
        if formats is None:
            return
        for name, data in named.items():
            check_dataset_columns(data, f"curriculum dataset {name!r}", formats[0], type(self).__name__, formats[1])

    # ------------------------------------------------------------------ knobs

    def _args_from_config(self) -> CurriculumArguments:
        if isinstance(self.args, CurriculumArguments):
            return CurriculumArguments(**{f: getattr(self.args, f) for f in CURRICULUM_FIELDS})
        return CurriculumArguments()

    def _repeat_structure(self) -> dict[str, int]:
        """GRPO's ``RepeatSampler`` layout for GRPO-based hosts, plain sampling otherwise."""
        return grpo_repeat_structure(self) if isinstance(self, GRPOTrainer) else {}

    def _check_distributed_support(self) -> None:
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        if plugin is not None and getattr(plugin, "zero_stage", 0) == 3:
            raise ValueError(
                "the curriculum's frozen model needs whole parameters on every process; DeepSpeed ZeRO-3 partitions "
                "them. Use ZeRO-2 or DDP for curriculum training."
            )

    def _get_train_sampler(self, dataset: Any = None):
        if dataset is not None and len(dataset) != len(self.train_dataset):
            return super()._get_train_sampler(dataset)
        return self.curriculum_sampler

    # ------------------------------------------------------------------ checkpoints

    def _save_extension_state(self, folder: Path) -> None:
        """The curriculum's schedule and weights (``curriculum_state.json``) and, with ``save_frozen_model``, the
        frozen model's tensors (``curriculum_frozen.safetensors``)."""
        super()._save_extension_state(folder)
        write_json(folder, CURRICULUM_STATE_FILE, self.curriculum.state_dict())
        if self.curriculum_args.save_frozen_model and self.curriculum.frozen.refreshed_at is not None:
            self.curriculum.frozen.save(folder / CURRICULUM_FROZEN_FILE)

    def _load_extension_state(self, folder: Path) -> None:
        super()._load_extension_state(folder)
        state = read_json(folder, CURRICULUM_STATE_FILE)
        if state is None:
            raise MissingPathError(
                f"{folder} has no {CURRICULUM_STATE_FILE}: it was not written by a curriculum trainer, so the "
                "curriculum weights cannot be restored"
            )
        self.curriculum.load_state_dict(state)
        frozen_file = folder / CURRICULUM_FROZEN_FILE
        if frozen_file.is_file():
            model = self.accelerator.unwrap_model(self.model)
            self.curriculum.frozen.load(frozen_file, model, state["frozen_refreshed_at"])
        elif state["frozen_refreshed_at"] is not None:
            warnings.warn(
                f"{folder} has no {CURRICULUM_FROZEN_FILE} (save_frozen_model=False): the frozen model is refreshed "
                "from the resumed weights at the next update",
                stacklevel=4,
            )
            self.curriculum.last_refresh = None


def with_curriculum(host: type[Trainer], name: str | None = None) -> type[Trainer]:
    """The curriculum version of a ``Trainer`` subclass: ``class Curriculum<Host>(CurriculumMixin, host)``."""
    if not (isinstance(host, type) and issubclass(host, Trainer)):
        raise TypeError(f"with_curriculum needs a transformers.Trainer subclass, got {host!r}")
    return type(
        name or f"Curriculum{host.__name__}", (CurriculumMixin, host), {"__doc__": f"{host.__name__} + curriculum."}
    )


class CurriculumTrainer(CurriculumMixin, Trainer):
    """``transformers.Trainer`` over several datasets with curriculum weights (``CurriculumTrainingArguments``)."""


class CurriculumSFTTrainer(CurriculumMixin, LMHeadTileMixin, SFTTrainer):
    """``trl.SFTTrainer`` over several datasets with curriculum weights (args: ``CurriculumSFTConfig``)."""


class CurriculumDPOTrainer(CurriculumMixin, LMHeadTileMixin, DPOTrainer):
    """``trl.DPOTrainer`` over several preference datasets with curriculum weights (args: ``CurriculumDPOConfig``)."""


class CurriculumGRPOTrainer(CurriculumMixin, LMHeadTileMixin, GRPOTrainer):
    """``trl.GRPOTrainer`` over several prompt datasets with curriculum weights; prompt groups stay intact."""


class CurriculumPPOTrainer(CurriculumMixin, PPOTrainer):
    """trl_ext's ``PPOTrainer`` over several prompt datasets with curriculum weights (``CurriculumPPOConfig``)."""
