"""Agent environments (trl_ext.tasks.envs): the shared interface (parsing, invalid actions, the length limit,
episodes) and the WebShop simulator (expert, documented rewards, seeded resets)."""

from __future__ import annotations

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
