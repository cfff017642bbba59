"""BabyAI on minigrid (trl_ext.tasks.envs.babyai): the bot as expert, the documented rewards, invalid actions that
never reach the engine, both length limits, seeded resets and the text observation checked against the grid."""

from __future__ import annotations

import copy
import random

import pytest

from trl_ext.tasks.envs import get_env, parse_action, run_episode
from trl_ext.tasks.envs.babyai import ACTIONS, DEFAULT_LEVELS, BabyAIEnv


def _state(env: BabyAIEnv) -> tuple:
    """Everything an action can change in the engine, minigrid's step counter included."""
    game = env.game
    carrying = None if game.carrying is None else game.carrying.encode()
    return tuple(game.agent_pos), game.agent_dir, carrying, game.step_count, game.grid.encode().tobytes()


@pytest.fixture(scope="module")
def env():
    env = BabyAIEnv()
    yield env
    env.close()


def test_the_expert_reaches_the_goal_on_20_seeds(env):
    played = set()
    for seed in range(20):
        episode = run_episode(env, seed)
        assert episode.success and not episode.truncated and episode.invalid_actions == 0, (seed, episode.actions)
        assert episode.total_reward == 1.0 and episode.rewards[-1] == 1.0 and set(episode.rewards[:-1]) <= {0.0}
        assert episode.length <= 25 and episode.observations[-1].endswith("The task is completed.")
        # minigrid's own reward is kept: 1 - 0.9 * step_count / max_steps
        info = env.progress()
        assert info["engine_steps"] == episode.length and not info["engine_truncated"]
        assert info["engine_reward"] == pytest.approx(1 - 0.9 * episode.length / env.game.max_steps)
        assert info["level"] == DEFAULT_LEVELS[seed % len(DEFAULT_LEVELS)] and info["mission"] == env.game.mission
        played.add(info["level"])
    assert played == set(DEFAULT_LEVELS)


def test_a_scripted_episode_earns_the_documented_rewards():
    env = BabyAIEnv(levels=["GoToRedBallNoDists"])
    first = env.reset(2)  # the agent at (6, 2) faces a wall (east); the red ball is at (2, 3)
    assert first.startswith("Your goal: go to the red ball\n") and "facing a wall 1 step away" in first
    assert tuple(env.game.agent_pos) == (6, 2) and env.game.agent_dir == 0
    script = [("move forward", 0.0, False), ("drop", 0.0, False), ("turn left", 0.0, True), ("Turn Left.", 0.0, True),
              *[("move forward", 0.0, True)] * 4, ("turn left", 1.0, True)]  # fmt: skip
    for action, reward, valid in script:
        result = env.step(action)
        assert (result.reward, result.info["valid"]) == (reward, valid), (action, result.observation)
    assert result.done and result.info["success"] and not result.info["truncated"]
    assert tuple(env.game.agent_pos) == (2, 2) and result.info["invalid_actions"] == 2
    # the two invalid actions never reached the engine: 7 engine steps of 64
    assert result.info["steps"] == 9 and result.info["engine_steps"] == 7
    assert result.info["engine_reward"] == pytest.approx(1 - 0.9 * 7 / 64)


@pytest.mark.parametrize(
    ("action", "why"),
    [("fly away", "'fly away' is not a BabyAI action (use one of: turn left, turn right, move forward, pick up, "),
     ("pick up the ball", "is not a BabyAI action"), ("done", "'done' is not needed"),
     ("", "the output holds no action"), (None, "the output holds no action"),
     ("pick up", "there is nothing to pick up in front of you"), ("drop", "you are not carrying anything"),
     ("toggle", "there is nothing to toggle in front of you")],
)  # fmt: skip
def test_invalid_actions_change_nothing_and_are_counted(action, why):
    env = BabyAIEnv(levels=["GoToRedBallNoDists"])
    env.reset(0)
    assert env._cell(1, 0) is None and env.game.carrying is None  # nothing ahead to take, toggle or drop onto
    before, observation = _state(env), env.observation()
    result = env.step(action)
    assert result.observation.startswith("Invalid action: ") and why in result.observation
    assert result.reward == 0.0 and not result.done and not result.info["valid"]
    assert _state(env) == before and env.observation() == observation
    assert result.info["invalid_actions"] == 1 and result.info["engine_steps"] == 0
    assert env.step(action).info["invalid_actions"] == 2 and _state(env) == before


def test_moving_into_a_wall_and_picking_up_with_full_hands_are_invalid():
    env = BabyAIEnv(levels=["GoToRedBallNoDists"])
    env.reset(0)
    for _ in range(4):  # from (6, 5) west towards the wall at (0, 5): five cells free
        assert env.step("move forward").info["valid"]
    assert env.step("forward").info["valid"] and tuple(env.game.agent_pos) == (1, 5)  # minigrid's name works too
    before = _state(env)
    result = env.step("move forward")
    assert result.observation == "Invalid action: you cannot move forward, there is a wall in front of you"
    assert _state(env) == before and result.info["engine_steps"] == 5
    env = BabyAIEnv(levels=["PutNextLocalS6N4"])
    env.reset(0)
    while env.game.carrying is None:
        env.step(env.expert_action())
    before = _state(env)
    result = env.step("pick up")
    assert result.observation.startswith("Invalid action: you are already carrying a") and _state(env) == before


def test_the_validity_rule_matches_the_engine():
    """An action is valid exactly when the engine would change something (checked on a copy of the engine)."""
    env = BabyAIEnv(levels=["UnlockLocal", "PutNextLocalS6N4", "OpenDoor"], max_episode_length=40)
    rng = random.Random(0)
    counts = {True: 0, False: 0}
    for seed in range(6):
        env.reset(seed)
        while not env.done:
            action = env.expert_action() if rng.random() < 0.5 else rng.choice(ACTIONS)
            game = copy.deepcopy(env.game)
            moved = (tuple(game.agent_pos), game.agent_dir, game.carrying and game.carrying.encode(),
                     game.grid.encode().tobytes())  # fmt: skip
            game.step(ACTIONS.index(action))
            changed = moved != (tuple(game.agent_pos), game.agent_dir, game.carrying and game.carrying.encode(),
                                game.grid.encode().tobytes())  # fmt: skip
            result = env.step(action)
            assert result.info["valid"] == changed, (seed, action, result.observation)
            counts[changed] += 1
    assert counts[True] > 50 and counts[False] > 20  # both kinds were exercised


def test_the_expert_recovers_from_off_plan_actions():
    env = BabyAIEnv(max_episode_length=100)
    for seed in range(10):
        rng = random.Random(seed)
        env.reset(seed)
        for _ in range(6):
            if not env.done:
                env.step(rng.choice(ACTIONS))
        before = _state(env)
        assert env.done or env.expert_action() == env.expert_action() and _state(env) == before  # asking is free
        while not env.done:
            env.step(env.expert_action())
        assert env.success, seed
    # opening a box makes minigrid's bot give up; a bot rebuilt from the current state takes over
    env = BabyAIEnv(levels=["GoToRedBallGrey"])
    env.reset(1)
    for action in ("turn right", "turn left", "move forward", "turn left"):
        env.step(action)
    assert env._cell(1, 0).type == "box"
    assert env.step("toggle").info["valid"] and env._cell(1, 0) is None and env.bot is None
    while not env.done:
        env.step(env.expert_action())
    assert env.success and env.invalid_actions == 0


def test_over_long_episodes_are_truncated():
    env = BabyAIEnv(levels=["PickupLoc"], max_episode_length=10)  # turning never picks anything up
    episode = run_episode(env, 0, policy=lambda env, observation: "turn left")
    assert episode.truncated and not episode.success and episode.length == 10 and episode.total_reward == 0.0
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step("turn left")
    # minigrid's own limit (64 steps for PickupLoc) ends the episode first when max_episode_length is longer
    env = BabyAIEnv(levels=["PickupLoc"], max_episode_length=100)
    episode = run_episode(env, 0, policy=lambda env, observation: "turn left")
    assert episode.length == 64 and not episode.success and not episode.truncated
    assert env.progress()["engine_truncated"] and "limit of 64 steps" in episode.observations[-1]


def test_malformed_model_output_is_an_invalid_action():
    env = BabyAIEnv(levels=["GoToRedBallNoDists"])
    env.reset(0)
    result = env.step(parse_action("I am not sure what to do."))
    assert result.observation.startswith("Invalid action: 'I am not sure") and result.info["invalid_actions"] == 1
    assert env.step(parse_action("")).info["invalid_actions"] == 2 and env.game.step_count == 0
    result = env.step(parse_action("Thought: the ball is ahead.\nAction: move forward"))
    assert result.info["valid"] and env.game.step_count == 1 and tuple(env.game.agent_pos) == (5, 5)


def test_seeded_resets_are_identical_and_seeds_differ(env):
    other = BabyAIEnv()
    assert env.reset(7) == other.reset(7) and _state(env) == _state(other)
    assert run_episode(env, 7).actions == run_episode(other, 7).actions
    # the same instance replays a seed after other episodes, on the same engine object
    engine = env._engines["OpenRedDoor"]
    first = env.reset(7)
    run_episode(env, 3)
    assert env.reset(7) == first and env._engines["OpenRedDoor"] is engine
    assert len({env.reset(s) for s in range(10)}) == 10
    assert env.reset(0) != env.reset(10)  # same level, another grid
    other.close()
    assert other._engines == {} and other.reset(7) == first  # closed engines are made again


def test_the_observation_names_the_mission_and_what_the_grid_holds():
    env = BabyAIEnv(levels=["GoToRedBallNoDists"])
    first = env.reset(0)
    game = env.game
    assert first == (
        "Your goal: go to the red ball\nIn front of you in this room, you can see several objects: There is a red "
        "ball 4 steps in front of you and 3 steps to your right. The room has walls around you. You are facing a "
        "wall 6 steps away. You are not carrying anything."
    )
    ball = game.grid.get(*(game.agent_pos + 4 * game.dir_vec + 3 * game.right_vec))
    assert (ball.type, ball.color) == ("ball", "red")
    assert game.grid.get(*(game.agent_pos + 6 * game.dir_vec)).type == "wall"
    # with distractors: one sentence per visible object of the engine's own view (walls and floor aside)
    env, listed = BabyAIEnv(levels=["GoToRedBallGrey"]), 0
    for seed in range(6):
        observation = env.reset(seed)
        view, visible = env.game.gen_obs_grid()
        objects = [(i, j, view.get(i, j)) for i in range(7) for j in range(7) if (i, j) != (3, 6) and visible[i, j]]
        objects = [(i, j, o) for i, j, o in objects if o is not None and o.type != "wall"]
        assert observation.count("There is a ") == len(objects), seed
        if not objects:
            assert "You cannot see any objects within sight." in observation
        listed += len(objects)
        for i, j, obj in objects:
            forward, right = 6 - j, i - 3
            where = [f"{forward} step{'s' * (forward != 1)} in front of you"] if forward else []
            if right:
                where.append(f"{abs(right)} step{'s' * (abs(right) != 1)} to your {'right' if right > 0 else 'left'}")
            assert f"There is a {obj.color} {obj.type} {' and '.join(where)}." in observation, (seed, obj)
    assert listed > 10


def test_carrying_and_doors_are_described():
    env = BabyAIEnv(levels=["PutNextLocalS6N4"])
    env.reset(0)
    while env.game.carrying is None:
        result = env.step(env.expert_action())
    carried = env.game.carrying
    assert result.observation.endswith(f"You are carrying a {carried.color} {carried.type}.")
    env = BabyAIEnv(levels=["OpenRedDoor"])
    observation = env.reset(0)
    assert "There is a red closed door" in observation
    while not env.done:
        result = env.step(env.expert_action())
    assert result.info["success"] and result.observation.endswith("The task is completed.")


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match=r"levels: unknown level\(s\) \['GoToMoon'\]; known levels: .*GoToRedBall"):
        BabyAIEnv(levels=["GoToMoon"])
    for levels in ("GoToRedBall", [], 3):
        with pytest.raises(ValueError, match="levels="):
            BabyAIEnv(levels=levels)
    with pytest.raises(ValueError, match="max_episode_length=0"):
        BabyAIEnv(max_episode_length=0)
    env = BabyAIEnv()
    with pytest.raises(ValueError, match="seed=-1"):
        env.reset(-1)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step("turn left")
    assert BabyAIEnv(levels=["BabyAI-GoToObj-v0"]).levels == ("GoToObj",)
    assert isinstance(get_env("babyai", levels=["GoToObj"]), BabyAIEnv)
