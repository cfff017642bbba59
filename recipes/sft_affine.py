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
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import PartialState
from transformers import set_seed
from trl import SFTConfig, SFTTrainer, get_peft_config

from trl_ext.callbacks import LossLogCallback
from trl_ext.data.affine_args import AffineRecipeArguments
from trl_ext.eval.report import format_report, save_report
from trl_ext.models import load_tokenizer, resolve_model_name_or_path
from trl_ext.recipe_utils import (
    LoRAModelConfig,
    apply_min_lr_ratio,
    describe_launch,
    recipe_parser,
    teardown_distributed,
)

logger = logging.getLogger("sft_affine")


@dataclass
class SFTAffineArguments(AffineRecipeArguments):
    """Arguments of the SFT recipe: task data and held-out evaluation (base class) plus the schedule floor."""

    min_lr_ratio: float = field(
        default=0.1, metadata={"help": "Floor of the cosine schedule as a fraction of learning_rate (0: none)."}
    )


def prepare_data(args: SFTAffineArguments):
    """Load ``data_dir`` (collected first when empty) and keep the prompt and completion columns."""
    data = args.load_data()
    keep = ["prompt", "completion"]
    return data.remove_columns([c for c in data["train"].column_names if c not in keep])


def main(script_args: SFTAffineArguments, training_args: SFTConfig, model_args: LoRAModelConfig) -> dict | None:
    set_seed(training_args.seed)
    apply_min_lr_ratio(training_args, script_args.min_lr_ratio)
    script_args.task_params()  # fail early on unknown tasks

    model_path = resolve_model_name_or_path(model_args.model_name_or_path)
    tokenizer = load_tokenizer(model_path, revision=model_args.model_revision)
    model = model_args.load_causal_lm(model_path)
    data = prepare_data(script_args)

    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=data["validation"] if training_args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        callbacks=[LossLogCallback()],
    )
    describe_launch(trainer)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)

    report = None
    if script_args.heldout_samples > 0 and trainer.accelerator.is_main_process:
        report = evaluate_saved_model(training_args.output_dir, script_args, model_args)
    trainer.accelerator.wait_for_everyone()
    return report


def evaluate_saved_model(model_dir: str, script_args: SFTAffineArguments, model_args: LoRAModelConfig) -> dict:
    """Reload the saved model (adapter + base, as trained: same dtype, 4-bit for QLoRA) on the accelerator,
    evaluate it on held-out tasks and write ``eval_results.json`` beside it."""
    report = script_args.evaluate(model_dir, dtype=model_args.dtype, load_in_4bit=model_args.load_in_4bit)
    save_report(report, Path(model_dir) / "eval_results.json")
    print(format_report(report))
    return report


if __name__ == "__main__":
    parser = recipe_parser(SFTAffineArguments, SFTConfig, LoRAModelConfig)
    script_args, training_args, model_args = parser.parse_args_and_config()
    logging.basicConfig(level=logging.INFO if PartialState().is_main_process else logging.WARNING)
    result = main(script_args, training_args, model_args)
    if result is not None:
        print(json.dumps(result["aggregate"], indent=2))
    teardown_distributed()
