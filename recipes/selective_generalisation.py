"""Selective generalisation (docs/selective.md): learn an outcome task while keeping a proxy property, with any of the
twelve strategies, then score the model on both.

    python recipes/selective_generalisation.py --config recipes/configs/selective/kl_divergence_tiny.yaml
    python recipes/selective_generalisation.py --config recipes/configs/selective/dpo.yaml \
        --output_dir outputs/selective/dpo/seed_1 --seed 1
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/selective_generalisation.py \
        --config recipes/configs/selective/grad_project.yaml

The strategy is ``strategy:`` of the training config; the trainer class is ``trl_ext.get_trainer(strategy,
base=host)``. Every field of the three argument classes is a YAML key and a command-line flag.

Host (``host:`` / ``--host``): the trainer the strategy runs on, and so the training config class parsed
    ``sft`` (default): :class:`~trl_ext.selective.sft.SelectiveSFTTrainer`, :class:`trl_ext.SelectiveConfig`.
    ``dpo``: :class:`~trl_ext.selective.dpo.SelectiveDPOTrainer`, :class:`trl_ext.SelectiveDPOConfig`; the outcome
    data are preference rows (``prompt`` / ``chosen`` / ``rejected``; the demo's: chosen = the reversal,
    rejected = the letters copied in prompt order).
    ``ppo``: :class:`~trl_ext.selective.ppo.SelectivePPOTrainer`, ``SelectivePPOConfig``; the outcome data are
    prompts (a ``prompt`` column; other columns reach the reward functions), rewarded by ``reward_funcs``
    (``module:function`` or ``file.py:function``, weighted by ``reward_weights``); the demo's default reward is
    :func:`demo_task_reward` (per-position accuracy of the reversal), custom data need ``reward_funcs``.
    The host is read before parsing (``--host`` on the command line, else ``host:`` in the ``--config`` file), so
    the parser takes the host's config class and a key of another host's config is an error that names it. The
    proxy data and the strategy machinery are the same on every host.

Data (``data:``)
    ``demo`` (default): the generated demo of :mod:`trl_ext.selective.demo` (reverse letters; the proxy
    property is the sign-off "Thanks!"). ``model_name_or_path`` is the model the demo's *aligned base* is trained
    from (a full fine-tune on proxy-style rows); the aligned base is the model this recipe then trains. It is trained
    once per demo seed into ``<aligned_base_dir>/seed_<demo_seed>`` and reused by every later run that finds a model
    there (strategies and runs of a sweep share it). For ``safe_lora`` the unaligned base is therefore
    ``model_name_or_path`` itself: ``safelora_base_model`` must name the same model.

    ``custom``: datasets from files or the hub (``outcome_dataset``, ``proxy_dataset``, ``negative_proxy_dataset``,
    ``outcome_eval_dataset``, ``proxy_eval_dataset``, each with a ``*_split``), in an SFT format (``prompt`` +
    ``completion``, ``messages`` or ``text``; the outcome data of ``dpo`` / ``ppo`` as above; the outcome evaluation
    data of ``dpo`` may be preference rows, scored on ``chosen``). ``model_name_or_path`` is the model trained (for
    ``safe_lora`` the aligned model; a PEFT adapter folder is merged into its base first, into
    ``<output_dir>/init_model``).

Evaluation, before training (the starting model) and after it
    ``task_loss`` / ``proxy_loss``: the trainer's mean eval loss (completion tokens only for prompt-completion data)
    on the outcome / proxy evaluation sets. ``task`` / ``proxy``: in demo mode the demo's scores
    (:func:`~trl_ext.selective.demo.evaluate_demo`: greedy answers, task accuracy and share of answers with the
    sign-off, both in [0, 1]); in custom mode ``exp(-loss)`` (the geometric-mean probability of the reference
    completion tokens, in (0, 1], higher is better) unless ``eval_scorer: module:function`` names a scorer with
    ``evaluate_demo``'s contract. Hosts ``dpo`` and ``ppo`` compute ``task_loss`` / ``proxy_loss`` the SFT way
    (:func:`completion_loss`: mean cross-entropy of the completion tokens, SFT's tokenization), not with their own
    loss, so the figures compare across hosts (on the main process, with the unwrapped model).

Outputs in ``output_dir``: the adapter (or model) and tokenizer, ``results.json`` (``task``, ``proxy``,
``task_loss``, ``proxy_loss``, ``before`` (the same four for the starting model), ``strategy``, ``seed``,
``train_seconds``, ``train_loss``, ``steps``, ``eval_rows``, ``data``, ``model``, ``scorer``, ``host``,
``trainer``), ``loss_log.csv`` /
``loss_curve.png``, and ``safelora_report.json`` for ``safe_lora``. A sweep reads ``task`` and ``proxy``.
"""

from __future__ import annotations

from trl_ext.common.noise import quiet_dependency_noise

quiet_dependency_noise()  # first: the known-harmless messages of dependencies (trl_ext/common/noise.py)

import functools
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelerate import PartialState
from transformers import set_seed
from trl import get_peft_config

from trl_ext import get_trainer
from trl_ext.common.entry import run_main
from trl_ext.common.errors import ConfigError, UnknownNameError
from trl_ext.common.imports import import_function
from trl_ext.common.loss_log import LossLogCallback
from trl_ext.common.recipes import (
    LoRAModelConfig,
    RecipeParser,
    describe_launch,
    recipe_parser,
    teardown_distributed,
)
from trl_ext.data.loading import DatasetLoadError, check_sft_format, load_dataset_from
from trl_ext.models import is_peft_adapter_dir, load_tokenizer, resolve_model_name_or_path
from trl_ext.models.policy_init import prepare_init_policy
from trl_ext.ppo.value_head import VALUE_FUNCTION_FILES
from trl_ext.selective.config import SelectiveConfig, SelectiveDPOConfig
from trl_ext.selective.ppo import SelectivePPOConfig
from trl_ext.selective.registry import BASES

logger = logging.getLogger("selective_generalisation")

DATA_SOURCES = ("demo", "custom")
HOSTS = BASES  # ("sft", "dpo", "ppo")
HOST_CONFIGS: dict[str, type] = {"sft": SelectiveConfig, "dpo": SelectiveDPOConfig, "ppo": SelectivePPOConfig}
PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")
DATASET_FIELDS = {
    # script argument -> key in the data mapping (the demo's dataset names)
    "outcome_dataset": "outcome_train",
    "proxy_dataset": "proxy_positive",
    "negative_proxy_dataset": "proxy_negative",
    "outcome_eval_dataset": "outcome_eval",
    "proxy_eval_dataset": "proxy_eval",
}
REQUIRED_CUSTOM = ("outcome_dataset", "outcome_eval_dataset", "proxy_eval_dataset")
RESULTS_NAME = "results.json"
ALIGNED_BASE_SETTINGS = "aligned_base.json"  # written by train_aligned_base
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass
class SelectiveRecipeArguments:
    """Arguments of the selective-generalisation recipe: data source, demo settings, aligned base, evaluation."""

    host: str = field(
        default="sft",
        metadata={"help": "Host trainer: 'sft' (default), 'dpo' (preference outcome data), 'ppo' (prompts, rewards)."},
    )
    reward_funcs: list[str] = field(
        default_factory=list,
        metadata={
            "help": "host ppo: reward functions 'module:function' or 'file.py:function', called as "
            "f(prompts, completions, **columns) -> list[float] (demo default: demo_task_reward)."
        },
    )
    data: str = field(default="demo", metadata={"help": "'demo' (generated demo data) or 'custom' (*_dataset)."})
    outcome_dataset: str | None = field(
        default=None,
        metadata={"help": "custom: outcome (task) data T: .json/.jsonl/.parquet/.csv, a folder or hub id."},
    )
    outcome_split: str = field(default="train", metadata={"help": "Split of outcome_dataset."})
    proxy_dataset: str | None = field(default=None, metadata={"help": "custom: positive proxy data A⁺."})
    proxy_split: str = field(default="train", metadata={"help": "Split of proxy_dataset."})
    negative_proxy_dataset: str | None = field(
        default=None, metadata={"help": "custom: negative proxy data A⁻ (for dpo, row i pairs with A⁺ row i)."}
    )
    negative_proxy_split: str = field(default="train", metadata={"help": "Split of negative_proxy_dataset."})
    outcome_eval_dataset: str | None = field(default=None, metadata={"help": "custom: outcome evaluation data."})
    outcome_eval_split: str = field(default="train", metadata={"help": "Split of outcome_eval_dataset."})
    proxy_eval_dataset: str | None = field(default=None, metadata={"help": "custom: proxy evaluation data."})
    proxy_eval_split: str = field(default="train", metadata={"help": "Split of proxy_eval_dataset."})

    demo_seed: int | None = field(
        default=None, metadata={"help": "demo: seed of the demo data and of the aligned base (default: --seed)."}
    )
    demo_num_outcome: int | None = field(default=None, metadata={"help": "demo: outcome rows (default: demo's)."})
    demo_num_proxy: int | None = field(default=None, metadata={"help": "demo: A⁺ rows (default: demo's)."})
    demo_num_negative: int | None = field(default=None, metadata={"help": "demo: A⁻ rows (default: demo's)."})
    demo_num_eval: int | None = field(
        default=None, metadata={"help": "demo: rows of each eval set (default: demo's)."}
    )

    aligned_base_dir: str = field(
        default="outputs/selective/aligned_base",
        metadata={"help": "demo: the aligned base of seed S is trained once into <dir>/seed_S and reused after."},
    )
    aligned_base_only: bool = field(
        default=False, metadata={"help": "demo: train (or find) the aligned base and stop (e.g. before a sweep)."}
    )
    aligned_base_max_steps: int | None = field(default=None, metadata={"help": "demo: aligned-base steps."})
    aligned_base_num_rows: int | None = field(default=None, metadata={"help": "demo: aligned-base data rows."})
    aligned_base_learning_rate: float | None = field(default=None, metadata={"help": "demo: aligned-base LR."})
    aligned_base_batch_size: int | None = field(default=None, metadata={"help": "demo: aligned-base batch size."})

    evaluate_before: bool = field(default=True, metadata={"help": "Also evaluate the starting model ('before')."})
    eval_losses: bool = field(
        default=True, metadata={"help": "Report the mean eval loss on the outcome and proxy eval sets."}
    )
    eval_scorer: str | None = field(
        default=None,
        metadata={
            "help": "Scorer 'module:function' or 'path/file.py:function' called as fn(model, tokenizer, datasets) "
            "-> {'task', 'proxy'} (demo default: evaluate_demo; custom default: exp(-eval loss))."
        },
    )
    eval_max_new_tokens: int | None = field(default=None, metadata={"help": "Scorer's max_new_tokens (if set)."})
    eval_generation_batch_size: int | None = field(default=None, metadata={"help": "Scorer's batch_size (if set)."})

    def __post_init__(self) -> None:
        check_host(self.host)
        if self.reward_funcs and self.host != "ppo":
            raise ConfigError(f"reward_funcs is for host ppo (the rewards of its rollouts), got host {self.host!r}")
        if self.host == "ppo" and self.data == "custom" and not self.reward_funcs:
            raise ConfigError("host ppo with data: custom needs reward_funcs (module:function, ...)")
        if self.data not in DATA_SOURCES:
            raise ValueError(f"data must be one of {', '.join(DATA_SOURCES)}, got {self.data!r}")
        given = [name for name in DATASET_FIELDS if getattr(self, name)]
        if self.data == "demo" and given:
            raise ValueError(f"{', '.join(given)} given with data: demo; set data: custom to train on your datasets")
        if self.data == "custom":
            missing = [name for name in REQUIRED_CUSTOM if not getattr(self, name)]
            if missing:
                raise ValueError(f"data: custom needs {', '.join(missing)}")
            if not self.eval_losses and not self.eval_scorer:
                raise ValueError("data: custom scores with exp(-eval loss): keep eval_losses or give eval_scorer")
        for name in ("demo_num_outcome", "demo_num_proxy", "demo_num_negative", "demo_num_eval"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.eval_scorer is not None and ":" not in self.eval_scorer:
            raise ValueError(f"eval_scorer must be 'module:function' or 'file.py:function', got {self.eval_scorer!r}")

    def demo_kwargs(self) -> dict[str, int]:
        """Keyword arguments for ``make_demo``: only the sizes set here (the demo's defaults otherwise)."""
        names = {"num_outcome": self.demo_num_outcome, "num_proxy": self.demo_num_proxy}
        names.update(num_negative=self.demo_num_negative, num_eval=self.demo_num_eval)
        return {k: v for k, v in names.items() if v is not None}

    def aligned_base_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``train_aligned_base``: only the settings set here (the demo's defaults otherwise)."""
        names = {"max_steps": self.aligned_base_max_steps, "num_rows": self.aligned_base_num_rows}
        names.update(learning_rate=self.aligned_base_learning_rate, batch_size=self.aligned_base_batch_size)
        return {k: v for k, v in names.items() if v is not None}

    def scorer_kwargs(self) -> dict[str, int]:
        """Keyword arguments for the scorer: only those set here."""
        names = {"max_new_tokens": self.eval_max_new_tokens, "batch_size": self.eval_generation_batch_size}
        return {k: v for k, v in names.items() if v is not None}


# --------------------------------------------------------------------------- hosts


def check_host(host: str) -> str:
    """``host`` if it is one of :data:`HOSTS`; otherwise :class:`~trl_ext.common.errors.UnknownNameError` naming the
    choices."""
    if host not in HOSTS:
        raise UnknownNameError(f"unknown host {host!r}; choices: {', '.join(HOSTS)}")
    return host


def _flag_value(argv: list[str], name: str) -> str | None:
    """The last value of ``--name V`` / ``--name=V`` in ``argv`` (``None`` when absent)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
    return value


def _config_keys(argv: list[str]) -> dict[str, Any]:
    """The mapping in the ``--config`` YAML file (``{}`` without one; a missing file is left to the parser)."""
    import yaml

    path = _flag_value(argv, "config")
    if path is None or not Path(path).is_file():
        return {}
    loaded = yaml.safe_load(Path(path).read_text())
    return loaded if isinstance(loaded, dict) else {}


def host_of(argv: list[str]) -> str:
    """The host a command line asks for: ``--host`` in ``argv``, else ``host:`` of its ``--config`` file, else
    ``"sft"`` (the first pass that chooses the parser's training config class)."""
    host = _flag_value(argv, "host")
    if host is None:
        host = _config_keys(argv).get("host", "sft")
    return check_host(str(host))


def _check_foreign_keys(argv: list[str], host: str) -> None:
    """``ConfigError`` for a config key or flag that belongs only to another host's training config, naming the key,
    the config class and ``--host`` that take it (the parser's own error would only call it unknown)."""
    own = {name for cls in (SelectiveRecipeArguments, HOST_CONFIGS[host], LoRAModelConfig)
           for name in cls.__dataclass_fields__}  # fmt: skip
    given = set(_config_keys(argv)) | {a[2:].split("=", 1)[0] for a in argv if a.startswith("--")}
    for key in sorted(given - own):
        others = [h for h, cls in HOST_CONFIGS.items() if h != host and key in cls.__dataclass_fields__]
        if others:
            where = ", ".join(f"{HOST_CONFIGS[h].__name__} (--host {h})" for h in others)
            raise ConfigError(
                f"{key!r} is a field of {where}, not of {HOST_CONFIGS[host].__name__} (host {host!r}): "
                f"remove it or choose that host"
            )


# --------------------------------------------------------------------------- data


def check_outcome_format(dataset, host: str, what: str) -> None:
    """The outcome training data's format for ``host``: SFT rows (``sft``), ``prompt``/``chosen``/``rejected``
    (``dpo``) or a ``prompt`` column (``ppo``); :class:`~trl_ext.data.loading.DatasetLoadError` naming the missing
    columns otherwise."""
    if host == "sft":
        check_sft_format(dataset, what=what)
        return
    needed = PREFERENCE_COLUMNS if host == "dpo" else ("prompt",)
    missing = [c for c in needed if c not in dataset.column_names]
    if missing:
        kind = "preference rows (prompt, chosen, rejected)" if host == "dpo" else "prompts (a 'prompt' column)"
        raise DatasetLoadError(
            f"{what}: host {host!r} trains on {kind}: missing column(s) {', '.join(missing)} "
            f"(columns: {', '.join(dataset.column_names)})"
        )


def load_custom_data(args: SelectiveRecipeArguments) -> dict[str, Any]:
    """The ``*_dataset`` arguments loaded under the demo's dataset names (missing optional ones are ``None``).

    The outcome data are checked for the host (:func:`check_outcome_format`); the outcome evaluation data of
    ``dpo`` may be preference rows or SFT rows, every other dataset is SFT rows.

    Raises ``FileNotFoundError`` / :class:`~trl_ext.data.loading.DatasetLoadError` naming the argument and the path,
    id, split or missing column.
    """
    data: dict[str, Any] = {}
    for arg, key in DATASET_FIELDS.items():
        source = getattr(args, arg)
        if not source:
            data[key] = None
            continue
        split = getattr(args, arg.replace("_dataset", "_split"))
        dataset = load_dataset_from(source, split, what=arg)
        what = f"{arg} ({source})"
        if arg == "outcome_dataset":
            check_outcome_format(dataset, args.host, what)
        elif not (arg == "outcome_eval_dataset" and args.host == "dpo" and "chosen" in dataset.column_names):
            check_sft_format(dataset, what=what)
        data[key] = dataset
    return data


def demo_preference_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A demo outcome row as a preference row: chosen = the reversal, rejected = the letters copied in prompt order."""
    letters = row["prompt"][-1]["content"].split()[1:]
    return {"prompt": row["prompt"], "chosen": row["completion"],
            "rejected": [{"role": "assistant", "content": " ".join(letters)}]}  # fmt: skip


def demo_task_reward(prompts: list, completions: list, **kwargs: Any) -> list[float]:
    """The demo's PPO reward: :func:`~trl_ext.selective.demo_data.task_score` of each completion (per-position
    accuracy of the reversed letters, in [0, 1])."""
    from trl_ext.selective.demo_data import task_score

    def text(c: Any) -> str:
        return c[-1]["content"] if isinstance(c, list) else str(c)

    return [task_score(p, text(c)) for p, c in zip(prompts, completions)]


def host_data(data: dict[str, Any], host: str, demo: bool) -> dict[str, Any]:
    """The datasets for ``host``: the demo's outcome training rows as preference rows (``dpo``) or prompts (``ppo``);
    the evaluation rows stay prompt–completion rows (the demo's scorer and :func:`completion_loss` read them)."""
    if not demo or host == "sft":
        return data
    data = dict(data)
    if host == "dpo":
        data["outcome_train"] = data["outcome_train"].map(demo_preference_row, remove_columns=["completion"])
    else:
        data["outcome_train"] = data["outcome_train"].remove_columns(["completion"])
    return data


def make_reward_funcs(args: SelectiveRecipeArguments) -> list[Callable[..., list[float]]]:
    """The reward functions of host ``ppo``: ``reward_funcs`` imported, or :func:`demo_task_reward` (demo)."""
    if not args.reward_funcs:
        return [demo_task_reward]
    return [import_function(name, f"reward function {name!r}") for name in args.reward_funcs]


def load_scorer(spec: str) -> Callable[..., Mapping[str, float]]:
    """The function named by ``'package.module:function'`` or ``'path/to/file.py:function'``."""
    return import_function(spec, "eval_scorer")


# --------------------------------------------------------------------------- aligned base (demo)


def holds_model(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a saved full model (``config.json`` and weights)."""
    path = Path(folder)
    return (path / "config.json").is_file() and any((path / name).is_file() for name in _WEIGHTS)


def aligned_base_folder(args: SelectiveRecipeArguments, seed: int) -> Path:
    """Where the demo's aligned base of ``seed`` lives: ``<aligned_base_dir>/seed_<seed>``."""
    return Path(args.aligned_base_dir).expanduser() / f"seed_{seed}"


def _check_aligned_base_settings(folder: Path, wanted: Mapping[str, Any]) -> None:
    settings_file = folder / ALIGNED_BASE_SETTINGS
    if not settings_file.is_file():
        logger.warning("aligned base %s has no %s: using it as it is", folder, ALIGNED_BASE_SETTINGS)
        return
    recorded = json.loads(settings_file.read_text())
    differ = {k: (recorded[k], v) for k, v in wanted.items() if k in recorded and recorded[k] != v}
    if differ:
        detail = ", ".join(f"{k}: has {old!r}, asked {new!r}" for k, (old, new) in differ.items())
        raise ValueError(
            f"aligned base {folder} was trained with other settings ({detail}); "
            "choose another aligned_base_dir or delete that folder"
        )


def prepare_aligned_base(args: SelectiveRecipeArguments, source: str, seed: int) -> Path:
    """The demo's aligned base for ``seed``, trained from ``source`` with ``train_aligned_base`` unless a model is
    already in :func:`aligned_base_folder` (then reused, after checking its recorded seed, source and any
    ``aligned_base_*`` setting given here).

    A file lock serialises runs that share the folder; training goes to a temporary folder renamed into place, so
    a half-written folder is never taken for a model. Multi-process launches cannot train it (one process would
    run a second trainer inside the launch): they need it to exist already.
    """
    from filelock import FileLock

    from trl_ext.selective.demo import train_aligned_base

    folder = aligned_base_folder(args, seed)
    overrides = args.aligned_base_kwargs()
    wanted = {"seed": seed, "source": str(Path(source)), **overrides}
    state = PartialState()
    if holds_model(folder):
        _check_aligned_base_settings(folder, wanted)
        if state.is_main_process:
            print(f"[trl_ext] aligned base: reusing {folder}", flush=True)
        return folder
    if state.num_processes > 1:
        raise RuntimeError(
            f"the aligned base {folder} does not exist yet and cannot be trained inside a {state.num_processes}-"
            "process launch: run this recipe once in a single process with --aligned_base_only true first"
        )
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"aligned base folder {folder} exists but holds no model: delete it or choose another")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.parent / f"{folder.name}.lock")):
        if holds_model(folder):  # another run trained it while this one waited
            _check_aligned_base_settings(folder, wanted)
            print(f"[trl_ext] aligned base: reusing {folder}", flush=True)
            return folder
        print(f"[trl_ext] aligned base: training {folder} from {source} (seed {seed})", flush=True)
        tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            start = time.perf_counter()
            train_aligned_base(tmp, seed, model_path=source, **overrides)
            if folder.exists():
                folder.rmdir()  # empty (checked above)
            tmp.rename(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"[trl_ext] aligned base: trained in {time.perf_counter() - start:.1f} s", flush=True)
    return folder


# --------------------------------------------------------------------------- evaluation


def _check_scores(scores: Any, scorer_name: str) -> dict[str, float]:
    if not isinstance(scores, Mapping) or not {"task", "proxy"} <= set(scores):
        raise ValueError(f"eval scorer {scorer_name} must return a mapping with 'task' and 'proxy', got {scores!r}")
    out = {}
    for key in ("task", "proxy"):
        value = float(scores[key])
        if not math.isfinite(value):
            raise ValueError(f"eval scorer {scorer_name} returned {key}={value}")
        out[key] = value
    return out


def as_completion_rows(dataset):
    """SFT rows of ``dataset``: preference rows become prompt–completion rows of their ``chosen`` answer."""
    if "chosen" not in dataset.column_names:
        return dataset
    keep = [c for c in ("prompt", "chosen") if c in dataset.column_names]
    return dataset.select_columns(keep).rename_column("chosen", "completion")


def completion_loss(model, tokenizer, dataset, max_length: int | None = None, batch_size: int = 8) -> float:
    """Mean cross-entropy per label token of ``dataset`` (SFT rows, or preference rows scored on ``chosen``),
    tokenized and collated as ``SFTTrainer`` does (:func:`~trl_ext.selective.proxy.tokenize_proxy_dataset`: the
    completion tokens of prompt–completion rows, every token of language-modeling rows): the host-independent
    ``task_loss`` / ``proxy_loss`` of hosts ``dpo`` and ``ppo``."""
    import torch

    from trl_ext.selective.proxy import language_modeling_collator, tokenize_proxy_dataset

    rows = tokenize_proxy_dataset(as_completion_rows(dataset), tokenizer, max_length=max_length, name="eval")
    collate = language_modeling_collator(tokenizer)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for start in range(0, len(rows), batch_size):
            batch = collate([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
            ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
            with torch.no_grad():
                logits = model(input_ids=ids, attention_mask=batch["attention_mask"].to(device)).logits.float()
            targets = labels[:, 1:]
            losses = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2), targets, ignore_index=-100, reduction="sum"
            )
            total += losses.item()
            count += int((targets != -100).sum())
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("completion_loss: no label tokens in the evaluation data")
    return total / count


def evaluate_model(
    trainer,
    tokenizer,
    data: Mapping[str, Any],
    args: SelectiveRecipeArguments,
    scorer: Callable | None,
    max_length: int | None = None,
) -> dict[str, float] | None:
    """``{"task", "proxy"[, "task_loss", "proxy_loss"]}`` of the trainer's current model (``None`` off the main
    process). Host ``sft``: eval losses run on every process (the trainer's distributed evaluation); hosts ``dpo`` /
    ``ppo``: :func:`completion_loss` on the main process. The scorer runs on the main process."""
    result: dict[str, float] = {}
    if args.eval_losses and args.host == "sft":
        metrics = trainer.evaluate()
        result["task_loss"] = float(metrics["eval_outcome_loss"])
        result["proxy_loss"] = float(metrics["eval_proxy_loss"])
    if not trainer.accelerator.is_main_process:
        return None
    if args.eval_losses and args.host != "sft":
        model = trainer.accelerator.unwrap_model(trainer.model)
        for key, name in (("task_loss", "outcome_eval"), ("proxy_loss", "proxy_eval")):
            result[key] = completion_loss(model, tokenizer, data[name], max_length=max_length)
    if scorer is not None:
        model = trainer.accelerator.unwrap_model(trainer.model)
        scores = scorer(model, tokenizer, data, **args.scorer_kwargs())
        result.update(_check_scores(scores, args.eval_scorer or "evaluate_demo"))
    else:
        result["task"] = math.exp(-result["task_loss"])
        result["proxy"] = math.exp(-result["proxy_loss"])
    return {k: result[k] for k in ("task", "proxy", "task_loss", "proxy_loss") if k in result}


# --------------------------------------------------------------------------- main


def prepare_model_and_data(
    script_args: SelectiveRecipeArguments, training_args: SelectiveConfig, model_args: LoRAModelConfig
) -> tuple[str | None, dict[str, Any]]:
    """The path of the model to train and the datasets (demo names); ``None`` as path for ``aligned_base_only``."""
    if script_args.data == "demo":
        from trl_ext.selective.demo import make_demo

        source = resolve_model_name_or_path(model_args.model_name_or_path)
        if is_peft_adapter_dir(source):
            raise ValueError(
                f"data: demo trains the aligned base from model_name_or_path, but {model_args.model_name_or_path!r} "
                "is a PEFT adapter folder: merge it into its base first, or use data: custom"
            )
        if training_args.strategy == "safe_lora":
            base = resolve_model_name_or_path(training_args.safelora_base_model)
            if base != source:
                raise ValueError(
                    f"data: demo with safe_lora: the unaligned base is model_name_or_path ({source}), but "
                    f"safelora_base_model is {training_args.safelora_base_model!r}: set both to the same model"
                )
            training_args.safelora_base_model = base
        seed = training_args.seed if script_args.demo_seed is None else script_args.demo_seed
        data = make_demo(seed=seed, **script_args.demo_kwargs())
        model_path = str(prepare_aligned_base(script_args, source, seed))
        return (None if script_args.aligned_base_only else model_path), data
    if script_args.aligned_base_only:
        raise ValueError("aligned_base_only needs data: demo (custom data has no aligned base to train)")
    data = load_custom_data(script_args)  # data errors before the (slow) model load
    output_dir = Path(training_args.output_dir)
    return prepare_init_policy(
        model_args.model_name_or_path,
        output_dir / "init_model",
        dtype=model_args.dtype,
        carry_files=VALUE_FUNCTION_FILES,
    ), data


def main(
    script_args: SelectiveRecipeArguments, training_args: SelectiveConfig, model_args: LoRAModelConfig
) -> dict | None:
    """Train with ``training_args.strategy``, save, evaluate before/after and write ``results.json``.

    Returns the results (main process; ``None`` elsewhere and for ``aligned_base_only``).
    """
    host = script_args.host
    if type(training_args) is not HOST_CONFIGS[host]:
        raise ConfigError(
            f"host {host!r} needs a {HOST_CONFIGS[host].__name__}, got {type(training_args).__name__} "
            f"(parse with make_parser({host!r}) or parse_args)"
        )
    set_seed(training_args.seed)
    trainer_cls = get_trainer(training_args.strategy, base=host)
    reward_funcs = make_reward_funcs(script_args) if host == "ppo" else None  # a bad import path fails here
    scorer = load_scorer(script_args.eval_scorer) if script_args.eval_scorer else None
    if scorer is None and script_args.data == "demo":
        from trl_ext.selective.demo import evaluate_demo

        scorer = evaluate_demo
    model_path, data = prepare_model_and_data(script_args, training_args, model_args)
    if model_path is None:
        return None
    data = host_data(data, host, demo=script_args.data == "demo")

    output_dir = Path(training_args.output_dir)
    tokenizer = load_tokenizer(model_path, revision=model_args.model_revision)
    model = model_args.load_causal_lm(model_path)
    host_kwargs: dict[str, Any] = {}
    if host == "sft":  # the SFT host evaluates with its own (distributed) loss; dpo / ppo: completion_loss
        host_kwargs["eval_dataset"] = {"outcome": data["outcome_eval"], "proxy": data["proxy_eval"]}
    if host == "ppo":
        host_kwargs["reward_funcs"] = reward_funcs
    trainer = trainer_cls(
        model=model,
        args=training_args,
        train_dataset=data["outcome_train"],
        proxy_dataset=data["proxy_positive"],
        negative_proxy_dataset=data["proxy_negative"],
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        callbacks=[LossLogCallback()],
        **host_kwargs,
    )
    describe_launch(trainer)
    if trainer.accelerator.is_main_process:
        print(f"[trl_ext] trainer: {type(trainer).__name__} (host {host}, {type(training_args).__name__})", flush=True)

    eval_length = getattr(training_args, "max_length", None) or getattr(training_args, "proxy_max_length", None)
    evaluate = functools.partial(evaluate_model, trainer, tokenizer, data, script_args, scorer, eval_length)
    before = evaluate() if script_args.evaluate_before else None
    start = time.perf_counter()
    train_output = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    train_seconds = time.perf_counter() - start
    trainer.save_model(str(output_dir))
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(output_dir)
    after = evaluate()

    results = None
    if trainer.accelerator.is_main_process:
        results = {
            **after,
            "before": before,
            "strategy": training_args.strategy,
            "seed": training_args.seed,
            "train_seconds": round(train_seconds, 3),
            "train_loss": float(train_output.training_loss),
            "steps": trainer.state.global_step,
            "eval_rows": {"outcome": len(data["outcome_eval"]), "proxy": len(data["proxy_eval"])},
            "data": script_args.data,
            "model": model_path,
            "scorer": script_args.eval_scorer or ("evaluate_demo" if script_args.data == "demo" else "exp(-loss)"),
            "host": host,
            "trainer": type(trainer).__name__,
        }
        (output_dir / RESULTS_NAME).write_text(json.dumps(results, indent=2) + "\n")
        print(f"[trl_ext] results: {json.dumps(results)}", flush=True)
    trainer.accelerator.wait_for_everyone()
    return results


def make_parser(host: str = "sft") -> RecipeParser:
    """The recipe's parser for ``host``: (:class:`SelectiveRecipeArguments`, the host's training config of
    :data:`HOST_CONFIGS`, :class:`LoRAModelConfig`)."""
    return recipe_parser(SelectiveRecipeArguments, HOST_CONFIGS[check_host(host)], LoRAModelConfig)


def parse_args(argv: list[str] | None = None) -> tuple[SelectiveRecipeArguments, Any, LoRAModelConfig]:
    """Parse a command line in two passes: :func:`host_of` chooses the host, whose config class the parser then
    takes; a key of another host's config is a :class:`~trl_ext.common.errors.ConfigError` naming it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    host = host_of(argv)
    _check_foreign_keys(argv, host)
    return make_parser(host).parse_args_and_config(argv)


def _run() -> None:
    script_args, training_args, model_args = parse_args()
    logging.basicConfig(level=logging.INFO if PartialState().is_main_process else logging.WARNING)
    main(script_args, training_args, model_args)
    teardown_distributed()


if __name__ == "__main__":
    sys.exit(run_main(_run))
