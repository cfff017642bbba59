"""TextCraft on the real ``textcraft`` engine (trl_ext.tasks.envs.textcraft): the expert, the documented rewards
(0.15 per sub-goal the first time, 1.0 for the goal), invalid actions, truncation, seeded resets independent of the
recipe files' listing order (of the string hash seed: tests/tasks/test_envs.py), the caller's global random state,
and the engine's recipe-list mutation undone."""

from __future__ import annotations

import random
import re
import subprocess
import sys

import pytest

from trl_ext.common.errors import ConfigError
from trl_ext.tasks.envs import available_envs, get_env, parse_action, run_episode
from trl_ext.tasks.envs.textcraft import TextCraftEnv

SEED = 10  # beetroot soup: planks (a generic ingredient) -> bowl, + beetroot; the expert resolves planks to acacia


def _env(**params) -> TextCraftEnv:
    """The environment over every goal (the seeds below index the whole sorted list; training uses four in five)."""
    env = get_env("textcraft", **{"goals": "all", **params})
    assert isinstance(env, TextCraftEnv)
    return env


def test_the_registry_builds_textcraft_and_names_bad_parameters():
    assert "textcraft" in available_envs()
    assert "craft [target object] using [input ingredients]" in TextCraftEnv.instructions
    for bad, match in [
        ({"min_depth": 0}, "min_depth=0"),
        ({"max_depth": "3"}, "max_depth='3'"),
        ({"min_depth": 3, "max_depth": 2}, "max_depth=2 must be >= min_depth=3"),
        ({"max_expert_steps": True}, "max_expert_steps=True"),
        ({"minecraft_dir": "/nonexistent/textcraft"}, "minecraft_dir='/nonexistent/textcraft'"),
        ({"min_depth": 4, "max_expert_steps": 3}, "no goal of depth min_depth=4..max_depth=4"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(match)):
            get_env("textcraft", **bad)


def test_expert_reaches_the_goal_on_20_seeds_with_the_documented_return():
    env = _env()
    goals = set()
    for seed in range(20):
        episode = run_episode(env, seed)
        n = len(env.subgoals)
        assert episode.success and not episode.truncated and episode.invalid_actions == 0, (seed, episode.actions)
        assert n >= 2 and episode.length <= env.max_expert_steps
        # 0.15 for each sub-goal, the first time; 1.0 for the goal, last
        assert episode.total_reward == pytest.approx(0.15 * n + 1.0), (seed, episode.rewards)
        assert episode.rewards[-1] == 1.0 and episode.rewards.count(0.15) == n
        assert set(episode.rewards) <= {0.0, 0.15, 1.0}
        assert env.progress()["engine_reward"] == 1.0 and env.progress()["subgoals_reached"] == n
        assert re.fullmatch(rf"Crafted \d+ {env.goal}", episode.observations[-1]), episode.observations[-1]
        # the expert only uses the crafting commands shown
        for action in episode.actions:
            if action.startswith("craft"):
                head = action.split(" using ")[0]
                assert f"\n{head} using " in "\n" + episode.first_observation, (seed, action)
        goals.add(env.goal)
    assert len(goals) == 20


def test_expert_solves_every_goal_of_the_default_list():
    env = _env()
    assert len(env.goals) > 300 and {d for _, d in env.goals} == {2, 3, 4}
    for seed in range(len(env.goals)):
        episode = run_episode(env, seed)
        assert episode.success and episode.invalid_actions == 0, (seed, env.goal, episode.observations)
        assert episode.total_reward == pytest.approx(0.15 * len(env.subgoals) + 1.0), seed


def test_training_and_heldout_goals_are_disjoint_fifths():
    every, train, held = _env().goals, get_env("textcraft").goals, get_env("textcraft", goals="heldout").goals
    assert held == every[::5] and train == [g for i, g in enumerate(every) if i % 5]
    assert not set(train) & set(held) and len(train) + len(held) == len(every)
    assert TextCraftEnv.heldout_params == {"goals": "heldout"}  # what the evaluations build
    with pytest.raises(ValueError, match="goals='test' must be one of train, heldout, all"):
        get_env("textcraft", goals="test")


def test_first_observation_is_the_engine_prompt():
    env = _env()
    first = env.reset(SEED)
    assert env.goal == "minecraft:beetroot_soup"
    assert first.startswith("Crafting commands:\n") and first.endswith("\n\nGoal: craft beetroot soup.")
    commands = first.split("\n\n")[0].splitlines()[1:]
    assert "craft 1 beetroot soup using 1 bowl, 6 beetroot" in commands
    assert "craft 4 bowl using 3 planks" in commands and "craft 4 acacia planks using 1 acacia logs" in commands
    assert len(commands) == len(set(commands)) and all(c.startswith("craft ") and " using " in c for c in commands)
    assert env.progress()["subgoals"] == ["acacia logs", "acacia planks", "beetroot", "bowl"]


def test_scripted_episode_earns_the_documented_rewards():
    env = _env()
    env.reset(SEED)
    steps = [
        ("inventory", 0.0),  # free
        ("get 1 oak logs", 0.0),  # not in the tree (its logs are acacia logs)
        ("craft 4 oak planks using 1 oak logs", 0.15),  # an item of the generic "planks": the planks sub-goal
        ("get 1 oak logs", 0.0),
        ("craft 4 oak planks using 1 oak logs", 0.0),  # planks again: nothing
        ("Get  6 Beetroot.", 0.15),  # case, spaces and a final period are normalised
        ("get 3 beetroot", 0.0),  # beetroot again
        ("craft 4 bowl using 3 oak planks", 0.15),
        ("get 1 acacia logs", 0.15),  # a base item of the tree, first time
        ("craft 1 minecraft:beetroot_soup using 1 bowl, 6 beetroot", 1.0),  # the goal ends the episode
    ]
    total = 0.0
    for action, reward in steps:
        result = env.step(action)
        assert result.reward == reward and result.info["valid"], (action, result.observation)
        total += result.reward
    assert result.done and result.info["success"] and not result.info["truncated"]
    assert result.observation == "Crafted 1 minecraft:beetroot_soup"
    assert total == pytest.approx(4 * 0.15 + 1.0)
    assert result.info["engine_reward"] == 1.0 and result.info["subgoals_reached"] == 4
    assert result.info["invalid_actions"] == 0 and result.info["goal"] == "beetroot soup"


def test_another_item_counts_only_where_the_tree_has_a_generic_ingredient():
    env = _env()
    env.reset([goal for goal, _ in env.goals].index("minecraft:acacia_boat"))  # 5 acacia planks, by name
    assert env.progress()["subgoals"] == ["acacia logs", "acacia planks"]
    assert env.step("get 1 oak logs").reward == 0.0
    assert env.step("craft 4 oak planks using 1 oak logs").reward == 0.0  # oak planks are not acacia planks here
    assert not env.step("craft 1 acacia boat using 5 oak planks").info["valid"]
    assert [env.step(a).reward for a in ("get 2 acacia logs", "craft 4 acacia planks using 1 acacia logs")] == [
        0.15, 0.15]  # fmt: skip


def test_expert_finishes_from_a_state_it_did_not_plan():
    env = _env()
    env.reset(SEED)
    for action in ("get 5 oak logs", "craft 4 oak planks using 1 oak logs", "Action: get 2 beetroot"):
        assert env.step(action).info["valid"], action
    assert env.engine.inventory == {"minecraft:oak_logs": 4, "minecraft:oak_planks": 4, "minecraft:beetroot": 2}
    assert env.expert_action() == "get 1 acacia logs"  # its tree is acacia's; beetroot: 6 - 2 held
    actions = []
    while not env.done:
        actions.append(env.expert_action())
        result = env.step(actions[-1])
    assert result.info["success"] and env.invalid_actions == 0 and actions[1] == "get 4 beetroot"
    assert len(actions) == 5 and result.info["subgoals_reached"] == 4


def test_inventory_is_valid_and_shows_the_engine_inventory():
    env = _env()
    env.reset(SEED)
    assert env.step("inventory").observation == "Inventory: You are not carrying anything."
    env.step("get 2 acacia logs")
    result = env.step("  INVENTORY ")
    assert result.observation == "Inventory: [acacia logs] (2)" and result.info["valid"] and result.reward == 0.0


@pytest.mark.parametrize(
    ("action", "why"),
    [
        ("get 1 acacia planks", "Could not find acacia planks"),  # craftable: not gettable
        ("get 1 planks", "Could not find planks"),  # a generic ingredient
        ("get 1 unobtainium", "Could not find unobtainium"),
        ("get 0 beetroot", "count >= 1"),
        ("get beetroot", "Could not execute"),
        ("craft 4 bowl using 3 acacia planks", "Could not find enough items"),  # none held
        ("craft 4 bowl using 3 planks", "Could not find enough items"),  # the generic name is not an item held
        ("craft 8 acacia planks using 2 acacia logs", "Could not find a valid recipe"),  # one application a craft
        ("craft 4 acacia planks using 1 acacia logs, 1 acacia logs", "Could not find a valid recipe"),  # extra
        ("craft 1 beetroot soup using 1 acacia logs", "Could not find a valid recipe"),  # an ingredient's recipe
        ("craft 4 acacia planks using one acacia logs", "Wrong item format"),
        ("craft bowl", "Could not execute"),
        ("dance", "unknown action"),
        ("inventory please", "unknown action"),
        (None, "no action"),
        ("", "no action"),
    ],
)
def test_invalid_actions_change_nothing_and_are_counted(action, why):
    env = _env()
    env.reset(SEED)
    assert env.step("get 2 acacia logs").reward == 0.15
    inventory, reached = dict(env.engine.inventory), set(env.reached)
    result = env.step(action)
    assert result.observation.startswith("Invalid action: ") and why in result.observation, result.observation
    assert result.reward == 0.0 and not result.done and not result.info["valid"]
    assert env.engine.inventory == inventory == {"minecraft:acacia_logs": 2} and env.reached == reached
    assert result.info["invalid_actions"] == 1
    assert env.step("craft 4 acacia planks using 2 acacia logs").info["invalid_actions"] == 2
    # the state still works as before
    assert env.step("craft 4 acacia planks using 1 acacia logs").reward == 0.15


def test_malformed_model_output_is_an_invalid_action():
    env = _env()
    env.reset(3)
    result = env.step(parse_action(""))
    assert result.observation == "Invalid action: the output holds no action" and result.info["invalid_actions"] == 1
    result = env.step(parse_action("Hmm, I am not sure what to craft here."))
    assert result.observation.startswith("Invalid action: unknown action") and result.info["invalid_actions"] == 2
    result = env.step(parse_action("Thought: get it.\nAction:\n get 1 nothingness"))
    assert result.observation == "Invalid action: Could not find nothingness" and result.info["invalid_actions"] == 3
    # the AgentGym format parses to an action the engine takes
    result = env.step(parse_action(f"Thought:\n ... \n\nAction:\n {env.expert_action()}"))
    assert result.info["valid"] and result.info["invalid_actions"] == 3 and env.engine.inventory


def test_over_long_episodes_are_truncated():
    env = _env(max_episode_length=5, max_expert_steps=4)
    episode = run_episode(env, 0, policy=lambda env, observation: "inventory")
    assert episode.truncated and not episode.success and episode.length == 5 and episode.total_reward == 0.0
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step("inventory")
    # the expert of the same short-goal list still finishes inside the limit
    episode = run_episode(env, 0)
    assert episode.success and not episode.truncated and episode.length <= 4


def test_seeded_resets_are_identical_and_seeds_differ():
    a, b = _env(), _env()
    first = a.reset(7)
    run_episode(a, 3)  # other episodes (the engine grows its recipe lists in create_recipe_set) ...
    run_episode(a, 7)
    assert a.reset(7) == first == b.reset(7)  # ... change nothing: the lists are restored
    assert run_episode(a, 7).actions == run_episode(b, 7).actions
    assert len({a.reset(s) for s in range(20)}) == 20
    assert a.reset(0) != a.reset(len(a.goals))  # same goal, other distractors


def test_the_recipe_lists_are_restored_after_reset():
    env = _env()
    tree = env.engine.crafting_tree
    before = {k: len(v) for k, v in tree.itemid_recipes.items()}
    for seed in (SEED, SEED, 0):
        env.reset(seed)
    assert {k: len(v) for k, v in tree.itemid_recipes.items()} == before
    assert all(r.output_item.item_tag.item_id == k for k, rs in tree.itemid_recipes.items() for r in rs)


def test_reset_leaves_the_global_random_state_untouched():
    env = _env()
    random.seed(1234)
    state = random.getstate()
    first = env.reset(5)
    assert random.getstate() == state
    expected = random.random()
    random.seed(1234)
    env.reset(6)
    run_episode(env, 8)
    assert random.random() == expected
    random.seed(99)  # and the episode does not depend on the caller's random state
    assert env.reset(5) == first


def test_episodes_do_not_depend_on_the_order_the_recipe_files_are_listed():
    """The engine reads its recipe files in os.listdir order, which differs between filesystems: the same seeds give
    the same episodes (observations and expert plans) with the listing reversed."""
    code = (
        "import os, sys\n"
        "if sys.argv[1] == 'reversed':\n"
        "    listdir = os.listdir\n"
        "    os.listdir = lambda path='.': sorted(listdir(path), reverse=True)\n"
        "from trl_ext.tasks.envs.base import run_episode\n"
        "from trl_ext.tasks.envs.textcraft import TextCraftEnv\n"
        "env = TextCraftEnv()\n"
        "print(repr([(env.reset(s), run_episode(env, s).actions) for s in (0, 10, 77)]))\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code, order], capture_output=True, text=True, timeout=120, check=True
        ).stdout  # fmt: skip
        for order in ("sorted", "reversed")
    }
    assert len(outputs) == 1
