"""Latent communication (seed 001): train a receiver to act on a sender's hidden states spliced into its input.

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/latent_comm.py \\
        --config recipes/configs/latent_comm_tiny.yaml
    accelerate launch recipes/latent_comm.py --config recipes/configs/latent_comm.yaml \\
        --train_file ./data/train.json --eval_file ./data/eval.json --output_dir ./checkpoints/actor_model

Every command-line option of the document works under its name (``--model_name_or_path``, ``--train_file``,
``--eval_file``, ``--eval_ratio``, ``--lazy_preprocess``, ``--output_dir``, ``--prepended_length``, ``--num_heads``,
``--plan_similarity_weight``, ``--random_contrast_weight``, ``--enable_loss_plot``, ``--enable_infoNCE_probe``,
``--infoNCE_probe_interval``, ``--model_max_length``, ``--evaluation_strategy``, and the Trainer's own:
``--per_device_train_batch_size``, ``--num_train_epochs``, ``--learning_rate``, ``--warmup_ratio``,
``--weight_decay``, ``--save_steps``, ``--eval_steps``, ``--logging_steps``, ``--save_strategy``,
``--save_total_limit``, ``--dataloader_num_workers``, …), and so does every field of
:class:`trl_ext.LatentCommConfig` and TRL's ``ModelConfig``.

Data: JSON or JSONL rows ``{id, conversations, plan?, hidden_state? | hidden_state_path?}`` (docs/latent.md); build
them from your own sender with :func:`trl_ext.latent.write_sender_states`. ``--train_file tiny-demo`` builds the
shipped demo instead (:func:`trl_ext.latent.demo.build_demo`: the answer is only in the sender's input) into
``output_dir/demo_data``. Without ``--eval_file``, ``--eval_ratio`` of the training rows are held out.

Writes to ``output_dir``: the receiver's causal LM and tokenizer (with the latent tokens), the adapter
``latent_comm_head.safetensors`` + ``.json``, ``loss_log.csv`` / ``loss_curve.png`` (``--enable_loss_plot``), the
trainer state and ``checkpoint-*`` folders (resumable with ``--resume_from_checkpoint``), and — with evaluation rows
and ``--evaluate_conditions`` — ``latent_eval.json``: the answer loss with true, shuffled and no latents.
"""

from __future__ import annotations

from trl_ext.common.noise import quiet_dependency_noise

quiet_dependency_noise()  # first: the known-harmless messages of dependencies (trl_ext/common/noise.py)

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import PartialState
from transformers import set_seed

from trl_ext import LatentCommConfig, LatentCommTrainer
from trl_ext.common.entry import run_main
from trl_ext.common.errors import ConfigError
from trl_ext.common.recipes import LoRAModelConfig, describe_launch, recipe_parser, teardown_distributed
from trl_ext.latent import LatentDataset, read_latent_file, split_eval
from trl_ext.models import load_tokenizer

logger = logging.getLogger("latent_comm")

DEMO = "tiny-demo"


@dataclass
class LatentModelConfig(LoRAModelConfig):
    """TRL's ``ModelConfig`` with the document's model (``tiny``: the embedded tiny model). The receiver is trained
    whole: ``use_peft`` is off, and turning it on is an error (LatentCommTrainer takes no PEFT adapter)."""

    model_name_or_path: str | None = field(
        default="Qwen/Qwen2.5-0.5B-Instruct", metadata={"help": "Hub id, local folder, or 'tiny'."}
    )
    use_peft: bool = field(default=False, metadata={"help": "Not supported: the receiver is trained whole."})


@dataclass
class LatentDataArguments:
    """The document's data flags, the demo and the evaluation after training."""

    train_file: str | None = field(
        default=None, metadata={"help": f"JSON/JSONL training rows, or '{DEMO}' for the built-in demo."}
    )
    eval_file: str | None = field(default=None, metadata={"help": "JSON/JSONL evaluation rows."})
    eval_ratio: float = field(default=0.0, metadata={"help": "Share of train rows held out without eval_file."})
    lazy_preprocess: bool = field(
        default=False, metadata={"help": "Read hidden-state files per batch instead of all at start."}
    )
    demo_rows: int = field(default=64, metadata={"help": f"Rows of the '{DEMO}' data."})
    evaluate_conditions: bool = field(
        default=True, metadata={"help": "After training, compare the answer loss with true/shuffled/no latents."}
    )


def _rows(script_args: LatentDataArguments, training_args: LatentCommConfig, state: PartialState):
    if script_args.train_file is None:
        raise ConfigError(f"train_file is required (a JSON/JSONL file, or '{DEMO}')")
    if not 0.0 <= script_args.eval_ratio < 1.0:
        raise ConfigError(f"eval_ratio must be in [0, 1), got {script_args.eval_ratio}")
    train_file = script_args.train_file
    if train_file == DEMO:
        from trl_ext.latent.demo import build_demo

        folder = Path(training_args.output_dir) / "demo_data"
        if state.is_main_process:
            build_demo(folder, num_rows=script_args.demo_rows, seed=training_args.seed)
        state.wait_for_everyone()
        train_file = str(folder / "rows.jsonl")
    rows = read_latent_file(train_file, lazy=script_args.lazy_preprocess)
    if script_args.eval_file is not None:
        return rows, read_latent_file(script_args.eval_file, lazy=script_args.lazy_preprocess)
    if script_args.eval_ratio > 0:
        return split_eval(rows, script_args.eval_ratio, seed=training_args.seed)
    return rows, []


def main(script_args: LatentDataArguments, training_args: LatentCommConfig, model_args: LatentModelConfig):
    set_seed(training_args.seed)
    if model_args.use_peft:
        raise ConfigError("use_peft: LatentCommTrainer trains the whole receiver and takes no PEFT adapter")
    state = PartialState()
    train_rows, eval_rows = _rows(script_args, training_args, state)
    if training_args.eval_strategy != "no" and not eval_rows:
        raise ConfigError(
            f"eval_strategy={training_args.eval_strategy.value!r} needs evaluation rows: set eval_file or eval_ratio"
        )
    model_path = model_args.model_name_or_path
    if model_path == "tiny":
        from trl_ext.models import get_tiny_model_path

        model_path = str(get_tiny_model_path())
    length = training_args.prepended_length
    trainer = LatentCommTrainer(
        model=model_args.load_causal_lm(model_path),
        args=training_args,
        train_dataset=LatentDataset(train_rows, length),
        eval_dataset=LatentDataset(eval_rows, length) if eval_rows else None,
        processing_class=load_tokenizer(model_path),
    )
    describe_launch(trainer)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    output_dir = Path(training_args.output_dir)
    trainer.save_model(str(output_dir))
    trainer.save_state()  # trainer_state.json beside the model
    results = None
    if script_args.evaluate_conditions and len(eval_rows) >= 2 and trainer.accelerator.is_main_process:
        from trl_ext.latent.generation import evaluate_latent_conditions

        results = evaluate_latent_conditions(
            trainer.receiver, trainer.data_collator, trainer.eval_dataset,
            batch_size=training_args.per_device_eval_batch_size,
        )  # fmt: skip
        (output_dir / "latent_eval.json").write_text(json.dumps(results, indent=2) + "\n")
    trainer.accelerator.wait_for_everyone()
    return results


def _run() -> None:
    parser = recipe_parser(LatentDataArguments, LatentCommConfig, LatentModelConfig)
    script_args, training_args, model_args = parser.parse_args_and_config()
    logging.basicConfig(level=logging.INFO if PartialState().is_main_process else logging.WARNING)
    results = main(script_args, training_args, model_args)
    if results is not None:
        print(json.dumps(results, indent=2))
    teardown_distributed()


if __name__ == "__main__":
    sys.exit(run_main(_run))
