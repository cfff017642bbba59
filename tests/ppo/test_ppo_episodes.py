"""Multi-turn PPO on agent environments (trl_ext.ppo.episodes.EpisodeRollout through PPOTrainer): the environment's
tokens carry no loss and no advantage, the episode's return is the score, and training runs."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer

from trl_ext import PPOConfig, PPOTrainer
from trl_ext.ppo.episodes import EpisodeRollout
from trl_ext.tasks.envs import get_env
from trl_ext.tasks.envs.play import expert_rows
from trl_ext.tasks.rewards import make_task_reward, prompt_only_rows


def _rows() -> list[dict]:
    episodes = expert_rows(get_env("webshop"), [1, 2, 3], progress=False)
    episodes += expert_rows(get_env("alfworld"), [4, 5, 6], index=3, progress=False)
    sat = {"prompt": [{"role": "user", "content": "x1 or x2?"}], "task": "sat",
           "payload": json.dumps({"n": 2, "clauses": [[1, 2]]})}  # fmt: skip
    return prompt_only_rows(episodes) + [sat, sat]


def _trainer(tmp_path, model_path, **overrides) -> tuple[PPOTrainer, EpisodeRollout]:
    args = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_mini_batches=2, num_ppo_epochs=1,
        num_generations=1, max_completion_length=12, learning_rate=1e-3, logging_steps=1, max_steps=2,
        report_to="none", save_strategy="no", use_cpu=True, bf16=False, seed=0, disable_tqdm=True,
        log_completions=False, temperature=1.0, whiten_advantages=False,
    )  # fmt: skip
    args.update(overrides)
    rollout = EpisodeRollout({"webshop": {"max_episode_length": 3}, "alfworld": {"max_episode_length": 3}})
    trainer = PPOTrainer(
        model=str(model_path),
        reward_funcs=make_task_reward({}),
        args=PPOConfig(**args),
        train_dataset=Dataset.from_list(_rows() * 2),  # one rollout of 16 rows: 8 per mini-batch
        processing_class=AutoTokenizer.from_pretrained(model_path, padding_side="left"),
        rollout_func=rollout,
    )
    return trainer, rollout


@pytest.fixture(scope="module")
def rollout_out(tiny_model_path, tmp_path_factory):
    trainer, rollout = _trainer(tmp_path_factory.mktemp("ppo_episodes"), tiny_model_path)
    torch.manual_seed(0)
    rows = _rows()
    out = trainer._generate_and_score_completions([dict(r) for r in rows])
    yield trainer, rollout, rows, out
    rollout.close()


def test_environment_tokens_carry_no_loss_and_no_advantage(rollout_out):
    trainer, rollout, rows, out = rollout_out
    tok = trainer.processing_class
    mask, completion_mask = out["tool_mask"], out["completion_mask"]
    policy = (mask * completion_mask).bool()
    env_tokens = completion_mask.bool() & ~mask.bool()
    assert env_tokens[:6].any(dim=1).all(), "every played episode of 3 turns has environment text between turns"
    assert not env_tokens[6:].any(), "a task row's completion is the policy's alone"
    # no advantage and no return on environment tokens; the policy's tokens do get advantages
    assert (out["advantages"][env_tokens] == 0).all() and (out["returns"][env_tokens] == 0).all()
    assert (out["advantages"][policy] != 0).any()
    # the environment's tokens are the observations' text: the first observation after turn 1 is in them
    for b in range(6):
        text = tok.decode(out["completion_ids"][b][env_tokens[b]])
        assert "<|im_start|>user" in text and text.rstrip().endswith("<|im_start|>assistant")
    # no loss: garbage in the environment positions of every per-token input leaves the loss unchanged
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train; the loss is called directly here
    torch.manual_seed(1)
    base = trainer._compute_loss(trainer.model, out).item()
    noisy = dict(out)
    for key in ("advantages", "returns", "old_values", "old_per_token_logps"):
        noisy[key] = torch.where(env_tokens, torch.full_like(out[key], 1e3), out[key])
    torch.manual_seed(1)
    assert trainer._compute_loss(trainer.model, noisy).item() == pytest.approx(base, rel=1e-6, abs=1e-7)
    # ...while the same garbage on the policy's tokens changes it (the test can fail)
    moved = dict(out)
    moved["advantages"] = torch.where(policy, torch.full_like(out["advantages"], 1e3), out["advantages"])
    assert trainer._compute_loss(trainer.model, moved).item() != pytest.approx(base, rel=1e-3)


def test_the_score_is_the_episode_return_on_the_last_policy_token(rollout_out):
    trainer, rollout, rows, out = rollout_out
    rewards = trainer._last_rewards_per_func[:, 0]
    # 3 turns of an untrained policy: the returns are the shaped rewards it happened to earn (0 when all invalid)
    for b in range(6):
        env = rollout._pool[json.loads(rows[b]["payload"])["env"]][b % 3]
        assert env.steps == 3 or env.done
    assert torch.isfinite(rewards).all() and (rewards[:6] >= 0).all()
    assert ((rewards[6:] == 0) | (rewards[6:] == 1)).all()  # SAT scores


def test_multi_turn_ppo_trains_and_moves_the_policy(tiny_model_path, tmp_path):
    trainer, rollout = _trainer(tmp_path, tiny_model_path, max_steps=2)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    try:
        trainer.train()
    finally:
        rollout.close()
    moved = [n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert moved
    logged = [h for h in trainer.state.log_history if "ppo/loss/policy" in h]
    assert logged and all(torch.isfinite(torch.tensor(h["ppo/loss/policy"])) for h in logged)


def test_the_rollout_needs_the_rows():
    rollout = EpisodeRollout()

    class Bare:
        pass

    with pytest.raises(ValueError, match="needs the batch's rows"):
        rollout(["p"], Bare())


def test_trainers_that_cannot_play_episodes_are_refused_before_training(rollout_out):
    """check_trainer (the PPO recipe calls it before training): vLLM, and a tokenizer without a chat template."""
    import copy
    from types import SimpleNamespace

    from trl_ext.ppo.episodes import check_trainer

    trainer = rollout_out[0]
    check_trainer(trainer)  # the tiny trainer can
    vllm = SimpleNamespace(args=SimpleNamespace(use_vllm=True), accelerator=trainer.accelerator)
    with pytest.raises(ValueError, match="set use_vllm=False"):
        check_trainer(vllm)
    bare = copy.deepcopy(trainer.processing_class)
    bare.chat_template = None
    no_template = SimpleNamespace(args=trainer.args, accelerator=trainer.accelerator, processing_class=bare)
    with pytest.raises(ValueError, match="need a tokenizer with a chat template"):
        check_trainer(no_template)


def test_the_missing_eos_penalty_looks_at_the_policy_tokens_only(rollout_out):
    """An EOS inside the environment's text (the end of a turn the policy did not finish) is not the policy's."""
    trainer = rollout_out[0]
    eos = trainer.eos_token_ids[0]
    ids = torch.tensor([[5, 6, eos, 7], [5, 6, eos, 7]])
    mask = torch.tensor([[1, 1, 0, 1], [1, 1, 1, 1]])  # row 0: the EOS is environment text
    before, trainer.args.missing_eos_penalty = trainer.args.missing_eos_penalty, 0.5
    try:
        scores = trainer._scores(torch.ones(2, 1), ids, mask)
    finally:
        trainer.args.missing_eos_penalty = before
    assert scores.tolist() == [0.5, 1.0]
