"""Environment servers over HTTP (trl_ext.tasks.envs.server / .client): real round trips to uvicorn on 127.0.0.1,
the same episodes as in-process, AgentGym's dialects and answer shapes, errors that name what failed."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import httpx  # noqa: E402

from trl_ext.common.errors import ConfigError  # noqa: E402
from trl_ext.tasks.envs import get_env, parse_action, run_episode  # noqa: E402
from trl_ext.tasks.envs.client import AgentGymEnv, EnvServerError  # noqa: E402
from trl_ext.tasks.envs.server import create_app, main, running_server  # noqa: E402

ENVS = ("webshop", "alfworld")


@pytest.fixture(scope="module")
def servers():
    """One server per environment (and an AgentGym-only WebShop and ALFWorld), for the whole module."""
    apps = {name: create_app(name) for name in ENVS}
    apps.update({f"{name}-agentgym": create_app(name, extensions=False) for name in ENVS})
    with running_server(apps["webshop"]) as a, running_server(apps["alfworld"]) as b:
        with running_server(apps["webshop-agentgym"]) as c, running_server(apps["alfworld-agentgym"]) as d:
            yield {"webshop": a, "alfworld": b, "webshop-agentgym": c, "alfworld-agentgym": d}


def _same(local, remote) -> None:
    assert remote.first_observation == local.first_observation
    assert remote.actions == local.actions and remote.observations == local.observations
    assert remote.rewards == local.rewards
    assert (remote.success, remote.truncated, remote.invalid_actions) == (
        local.success,
        local.truncated,
        local.invalid_actions,
    )


@pytest.mark.parametrize("name", ENVS)
def test_the_expert_reaches_the_goal_remotely_with_the_in_process_episode(servers, name):
    env = AgentGymEnv(servers[name], name)
    for seed in range(20):
        local, remote = run_episode(get_env(name), seed), run_episode(env, seed)
        assert remote.success and not remote.truncated and remote.invalid_actions == 0, seed
        _same(local, remote)
    assert env.env_id is not None  # one server-side environment for all the episodes
    env.close()


@pytest.mark.parametrize("name", ["babyai", "textcraft"])
def test_the_engine_environments_serve_through_the_id_dialect(name):
    """The real-engine environments behind the generic ``id`` dialect: the expert's episodes over HTTP are the
    in-process ones, and get_env(..., server_url=...) builds the client (the recipes' --env_servers)."""
    with running_server(create_app(name)) as url:
        env = get_env(name, server_url=url)
        assert isinstance(env, AgentGymEnv) and env.dialect == "id"
        for seed in range(5):
            _same(run_episode(get_env(name), seed), run_episode(env, seed))
        env.close()


@pytest.mark.parametrize("name", ENVS)
def test_step_infos_match_in_process_and_keep_the_server_reward(servers, name):
    local, remote = get_env(name), AgentGymEnv(servers[name], name)
    assert remote.reset(3) == local.reset(3)
    while not local.done:
        action = local.expert_action()
        assert remote.expert_action() == action
        a, b = local.step(action), remote.step(action)
        assert b.info.pop("server_reward") == a.reward
        assert (b.observation, b.reward, b.done, b.info) == (a.observation, a.reward, a.done, a.info)
    assert remote.done and remote.success
    assert remote.instructions == type(local).instructions


@pytest.mark.parametrize(
    ("name", "actions"),
    [
        ("webshop", ["buy it", "click[buy now]", "click[B00000]", "search[]", None, "", "click[back to search]"]),
        ("alfworld", ["go to garage 1", "put mug 1 in cabinet 1", "open sinkbasin 1", "fly away", None, ""]),
    ],
)
def test_invalid_actions_change_nothing_and_are_counted(servers, name, actions):
    env = AgentGymEnv(servers[name], name)
    first = env.reset(11)
    for count, action in enumerate(actions, 1):
        result = env.step(action)
        assert result.observation.startswith("Invalid action") and result.reward == 0.0 and not result.done
        assert result.info["invalid_actions"] == count and not result.info["valid"]
        assert env.observe() == first  # the server's state is unchanged
    # the rest of the episode is the in-process one
    local = get_env(name)
    local.reset(11)
    while not local.done:
        action = local.expert_action()
        assert env.step(action).reward == local.step(action).reward
    assert env.success and env.invalid_actions == len(actions)


def test_over_long_episodes_are_truncated_by_the_client(servers):
    env = AgentGymEnv(servers["webshop"], "webshop", max_episode_length=3)

    def wander(env, observation):
        return "click[back to search]" if "Back to Search" in observation else "search[x]"

    episode = run_episode(env, 0, policy=wander)
    assert episode.truncated and not episode.success and episode.length == 3
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step("search[x]")


def test_a_server_side_limit_truncates_too():
    with running_server(create_app("alfworld", max_episode_length=2)) as url:
        env = AgentGymEnv(url, "alfworld")
        episode = run_episode(env, 0, policy=lambda env, observation: "look")
        assert episode.truncated and episode.length == 2 and not episode.success


def test_malformed_model_output_is_an_invalid_action(servers):
    env = AgentGymEnv(servers["webshop"], "webshop")
    env.reset(1)
    result = env.step(parse_action("I am not sure what to do."))
    assert result.observation.startswith("Invalid action") and result.info["invalid_actions"] == 1
    result = env.step(parse_action(""))
    assert result.info["invalid_actions"] == 2 and result.info["server_reward"] is None  # never sent


@pytest.mark.parametrize("name", ENVS)
def test_seeded_resets_are_identical_and_seeds_differ(servers, name):
    a, b = AgentGymEnv(servers[name], name), AgentGymEnv(servers[name], name)
    assert a.reset(7) == b.reset(7) == get_env(name).reset(7)
    assert a.env_id != b.env_id
    assert len({a.reset(s) for s in range(8)}) > 4
    # a real server holds data_len items: the index sent is seed % data_len
    assert AgentGymEnv(servers[name], name, data_len=5).reset(10**9 + 7) == get_env(name).reset((10**9 + 7) % 5)


def test_concurrent_instances_on_one_server_stay_independent(servers):
    def play(job):
        name, seed = job
        env = AgentGymEnv(servers[name], name)
        try:
            return [run_episode(env, seed + k) for k in range(3)]
        finally:
            env.close()

    jobs = [(name, seed) for name in ENVS for seed in (0, 10, 20)]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(play, jobs))
    for (name, seed), episodes in zip(jobs, results):
        for k, remote in enumerate(episodes):
            _same(run_episode(get_env(name), seed + k), remote)


def test_the_wire_shapes_are_agentgyms(servers):
    with httpx.Client(base_url=servers["webshop"]) as http:
        idx = http.post("/create").json()
        assert isinstance(idx, int)
        observation, none = http.post("/reset", json={"env_idx": idx, "session_id": 5}).json()
        assert none is None and observation == get_env("webshop").reset(5)
        assert http.get("/available_actions", params={"env_idx": idx}).json() == {
            "has_search_bar": True,
            "clickables": ["search"],
        }
        step = http.post("/step", json={"env_idx": idx, "action": "search[mug]"}).json()
        assert set(step) == {"state", "reward", "done", "info"} and step["reward"] == 0.1
        assert http.get("/observation", params={"env_idx": idx}).json() == step["state"]
        assert http.post("/close", json={"env_idx": idx}).json() is True
    with httpx.Client(base_url=servers["alfworld"]) as http:
        idx = http.post("/create").json()["id"]
        assert http.get("/available_actions", params={"id": idx}).json() == []  # before any reset: no error
        assert http.get("/detail", params={"id": idx}).json()["seed"] is None
        reset = http.post("/reset", json={"id": idx, "game": 2, "world_type": "Text"}).json()
        assert set(reset) == {"id", "observation", "available_actions", "task_type"}
        step = http.post("/step", json={"id": idx, "action": "look"}).json()
        assert set(step) == {"observation", "reward", "available_actions", "done", "info"}
        detail = http.get("/detail", params={"id": idx}).json()
        assert detail["observation"] == step["observation"] and detail["seed"] == 2 and detail["steps"] == 1
        assert http.post("/reset", json={"id": idx, "game": 2, "world_type": "Lunar"}).status_code == 422
    with httpx.Client(base_url=servers["webshop-agentgym"]) as http:  # exactly AgentGym's: no extensions
        idx = http.post("/create").json()
        http.post("/reset", json={"env_idx": idx, "session_id": 5})
        assert http.post("/step", json={"env_idx": idx, "action": "search[mug]"}).json()["info"] is None
        assert http.get("/expert_action", params={"env_idx": idx}).status_code == 404


def test_unknown_ids_and_malformed_bodies_are_errors_naming_them(servers):
    with httpx.Client(base_url=servers["webshop"]) as http:
        answer = http.post("/step", json={"env_idx": 4242, "action": "search[x]"})
        assert answer.status_code == 404 and "4242" in answer.json()["detail"]
        assert http.post("/step", json={"env_idx": 0}).status_code == 422  # no action
        assert http.post("/reset", json={"session_id": 1}).status_code == 422  # no env_idx
        idx = http.post("/create").json()
        assert http.post("/step", json={"env_idx": idx, "action": "search[x]"}).status_code == 409  # no reset
    env = AgentGymEnv(servers["alfworld"], "alfworld")
    env.reset(0)
    env.env_id = 98765
    with pytest.raises(EnvServerError, match="HTTP 404.*unknown environment id 98765") as info:
        env.step("look")
    assert info.value.status_code == 404


def test_an_unreachable_server_is_a_clear_error_naming_the_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once closed
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(EnvServerError, match=f"cannot reach the environment server at {url}/create"):
        AgentGymEnv(url, "webshop", timeout=5).reset(0)
    with pytest.raises(ConfigError, match="base_url"):
        AgentGymEnv("localhost:8000", "webshop")
    with pytest.raises(ConfigError, match="dialect"):
        AgentGymEnv(url, "webshop", dialect="gopher")


@pytest.mark.parametrize("name", ENVS)
def test_a_real_agentgym_server_trains_unchanged_but_has_no_expert(servers, name):
    """The AgentGym-only server (no ``info``, no expert, no ``/close``): the client reads the signals off the
    answers, keeps the server's reward, and says the expert is missing."""
    env, local = AgentGymEnv(servers[f"{name}-agentgym"], name), get_env(name)
    assert env.reset(4) == local.reset(4)
    with pytest.raises(EnvServerError, match=f"server at {servers[name + '-agentgym']} has no /expert_action"):
        env.expert_action()
    bad = env.step("fly away")
    assert not bad.info["valid"] and bad.info["invalid_actions"] == 1
    while not local.done:
        action = local.expert_action()
        a, b = local.step(action), env.step(action)
        assert b.reward == b.info["server_reward"] == a.reward and b.observation == a.observation
    assert env.done and env.success and env.invalid_actions == 1
    assert env.instructions == type(local).instructions  # the server gives none: the registered environment's
    env.close()  # no /close on the server: not an error


def test_the_console_script_reports_user_errors(capsys):
    assert main(["--env", "shopping-mall"]) == 2
    assert "unknown environment 'shopping-mall'" in capsys.readouterr().err
    assert main(["--env", "webshop", "--env-param", "num_products"]) == 2
    assert main(["--env", "webshop", "--env-param", "num_products=2"]) == 2
    assert "num_products=2" in capsys.readouterr().err
