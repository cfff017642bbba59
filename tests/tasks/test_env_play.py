"""Episodes as SFT rows and as token sequences (trl_ext.tasks.envs.play), the episode rows of the data collection,
the episode reward and the held-out episode evaluation."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from trl_ext.data.affine import collect_affine, episode_seeds, validate_row
from trl_ext.eval.episodes import HELDOUT_SEED_OFFSET, agentgym_score, heldout_seeds
from trl_ext.tasks.envs import get_env, run_episode
from trl_ext.tasks.envs.play import (
    action_message,
    episode_messages,
    expert_rows,
    is_episode_payload,
    play_episodes,
    turn_separator,
)
from trl_ext.tasks.rewards import make_task_reward

ENVS = ("webshop", "alfworld")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path):
    return AutoTokenizer.from_pretrained(tiny_model_path)


@pytest.mark.parametrize("name", ENVS)
def test_expert_play_reproduces_the_expert_episode_and_the_sft_rendering(name, tokenizer):
    seeds = [3, 4, 5]
    envs = [get_env(name) for _ in seeds]
    active = list(range(len(seeds)))

    def generate(contexts):  # the expert of every still-active episode, in play order
        assert len(contexts) == len(active)
        out = [tokenizer(action_message(envs[i].expert_action()), add_special_tokens=False)["input_ids"]
               + [tokenizer.eos_token_id] for i in active]  # fmt: skip
        active[:] = [i for i in active if not _finishes(envs[i])]
        return out

    played = play_episodes(envs, seeds, tokenizer, generate)
    for seed, p in zip(seeds, played):
        reference = run_episode(get_env(name), seed)
        assert p.episode.actions == reference.actions and p.episode.rewards == reference.rewards
        assert p.episode.success and not p.episode.truncated
        # the tokens played are the chat template's rendering of the SFT row, up to the last action's EOS
        prompt, completion = episode_messages(get_env(name), reference)
        rendered = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
        played_text = tokenizer.decode(p.prompt_ids + p.completion_ids)
        assert rendered.startswith(played_text) and played_text.endswith(tokenizer.eos_token)
        assert rendered[len(played_text) :].strip() == ""
        # env_mask: the policy's tokens are the actions (+ EOS), the rest is the observations' text
        policy = [t for t, m in zip(p.completion_ids, p.env_mask) if m]
        expected = []
        for action in reference.actions:
            expected += tokenizer(action_message(action), add_special_tokens=False)["input_ids"]
            expected.append(tokenizer.eos_token_id)
        assert policy == expected
        env_text = tokenizer.decode([t for t, m in zip(p.completion_ids, p.env_mask) if not m])
        for observation in reference.observations[:-1]:
            assert observation in env_text
        assert reference.observations[-1] not in env_text or reference.observations[-1] in reference.observations[:-1]


def _finishes(env) -> bool:
    """Whether the expert's next action ends the episode (probe on a copy of the state would be costly: replay)."""
    import copy

    probe = copy.deepcopy(env)
    return probe.step(probe.expert_action()).done


def test_play_stops_before_a_turn_would_pass_the_context_limit(tokenizer):
    """A policy that never ends its turns (no EOS): every context plus a full turn stays within the limit, the cut
    episode counts as truncated, and a first observation that leaves no room for a turn is an error."""
    turn = tokenizer("Action: look", add_special_tokens=False)["input_ids"]
    generate = lambda contexts: [list(turn) for _ in contexts]  # noqa: E731
    (free,) = play_episodes([get_env("webshop", max_episode_length=5)], [1], tokenizer, generate)
    assert free.episode.length == 5 and free.episode.truncated and not free.context_limited
    limit = len(free.prompt_ids) + 60
    (cut,) = play_episodes([get_env("webshop")], [1], tokenizer, generate, max_new_tokens=len(turn),
                           max_context_tokens=limit)  # fmt: skip
    assert cut.context_limited and cut.episode.truncated and not cut.episode.success
    assert len(cut.prompt_ids) + len(cut.completion_ids) <= limit
    assert 1 <= cut.episode.length < 5 and cut.episode.invalid_actions == cut.episode.length  # "look": not WebShop's
    with pytest.raises(ValueError, match=r"webshop seed 1: the prompt is \d+ tokens, so with 12 new tokens"):
        play_episodes([get_env("webshop")], [1], tokenizer, generate, max_new_tokens=12,
                      max_context_tokens=len(free.prompt_ids) + 11)  # fmt: skip


def test_turn_separator_is_the_template_text_between_turns(tokenizer):
    sep = turn_separator(tokenizer, "OBS", ended_with="<|im_end|>")
    assert sep == "\n<|im_start|>user\nOBS<|im_end|>\n<|im_start|>assistant\n"
    assert turn_separator(tokenizer, "OBS") == tokenizer.eos_token + sep  # a turn cut at its token limit
    assert turn_separator(tokenizer, "OBS", ended_with="<|endoftext|>") == tokenizer.eos_token + sep


def test_a_tokenizer_without_a_chat_template_is_named(tokenizer):
    import copy

    from trl_ext.tasks.envs.play import check_tokenizer

    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    with pytest.raises(ValueError, match="multi-turn episodes need a tokenizer with a chat template"):
        check_tokenizer(bare)


def test_play_rejects_shared_environments(tokenizer):
    env = get_env("webshop")
    with pytest.raises(ValueError, match="one environment object per episode"):
        play_episodes([env, env], [1, 2], tokenizer, lambda c: [[]] * len(c))
    with pytest.raises(ValueError, match="2 environments but 1 seeds"):
        play_episodes([env, get_env("webshop")], [1], tokenizer, lambda c: [[]] * len(c))


def test_expert_rows_are_valid_multi_turn_rows():
    env = get_env("alfworld")
    rows = expert_rows(env, [11, 12], index=5, progress=False)
    assert [r["id"] for r in rows] == ["alfworld-000005", "alfworld-000006"]
    for row, seed in zip(rows, [11, 12]):
        validate_row(row)
        payload = json.loads(row["payload"])
        reference = run_episode(get_env("alfworld"), seed)
        assert payload == {"kind": "episode", "env": "alfworld", "seed": seed, "return": reference.total_reward,
                           "success": True, "length": reference.length}  # fmt: skip
        assert row["prompt"][0] == {"role": "system", "content": env.instructions}
        assert [m["role"] for m in row["completion"]] == ["assistant", "user"] * (reference.length - 1) + ["assistant"]
        assert [m["content"] for m in row["completion"][::2]] == [f"Action: {a}" for a in reference.actions]
        assert is_episode_payload(row["payload"])


def test_expert_rows_refuse_a_failing_expert():
    env = get_env("alfworld", max_episode_length=2)  # too short for any task
    with pytest.raises(RuntimeError, match="alfworld: the expert did not reach the goal on seed 3"):
        expert_rows(env, [3], progress=False)


def test_collect_affine_spreads_episodes_over_environments_and_is_deterministic():
    envs = {"webshop": {}, "alfworld": {"max_episode_length": 50}}
    kwargs = dict(envs=envs, num_episodes=7, progress=False)
    train, val = collect_affine({"sat": {"n": 4, "k": 3}}, 6, 42, 0.1, **kwargs)
    rows = train + val
    counts = {name: sum(r["task"] == name for r in rows) for name in ("sat", "webshop", "alfworld")}
    assert counts == {"sat": 6, "webshop": 4, "alfworld": 3} and len(val) == 1  # round(0.1 * 13) = 1
    seeds = sorted(json.loads(r["payload"])["seed"] for r in rows if r["task"] == "webshop")
    assert seeds == sorted(episode_seeds("webshop", 4, 42)) and max(seeds) < HELDOUT_SEED_OFFSET
    again = collect_affine({"sat": {"n": 4, "k": 3}}, 6, 42, 0.1, **kwargs)
    assert (train, val) == again
    episodes_only, _ = collect_affine({}, 0, 1, 0.0, envs={"webshop": {}}, num_episodes=3, progress=False)
    assert len(episodes_only) == 3
    with pytest.raises(ValueError, match="num_episodes=2 but no environments"):
        collect_affine({"sat": {}}, 4, 1, num_episodes=2, progress=False)


def test_heldout_seeds_never_meet_training_seeds():
    held = heldout_seeds("webshop", 50, 7)
    assert len(set(held)) == 50 and min(held) >= HELDOUT_SEED_OFFSET
    assert held == heldout_seeds("webshop", 50, 7) and held != heldout_seeds("alfworld", 50, 7)
    assert agentgym_score({"a": {"success_rate": 0.5}, "b": {"success_rate": 0.25}}) == pytest.approx(0.375)


def test_the_task_reward_scores_an_episode_by_its_return():
    reward = make_task_reward({})
    payload = json.dumps({"kind": "episode", "env": "webshop", "seed": 1})
    sat = json.dumps({"n": 1, "clauses": [[1]]})
    scores = reward(["p", "p"], ["x", "x1=True"], task=["webshop", "sat"], payload=[payload, sat],
                    episode_return=[1.4, None])  # fmt: skip
    assert scores == [pytest.approx(1.4), 1.0]
    with pytest.raises(ValueError, match="row 0 of the batch is an episode of 'webshop'.*EpisodeRollout"):
        reward(["p"], ["x"], task=["webshop"], payload=[payload])
