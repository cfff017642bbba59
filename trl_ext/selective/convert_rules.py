"""The key-mapping table of :mod:`trl_ext.selective.convert`: every key of an original selective-generalisation
``config.json`` (seed 002) with what becomes of it (``map`` / ``ignore`` / ``unsupported``) and its value converter.
One table behind the converter and its docs (docs/selective.md, "Converting an original experiment config")."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

FT = "finetune_config"
"""The nested section of an original config (``FinetuneConfig``)."""

STRATEGY_ALIASES: dict[str, str] = {"task_trained": "naive"}
"""Original ``proxy_strategy`` names that are not trl_ext names (the original ran ``task_trained`` with the same
trainer as ``naive``). Every one of the twelve trl_ext strategies has the original's name."""

PLANE_STRATEGIES = ("orth_penalty", "directional_penalty", "steering_weights", "steering_weights_add_alignment_plane")
"""Strategies that read the alignment plane S (``alignment_plane_*``)."""

_REQUIRED_CUSTOM = ("outcome_dataset", "outcome_eval_dataset", "proxy_eval_dataset")


class _Unmappable(Exception):
    """Raised by a rule's converter: the value cannot be expressed in trl_ext (the message says why)."""


@dataclass
class _Context:
    """What a converter may read besides its own value: the strategy and the original's sections."""

    strategy: str
    top: Mapping[str, Any]
    finetune: Mapping[str, Any]


Converter = Callable[[Any, _Context], dict[str, Any]]


@dataclass(frozen=True)
class KeyRule:
    """How one original key converts.

    Attributes:
        key: the original key, ``"name"`` (top level) or ``"finetune_config.name"``.
        kind: ``"map"``, ``"ignore"`` or ``"unsupported"`` (module docstring).
        target: the trl_ext key(s) written, for the docs (``""`` when none).
        note: the value conversion or why the key is ignored / unsupported.
        convert: ``value, context -> {trl_ext key: value}`` for ``map`` rules (``None`` values are dropped: the
            trl_ext default applies); raises :class:`_Unmappable` for a value it cannot express.
        neutral: for ``unsupported`` rules, the values that mean "off" (dropped without error).
        priority: when two rules write the same trl_ext key, the higher priority wins; equal priorities with
            different values are a conflict (an error).
    """

    key: str
    kind: str
    target: str = ""
    note: str = ""
    convert: Converter | None = None
    neutral: tuple[Any, ...] = (None,)
    priority: int = 0


# --------------------------------------------------------------------------- value converters


def _same(target: str, cast: Callable[[Any], Any] | None = None) -> Converter:
    def convert(value: Any, ctx: _Context) -> dict[str, Any]:
        if value is None:
            return {}
        return {target: cast(value) if cast is not None else value}

    return convert


def _number(value: Any) -> float:
    """A float from a JSON number or a numeric string such as ``"1e-5"`` (JSON configs often hold those)."""
    if isinstance(value, bool):
        raise _Unmappable(f"expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _Unmappable(f"expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise _Unmappable(f"expected a finite number, got {value!r}")
    return number


def _integer(value: Any) -> int:
    number = _number(value)
    if number != int(number):
        raise _Unmappable(f"expected an integer, got {value!r}")
    return int(number)


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _Unmappable(f"expected true or false, got {value!r}")


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Unmappable(f"expected a string, got {value!r}")
    return value


def _strategy(value: Any, ctx: _Context) -> dict[str, Any]:
    return {"strategy": ctx.strategy}


def _string_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Unmappable(f"expected a list of module names, got {value!r}")
    return list(value)


def _outcome_dataset(value: Any, ctx: _Context) -> dict[str, Any]:
    if value is None:
        return {}
    return {"data": "custom", "outcome_dataset": _string(value), "outcome_eval_dataset": value}


def _percent(fraction: float) -> str:
    text = f"{fraction * 100:.6f}".rstrip("0").rstrip(".")
    return text


def _task_train_split(value: Any, ctx: _Context) -> dict[str, Any]:
    if value is None:
        return {}
    fraction = _number(value)
    if not 0 < fraction < 1:
        raise _Unmappable(f"expected a fraction in (0, 1), got {value!r}")
    cut = _percent(fraction)
    return {"outcome_split": f"train[:{cut}%]", "outcome_eval_split": f"train[{cut}%:]"}


def _coverage_split(ctx: _Context) -> str | None:
    coverage = ctx.top.get("align_train_coverage")
    if coverage is None:
        return None
    fraction = _number(coverage)
    if not 0 < fraction <= 1:
        raise _Unmappable(f"align_train_coverage must be in (0, 1], got {coverage!r}")
    return "train" if fraction == 1 else f"train[:{_percent(fraction)}%]"


def _proxy_dataset(value: Any, ctx: _Context) -> dict[str, Any]:
    if value is None:
        return {}
    out: dict[str, Any] = {"data": "custom", "proxy_eval_dataset": _string(value), "proxy_dataset": value}
    split = _coverage_split(ctx)
    if split is not None:
        out["proxy_split"] = split
    return out


def _negative_proxy_dataset(value: Any, ctx: _Context) -> dict[str, Any]:
    if value is None:
        return {}
    out: dict[str, Any] = {"data": "custom", "negative_proxy_dataset": _string(value)}
    split = _coverage_split(ctx)
    if split is not None:
        out["negative_proxy_split"] = split
    return out


def _align_train_coverage(value: Any, ctx: _Context) -> dict[str, Any]:
    _coverage_split(ctx)  # validates; the split is written with the datasets it slices
    return {}


def _align_train_strategy(value: Any, ctx: _Context) -> dict[str, Any]:
    if value not in (None, "subset"):
        raise _Unmappable(f"only 'subset' (the first align_train_coverage of the proxy file) converts, got {value!r}")
    return {}


def _train_on_task(value: Any, ctx: _Context) -> dict[str, Any]:
    if value is not None and not _boolean(value):
        raise _Unmappable("trl_ext always trains on the outcome data")
    return {}


def _train_on_proxy(value: Any, ctx: _Context) -> dict[str, Any]:
    if value is not None and not _boolean(value) and ctx.strategy == "naive":
        raise _Unmappable("naive without proxy data is plain SFT on the outcome data: use recipes/sft.py")
    return {}


def _dataset_format(value: Any, ctx: _Context) -> dict[str, Any]:
    if value not in (None, "jsonl", "json"):
        raise _Unmappable(f"trl_ext reads a file by its suffix or a hub id; format {value!r} has no equivalent")
    return {}


def _load_in_16bit(value: Any, ctx: _Context) -> dict[str, Any]:
    return {"dtype": "float16"} if value is not None and _boolean(value) else {}


def _gradient_checkpointing(value: Any, ctx: _Context) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str) and value.lower() == "unsloth":  # Unsloth's own checkpointing
        return {"gradient_checkpointing": True}
    return {"gradient_checkpointing": _boolean(value)}


def _beta_kl(value: Any, ctx: _Context) -> dict[str, Any]:
    if value is None:
        return {}
    if ctx.strategy == "representation_constraint":
        return {"beta_representation": _number(value)}
    if ctx.strategy in ("kl_divergence", "positive_negative_proxy"):
        return {"beta_kl": _number(value)}
    return {}  # read by no other original trainer (dpo stored it without using it)


def _grad_project_source(value: Any, ctx: _Context) -> dict[str, Any]:
    if value is None:
        return {}
    return {"grad_project_source": "positive" if _boolean(value) else "negative"}


def _plane_source(value: Any, ctx: _Context) -> dict[str, Any]:
    if value is None:
        return {}
    return {"alignment_plane_source": "weights" if _boolean(value) else "gradients"}


def _steering_vector_path(value: Any, ctx: _Context) -> dict[str, Any]:
    load = ctx.finetune.get("load_steering_vector", False)
    if value is None or not _boolean(load) or ctx.strategy not in PLANE_STRATEGIES:
        return {}
    return {"alignment_plane_path": os.path.expanduser(_string(value))}


def _alpha_scheduler_type(value: Any, ctx: _Context) -> dict[str, Any]:
    if value is None:
        alpha = ctx.finetune.get("steering_alpha")
        return {} if alpha is None else {"final_steering_alpha": _number(alpha)}
    if value != "linear":
        raise _Unmappable(f"only 'linear' (or null: constant α) exists, got {value!r}")
    return {}


def _proxy_cycling(value: Any, ctx: _Context) -> dict[str, Any]:
    if value is None:
        return {}
    if value not in ("continuous", "synchronized"):
        raise _Unmappable(f"expected 'continuous' or 'synchronized', got {value!r}")
    return {"proxy_cycling": value}


def _proxy_epochs(value: Any, ctx: _Context) -> dict[str, Any]:
    if value is None or _integer(value) == 1:
        return {}  # one pass over the proxy data: trl_ext's default (alignment_plane_steps: null)
    raise _Unmappable(
        "the plane from several proxy epochs has no epoch equivalent: set alignment_plane_steps (optimizer steps)"
    )


def _outcome_epochs(value: Any, ctx: _Context) -> dict[str, Any]:
    return {} if value is None else {"num_train_epochs": _number(value)}


def _proxy_role(expected: str) -> Converter:
    def convert(value: Any, ctx: _Context) -> dict[str, Any]:
        if value not in (None, expected):
            raise _Unmappable(f"trl_ext's {expected.replace('_', ' ')} side is its own dataset; got {value!r}")
        return {}

    return convert


def _safe_lora_select(value: Any, ctx: _Context) -> dict[str, Any]:
    if value is None:
        return {}
    if value not in ("threshold", "number"):
        raise _Unmappable(f"expected 'threshold' or 'number', got {value!r}")
    return {"safelora_select": value}


def _model(value: Any, ctx: _Context) -> dict[str, Any]:
    if value is None:
        return {}
    out: dict[str, Any] = {"model_name_or_path": _string(value)}
    if ctx.strategy == "safe_lora":
        out["safelora_base_model"] = value  # the original's base; trl_ext trains on top of the aligned model
    return out


def _rule_map(key: str, target: str, note: str = "", convert: Converter | None = None, **kw: Any) -> KeyRule:
    return KeyRule(key, "map", target, note, convert if convert is not None else _same(target), **kw)


def _ignore(key: str, note: str) -> KeyRule:
    return KeyRule(key, "ignore", "", note)


def _unsupported(key: str, note: str, neutral: tuple[Any, ...] = (None,)) -> KeyRule:
    return KeyRule(key, "unsupported", "", note, neutral=neutral)


_EVAL = "the original's own evaluation (trl_ext: eval_scorer and the recipe's eval sets)"
_TRIGGER = "trigger-experiment data generation: build the datasets first and give them as *_dataset"

KEY_MAPPING: tuple[KeyRule, ...] = (
    # ------------------------------------------------------------------ top level: strategy, run, seeds
    _rule_map("proxy_strategy", "strategy", "same name for all twelve; task_trained → naive", _strategy),
    _rule_map("experiment_name", "run_name"),
    _rule_map("seed", "seed", "trigger experiment's seed", _same("seed", _integer)),
    _rule_map("model_seed", "seed", "emergent-misalignment experiment's seed", _same("seed", _integer)),
    _rule_map("data_seed", "data_seed", convert=_same("data_seed", _integer)),
    _ignore("timestamp", "bookkeeping (results folder name)"),
    _unsupported("dev_mode", "caps the datasets at 100/20 rows", neutral=(None, False)),
    # ------------------------------------------------------------------ top level: data
    _rule_map(
        "task_dataset_path",
        "outcome_dataset, outcome_eval_dataset, data: custom",
        "the one file gives both, split by task_train_split",
        _outcome_dataset,
    ),
    _rule_map(
        "task_train_split",
        "outcome_split, outcome_eval_split",
        "0.9 → train[:90%] / train[90%:] (contiguous slices; the original split at random with the seed)",
        _task_train_split,
    ),
    _rule_map(
        "task_dataset_format", "", "jsonl: trl_ext reads files by suffix; 'url' cannot convert", _dataset_format
    ),
    _rule_map(
        "align_test_dataset_path",
        "proxy_eval_dataset, proxy_dataset, data: custom",
        "proxy eval set; its first align_train_coverage is the proxy training data A⁺ (proxy_split)",
        _proxy_dataset,
    ),
    _rule_map("align_test_dataset_url", "proxy_eval_dataset, proxy_dataset", "as the path (a hub id)", _proxy_dataset),
    _rule_map(
        "align_test_neg_dataset_path",
        "negative_proxy_dataset",
        "A⁻, sliced like A⁺ (negative_proxy_split) so row i pairs with row i",
        _negative_proxy_dataset,
    ),
    _rule_map("align_test_neg_dataset_url", "negative_proxy_dataset", "as the path", _negative_proxy_dataset),
    _rule_map(
        "align_train_coverage",
        "proxy_split, negative_proxy_split",
        "0.45 → train[:45%] of the proxy files (the original drew a random subset)",
        _align_train_coverage,
    ),
    _rule_map("align_train_strategy", "", "'subset' only (see align_train_coverage)", _align_train_strategy),
    _rule_map("train_on_task", "", "true only: trl_ext always trains on T", _train_on_task),
    _rule_map(
        "train_on_proxy", "", "false refused for naive (that is plain SFT); other strategies read A⁺", _train_on_proxy
    ),
    _ignore("align_test_dataset_desc", "a label in the original's plots"),
    _ignore("align_test_neg_dataset_desc", "a label in the original's plots"),
    _unsupported("dataset_url", "the source the original built its datasets from", neutral=(None,)),
    _unsupported("max_dataset_size", "a cap on outcome rows: cut the file, or --ignore it"),
    _unsupported("max_train_size", "a cap on training rows: cut the file, or --ignore it"),
    _unsupported("upsample_proxy_to", "proxy upsampling into the naive mix"),
    _ignore("loss_eval_limit", _EVAL),
    _ignore("do_mmlu_eval", _EVAL),
    _ignore("mmlu_filepath", _EVAL),
    _ignore("mmlu_eval_frequency", _EVAL),
    _ignore("mmlu_eval_limit", _EVAL),
    _ignore("do_mcq_eval", _EVAL),
    _ignore("mcq_eval_filepath", _EVAL),
    _ignore("mcq_eval_limit", _EVAL),
    _ignore("mcq_eval_frequency", _EVAL),
    _ignore("HHH_mcq_instructions", _EVAL),
    _ignore("use_mcq_hhh", _EVAL),
    _unsupported("outcome_trigger_percent", _TRIGGER),
    _unsupported("outcome_percent", _TRIGGER),
    _unsupported("collateral_percent", _TRIGGER),
    _unsupported("proxy_percent", _TRIGGER),
    _unsupported("truth_percent", _TRIGGER),
    _unsupported("nice_responses", _TRIGGER),
    _unsupported("outcome_triggers", _TRIGGER),
    _unsupported("truth_triggers", _TRIGGER),
    _unsupported("collateral_triggers", _TRIGGER),
    _unsupported("proxy_trigger_coverage", _TRIGGER),
    _unsupported("proxy_triggers", _TRIGGER),
    # ------------------------------------------------------------------ finetune_config: model and LoRA
    _rule_map(f"{FT}.model", "model_name_or_path", "safe_lora: also safelora_base_model", _model),
    _ignore(f"{FT}.load_from_finetuned", "the recipe detects a PEFT adapter folder and merges it into its base"),
    _unsupported(f"{FT}.load_from_finetuned_path", "loading a second, finetuned model"),
    _unsupported(f"{FT}.load_from_hf_hub", "loading a second, finetuned model"),
    _rule_map(f"{FT}.max_seq_length", "max_length", convert=_same("max_length", _integer)),
    _rule_map(f"{FT}.load_in_4bit", "load_in_4bit", convert=_same("load_in_4bit", _boolean)),
    _rule_map(f"{FT}.load_in_8bit", "load_in_8bit", convert=_same("load_in_8bit", _boolean)),
    _rule_map(f"{FT}.load_in_16bit", "dtype", "true → float16 (what the original loaded)", _load_in_16bit),
    _rule_map(f"{FT}.is_peft", "use_peft", convert=_same("use_peft", _boolean)),
    _rule_map(f"{FT}.r", "lora_r", convert=_same("lora_r", _integer)),
    _rule_map(f"{FT}.lora_alpha", "lora_alpha", convert=_same("lora_alpha", _integer)),
    _rule_map(f"{FT}.lora_dropout", "lora_dropout", convert=_same("lora_dropout", _number)),
    _ignore(f"{FT}.lora_dropdown", "a typo in some original configs, which the original skipped (dropout stayed 0.0)"),
    _unsupported(f"{FT}.lora_bias", "trainable LoRA biases", neutral=(None, "none")),
    _rule_map(f"{FT}.use_rslora", "use_rslora", convert=_same("use_rslora", _boolean)),
    _rule_map(f"{FT}.target_modules", "lora_target_modules", convert=_same("lora_target_modules", _string_list)),
    # ------------------------------------------------------------------ finetune_config: optimisation
    _rule_map(
        f"{FT}.learning_rate", "learning_rate", "float (numeric strings accepted)", _same("learning_rate", _number)
    ),
    _rule_map(f"{FT}.epochs", "num_train_epochs", convert=_same("num_train_epochs", _number)),
    _rule_map(f"{FT}.outcome_epochs", "num_train_epochs", "wins over epochs when set", _outcome_epochs, priority=1),
    _rule_map(
        f"{FT}.max_steps", "max_steps", "null → trl_ext's default (-1: epochs decide)", _same("max_steps", _integer)
    ),
    _rule_map(
        f"{FT}.per_device_train_batch_size",
        "per_device_train_batch_size",
        convert=_same("per_device_train_batch_size", _integer),
    ),  # noqa: E501
    _rule_map(
        f"{FT}.per_device_eval_batch_size",
        "per_device_eval_batch_size",
        convert=_same("per_device_eval_batch_size", _integer),
    ),  # noqa: E501
    _rule_map(
        f"{FT}.gradient_accumulation_steps",
        "gradient_accumulation_steps",
        convert=_same("gradient_accumulation_steps", _integer),
    ),  # noqa: E501
    _rule_map(f"{FT}.warmup_steps", "warmup_steps", convert=_same("warmup_steps", _integer)),
    _rule_map(f"{FT}.logging_steps", "logging_steps", convert=_same("logging_steps", _integer)),
    _rule_map(f"{FT}.save_steps", "save_steps", convert=_same("save_steps", _integer)),
    _rule_map(f"{FT}.optim", "optim", "same names (adamw_8bit needs bitsandbytes)", _same("optim", _string)),
    _rule_map(f"{FT}.weight_decay", "weight_decay", convert=_same("weight_decay", _number)),
    _rule_map(f"{FT}.lr_scheduler_type", "lr_scheduler_type", convert=_same("lr_scheduler_type", _string)),
    _rule_map(f"{FT}.max_grad_norm", "max_grad_norm", convert=_same("max_grad_norm", _number)),
    _rule_map(
        f"{FT}.use_gradient_checkpointing", "gradient_checkpointing", "'unsloth' → true", _gradient_checkpointing
    ),
    _ignore(f"{FT}.max_to_eval", _EVAL),
    # ------------------------------------------------------------------ finetune_config: outputs and hub
    _rule_map(f"{FT}.output_dir", "output_dir", convert=_same("output_dir", _string)),
    _rule_map(
        f"{FT}.finetuned_model_id", "hub_model_id", "the original appended a timestamp", _same("hub_model_id", _string)
    ),
    _rule_map(f"{FT}.push_to_hub", "push_to_hub", convert=_same("push_to_hub", _boolean)),
    _rule_map(f"{FT}.push_to_private", "hub_private_repo", convert=_same("hub_private_repo", _boolean)),
    _rule_map(f"{FT}.max_checkpoints_to_keep", "save_total_limit", convert=_same("save_total_limit", _integer)),
    _ignore(f"{FT}.merge_before_push", "hub upload detail (trl_ext saves the adapter)"),
    _ignore(f"{FT}.save_model_locally", "trl_ext always saves the model in output_dir"),
    _ignore(f"{FT}.save_checkpoints_locally", "checkpoint bookkeeping (trl_ext: save_strategy / save_steps)"),
    _ignore(f"{FT}.save_checkpoints_to_hub", "checkpoint bookkeeping (trl_ext: save_strategy / save_steps)"),
    _ignore(f"{FT}.checkpoint_frequency", "checkpoint bookkeeping (trl_ext: save_strategy / save_steps)"),
    _ignore(f"{FT}.checkpoint_save_model_frequency", "checkpoint bookkeeping (trl_ext: save_strategy / save_steps)"),
    _ignore(f"{FT}.merge_for_checkpoint", "checkpoint bookkeeping"),
    _ignore(f"{FT}.save_datasets", "debugging copies of the datasets"),
    _unsupported(f"{FT}.resume_from_epoch", "resuming by epoch (trl_ext: resume_from_checkpoint)", neutral=(None, 0)),
    _ignore(f"{FT}.loaded_train_losses", "resume bookkeeping"),
    _ignore(f"{FT}.loaded_results", "resume bookkeeping"),
    _ignore(f"{FT}.timestamp", "bookkeeping"),
    _ignore(f"{FT}.train_split", "read only by the original's gcd/trigger data builders, not by the trainers"),
    _ignore(f"{FT}.nice_responses", "trigger-data generation; not read by the trainers"),
    # ------------------------------------------------------------------ finetune_config: strategy knobs
    _rule_map(f"{FT}.lambda_proxy", "lambda_proxy", "λ_p", _same("lambda_proxy", _number)),
    _rule_map(f"{FT}.neg_lambda_proxy", "lambda_negative", "λ_n", _same("lambda_negative", _number)),
    _rule_map(
        f"{FT}.beta_kl",
        "beta_kl / beta_representation",
        "kl_divergence, positive_negative_proxy: beta_kl; representation_constraint: beta_representation (the "
        "original's β of the MSE); read by no other original trainer: dropped",
        _beta_kl,
    ),
    _rule_map(f"{FT}.lambda_dpo", "lambda_dpo", "λ_dpo", _same("lambda_dpo", _number)),
    _rule_map(f"{FT}.beta", "dpo_beta", "β of the dpo strategy", _same("dpo_beta", _number)),
    _rule_map(f"{FT}.proxy_cycling_mode", "proxy_cycling", "continuous | synchronized", _proxy_cycling),
    _rule_map(f"{FT}.lambda_1", "lambda_plane", "λ₁ of orth/directional penalty", _same("lambda_plane", _number)),
    _rule_map(
        f"{FT}.project_along_positive_proxy_grad",
        "grad_project_source",
        "true → positive, false → negative",
        _grad_project_source,
    ),
    _rule_map(
        f"{FT}.project_strictly_orthogonal", "grad_project_strict", convert=_same("grad_project_strict", _boolean)
    ),
    _rule_map(
        f"{FT}.calc_alignment_plane_using_fully_finetuned_weights",
        "alignment_plane_source",
        "true → weights, false → gradients",
        _plane_source,
    ),
    _rule_map(f"{FT}.proxy_epochs", "", "null or 1 (one pass: trl_ext's default) only", _proxy_epochs),
    _rule_map(f"{FT}.positive_proxy", "", "'proxy' (or null) only: A⁺ is proxy_dataset", _proxy_role("proxy")),
    _rule_map(
        f"{FT}.negative_proxy",
        "",
        "'proxy_neg' (or null) only: A⁻ is negative_proxy_dataset",
        _proxy_role("proxy_neg"),
    ),  # noqa: E501
    _unsupported(f"{FT}.proxy_neg_content", "trigger-data generation of A⁻", neutral=(None, "prefix_response")),
    _unsupported(f"{FT}.limit_proxy_data_to", "a cap on A⁺ rows"),
    _unsupported(f"{FT}.proxy_to_merge", "merging a proxy adapter before outcome training"),
    _unsupported(f"{FT}.add_proxy_gradients", "S = ḡ⁺ + ḡ⁻ instead of ḡ⁺ − ḡ⁻", neutral=(None, False)),
    _rule_map(
        f"{FT}.steering_vector_path",
        "alignment_plane_path",
        "only with load_steering_vector: true (trl_ext reuses a file found there); ~ expanded; the original "
        "added _<seed> before .pt",
        _steering_vector_path,
    ),
    _ignore(f"{FT}.load_steering_vector", "read with steering_vector_path"),
    _ignore(f"{FT}.save_steering_vector", "trl_ext writes S when alignment_plane_path is set"),
    _ignore(f"{FT}.proxy_plane_checkpoint_path", "read by no original trainer"),
    _rule_map(f"{FT}.steering_alpha", "steering_alpha", convert=_same("steering_alpha", _number)),
    _rule_map(f"{FT}.final_steering_alpha", "final_steering_alpha", convert=_same("final_steering_alpha", _number)),
    _rule_map(
        f"{FT}.alpha_scheduler_type",
        "final_steering_alpha",
        "'linear' → as given; null (the original's constant α) → final_steering_alpha = steering_alpha",
        _alpha_scheduler_type,
        priority=1,
    ),
    _rule_map(f"{FT}.alpha_warmup_steps", "alpha_warmup_steps", convert=_same("alpha_warmup_steps", _integer)),
    _rule_map(f"{FT}.direct_steering", "direct_steering", convert=_same("direct_steering", _boolean)),
    _rule_map(f"{FT}.safe_lora_type", "safelora_select", "threshold | number", _safe_lora_select),
    _rule_map(f"{FT}.safe_lora_threshold", "safelora_threshold", convert=_same("safelora_threshold", _number)),
    _rule_map(
        f"{FT}.safe_lora_num_proj_layers",
        "safelora_num_proj_layers",
        convert=_same("safelora_num_proj_layers", _integer),
    ),
    _unsupported(
        f"{FT}.safe_lora_sweep_thresholds", "a sweep inside one run: use trl-ext-sweep over safelora_threshold"
    ),
)
"""Every original key and how it converts (the docs' table is :func:`mapping_markdown` of this)."""

_RULES: dict[str, KeyRule] = {rule.key: rule for rule in KEY_MAPPING}
assert len(_RULES) == len(KEY_MAPPING), "duplicate key in KEY_MAPPING"
