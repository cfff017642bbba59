"""PPO with KL control over several datasets sampled by an auto-curriculum (seed 003).

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/curriculum_ppo.py \
        --config recipes/configs/curriculum_ppo_tiny.yaml
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/curriculum_ppo.py \
        --config recipes/configs/curriculum_ppo.yaml

Steps:

1. **Data.** ``curriculum_datasets`` (a list of :class:`~trl_ext.data.multi_dataset.DatasetSpec` dicts, YAML only)
   or, when it is unset, the shipped demo (:func:`~trl_ext.curriculum.demo.make_curriculum_demo`: ``repeat``,
   ``dialog``, ``random``, of increasing difficulty). Every dataset becomes a ``text`` column; the prompt of a row is
   its first ``prompt_chars`` characters (``prompt`` column) and the whole ``text`` stays beside it, so the
   curriculum's frozen model scores the full text. ``subset`` gives a hub configuration name (e.g.
   ``wikitext-103-raw-v1``) and ``min_chars`` drops rows with less text (e.g. Wikitext's blank lines, which the
   loader otherwise refuses).
2. **Optional LM warm-up** (``lm_warmup_steps`` > 0): a short causal-LM fine-tune of every weight on the shuffled
   union of the texts (``trl.SFTTrainer`` on the ``text`` column), saved to ``<output_dir>/warmup_model``, which is
   then PPO's starting policy and reference. An untrained model (the embedded ``tiny`` one) scores every dataset
   alike (≈ 6.4 nats), so the curriculum has nothing to act on; a pretrained model needs no warm-up (0, default).
   A finished warm-up folder is reused (resuming does not retrain it).
3. **PPO** (:class:`~trl_ext.curriculum.trainer.CurriculumPPOTrainer`: trl_ext's PPO with a value head,
   GAE and fixed or adaptive KL control, LoRA by default) on the prompts. The score of a completion is the sum of
   the reward functions (weighted by ``reward_weights`` when given): first the repetition reward

       r_rep = −repetition_coef · #{t ≥ 1 : ids[t] = ids[t−1]}

   over the completion's token ids (consecutive repeated tokens), then every extra ``reward_funcs`` entry. The
   curriculum updates the sampling weights of the datasets from the frozen model's difficulty estimates (see
   :class:`~trl_ext.curriculum.config.CurriculumArguments`).
4. **Test prompts.** At the end of every epoch :class:`~trl_ext.common.sample_table.SampleTableCallback` generates
   a completion for each of ``test_prompts`` (greedy, ``test_max_new_tokens``).

Outputs in ``output_dir``: the adapter (or model), tokenizer and value head; written by the trainer at the end of
training, ``curriculum.json`` (dataset names, initial and final weights, the curriculum's update history: step,
epoch, frozen_age, weights, difficulty, variance, seconds) and ``curriculum_weights.png`` (weights, and
difficulties, against the step, one line per dataset);
``samples.jsonl`` / ``samples.md`` (test prompt completions per epoch); ``loss_log.csv`` (with the
``curriculum/weight/<name>`` columns) / ``loss_curve.png``; ``warmup_model/`` after a warm-up. Every field of the
three argument classes is a YAML key and a command-line flag (``curriculum_datasets`` only in YAML).
"""

from __future__ import annotations

from trl_ext.common.noise import quiet_dependency_noise

quiet_dependency_noise()  # first: the known-harmless messages of dependencies (trl_ext/common/noise.py)

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
from trl_ext.common.imports import import_function
from trl_ext.common.lm_head_tiles import resolve_vocab_tile, vocab_tile
from trl_ext.common.loss_log import LossLogCallback
from trl_ext.common.recipes import LoRAModelConfig, describe_launch, recipe_parser, teardown_distributed
from trl_ext.common.sample_table import SampleTableCallback
from trl_ext.curriculum.config import CurriculumPPOConfig
from trl_ext.curriculum.demo import demo_prompts, make_curriculum_demo
from trl_ext.curriculum.trainer import CurriculumPPOTrainer
from trl_ext.data.multi_dataset import load_text_datasets
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

    def __post_init__(self) -> None:
        for name in ("demo_rows", "prompt_chars", "test_max_new_tokens", "lm_warmup_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
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


# ----------------------------------------------------------------------------------------------------------- outputs


# -------------------------------------------------------------------------------------------------------------- main


def main(
    script_args: CurriculumPPOArguments, training_args: CurriculumPPOConfig, model_args: LoRAModelConfig
) -> dict[str, Any]:
    """Run the recipe (see the module docstring); returns the curriculum summary plus ``train_runtime``,
    ``warmup_model`` (path or ``None``) and ``output_dir``."""
    set_seed(training_args.seed)
    output_dir = Path(training_args.output_dir)
    reward_funcs = make_reward_funcs(script_args)  # fail early on a bad import path
    state = PartialState()
    with state.main_process_first():  # the main process downloads and caches, the others then read the cache
        datasets = build_datasets(script_args, training_args.seed)

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

    trainer = CurriculumPPOTrainer(
        model=model_args.load_causal_lm(init_path),
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=datasets,
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
    trainer.accelerator.wait_for_everyone()
    return {
        **summary,
        "train_runtime": train_output.metrics.get("train_runtime"),
        "warmup_model": warmup_path,
        "output_dir": str(output_dir),
    }


def _run() -> None:
    parser = recipe_parser(CurriculumPPOArguments, CurriculumPPOConfig, LoRAModelConfig)
    script_args, training_args, model_args = parser.parse_args_and_config()
    logging.basicConfig(level=logging.INFO if PartialState().is_main_process else logging.WARNING)
    main(script_args, training_args, model_args)
    teardown_distributed()


if __name__ == "__main__":
    sys.exit(run_main(_run))
