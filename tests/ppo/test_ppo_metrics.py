"""What PPOTrainer logs of GRPO's rollout metrics: the group metric ``frac_reward_zero_std`` is dropped with one
completion per prompt (always 1 there) and kept with groups; the batch reward statistics are kept (docs/ppo.md,
"Logged metrics")."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from trl_ext import PPOConfig, PPOTrainer
from trl_ext.ppo._trl_compat import GROUP_METRICS

TARGETS = set(range(100, 132))


def _prompts(n: int) -> Dataset:
    return Dataset.from_list([{"prompt": [{"role": "user", "content": f"count to {i}"}]} for i in range(n)])


class Recorder:
    """Reward functions that record what they return, with the trainer's mode at the call."""

    def __init__(self) -> None:
        self.trainer: PPOTrainer | None = None
        self.calls: list[tuple[str, bool, list[float]]] = []

    def _record(self, name: str, rewards: list[float]) -> list[float]:
        self.calls.append((name, self.trainer.model.training, rewards))
        return rewards

    def prompt_number(self, prompts, completions, **kwargs: Any) -> list[float]:
        """``i / 64`` for the prompt "count to i": the same for every completion of a prompt."""
        return self._record("prompt_number", [int(p[-1]["content"].split()[-1]) / 64 for p in prompts])

    def target_fraction(self, prompts, completions, completion_ids, **kwargs: Any) -> list[float]:
        """Share of completion tokens in ``TARGETS``."""
        rewards = [sum(t in TARGETS for t in ids) / max(len(ids), 1) for ids in completion_ids]
        return self._record("target_fraction", rewards)

    def rollouts(self, name: str, training: bool = True) -> list[np.ndarray]:
        return [np.array(r) for n, t, r in self.calls if n == name and t == training]


def _trainer(tmp_path, model_path, recorder: Recorder, reward_funcs: list, **overrides: Any) -> PPOTrainer:
    args = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_mini_batches=2, num_ppo_epochs=1,
        num_generations=1, max_completion_length=6, learning_rate=1e-3, logging_steps=1, max_steps=4,
        report_to="none", save_strategy="no", use_cpu=True, bf16=False, seed=0, disable_tqdm=True,
        log_completions=False,
    )  # fmt: skip
    args.update(overrides)
    eval_dataset = _prompts(8) if args.get("eval_strategy", "no") != "no" else None
    trainer = PPOTrainer(
        model=str(model_path),
        reward_funcs=reward_funcs,
        args=PPOConfig(**args),
        train_dataset=_prompts(64),
        eval_dataset=eval_dataset,
        processing_class=AutoTokenizer.from_pretrained(model_path),
    )
    recorder.trainer = trainer
    return trainer


def test_one_completion_per_prompt_logs_no_group_metric(tmp_path, tiny_model_path):
    """Two rollouts of 16 completions and one evaluation: no ``frac_reward_zero_std`` (train or eval) in the
    history; ``reward``, ``reward_std`` and ``rewards/<name>/mean|std`` are there, and the stds are the sample std
    (ddof=1) over the rollout's completions, as recorded from the reward functions."""
    recorder = Recorder()
    trainer = _trainer(
        tmp_path, tiny_model_path, recorder, [recorder.prompt_number, recorder.target_fraction],
        eval_strategy="steps", eval_steps=4, per_device_eval_batch_size=8,
    )  # fmt: skip
    trainer.train()
    history = trainer.state.log_history
    logged = {key for entry in history for key in entry}
    for name in GROUP_METRICS:
        assert name not in logged and f"eval_{name}" not in logged, sorted(logged)

    rollouts = [h for h in history if "reward" in h]
    numbers, fractions = recorder.rollouts("prompt_number"), recorder.rollouts("target_fraction")
    assert len(rollouts) == len(numbers) == len(fractions) == 2
    for entry, number, fraction in zip(rollouts, numbers, fractions):
        assert len(number) == 16
        total = number + fraction
        assert entry["reward"] == pytest.approx(total.mean(), abs=1e-6)
        assert entry["reward_std"] == pytest.approx(total.std(ddof=1), abs=1e-6) and entry["reward_std"] > 0
        for name, values in (("prompt_number", number), ("target_fraction", fraction)):
            assert entry[f"rewards/{name}/mean"] == pytest.approx(values.mean(), abs=1e-6)
            assert entry[f"rewards/{name}/std"] == pytest.approx(values.std(ddof=1), abs=1e-6)
        assert "ppo/objective/scores" in entry and "completions/mean_length" in entry

    (evaluation,) = [h for h in history if "eval_reward" in h]
    (eval_numbers,) = recorder.rollouts("prompt_number", training=False)
    assert len(eval_numbers) == 8
    assert evaluation["eval_rewards/prompt_number/std"] == pytest.approx(eval_numbers.std(ddof=1), abs=1e-6)
    assert "eval_reward_std" in evaluation and "eval_ppo/objective/scores" in evaluation


def test_groups_keep_the_group_metric(tmp_path, tiny_model_path):
    """With 2 completions per prompt ``frac_reward_zero_std`` means something and is logged: a reward that depends
    only on the prompt is the same within every group (1.0), while its batch std is not 0."""
    recorder = Recorder()
    trainer = _trainer(tmp_path, tiny_model_path, recorder, [recorder.prompt_number], num_generations=2, max_steps=2)
    trainer.train()
    (entry,) = [h for h in trainer.state.log_history if "reward" in h]
    assert entry["frac_reward_zero_std"] == 1.0
    (number,) = recorder.rollouts("prompt_number")
    assert entry["reward_std"] == pytest.approx(number.std(ddof=1), abs=1e-6) and entry["reward_std"] > 0
