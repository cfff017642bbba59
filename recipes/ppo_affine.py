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

Rewards: the task reward (each row's scorer; an episode's return) and the functions of ``--reward_funcs
module:function [file.py:function ...]``, *added* to it as further TRL reward functions (summed with
``reward_weights``, logged as ``rewards/<name>/mean``); ``--task_reward false`` *replaces* the task reward by them.
They are called like TRL's reward functions, ``f(prompts, completions, **columns) -> list[float]``, with the
``task``, ``payload`` and (multi-turn) ``episode_return`` columns. ``--malformed_penalty X`` gives a task answer
from which the scorer reads no answer (:func:`trl_ext.tasks.rewards.is_malformed`) the reward −X instead of 0.

The document's ``num_rollouts`` / ``rollout_batch_size`` (completions per rollout and process): a rollout is
``per_device_train_batch_size x num_mini_batches`` completions per process, reused ``num_ppo_epochs`` times, so
``rollout_batch_size`` sets ``per_device_train_batch_size = rollout_batch_size / num_mini_batches`` and
``num_rollouts`` sets ``max_steps = num_rollouts x num_ppo_epochs x num_mini_batches / gradient_accumulation_steps``
(:func:`apply_rollout_args`, printed at the start). A value of those fields set away from its default that disagrees
is an error (drop it, or ``--max_steps -1``). ``--wandb_project NAME`` tracks the run in W&B.
"""

from __future__ import annotations

from trl_ext.common.noise import quiet_dependency_noise

quiet_dependency_noise()  # first: the known-harmless messages of dependencies (trl_ext/common/noise.py)

import json
import logging
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelerate import PartialState
from datasets import Dataset
from transformers import set_seed
from trl import get_peft_config

from trl_ext import PPOConfig, PPOTrainer
from trl_ext.common.entry import run_main
from trl_ext.common.errors import ConfigError
from trl_ext.common.imports import import_function
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
    reward_funcs: list[str] = field(
        default_factory=list,
        metadata={"help": "Extra reward functions, 'package.module:function' or 'file.py:function', added to the task "
                  "reward (or replacing it with --task_reward false)."},
    )  # fmt: skip
    task_reward: bool = field(
        default=True, metadata={"help": "Reward with the task scorers / episode returns (false: --reward_funcs only)."}
    )
    malformed_penalty: float = field(
        default=0.0,
        metadata={"help": "Reward -X for a task answer the scorer reads no answer from (no SAT assignment, no ABD "
                  "<INPUT> block, no DED code block) instead of 0."},
    )  # fmt: skip
    num_rollouts: int | None = field(
        default=None,
        metadata={"help": "Rollouts of the run (the document's 100): sets max_steps = num_rollouts x num_ppo_epochs "
                  "x num_mini_batches / gradient_accumulation_steps."},
    )  # fmt: skip
    rollout_batch_size: int | None = field(
        default=None,
        metadata={"help": "Completions (episodes) per rollout and process (the document's 4): sets "
                  "per_device_train_batch_size = rollout_batch_size / num_mini_batches."},
    )  # fmt: skip


def build_reward_funcs(script_args: PPOAffineArguments, task_params: dict) -> list[Callable[..., list[float]]]:
    """The reward functions of the run: the task reward (with ``malformed_penalty``) unless ``task_reward`` is off,
    then the ``reward_funcs`` imported by name. Errors (:class:`ConfigError`, naming the function) for a name that does
    not import, for no reward function at all, and for a penalty without the task reward."""
    funcs: list[Callable[..., list[float]]] = []
    if script_args.task_reward:
        try:
            funcs.append(make_task_reward(task_params, malformed_penalty=script_args.malformed_penalty))
        except ValueError as err:
            raise ConfigError(str(err)) from err
    elif script_args.malformed_penalty:
        raise ConfigError("--malformed_penalty is applied by the task reward: it needs --task_reward true")
    for spec in script_args.reward_funcs:
        funcs.append(import_function(spec, what=f"--reward_funcs {spec!r}", error=ConfigError))
    if not funcs:
        raise ConfigError("no reward function: --task_reward false needs --reward_funcs module:function [...]")
    return funcs


def _default(training_args: Any, name: str) -> Any:
    return type(training_args).__dataclass_fields__[name].default


def apply_rollout_args(script_args: PPOAffineArguments, training_args: PPOConfig) -> str | None:
    """Map ``num_rollouts`` / ``rollout_batch_size`` onto the trainer's batching and return the mapping as text
    (``None`` when neither is set).

    With ``M = num_mini_batches`` (``steps_per_generation``), ``E = num_ppo_epochs`` (``num_iterations``) and ``GA =
    gradient_accumulation_steps``: ``per_device_train_batch_size = rollout_batch_size / M`` (and the generation
    batch ``= per_device_train_batch_size x processes x M``), ``max_steps = num_rollouts x E x M / GA``. Non-integer
    results and a ``per_device_train_batch_size`` or ``max_steps`` set to another value than its default that
    disagrees are :class:`ConfigError`.
    """
    rollouts, batch = script_args.num_rollouts, script_args.rollout_batch_size
    if rollouts is None and batch is None:
        return None
    minis, epochs = training_args.steps_per_generation, training_args.num_iterations
    accumulation = training_args.gradient_accumulation_steps
    parts = []
    for name, value in (("num_rollouts", rollouts), ("rollout_batch_size", batch)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
    if batch is not None:
        if batch % minis:
            raise ConfigError(f"rollout_batch_size={batch} is not a multiple of num_mini_batches={minis}")
        per_device = batch // minis
        current = training_args.per_device_train_batch_size
        if current not in (per_device, _default(training_args, "per_device_train_batch_size")):
            raise ConfigError(
                f"rollout_batch_size={batch} with num_mini_batches={minis} means per_device_train_batch_size="
                f"{per_device}, but per_device_train_batch_size={current} is set: set only one"
            )
        generation = per_device * training_args.world_size * minis
        if generation % training_args.num_generations:
            raise ConfigError(
                f"rollout_batch_size={batch}: the generation batch {generation} is not a multiple of "
                f"num_generations={training_args.num_generations}"
            )
        training_args.per_device_train_batch_size = per_device
        training_args.generation_batch_size = generation
        parts.append(
            f"rollout_batch_size={batch} -> per_device_train_batch_size={per_device} x num_mini_batches={minis} "
            f"(x {training_args.world_size} process(es): {generation} completions per rollout)"
        )
    if rollouts is not None:
        micro = rollouts * epochs * minis
        if micro % accumulation:
            raise ConfigError(
                f"num_rollouts={rollouts} x num_ppo_epochs={epochs} x num_mini_batches={minis} = {micro} mini-batches "
                f"is not a multiple of gradient_accumulation_steps={accumulation}"
            )
        steps = micro // accumulation
        if training_args.max_steps not in (steps, _default(training_args, "max_steps")):
            raise ConfigError(
                f"num_rollouts={rollouts} means max_steps={steps}, but max_steps={training_args.max_steps} is set: "
                "set only one (e.g. --max_steps -1)"
            )
        training_args.max_steps = steps
        parts.append(
            f"num_rollouts={rollouts} -> max_steps={steps} (= {rollouts} x num_ppo_epochs={epochs} x "
            f"num_mini_batches={minis} / gradient_accumulation_steps={accumulation})"
        )
    return "; ".join(parts)


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
    reward_funcs = build_reward_funcs(script_args, task_params)  # fail early on a bad name
    mapping = apply_rollout_args(script_args, training_args)
    if mapping and state.is_main_process:
        print(f"[trl_ext] rollouts: {mapping}", flush=True)
    script_args.apply_wandb(training_args)  # before the trainer: it builds its reporters from report_to

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
        reward_funcs=reward_funcs,
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
