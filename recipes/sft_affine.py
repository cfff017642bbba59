"""Stage 1 of the two-stage pipeline (seed 004): supervised fine-tuning (LoRA) on reasoning tasks.

    accelerate launch recipes/sft_affine.py --config recipes/configs/sft_affine_tiny.yaml
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/sft_affine.py \
        --config recipes/configs/sft_affine.yaml --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct

Steps: load (or collect) the train/validation JSONL in TRL's conversational prompt-completion format;
load the model (LoRA by default, ``--load_in_4bit`` for QLoRA); train with ``SFTConfig`` (cosine schedule
with a floor ``min_lr_ratio``, warm-up, gradient checkpointing, bf16 where supported, evaluation and
best model by eval loss); save the adapter and tokenizer; write ``loss_log.csv`` and ``loss_curve.png``;
then evaluate on freshly generated held-out tasks and write ``eval_results.json`` beside the model.
Every field of the three argument classes is a YAML key and a command-line flag.

Auto-curriculum (``--curriculum_split``, off by default): the training rows are split into several datasets,
one per task environment (``task``) or one per value of a key of the instance payload (``payload:<key>``,
e.g. ``payload:n`` for SAT instances of different sizes with a ``--sat_n lo hi`` range), named ``sat`` or
``n=5`` and sorted (numbers numerically). They are trained with ``CurriculumSFTTrainer``, whose sampling
weights follow each dataset's difficulty under a rolling frozen model (the ``curriculum_*``, ``freeze_*`` and
``difficulty_*`` fields of ``CurriculumSFTConfig``; ignored without a split). The trainer writes
``curriculum.json`` (dataset names and sizes, update history, initial and final weights, plus the split, which
the recipe adds through ``curriculum_report_extra``) and ``curriculum_weights.png`` into ``output_dir`` at the
end of training, and ``loss_log.csv`` gets the ``curriculum/weight/<name>`` and ``curriculum/difficulty/<name>``
columns.
Validation and the held-out evaluation use all the data, as without a split::

    accelerate launch recipes/sft_affine.py --config recipes/configs/sft_affine_curriculum_tiny.yaml

Perplexity: every evaluation also logs ``eval_perplexity = exp(eval_loss)`` (a column of ``loss_log.csv``, in the
trainer state's log history and in every reporter, e.g. W&B); ``eval_results.json`` gets a ``validation`` section
with the validation loss and perplexity of the saved model (the best checkpoint with ``load_best_model_at_end``,
else the last evaluation). ``--early_stopping_patience N`` stops training after N evaluations without an
improvement of ``metric_for_best_model`` by more than ``--early_stopping_threshold`` (transformers'
``EarlyStoppingCallback``; needs evaluation, ``load_best_model_at_end`` and ``metric_for_best_model``).
``--wandb_project NAME`` tracks the run in W&B.
"""

from __future__ import annotations

from trl_ext.common.noise import quiet_dependency_noise

quiet_dependency_noise()  # first: the known-harmless messages of dependencies (trl_ext/common/noise.py)

import json
import logging
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelerate import PartialState
from transformers import EarlyStoppingCallback, TrainerCallback, set_seed
from trl import SFTConfig, SFTTrainer, get_peft_config

from trl_ext.common.entry import run_main
from trl_ext.common.lm_head_tiles import resolve_vocab_tile, vocab_tile
from trl_ext.common.loss_log import LossLogCallback
from trl_ext.common.recipes import (
    LoRAModelConfig,
    apply_min_lr_ratio,
    describe_launch,
    recipe_parser,
    teardown_distributed,
)
from trl_ext.curriculum.config import CURRICULUM_FIELDS, CurriculumArguments, CurriculumSFTConfig
from trl_ext.curriculum.trainer import CurriculumSFTTrainer
from trl_ext.data.affine import check_selection
from trl_ext.data.affine_args import AffineRecipeArguments
from trl_ext.eval.report import format_report, save_report
from trl_ext.models import load_tokenizer, resolve_model_name_or_path
from trl_ext.tasks.envs.play import is_episode_payload

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

logger = logging.getLogger("sft_affine")

KEEP_COLUMNS = ("prompt", "completion")


@dataclass
class SFTAffineArguments(AffineRecipeArguments):
    """Arguments of the SFT recipe: task data and held-out evaluation (base class), the schedule floor and the
    optional curriculum split of the training rows."""

    min_lr_ratio: float = field(
        default=0.1, metadata={"help": "Floor of the cosine schedule as a fraction of learning_rate (0: none)."}
    )
    curriculum_split: str | None = field(
        default=None,
        metadata={
            "help": "Auto-curriculum over the training rows: None (plain SFT), 'task' (one dataset per task "
            "environment) or 'payload:<key>' (one dataset per value of that payload key, e.g. 'payload:n' for "
            "SAT sizes). Needs at least 2 datasets; tuned by the curriculum_* and difficulty_* fields."
        },
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={
            "help": "Stop after this many evaluations without improvement of metric_for_best_model (None: off). "
            "Needs eval_strategy, load_best_model_at_end and metric_for_best_model."
        },
    )
    early_stopping_threshold: float = field(
        default=0.0,
        metadata={"help": "Early stopping: smallest change of metric_for_best_model that counts as an improvement."},
    )


def perplexity(loss: float) -> float:
    """``exp(loss)`` of a mean token cross-entropy (nats); ``inf`` where it overflows."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


class PerplexityCallback(TrainerCallback):
    """Add ``eval_perplexity = exp(eval_loss)`` to every evaluation's metrics and log.

    ``on_evaluate`` adds it to the metrics ``Trainer.evaluate`` returns (so ``metric_for_best_model`` may name it);
    the trainer logs the metrics *before* ``on_evaluate``, so ``on_log`` adds it to the logged dict too (and to the
    log-history entry just written). Put it first among the callbacks (:func:`add_perplexity_callback`) so that
    every reporter after it (``loss_log.csv``, W&B, TensorBoard) sees the value.
    """

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "eval_loss" in logs and "eval_perplexity" not in logs:
            logs["eval_perplexity"] = perplexity(logs["eval_loss"])
            last = state.log_history[-1] if state.log_history else None
            if last is not None and last.get("eval_loss") == logs["eval_loss"]:
                last["eval_perplexity"] = logs["eval_perplexity"]

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and "eval_loss" in metrics:
            metrics["eval_perplexity"] = perplexity(metrics["eval_loss"])


def add_perplexity_callback(trainer: Any) -> PerplexityCallback:
    """Put a :class:`PerplexityCallback` first in ``trainer``'s callbacks (before the reporters); returns it."""
    callback = PerplexityCallback()
    trainer.callback_handler.callbacks.insert(0, callback)
    return callback


def early_stopping_callback(script_args: SFTAffineArguments, training_args: SFTConfig) -> EarlyStoppingCallback | None:
    """transformers' ``EarlyStoppingCallback`` for ``--early_stopping_patience`` (``None`` when unset); a
    ``ValueError`` naming the missing setting when the training arguments cannot support it (checked before any model
    is loaded: transformers would only assert at the start of training)."""
    patience = script_args.early_stopping_patience
    if patience is None:
        return None
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise ValueError(f"early_stopping_patience must be an int >= 1, got {patience!r}")
    if script_args.early_stopping_threshold < 0:
        raise ValueError(f"early_stopping_threshold must be >= 0, got {script_args.early_stopping_threshold}")
    missing = []
    if str(getattr(training_args.eval_strategy, "value", training_args.eval_strategy)) == "no":
        missing.append("an eval_strategy ('steps' or 'epoch', not 'no')")
    if not training_args.load_best_model_at_end:
        missing.append("load_best_model_at_end: true")
    if not training_args.metric_for_best_model:
        missing.append("metric_for_best_model (e.g. eval_loss)")
    if missing:
        raise ValueError(f"early_stopping_patience={patience} needs {', '.join(missing)}")
    return EarlyStoppingCallback(
        early_stopping_patience=patience, early_stopping_threshold=script_args.early_stopping_threshold
    )


def validation_summary(state: Any, load_best_model_at_end: bool) -> dict[str, Any] | None:
    """The validation loss and perplexity of the saved model from the trainer state: the evaluation of the best
    checkpoint when the best model was loaded at the end, else the last evaluation; ``None`` without evaluations.

    Keys: ``eval_loss``, ``eval_perplexity`` (``None`` where ``exp`` overflows), ``step``, ``selected``
    (``"best"`` or ``"last"``), ``evaluations`` (how many were run)."""
    evals = [entry for entry in state.log_history if "eval_loss" in entry]
    if not evals:
        return None
    chosen, selected = evals[-1], "last"
    best = getattr(state, "best_model_checkpoint", None)
    if load_best_model_at_end and best:
        step = Path(best).name.rpartition("-")[2]
        match = [e for e in evals if step.isdigit() and e.get("step") == int(step)]
        if match:
            chosen, selected = match[-1], "best"
    loss = float(chosen["eval_loss"])
    ppl = perplexity(loss)
    return {
        "eval_loss": loss,
        "eval_perplexity": ppl if math.isfinite(ppl) else None,  # reports are strict JSON: no inf
        "step": int(chosen.get("step", 0)),
        "selected": selected,
        "evaluations": len(evals),
    }


def parse_curriculum_split(split: str) -> tuple[str, str | None]:
    """``"task"`` -> ``("task", None)``; ``"payload:<key>"`` -> ``("payload", key)``; anything else: ValueError."""
    if split == "task":
        return "task", None
    if split.startswith("payload:") and split[len("payload:") :].strip():
        return "payload", split[len("payload:") :].strip()
    raise ValueError(
        f"unknown curriculum_split {split!r}: use 'task' (one dataset per task environment) or 'payload:<key>' "
        "(one dataset per value of a payload key, e.g. 'payload:n')"
    )


def _group_of(split: str, kind: str, key: str | None, task: str, row_id: str, payload: str) -> tuple[str, Any]:
    """(dataset name, sort key) of one row under ``split``."""
    if kind == "task":
        return task, (1, task)
    values = json.loads(payload)
    if key not in values:
        raise ValueError(
            f"curriculum_split {split!r}: row {row_id!r} (task {task!r}) has no payload key {key!r}; its payload "
            f"keys are {sorted(values)}"
        )
    value = values[key]
    if value is not None and not isinstance(value, (str, int, float, bool)):
        raise ValueError(
            f"curriculum_split {split!r}: row {row_id!r} has a {type(value).__name__} under payload key {key!r}; "
            "a split needs a scalar value (string, number or bool)"
        )
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f"{key}={value}", ((0, value) if number else (1, str(value)))


def split_curriculum(train: Dataset, split: str) -> dict[str, Dataset]:
    """Split the training ``Dataset`` (row-format columns) into ``{name: Dataset}`` per ``split``.

    Datasets keep only the prompt and completion columns and the row order; they are sorted by their value
    (numbers numerically, then strings). Raises ``ValueError`` for an unknown split kind, a row without the
    payload key (naming the row id), or a split that gives fewer than 2 datasets.
    """
    kind, key = parse_curriculum_split(split)
    groups: dict[str, list[int]] = {}
    order: dict[str, Any] = {}
    for index, (task, row_id, payload) in enumerate(zip(train["task"], train["id"], train["payload"])):
        name, sort_key = _group_of(split, kind, key, task, row_id, payload)
        groups.setdefault(name, []).append(index)
        order.setdefault(name, sort_key)
    if len(groups) < 2:
        name = next(iter(groups), None)
        raise ValueError(
            f"curriculum_split {split!r} puts all {len(train)} training rows in one dataset ({name!r}); a "
            "curriculum needs at least 2 datasets: choose another split (e.g. 'payload:n' with a range "
            "--sat_n lo hi, or 'task' with several --tasks) or leave curriculum_split unset for plain SFT"
        )
    drop = [c for c in train.column_names if c not in KEEP_COLUMNS]
    return {
        name: train.select(groups[name]).remove_columns(drop) for name in sorted(groups, key=lambda n: (order[n], n))
    }


def prepare_data(args: SFTAffineArguments) -> tuple[DatasetDict, dict[str, Dataset] | None, bool]:
    """Load ``data_dir`` (collected first when empty) and keep the prompt and completion columns.

    Returns ``(data, curriculum, episodes)``: the ``DatasetDict`` (train, validation); when ``curriculum_split``
    is set, the training rows split into ``{name: Dataset}`` (:func:`split_curriculum`), else ``None``; and whether
    the rows hold agent episodes (multi-turn completions).
    """
    data = args.load_data()
    envs = args.env_params()
    present = Counter(data["train"]["task"])
    keep = check_selection(present, args.task_params(), envs, require_envs=args.num_episodes > 0 and bool(envs),
                           where=f"data_dir {args.data_dir}")  # fmt: skip
    if set(present) - keep:
        data = data.filter(lambda row: row["task"] in keep)
    episodes = any(is_episode_payload(p) for split in data.values() for p in split["payload"])
    curriculum = split_curriculum(data["train"], args.curriculum_split) if args.curriculum_split else None
    data = data.remove_columns([c for c in data["train"].column_names if c not in KEEP_COLUMNS])
    return data, curriculum, episodes


def _warn_unused_curriculum_args(training_args: SFTConfig) -> None:
    if not isinstance(training_args, CurriculumArguments):
        return
    defaults = CurriculumArguments()
    changed = [f for f in CURRICULUM_FIELDS if getattr(training_args, f) != getattr(defaults, f)]
    if changed:
        logger.warning("curriculum_split is not set: plain SFT, the curriculum fields %s are ignored", changed)


def main(script_args: SFTAffineArguments, training_args: SFTConfig, model_args: LoRAModelConfig) -> dict | None:
    """Train (plain SFT, or the curriculum with ``curriculum_split``), save, and evaluate on held-out tasks.

    ``training_args`` is a ``CurriculumSFTConfig`` (what the command line parses) or a plain ``SFTConfig``
    (then a curriculum uses the default knobs). Returns the held-out report, or ``None`` when skipped.
    """
    set_seed(training_args.seed)
    apply_min_lr_ratio(training_args, script_args.min_lr_ratio)
    script_args.task_params()  # fail early on unknown tasks
    early_stop = early_stopping_callback(script_args, training_args)  # fail early on a setting it cannot use
    script_args.apply_wandb(training_args)  # before the trainer: it builds its reporters from report_to
    split = script_args.curriculum_split
    if split:
        parse_curriculum_split(split)  # fail early on an unknown split kind
    else:
        _warn_unused_curriculum_args(training_args)

    model_path = resolve_model_name_or_path(model_args.model_name_or_path)
    tokenizer = load_tokenizer(model_path, revision=model_args.model_revision)
    model = model_args.load_causal_lm(model_path)
    data, curriculum, episodes = prepare_data(script_args)

    if episodes and not training_args.assistant_only_loss:
        # agent episodes: the completion holds the observations between the actions; train on the actions only
        training_args.assistant_only_loss = True
        logger.info("the data holds agent episodes: assistant_only_loss=True (the loss is on the actions only)")
    trainer_cls = CurriculumSFTTrainer if curriculum is not None else SFTTrainer
    curriculum_kw: dict[str, Any] = {}
    if curriculum is not None:  # the trainer writes curriculum.json; the split is the recipe's own field
        curriculum_kw["curriculum_report_extra"] = {"split": split}
        if not isinstance(training_args, CurriculumArguments):  # a plain SFTConfig: the default knobs
            curriculum_kw["curriculum_args"] = CurriculumArguments()
    trainer = trainer_cls(
        model=model,
        args=training_args,
        train_dataset=curriculum if curriculum is not None else data["train"],
        eval_dataset=data["validation"] if training_args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        callbacks=[LossLogCallback(), *([early_stop] if early_stop is not None else [])],
        **curriculum_kw,
    )
    add_perplexity_callback(trainer)
    describe_launch(trainer)
    if curriculum is not None and trainer.accelerator.is_main_process:
        sizes = ", ".join(f"{name} ({len(d)} rows)" for name, d in curriculum.items())
        print(f"[trl_ext] curriculum over {len(curriculum)} datasets ({split}): {sizes}", flush=True)
    with vocab_tile(resolve_vocab_tile(None, trainer.accelerator.device)):  # narrow LM-head tiles on CPU
        trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    if early_stop is not None and trainer.state.global_step < trainer.state.max_steps:
        logger.info("early stopping at step %d of %d", trainer.state.global_step, trainer.state.max_steps)

    report = None
    validation = validation_summary(trainer.state, training_args.load_best_model_at_end)
    if script_args.heldout_samples > 0 and trainer.accelerator.is_main_process:
        report = evaluate_saved_model(training_args.output_dir, script_args, model_args, validation)
    trainer.accelerator.wait_for_everyone()
    return report


def evaluate_saved_model(
    model_dir: str,
    script_args: SFTAffineArguments,
    model_args: LoRAModelConfig,
    validation: dict[str, Any] | None = None,
) -> dict:
    """Reload the saved model (adapter + base, as trained: same dtype, 4-bit for QLoRA) on the accelerator,
    evaluate it on held-out tasks and write ``eval_results.json`` beside it (with ``validation``, the
    :func:`validation_summary` of the run, as its ``validation`` section)."""
    report = script_args.evaluate(model_dir, dtype=model_args.dtype, load_in_4bit=model_args.load_in_4bit)
    if validation is not None:
        report["validation"] = validation
        ppl = validation["eval_perplexity"]
        print(f"validation: loss {validation['eval_loss']:.4f}, perplexity {ppl if ppl is None else round(ppl, 4)} "
              f"({validation['selected']} evaluation, step {validation['step']})")  # fmt: skip
    save_report(report, Path(model_dir) / "eval_results.json")
    print(format_report(report))
    return report


def _run() -> None:
    parser = recipe_parser(SFTAffineArguments, CurriculumSFTConfig, LoRAModelConfig)
    script_args, training_args, model_args = parser.parse_args_and_config()
    logging.basicConfig(level=logging.INFO if PartialState().is_main_process else logging.WARNING)
    result = main(script_args, training_args, model_args)
    if result is not None:
        print(json.dumps(result["aggregate"], indent=2))
    teardown_distributed()


if __name__ == "__main__":
    sys.exit(run_main(_run))
