"""Diversity training over concept clusters (seed 000): spread a model's answers over a concept's options.

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/diversity.py \\
        --config recipes/configs/diversity_animal_tiny.yaml
    accelerate launch recipes/diversity.py --config recipes/configs/diversity_animal.yaml \\
        --model_name_or_path /path/to/model --w_c 0.7 --w_o 0.3 --output_dir output/train_animal_w_o_0.3

Every command-line option of the document works under its name (``--prompt``, ``--concept_name``,
``--n_clusters``, ``--num_samples``, ``--w_c``, ``--w_o``, ``--buffer_size``, ``--update_clusters_every``,
``--min_samples_for_clustering``, ``--batch_size``, ``--max_new_tokens``, ``--num_epochs``,
``--num_steps_per_epoch``, ``--learning_rate``, ``--final_learning_rate``, ``--warmup_steps``,
``--lr_scheduler_type``, ``--output_dir``, ``--use_wandb``, ``--wandb_project``, ``--wandb_name``,
``--model_name_or_path``, ``--lora_r``, ``--lora_alpha``, ``--lora_dropout``), and so does every field of
:class:`trl_ext.DiversityConfig` and TRL's ``ModelConfig``. The options of the concept are ``--concept_options``.

Trains with :class:`trl_ext.DiversityTrainer` (a LoRA adapter by default, r 16, alpha 32, dropout 0.05 as in the
document), then writes to ``output_dir``: the model (adapter) and tokenizer, the replay buffers and ``log Z``
(``diversity_buffers/``, ``diversity_state.json``), ``samples.csv`` (one table per epoch), ``loss_log.csv`` and
``loss_curve.png``, and — with ``report_samples > 0`` — the diversity report of the model before and after
(``diversity_report.json`` / ``.png``) and ``results.json`` (the after-training figures, for the sweep engine).

``prefer_option`` (the tiny config sets it) first fine-tunes the model so that ``prefer_share`` of its answers name
that option (:func:`trl_ext.diversity.demo.make_biased_model`): the embedded tiny model names no animal at all.
"""

from __future__ import annotations

from trl_ext.common.noise import quiet_dependency_noise

quiet_dependency_noise()  # first: the known-harmless messages of dependencies (trl_ext/common/noise.py)

import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import PartialState
from transformers import set_seed
from trl import get_peft_config

from trl_ext import DiversityConfig, DiversityTrainer
from trl_ext.common.entry import run_main
from trl_ext.common.errors import ConfigError
from trl_ext.common.loss_log import LossLogCallback
from trl_ext.common.recipes import LoRAModelConfig, describe_launch, recipe_parser, teardown_distributed
from trl_ext.models import load_tokenizer

logger = logging.getLogger("diversity")


@dataclass
class DiversityModelConfig(LoRAModelConfig):
    """TRL's ``ModelConfig`` with the document's LoRA defaults: r 16, alpha 32, dropout 0.05, on the modules PEFT
    picks for the architecture (``--lora_target_modules`` to choose)."""

    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Modules that get LoRA adapters (default: PEFT's choice for the model)."}
    )


@dataclass
class DiversityScriptArguments:
    """What the recipe does around training: the optional biased start and the report before and after."""

    report_samples: int = field(
        default=64, metadata={"help": "Samples per prompt of the diversity report before/after (0: no report)."}
    )
    prefer_option: str | None = field(
        default=None, metadata={"help": "First fine-tune the model to prefer this option (a demo start)."}
    )
    prefer_share: float = field(default=0.9, metadata={"help": "Share of answers naming prefer_option."})
    prefer_steps: int = field(default=60, metadata={"help": "SFT steps of the biased start."})


def _results(report: dict, label: str = "after") -> dict:
    """The figures of ``label`` averaged over the report's prompts: option shares (and their KL to uniform over
    the options, among the answers that name one), no-match share, cluster-mass entropy, distinct-1/2, distance."""
    out: dict[str, float] = {}
    sums: dict[str, list[float]] = {}
    for entry in report["prompts"]:
        model = entry["models"][label]
        for key in ("distinct_1", "distinct_2", "mean_pairwise_distance"):
            if model.get(key) is not None:
                sums.setdefault(key, []).append(model[key])
        for name, concept in entry["concepts"].items():
            shares = concept["models"][label]["option_shares"]
            for option, share in shares.items():
                sums.setdefault(f"{name}/share/{option}", []).append(share)
            sums.setdefault(f"{name}/no_match", []).append(concept["models"][label]["no_match_share"])
            named = sum(shares.values())
            if named > 0:
                p = [s / named for s in shares.values() if s > 0]
                kl = sum(x * math.log(x * len(shares)) for x in p)
                sums.setdefault(f"{name}/option_kl_to_uniform", []).append(kl)
            for option, cluster in concept["clusters"].items():
                entropy = cluster.get("models", {}).get(label, {}).get("entropy")
                if entropy is not None:
                    sums.setdefault(f"{name}/cluster_entropy/{option}", []).append(entropy)
    for key, values in sums.items():
        out[key] = sum(values) / len(values)
    return out


def main(script_args: DiversityScriptArguments, training_args: DiversityConfig, model_args: DiversityModelConfig):
    set_seed(training_args.seed)
    if not training_args.concept_list:
        raise ConfigError("no concept: set concept_name and concept_options (or concepts)")
    if not training_args.prompts:
        raise ConfigError("no prompt: set prompt (or prompts)")
    output_dir = Path(training_args.output_dir)
    state = PartialState()
    model_path = model_args.model_name_or_path
    if script_args.prefer_option is not None:
        from trl_ext.diversity.demo import make_biased_model

        biased = output_dir / "biased_start"
        make_biased_model(  # on every process: a multi-process launch runs the SFT on all of them
            biased, base=model_path, prompt=training_args.prompts[0], prefer=script_args.prefer_option,
            share=script_args.prefer_share, options=training_args.concept_list[0].options,
            max_steps=script_args.prefer_steps, seed=training_args.seed,
        )  # fmt: skip
        state.wait_for_everyone()
        model_path = str(biased)
    if model_path == "tiny":
        from trl_ext.models import get_tiny_model_path

        model_path = str(get_tiny_model_path())

    trainer = DiversityTrainer(
        model=model_args.load_causal_lm(model_path),
        args=training_args,
        processing_class=load_tokenizer(model_path, padding_side="left"),
        peft_config=get_peft_config(model_args),
        callbacks=[LossLogCallback()],
    )
    describe_launch(trainer)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(str(output_dir))
    if trainer.accelerator.is_main_process:
        trainer.save_diversity_state(output_dir)
    trainer.accelerator.wait_for_everyone()

    results = None
    if script_args.report_samples > 0 and trainer.accelerator.is_main_process:
        from trl_ext.diversity.report import diversity_report, format_summary, write_report

        report = diversity_report(
            {"before": model_path, "after": str(output_dir)},
            training_args.prompts,
            training_args.concept_list,
            num_samples=script_args.report_samples,
            n_clusters=training_args.n_clusters,
            max_new_tokens=training_args.max_completion_length,
            temperature=training_args.temperature,
            top_p=training_args.top_p,
            stop_strings=training_args.stop_strings,
            seed=training_args.seed,
            embedder=training_args.sentence_transformer,
            max_window_size=training_args.max_window_size,
        )
        write_report(report, output_dir)
        print(format_summary(report))
        results = {"after": _results(report, "after"), "before": _results(report, "before")}
        flat = {**results["after"], **{f"before/{k}": v for k, v in results["before"].items()}}
        (output_dir / "results.json").write_text(json.dumps(flat, indent=2) + "\n")
    trainer.accelerator.wait_for_everyone()
    return results


def _run() -> None:
    parser = recipe_parser(DiversityScriptArguments, DiversityConfig, DiversityModelConfig)
    script_args, training_args, model_args = parser.parse_args_and_config()
    logging.basicConfig(level=logging.INFO if PartialState().is_main_process else logging.WARNING)
    results = main(script_args, training_args, model_args)
    if results is not None:
        print(json.dumps(results, indent=2))
    teardown_distributed()


if __name__ == "__main__":
    sys.exit(run_main(_run))
