"""Stage 2 of the two-stage pipeline (seed 004): PPO with a value head on the reasoning tasks and, multi-turn, on
the agent environments.

    accelerate launch recipes/ppo_affine.py --config recipes/configs/ppo_affine_tiny.yaml
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/ppo_affine.py \
        --config recipes/configs/ppo_affine.yaml --model_name_or_path outputs/sft_affine

Starts from the SFT adapter of ``recipes/sft_affine.py`` (an adapter folder is merged into its base and saved
as ``<output_dir>/init_policy``, which is then the reference model) or from any base model; trains a new LoRA
(default) or every weight with :class:`trl_ext.PPOTrainer`, rewarding each completion with its task's scorer;
plays the data's agent-episode rows turn by turn in their environments (:class:`trl_ext.ppo.episodes.
EpisodeRollout`: the episode's return is the score, the observations carry no loss); evaluates on held-out tasks
and episodes before (``eval_before.json``) and after (``eval_results.json``, with the comparison
to the starting policy) and writes ``loss_log.csv`` / ``loss_curve.png``. Every field of the argument classes is
a YAML key and a command-line flag.
"""

from __future__ import annotations

from trl_ext.common.noise import quiet_dependency_noise

quiet_dependency_noise()  # first: the known-harmless messages of dependencies (trl_ext/common/noise.py)

import json
import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import PartialState
from datasets import Dataset
from transformers import set_seed
from trl import get_peft_config

from trl_ext import PPOConfig, PPOTrainer
from trl_ext.common.entry import run_main
from trl_ext.common.loss_log import LossLogCallback
from trl_ext.common.recipes import (
    LoRAModelConfig,
    describe_launch,
    recipe_parser,
    teardown_distributed,
)
from trl_ext.data.affine import check_selection
from trl_ext.data.affine_args import AffineRecipeArguments
from trl_ext.eval.report import compare_reports, format_report, save_report
from trl_ext.models import load_tokenizer
from trl_ext.models.policy_init import prepare_init_policy
from trl_ext.ppo.episodes import EpisodeRollout, check_trainer
from trl_ext.ppo.value_head import VALUE_FUNCTION_FILES, has_value_head
from trl_ext.tasks.envs.play import is_episode_payload
from trl_ext.tasks.rewards import make_task_reward, prompt_only_rows

logger = logging.getLogger("ppo_affine")


@dataclass
class PPOAffineArguments(AffineRecipeArguments):
    """Arguments of the PPO recipe: task data (prompts), agent episodes, and the held-out evaluations before and
    after."""

    rollout_max_episode_length: int | None = field(
        default=None, metadata={"help": "Steps of a PPO episode (default: max_episode_length, the collection's)."}
    )
    max_context_tokens: int | None = field(
        default=None,
        metadata={"help": "Longest prompt + completion of a PPO episode (default: the model's context length)."},
    )


def select_rows(rows: list[dict], script_args: PPOAffineArguments, task_params: dict, env_params: dict) -> list[dict]:
    """The rows of the selected tasks and environments (``--tasks``, ``--environments``), with their counts printed;
    a selected task (or environment, when episodes are asked for) missing from the data is an error naming it."""
    present = Counter(row["task"] for row in rows)
    keep = check_selection(present, task_params, env_params, require_envs=script_args.num_episodes > 0,
                           where=f"data_dir {script_args.data_dir}")  # fmt: skip
    rows = [row for row in rows if row["task"] in keep]
    counts = ", ".join(f"{k} {v}" for k, v in present.items() if k in keep)
    logger.info("PPO prompts per task / environment: %s", counts)
    return rows


def main(script_args: PPOAffineArguments, training_args: PPOConfig, model_args: LoRAModelConfig) -> dict | None:
    set_seed(training_args.seed)
    task_params = script_args.task_params()  # fail early on unknown tasks
    output_dir = Path(training_args.output_dir)
    state = PartialState()

    init_path = prepare_init_policy(
        model_args.model_name_or_path,
        output_dir / "init_policy",
        dtype=model_args.dtype,
        carry_files=VALUE_FUNCTION_FILES,
    )
    if training_args.value_init_path is None and has_value_head(init_path):
        training_args.value_init_path = init_path  # continuing a PPO run: keep its value function
    env_params = script_args.env_params(script_args.rollout_max_episode_length)
    data = script_args.load_data()
    rows = select_rows(prompt_only_rows(data["train"]), script_args, task_params, env_params)
    train_dataset = Dataset.from_list(rows)
    rollout = None
    if any(is_episode_payload(row["payload"]) for row in rows):  # agent episodes: played turn by turn
        if training_args.use_vllm:
            raise ValueError(
                "the data holds agent episodes, which are generated with transformers: set --use_vllm false"
            )
        rollout = EpisodeRollout(env_params, max_context_tokens=script_args.max_context_tokens)

    before = None
    if script_args.heldout_samples > 0 and state.is_main_process:
        before = script_args.evaluate(init_path, model_args.dtype, model_args.load_in_4bit)
        save_report(before, output_dir / "eval_before.json")
    state.wait_for_everyone()

    model = model_args.load_causal_lm(init_path)
    trainer = PPOTrainer(
        model=model,
        reward_funcs=make_task_reward(task_params),
        args=training_args,
        train_dataset=train_dataset,
        processing_class=load_tokenizer(init_path, padding_side="left"),
        peft_config=get_peft_config(model_args),
        callbacks=[LossLogCallback()],
        rollout_func=rollout,
    )
    if rollout is not None:
        check_trainer(trainer)  # vLLM, ZeRO-3, FSDP or a tokenizer that cannot render turns: fail before training
    describe_launch(trainer)
    try:
        trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    finally:
        if rollout is not None:
            rollout.close()
    trainer.save_model(str(output_dir))

    report = None
    if before is not None and trainer.accelerator.is_main_process:
        report = script_args.evaluate(str(output_dir), model_args.dtype, model_args.load_in_4bit)
        report["baseline_comparison"] = compare_reports(report, before)
        save_report(report, output_dir / "eval_results.json")
        print(format_report(report, report["baseline_comparison"]))
    trainer.accelerator.wait_for_everyone()
    return report


def _run() -> None:
    parser = recipe_parser(PPOAffineArguments, PPOConfig, LoRAModelConfig)
    script_args, training_args, model_args = parser.parse_args_and_config()
    logging.basicConfig(level=logging.INFO if PartialState().is_main_process else logging.WARNING)
    result = main(script_args, training_args, model_args)
    if result is not None:
        print(json.dumps(result["aggregate"], indent=2))
    teardown_distributed()


if __name__ == "__main__":
    sys.exit(run_main(_run))
