"""The code of the curriculum PPO recipe (seed 003): ``recipes/curriculum_ppo.py`` (whose docstring gives the steps
and outputs), ``python -m trl_ext.curriculum`` and the console script all run :func:`cli`; ``docs/curriculum.md``.

Validation (every evaluation, ``eval_strategy: epoch`` by default): the policy's mean token negative log-likelihood

    eval_loss = Σ_texts Σ_{t≥1} −log p_θ(x_t | x_<t) / Σ_texts (n_text − 1),    eval_perplexity = exp(eval_loss)

on the validation texts (:mod:`trl_ext.curriculum.validation`); the best model by it is kept in
``<output_dir>/best_model`` and described by ``<output_dir>/best_model.json``.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelerate import PartialState
from transformers import set_seed
from trl import get_peft_config

from trl_ext.common.entry import run_main
from trl_ext.common.errors import ConfigError
from trl_ext.common.imports import import_function
from trl_ext.common.lm_head_tiles import resolve_vocab_tile, vocab_tile
from trl_ext.common.loss_log import LossLogCallback
from trl_ext.common.recipes import LoRAModelConfig, RecipeParser, describe_launch, teardown_distributed
from trl_ext.common.sample_table import SampleTableCallback
from trl_ext.curriculum.config import CurriculumPPOConfig
from trl_ext.curriculum.demo import demo_prompts, make_curriculum_demo
from trl_ext.curriculum.trainer import CurriculumPPOTrainer
from trl_ext.curriculum.validation import LMValidationMixin
from trl_ext.data.loading import DatasetLoadError
from trl_ext.data.multi_dataset import DatasetSpec, load_text_datasets
from trl_ext.models import load_tokenizer
from trl_ext.models.policy_init import prepare_init_policy
from trl_ext.ppo.value_head import VALUE_FUNCTION_FILES, has_value_head

logger = logging.getLogger("curriculum_ppo")

WARMUP_DIR = "warmup_model"

DEFAULT_TEST_PROMPTS = [
    "Once upon a time, in a city built on the back of a whale,",  # creative writing
    "Explain how gradient descent trains a neural network:",  # technical
    "def fibonacci(n):",  # code
    "La révolution industrielle a commencé",  # French
    "Der schnellste Weg zum Bahnhof ist",  # German
    "El aprendizaje por refuerzo es",  # Spanish
]


@dataclass
class CurriculumPPOArguments:
    """Data, rewards, test prompts and the optional LM warm-up of the curriculum PPO recipe."""

    curriculum_datasets: list[dict] | None = field(
        default=None,
        metadata={
            "help": "DatasetSpec dicts (YAML only; keys name, source, split, subset, text_field, formatter, "
            "formatter_kwargs, max_rows, min_chars). Unset: the shipped demo (repeat, dialog, random)."
        },
    )
    demo_rows: int = field(
        default=256, metadata={"help": "Rows per demo dataset (when curriculum_datasets is unset)."}
    )
    demo_seed: int | None = field(default=None, metadata={"help": "Seed of the demo data (default: seed)."})
    prompt_chars: int = field(
        default=16, metadata={"help": "Prompt = the first this many characters of each text (the text is kept)."}
    )
    repetition_coef: float = field(
        default=0.1,
        metadata={"help": "Repetition reward: -repetition_coef x number of consecutive repeated completion tokens."},
    )
    reward_funcs: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Extra reward functions, 'package.module:function' (or 'package.module.function'), added to the "
            "repetition reward (weights: reward_weights, repetition reward first)."
        },
    )
    test_prompts: list[str] = field(
        default_factory=lambda: list(DEFAULT_TEST_PROMPTS),
        metadata={"help": "Prompts completed at the end of every epoch (samples.jsonl / samples.md)."},
    )
    test_max_new_tokens: int = field(default=48, metadata={"help": "New tokens per test completion."})
    lm_warmup_steps: int = field(
        default=0,
        metadata={"help": "Causal-LM warm-up steps on the union of the texts before PPO (0: none)."},
    )
    lm_warmup_learning_rate: float = field(default=1e-3, metadata={"help": "Learning rate of the LM warm-up."})
    lm_warmup_batch_size: int = field(default=8, metadata={"help": "Per-device batch size of the LM warm-up."})
    validation_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Validation texts scored at every evaluation: a source (a .jsonl/.json/.parquet/.csv file, a "
            "save_to_disk folder or a hub id; column validation_text_field) or, in YAML, a DatasetSpec dict. Unset: "
            "the demo's own validation split (validation_rows rows per demo dataset, generated with seed "
            "-(demo seed + 1)), or, with curriculum_datasets, a held-out validation_fraction of each dataset's rows."
        },
    )
    validation_text_field: str = field(
        default="text", metadata={"help": "Text column of a validation_dataset given as a source string."}
    )
    validation_rows: int = field(default=32, metadata={"help": "Demo validation split: rows per demo dataset."})
    validation_fraction: float = field(
        default=0.05,
        metadata={
            "help": "With curriculum_datasets and no validation_dataset: the fraction of each dataset's rows held "
            "out for validation (at least 1 row; never trained on)."
        },
    )
    validation_max_rows: int | None = field(
        default=512, metadata={"help": "At most this many validation texts (the first ones; None: all)."}
    )
    validation_max_length: int | None = field(
        default=None, metadata={"help": "Tokens kept of each validation text (default: difficulty_max_length)."}
    )
    validation_batch_size: int = field(default=8, metadata={"help": "Validation texts per forward pass."})

    def __post_init__(self) -> None:
        for name in (
            "demo_rows",
            "prompt_chars",
            "test_max_new_tokens",
            "lm_warmup_batch_size",
            "validation_rows",
            "validation_batch_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if self.validation_max_rows is not None and self.validation_max_rows < 1:
            raise ValueError(f"validation_max_rows must be >= 1 or None, got {self.validation_max_rows}")
        if self.validation_max_length is not None and self.validation_max_length < 2:
            raise ValueError(f"validation_max_length must be >= 2, got {self.validation_max_length}")
        if self.validation_dataset is not None and not isinstance(self.validation_dataset, (str, dict)):
            raise ValueError(
                "validation_dataset must be a source string or a DatasetSpec dict, got "
                f"{type(self.validation_dataset).__name__}: {self.validation_dataset!r}"
            )
        if self.lm_warmup_steps < 0:
            raise ValueError(f"lm_warmup_steps must be >= 0, got {self.lm_warmup_steps}")
        if self.repetition_coef < 0:
            raise ValueError(f"repetition_coef must be >= 0, got {self.repetition_coef}")
        if not self.test_prompts:
            raise ValueError("test_prompts is empty: give at least one prompt")


# ---------------------------------------------------------------------------------------------------------- rewards


def count_repeats(ids: Sequence[int]) -> int:
    """Number of positions t ≥ 1 with ``ids[t] == ids[t-1]`` (consecutive repeated tokens)."""
    ids = list(ids)
    return sum(1 for prev, cur in zip(ids, ids[1:]) if prev == cur)


def repetition_reward(
    completions: Sequence[Any], completion_ids: Sequence[Sequence[int]], repetition_coef: float = 0.1, **kwargs: Any
) -> list[float]:
    """TRL reward function: ``−repetition_coef · count_repeats(ids)`` for each completion's token ids.

    E.g. ids ``[5, 5, 5, 7, 7]`` have 3 repeats (t = 1, 2, 4): reward −0.3 with the default coefficient.
    """
    return [-repetition_coef * count_repeats(ids) for ids in completion_ids]


def make_reward_funcs(args: CurriculumPPOArguments) -> list[Callable[..., list[float]]]:
    """The repetition reward (named ``repetition_reward`` in the logs) followed by the extra reward functions."""
    return [
        functools.partial(repetition_reward, repetition_coef=args.repetition_coef),
        *(import_function(name, f"reward function {name!r}") for name in args.reward_funcs),
    ]


# ------------------------------------------------------------------------------------------------------------- data


def build_datasets(args: CurriculumPPOArguments, seed: int) -> dict[str, Any]:
    """The curriculum datasets (``curriculum_datasets`` or the demo) with ``text`` and ``prompt`` columns."""
    if args.curriculum_datasets is None:
        texts = make_curriculum_demo(args.demo_rows, seed=seed if args.demo_seed is None else args.demo_seed)
    else:
        texts = load_text_datasets(args.curriculum_datasets)
    return demo_prompts(texts, args.prompt_chars)


def _validation_spec(args: CurriculumPPOArguments) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``validation_dataset`` (named ``validation`` unless the dict names it)."""
    value = args.validation_dataset
    if isinstance(value, str):
        return DatasetSpec(name="validation", source=value, text_field=args.validation_text_field)
    return DatasetSpec.from_dict({"name": "validation", **value})


def build_validation(
    args: CurriculumPPOArguments, datasets: Mapping[str, Any], seed: int
) -> tuple[dict[str, Any], Any]:
    """``(training datasets, validation dataset)``; the validation dataset has ``text`` and ``prompt`` columns.

    ``validation_dataset`` given: it is loaded (errors name ``validation_dataset`` and the offending item: a missing
    file, an unknown column, ...), the training datasets are unchanged. Otherwise, for the demo: the demo generated
    with seed ``-(demo seed + 1)`` (a seed no training run uses), ``validation_rows`` rows per dataset; for
    ``curriculum_datasets``: ``max(1, round(validation_fraction · n))`` rows of each dataset of ``n`` rows (a
    permutation seeded by ``seed``) are held out of training (a dataset of one row is refused). At most
    ``validation_max_rows`` texts are kept (the first ones).
    """
    import datasets as hf_datasets

    if args.validation_dataset is not None:
        try:
            (validation,) = load_text_datasets([_validation_spec(args)]).values()
        except (DatasetLoadError, FileNotFoundError) as err:
            raise type(err)(f"validation_dataset: {err}") from err
        train = dict(datasets)
    elif args.curriculum_datasets is None:
        demo_seed = seed if args.demo_seed is None else args.demo_seed
        parts = make_curriculum_demo(args.validation_rows, seed=-(demo_seed + 1))
        validation = hf_datasets.concatenate_datasets(list(parts.values()))
        train = dict(datasets)
    else:
        import numpy as np

        rng = np.random.default_rng(seed)
        train, held = {}, []
        for name, dataset in datasets.items():
            n = len(dataset)
            if n < 2:
                raise DatasetLoadError(
                    f"dataset {name!r}: {n} row(s), too few to hold out validation rows; give a validation_dataset"
                )
            k = min(n - 1, max(1, round(args.validation_fraction * n)))
            order = rng.permutation(n)
            held.append(dataset.select(sorted(order[:k].tolist())).select_columns(["text"]))
            train[name] = dataset.select(sorted(order[k:].tolist()))
        validation = hf_datasets.concatenate_datasets(held)
    validation = validation.select_columns(["text"])
    if args.validation_max_rows is not None and len(validation) > args.validation_max_rows:
        validation = validation.select(range(args.validation_max_rows))
    return train, demo_prompts({"validation": validation}, args.prompt_chars)["validation"]


# ----------------------------------------------------------------------------------------------------------- warm-up


def lm_warmup(
    init_path: str,
    datasets: Mapping[str, Any],
    args: CurriculumPPOArguments,
    training_args: CurriculumPPOConfig,
    model_args: LoRAModelConfig,
) -> str:
    """Fine-tune every weight of ``init_path`` as a causal LM on the shuffled union of the ``text`` columns for
    ``lm_warmup_steps`` steps; save to ``<output_dir>/warmup_model`` (reused when it already holds a model) and
    return that path."""
    import datasets as hf_datasets
    from trl import SFTConfig, SFTTrainer

    out = Path(training_args.output_dir) / WARMUP_DIR
    state = PartialState()
    state.wait_for_everyone()
    if (out / "config.json").is_file():
        logger.info("LM warm-up: reusing %s", out)
        return str(out.resolve())
    if model_args.load_in_4bit or model_args.load_in_8bit:
        raise ValueError("the LM warm-up trains every weight: it cannot run on a quantised model (load_in_4bit/8bit)")
    texts = hf_datasets.concatenate_datasets([d.select_columns(["text"]) for d in datasets.values()])
    texts = texts.shuffle(seed=training_args.seed)
    config = SFTConfig(
        output_dir=str(out),
        max_steps=args.lm_warmup_steps,
        per_device_train_batch_size=args.lm_warmup_batch_size,
        learning_rate=args.lm_warmup_learning_rate,
        lr_scheduler_type="constant",
        max_length=training_args.difficulty_max_length,
        dataset_text_field="text",
        packing=False,
        gradient_checkpointing=training_args.gradient_checkpointing,
        bf16=training_args.bf16,
        fp16=training_args.fp16,
        use_cpu=training_args.use_cpu,
        ddp_backend=training_args.ddp_backend,
        logging_steps=max(1, args.lm_warmup_steps // 10),
        save_strategy="no",
        report_to="none",
        seed=training_args.seed,
        disable_tqdm=training_args.disable_tqdm,
    )
    trainer = SFTTrainer(
        model=model_args.load_causal_lm(init_path),
        args=config,
        train_dataset=texts,
        processing_class=load_tokenizer(init_path),
        callbacks=[LossLogCallback(output_dir=out, plot=False)],
    )
    with vocab_tile(resolve_vocab_tile(None, trainer.accelerator.device)):  # narrow LM-head tiles on CPU
        trainer.train()
    trainer.save_model(str(out))
    trainer.accelerator.wait_for_everyone()
    del trainer
    return str(out.resolve())


# ----------------------------------------------------------------------------------------------------------- trainer


class ValidatedCurriculumPPOTrainer(LMValidationMixin, CurriculumPPOTrainer):
    """:class:`~trl_ext.curriculum.trainer.CurriculumPPOTrainer` whose evaluation is the policy's mean token NLL on
    the validation texts, keeping the best model by it (:class:`~trl_ext.curriculum.validation.LMValidationMixin`):
    ``eval_loss``, ``eval_perplexity`` = exp(eval_loss), ``best_model/``, ``best_model.json``."""


# -------------------------------------------------------------------------------------------------------------- main

RECIPE_DEFAULTS: dict[str, Any] = {
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "metric_for_best_model": "eval_loss",
    "greater_is_better": False,
}
"""Parser defaults of the recipe (a YAML key or a flag still wins): validate and checkpoint every epoch, and rank
checkpoints by the validation loss (lower is better)."""


def make_parser(prog: str | None = None) -> RecipeParser:
    """The recipe's parser: :class:`CurriculumPPOArguments`, :class:`CurriculumPPOConfig`, :class:`LoRAModelConfig`,
    with :data:`RECIPE_DEFAULTS`."""
    parser = RecipeParser((CurriculumPPOArguments, CurriculumPPOConfig, LoRAModelConfig), prog=prog)
    parser.set_defaults_with_config(**RECIPE_DEFAULTS)
    return parser


def main(
    script_args: CurriculumPPOArguments, training_args: CurriculumPPOConfig, model_args: LoRAModelConfig
) -> dict[str, Any]:
    """Run the recipe (see the module docstring); returns the curriculum summary plus ``train_runtime``,
    ``warmup_model`` (path or ``None``) and ``output_dir``."""
    set_seed(training_args.seed)
    output_dir = Path(training_args.output_dir)
    reward_funcs = make_reward_funcs(script_args)  # fail early on a bad import path
    validate = training_args.eval_strategy != "no"
    metric = training_args.metric_for_best_model
    if validate and metric is not None and metric.removeprefix("eval_") not in ("loss", "perplexity"):
        raise ConfigError(
            f"metric_for_best_model={metric!r}: this recipe's evaluation computes eval_loss, eval_perplexity and "
            "eval_tokens only; use eval_loss (best_model/ is always chosen by eval_loss)"
        )
    state = PartialState()
    validation = None
    with state.main_process_first():  # the main process downloads and caches, the others then read the cache
        datasets = build_datasets(script_args, training_args.seed)
        if validate:
            datasets, validation = build_validation(script_args, datasets, training_args.seed)

    init_path = prepare_init_policy(
        model_args.model_name_or_path,
        output_dir / "init_policy",
        dtype=model_args.dtype,
        carry_files=VALUE_FUNCTION_FILES,
    )
    warmup_path = None
    if script_args.lm_warmup_steps > 0:
        warmup_path = init_path = lm_warmup(init_path, datasets, script_args, training_args, model_args)
        set_seed(training_args.seed)  # PPO starts from the same RNG state with or without a warm-up
    if training_args.value_init_path is None and has_value_head(init_path):
        training_args.value_init_path = init_path  # continuing a PPO run: keep its value function

    trainer = ValidatedCurriculumPPOTrainer(
        model=model_args.load_causal_lm(init_path),
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=datasets,
        eval_dataset=validation,
        validation_max_length=script_args.validation_max_length or training_args.difficulty_max_length,
        validation_batch_size=script_args.validation_batch_size,
        processing_class=load_tokenizer(init_path, padding_side="left"),
        peft_config=get_peft_config(model_args),
        callbacks=[
            LossLogCallback(),
            SampleTableCallback(script_args.test_prompts, max_new_tokens=script_args.test_max_new_tokens),
        ],
    )
    describe_launch(trainer)
    train_output = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(str(output_dir))

    summary = trainer.curriculum.report  # curriculum.json, written by the trainer at the end of train()
    if trainer.accelerator.is_main_process:
        print("[trl_ext] curriculum weights: " + json.dumps(summary["final_weights"]), flush=True)
    best = getattr(trainer, "best_model_record", None)
    if best is not None and trainer.accelerator.is_main_process:
        b = best["best"]
        line = f"[trl_ext] best model: epoch {b['epoch']}, step {b['step']}, eval_loss {b['eval_loss']:.4f}"
        print(line, flush=True)
    trainer.accelerator.wait_for_everyone()
    return {
        **summary,
        "train_runtime": train_output.metrics.get("train_runtime"),
        "warmup_model": warmup_path,
        "best_model": best,
        "output_dir": str(output_dir),
    }


def cli(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run :func:`main`; a user error prints one line and returns 2
    (:func:`~trl_ext.common.entry.run_main`). The entry of the recipe file, ``python -m trl_ext.curriculum`` and
    the console script."""

    def run() -> None:
        parser = make_parser(prog)
        script_args, training_args, model_args = parser.parse_args_and_config(argv)
        logging.basicConfig(level=logging.INFO if PartialState().is_main_process else logging.WARNING)
        main(script_args, training_args, model_args)
        teardown_distributed()

    return run_main(run, prog=prog)


if __name__ == "__main__":
    sys.exit(cli())
