"""Agent environments (trl_ext.tasks.envs): the shared interface (parsing, invalid actions, the length limit,
episodes) and the WebShop simulator (expert, documented rewards, seeded resets)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from trl_ext.tasks.envs import available_envs, get_env, parse_action, run_episode


@pytest.mark.parametrize(
    ("text", "action"),
    [
        ("Thought: I should search.\nAction: search[red mug]", "search[red mug]"),
        ("Action: click[a]\nThought: no, wait\nAction:  click[b] ", "click[b]"),
        ("click[buy now]", "click[buy now]"),
        ("some thinking\n\nclick[x]\n\n", "click[x]"),
        ("", None),
        ("   \n ", None),
        ("Action:", None),
    ],
)
def test_parse_action(text, action):
    assert parse_action(text) == action


def test_the_registry_names_unknown_environments_and_parameters():
    assert "webshop" in available_envs()
    with pytest.raises(ValueError, match="unknown environment 'shop'; known environments: .*webshop"):
        get_env("shop")
    with pytest.raises(ValueError, match="invalid parameters"):
        get_env("webshop", colour="red")
    with pytest.raises(ValueError, match="max_episode_length=0"):
        get_env("webshop", max_episode_length=0)
    with pytest.raises(ValueError, match="num_products=2"):
        get_env("webshop", num_products=2)


def test_webshop_expert_reaches_the_goal_on_20_seeds():
    env = get_env("webshop")
    for seed in range(20):
        episode = run_episode(env, seed)
        assert episode.success and not episode.truncated and episode.invalid_actions == 0, seed
        assert episode.rewards == [0.1, 0.3, 0.0, 0.0, 1.0], (seed, episode.actions)
        assert episode.total_reward == pytest.approx(1.4)


def test_webshop_seeded_resets_are_identical_and_seeds_differ():
    a, b = get_env("webshop"), get_env("webshop")
    assert a.reset(7) == b.reset(7) and a.products == b.products and a.goal == b.goal
    assert run_episode(a, 7).actions == run_episode(b, 7).actions
    assert len({get_env("webshop").reset(s) for s in range(10)}) == 10


def test_webshop_scripted_episode_earns_the_documented_rewards():
    env = get_env("webshop")
    env.reset(3)
    goal = env.products[env.goal_id]
    steps = [
        (f"search[{goal['title']}]", 0.1),  # first search: 0.1
        ("click[back to search]", 0.0),
        (f"search[{goal['title']}]", 0.0),  # a second search earns nothing
        (f"click[{env.goal_id}]", 0.3),  # the goal's page, first time: 0.3
        ("click[< prev]", 0.0),
        (f"click[{env.goal_id}]", 0.0),  # opened again: nothing
        (f"click[{env.goal['colour']}]", 0.0),
        (f"click[{env.goal['size']}]", 0.0),
        ("click[buy now]", 1.0),
    ]
    for action, reward in steps:
        result = env.step(action)
        assert result.reward == reward and result.info["valid"], (action, result.observation)
    assert result.done and result.info["success"] and "Thank you" in result.observation
    # buying another product of the results ends the episode with nothing
    env.reset(3)
    env.step(f"search[{goal['title']}]")
    wrong = next(pid for pid in env.results if pid != env.goal_id)
    assert env.step(f"click[{wrong}]").reward == 0.0
    result = env.step("click[buy now]")
    assert result.done and result.reward == 0.0 and not result.info["success"]


def test_webshop_wrong_options_are_not_a_success():
    env = get_env("webshop")
    env.reset(5)
    env.step(f"search[{env.products[env.goal_id]['title']}]")
    env.step(f"click[{env.goal_id}]")
    other = next(c for c in env.products[env.goal_id]["colours"] if c != env.goal["colour"])
    env.step(f"click[{other}]")
    env.step(f"click[{env.goal['size']}]")
    result = env.step("click[buy now]")
    assert result.done and result.reward == 0.0 and not result.info["success"]


@pytest.mark.parametrize(
    "action",
    ["buy it", "click[buy now]", "click[B00000]", "search[]", None, "", "click[back to search]"],
)
def test_invalid_actions_change_nothing_and_are_counted(action):
    env = get_env("webshop")
    first = env.reset(11)
    state = (env.page, env.results, env.current, dict(env.selected), env.searched)
    result = env.step(action)
    assert result.observation.startswith("Invalid action") and result.reward == 0.0 and not result.done
    assert (env.page, env.results, env.current, dict(env.selected), env.searched) == state
    assert result.info["invalid_actions"] == 1 and env.observation() == first
    # search is invalid on the results page too, and the count goes on
    env.step("search[lamp]")
    assert env.step("search[mug]").info["invalid_actions"] == 2


def test_over_long_episodes_are_truncated():
    env = get_env("webshop", max_episode_length=3)

    def wander(env, observation):
        return "click[back to search]" if env.page != "search" else "search[x]"

    episode = run_episode(env, 0, policy=wander)
    assert episode.truncated and not episode.success and episode.length == 3
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step("search[x]")


def test_malformed_model_output_is_an_invalid_action():
    env = get_env("webshop")
    env.reset(1)
    result = env.step(parse_action("I am not sure what to do."))
    assert result.observation.startswith("Invalid action") and result.info["invalid_actions"] == 1
    assert env.step(parse_action("")).info["invalid_actions"] == 2


# ---------------------------------------------------------------- ALFWorld

EXPERT_RETURN = {"pick_and_place": 1.2, "pick_clean_then_place": 1.4, "pick_heat_then_place": 1.4,
                 "pick_cool_then_place": 1.4, "look_at_obj_in_light": 1.2, "pick_two_obj_and_place": 1.6}  # fmt: skip


@pytest.mark.parametrize("task_type", sorted(EXPERT_RETURN))
def test_alfworld_expert_reaches_the_goal_on_20_seeds(task_type):
    env = get_env("alfworld", task_types=[task_type])
    for seed in range(20):
        episode = run_episode(env, seed)
        assert episode.success and episode.invalid_actions == 0 and not episode.truncated, (seed, episode.actions)
        # 0.2 per sub-goal + 1.0 at completion
        assert episode.total_reward == pytest.approx(EXPERT_RETURN[task_type]), (seed, episode.rewards)
        assert episode.rewards[-1] == 1.0 and set(episode.rewards) <= {0.0, 0.2, 1.0}


def test_alfworld_seeded_resets_are_identical():
    a, b = get_env("alfworld"), get_env("alfworld")
    assert a.reset(4) == b.reset(4) and a.location_of == b.location_of and a.task_type == b.task_type
    assert run_episode(a, 4).actions == run_episode(b, 4).actions
    assert len({get_env("alfworld").reset(s) for s in range(12)}) > 6


def _alfworld(task_type: str, seed: int = 0):
    env = get_env("alfworld", task_types=[task_type])
    env.reset(seed)
    return env


def test_alfworld_scripted_clean_episode_earns_each_subgoal_once():
    env = _alfworld("pick_clean_then_place", seed=2)
    obj = sorted(o for o in env.location_of if env._is_kind(o))[0]
    where = env.location_of[obj]
    script = [f"go to {where}", *([f"open {where}"] if where in {"cabinet 1", "cabinet 2", "drawer 1", "fridge 1"}
                                  else []), f"take {obj} from {where}"]  # fmt: skip
    rewards = [env.step(a).reward for a in script]
    assert rewards[-1] == 0.2 and sum(rewards) == pytest.approx(0.2)
    assert env.step(f"put {obj} in/on {where}").reward == 0.0  # back where it was: nothing
    assert env.step(f"take {obj} from {where}").reward == 0.0  # taking it again: no second 0.2
    env.step("go to sinkbasin 1")
    assert env.step(f"clean {obj} with sinkbasin 1").reward == 0.2
    assert env.step(f"clean {obj} with sinkbasin 1").reward == 0.0
    env.step(f"go to {env.target}")
    if env.target in {"cabinet 1", "cabinet 2", "drawer 1"}:
        env.step(f"open {env.target}")
    result = env.step(f"move {obj} to {env.target}")  # the newer ALFWorld wording works too
    assert result.reward == 1.0 and result.done and result.info["success"]


def test_alfworld_an_untreated_object_in_the_target_is_not_the_goal():
    env = _alfworld("pick_heat_then_place", seed=1)
    while env.holding is None:
        env.step(env.expert_action())
    env.step(f"go to {env.target}")
    if env.target in {"cabinet 1", "cabinet 2", "drawer 1"}:
        env.step(f"open {env.target}")
    result = env.step(f"put {env.holding} in/on {env.target}")
    assert result.reward == 0.0 and not result.done


@pytest.mark.parametrize(
    "action",
    ["go to garage 1", "take apple 9 from shelf 1", "put mug 1 in cabinet 1", "open sinkbasin 1", "heat mug 1 with "
     "microwave 1", "use desklamp 1", "examine unicorn 1", "fly away", None, ""],
)  # fmt: skip
def test_alfworld_invalid_actions_change_nothing(action):
    env = _alfworld("pick_and_place", seed=3)
    state = (env.at, env.holding, dict(env.location_of), dict(env.opened))
    result = env.step(action)
    assert result.observation.startswith("Invalid action") and result.reward == 0.0 and not result.done
    assert (env.at, env.holding, dict(env.location_of), dict(env.opened)) == state
    assert result.info["invalid_actions"] == 1


def test_alfworld_look_inventory_and_examine_are_valid_and_free():
    env = _alfworld("look_at_obj_in_light", seed=5)
    for action in ("look", "inventory"):
        result = env.step(action)
        assert result.info["valid"] and result.reward == 0.0
    assert "not carrying" in env.step("inventory").observation
    with pytest.raises(ValueError, match="unknown task type"):
        get_env("alfworld", task_types=["pick_and_eat"])


def test_episodes_do_not_depend_on_the_string_hash_seed():
    """The Python-side environments' episodes (first observations and expert episodes) are the same in processes with
    different PYTHONHASHSEED (set iteration order follows it). SciWorld is left out: its world lives in the JVM, which
    the hash seed does not reach, and across JVM starts its observations have been seen to differ once in a while
    (docs/tasks.md); its seeded resets within a process are tested in test_env_sciworld.py."""
    code = (
        "from trl_ext.tasks.envs import get_env, run_episode\n"
        "out = []\n"
        "for name in ('webshop', 'alfworld', 'babyai', 'textcraft'):\n"
        "    env = get_env(name)\n"
        "    for seed in (0, 1, 2):\n"
        "        first = env.reset(seed)\n"
        "        episode = run_episode(env, seed)\n"
        "        out.append((first, episode.actions, episode.observations, episode.rewards))\n"
        "    env.close()\n"
        "print(repr(out))\n"
    )
    outputs = set()
    for hash_seed in ("1", "2"):
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PYTHONHASHSEED": hash_seed})  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        outputs.add(run.stdout)
    assert len(outputs) == 1
