"""Curriculum trainers: any ``transformers.Trainer`` (TRL's SFT/DPO/GRPO, trl_ext's PPO) trained over several
datasets whose sampling weights follow the auto-curriculum of docs/curriculum.md.

``train_dataset`` is a mapping ``name -> Dataset`` (or a list, named ``dataset_0``, …). The datasets are concatenated
(they must share their columns) and handed to the host, which processes them as usual; the host's train sampler is
replaced by a :class:`~trl_ext.curriculum.sampler.CurriculumSampler` (with GRPO's repetition structure for
GRPO-based hosts, so prompt groups stay intact), and a :class:`~trl_ext.curriculum.callback.CurriculumCallback`
updates its weights. Checkpoints get ``curriculum_state.json`` (weight schedule, bookkeeping, history) and
``curriculum_frozen.safetensors`` (the frozen weights), and resuming restores both, so a resumed run draws the same
batches with the same weights as an uninterrupted one.

``with_curriculum(HostTrainer)`` builds the curriculum version of any other ``Trainer`` subclass.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import Trainer
from trl import DPOTrainer, GRPOTrainer, SFTTrainer

from trl_ext.common.checkpoint import ExtensionStateMixin, read_json, write_json
from trl_ext.common.lm_head_tiles import LMHeadTileMixin
from trl_ext.curriculum._trl_compat import grpo_repeat_structure
from trl_ext.curriculum.callback import CurriculumCallback
from trl_ext.curriculum.config import CURRICULUM_FIELDS, CurriculumArguments
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

    Extra keyword argument: ``curriculum_args`` (:class:`CurriculumArguments`); default: the curriculum fields of
    ``args`` when it has them, otherwise the defaults.

    Attributes: ``curriculum_datasets`` (name -> raw dataset), ``curriculum_sampler``, ``curriculum`` (the callback).
    """

    def __init__(
        self, *args: Any, train_dataset: Any = None, curriculum_args: CurriculumArguments | None = None, **kw
    ):
        named = _named_datasets(train_dataset)
        self.curriculum_datasets = named
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
            raise FileNotFoundError(
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
