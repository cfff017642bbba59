"""An HTTP server of the agent environments in AgentGym's protocol (docs/tasks.md, "Environment servers (HTTP)").

``create_app("webshop")`` is a FastAPI app serving instances of ``get_env("webshop", ...)`` in the dialect of that
environment (:func:`~trl_ext.tasks.envs.client.dialect_of`): AgentGym's WebShop dialect (``env_idx``, ``session_id``),
its ALFWorld dialect (``id``, ``game``, ``world_type``) or, for every other name, the generic ``id`` dialect of its
BabyAI / SciWorld / TextCraft servers (``id``, ``data_idx``). AgentGym's clients and :class:`AgentGymEnv` both talk to
it; the reset's ``session_id`` / ``game`` / ``data_idx`` is the episode's seed.

This package's extensions, which AgentGym's clients ignore: the step answer's ``info`` (``success``,
``invalid_actions``, ``truncated``, ``steps``, ``valid`` and the environment's progress), ``GET /expert_action``
(the expert's next action), ``GET /env_info`` (name, dialect, instructions, parameters) and ``POST /close`` in every
dialect. ``extensions=False`` serves AgentGym's endpoints and answer shapes only (no ``info``, no expert, and no
``/close`` for WebShop and ALFWorld), like a real AgentGym server.

Each instance has its own lock (requests run in a thread pool); an unknown id is HTTP 404 naming it, a step
outside an episode 409, a malformed body 422. :func:`serve` runs the app with uvicorn; :func:`start_background_server`
and :func:`running_server` run it in a thread on a free port (tests, local rollouts). ``trl-ext-env-server --env
webshop --host 127.0.0.1 --port 8000`` is :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

try:
    import uvicorn
    from fastapi import FastAPI, HTTPException, Query
    from fastapi.encoders import jsonable_encoder
    from pydantic import BaseModel
except ImportError as _err:  # pragma: no cover - the optional dependencies
    raise ImportError("trl_ext.tasks.envs.server needs fastapi and uvicorn: pip install 'trl-ext[server]'") from _err

from trl_ext.common.errors import ConfigError, UserInputError
from trl_ext.tasks.envs.base import AgentEnv, StepResult
from trl_ext.tasks.envs.client import ID_FIELD, dialect_of
from trl_ext.tasks.envs.registry import get_env

__all__ = ["create_app", "main", "running_server", "serve", "start_background_server"]

PROG = "trl-ext-env-server"


class WebShopStep(BaseModel):
    env_idx: int
    action: str


class WebShopReset(BaseModel):
    env_idx: int
    session_id: int | None = None


class WebShopClose(BaseModel):
    env_idx: int


class IdStep(BaseModel):
    id: int
    action: str


class AlfWorldReset(BaseModel):
    id: int
    game: int
    world_type: Literal["Text", "Embody", "Hybrid"] = "Text"


class IdReset(BaseModel):
    id: int
    data_idx: int = 0


class IdClose(BaseModel):
    id: int


@dataclass
class _Instance:
    """One served environment and what the protocol reads back from it."""

    env: AgentEnv
    lock: threading.RLock = field(default_factory=threading.RLock)
    observation: str = ""
    seed: int | None = None
    score: float = 0.0
    reward: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


class EnvPool:
    """The environments of one server, by id (ids count up from 0; thread-safe)."""

    def __init__(self, env_name: str, env_params: dict[str, Any], id_field: str) -> None:
        self.env_name, self.env_params, self.id_field = env_name, env_params, id_field
        probe = get_env(env_name, **env_params)  # fails at start-up on an unknown name or a bad parameter
        self.env_class = type(probe)
        probe.close()
        self._lock = threading.Lock()
        self._instances: dict[int, _Instance] = {}
        self._next_id = 0

    def create(self) -> int:
        env = get_env(self.env_name, **self.env_params)
        with self._lock:
            idx, self._next_id = self._next_id, self._next_id + 1
            self._instances[idx] = _Instance(env)
        return idx

    def get(self, idx: int) -> _Instance:
        with self._lock:
            instance = self._instances.get(idx)
        if instance is None:
            raise HTTPException(404, f"unknown environment id {idx} ({self.id_field}={idx}): create one with POST "
                                     "/create")  # fmt: skip
        return instance

    def ids(self) -> list[int]:
        with self._lock:
            return sorted(self._instances)

    def close(self, idx: int) -> bool:
        instance = self.get(idx)
        with self._lock:
            self._instances.pop(idx, None)
        with instance.lock:
            instance.env.close()
        return True

    def reset(self, idx: int, seed: int | None) -> _Instance:
        instance = self.get(idx)
        seed = random.randrange(2**31) if seed is None else seed
        with instance.lock:
            try:
                instance.observation = instance.env.reset(seed)
            except UserInputError as err:
                raise HTTPException(422, f"environment id {idx}: {err}") from err
            instance.seed, instance.score, instance.reward, instance.info = seed, 0.0, 0.0, {}
        return instance

    def step(self, idx: int, action: str) -> tuple[StepResult, float, list[str]]:
        """The step's result, the episode's score so far and the available actions after it."""
        instance = self.get(idx)
        with instance.lock:
            if instance.env.done:
                raise HTTPException(409, f"environment id {idx}: no episode is running (it ended or was never "
                                         "started): POST /reset first")  # fmt: skip
            result = instance.env.step(action)
            if result.info.get("valid", True):  # an invalid action leaves the state, and its observation, as it was
                instance.observation = result.observation
            instance.reward, instance.info = result.reward, result.info
            instance.score += result.reward
            return result, instance.score, _available_actions(instance)

    def expert_action(self, idx: int) -> str:
        instance = self.get(idx)
        with instance.lock:
            if instance.env.done:
                raise HTTPException(409, f"environment id {idx}: no episode is running: POST /reset first")
            return instance.env.expert_action()


def _available_actions(instance: _Instance) -> list[str]:
    """The environment's ``available_actions()`` where it has one (and an episode was drawn), else ``[]``."""
    method = getattr(instance.env, "available_actions", None)
    with instance.lock:
        return [str(a) for a in method()] if callable(method) and instance.seed is not None else []


def _detail(instance: _Instance) -> dict[str, Any]:
    env = instance.env
    with instance.lock:
        return jsonable_encoder({
            "observation": instance.observation, "available_actions": _available_actions(instance), "done": env.done,
            "reward": instance.reward, "score": instance.score, "deleted": False, "seed": instance.seed,
            "success": env.success, "steps": env.steps, "invalid_actions": env.invalid_actions,
            **(env.progress() if instance.seed is not None else {}),
        })  # fmt: skip


def create_app(env_name: str, dialect: str | None = None, extensions: bool = True, **env_params: Any) -> FastAPI:
    """The FastAPI app serving ``get_env(env_name, **env_params)`` instances (see the module docstring).

    Raises:
        UnknownNameError: ``env_name`` is not registered.
        ConfigError: an unknown dialect, or a parameter the environment does not take.
    """
    dialect = dialect_of(env_name, dialect)
    key = ID_FIELD[dialect]
    pool = EnvPool(env_name, env_params, key)
    app = FastAPI(title=f"trl_ext environment server: {env_name} ({dialect} dialect)")
    app.state.pool = pool

    def info_of(result: StepResult) -> dict[str, Any]:
        return jsonable_encoder(result.info)

    @app.get("/")
    def hello() -> str:
        return "ok" if dialect == "webshop" else f"This is environment {env_name}."

    if dialect == "webshop":

        @app.get("/list_envs")
        def list_envs() -> list[int]:
            return pool.ids()

        @app.post("/create")
        def create() -> int:
            return pool.create()

        @app.post("/reset")
        def reset(body: WebShopReset) -> list[Any]:
            return [pool.reset(body.env_idx, body.session_id).observation, None]

        @app.post("/step")
        def step(body: WebShopStep) -> dict[str, Any]:
            result, _, _ = pool.step(body.env_idx, body.action)
            return {"state": result.observation, "reward": result.reward, "done": result.done,
                    "info": info_of(result) if extensions else None}  # fmt: skip

        @app.get("/available_actions")
        def available_actions(idx: int = Query(alias=key)) -> dict[str, Any]:
            actions = _available_actions(pool.get(idx))
            search = any(a.startswith("search[") for a in actions)
            clicks = [a[len("click[") : -1] for a in actions if a.startswith("click[") and a.endswith("]")]
            return {"has_search_bar": search, "clickables": ["search", *clicks] if search else clicks}

        @app.get("/instruction_text")
        def instruction_text(idx: int = Query(alias=key)) -> str:
            return str(getattr(pool.get(idx).env, "instruction", ""))

    else:

        @app.post("/create")
        def create() -> dict[str, int]:
            return {"id": pool.create()}

        if dialect == "alfworld":

            @app.post("/reset")
            def reset(body: AlfWorldReset) -> dict[str, Any]:
                instance = pool.reset(body.id, body.game)
                task_type = instance.env.progress().get("task_type", env_name)
                actions = _available_actions(instance)
                return {"id": body.id, "observation": instance.observation, "available_actions": actions,
                        "task_type": str(task_type)}  # fmt: skip

        else:

            @app.post("/reset")
            def reset(body: IdReset) -> dict[str, Any]:
                instance = pool.reset(body.id, body.data_idx)
                return {"id": body.id, "observation": instance.observation, "reward": 0.0, "score": 0.0,
                        "done": False, "deleted": False}  # fmt: skip

        @app.post("/step")
        def step(body: IdStep) -> dict[str, Any]:
            result, score, actions = pool.step(body.id, body.action)
            payload: dict[str, Any] = {"observation": result.observation, "reward": result.reward, "done": result.done}
            if dialect == "alfworld":
                payload["available_actions"] = actions
            else:
                payload["score"] = score
            if extensions:
                payload["info"] = info_of(result)
            return payload

        @app.get("/available_actions")
        def available_actions(idx: int = Query(alias=key)) -> list[str]:
            return _available_actions(pool.get(idx))

        @app.get("/detail")
        def detail(idx: int = Query(alias=key)) -> dict[str, Any]:
            return _detail(pool.get(idx))

    @app.get("/observation")
    def observation(idx: int = Query(alias=key)) -> str:
        instance = pool.get(idx)
        method = getattr(instance.env, "observation", None)  # the current page (WebShop), else the last valid answer
        with instance.lock:
            return str(method()) if callable(method) and instance.seed is not None else instance.observation

    if extensions and dialect == "webshop":

        @app.post("/close")
        def close_webshop(body: WebShopClose) -> bool:
            return pool.close(body.env_idx)

    elif extensions or dialect == "id":

        @app.post("/close")
        def close(body: IdClose) -> bool:
            return pool.close(body.id)

    if extensions:

        @app.get("/expert_action")
        def expert_action(idx: int = Query(alias=key)) -> str:
            return pool.expert_action(idx)

        @app.get("/env_info")
        def env_info() -> dict[str, Any]:
            return jsonable_encoder({"env": env_name, "dialect": dialect, "instructions": pool.env_class.instructions,
                                     "params": env_params, "id_field": key})  # fmt: skip

    return app


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run ``app`` with uvicorn until interrupted (binds ``127.0.0.1`` unless told otherwise)."""
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def start_background_server(
    app: FastAPI, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0
) -> tuple[str, Callable[[], None]]:
    """Run ``app`` with uvicorn in a daemon thread; ``(url, stop)`` once it accepts connections (``port=0``: a
    free port)."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name=f"{PROG}:{host}:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise ConfigError(f"{PROG}: the server could not start on {host}:{port} (in use? see the log above)")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout)

    return f"http://{host}:{bound}", stop


@contextmanager
def running_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """``with running_server(create_app("webshop")) as url: ...``: :func:`start_background_server` for a block."""
    url, stop = start_background_server(app, host, port)
    try:
        yield url
    finally:
        stop()


def _parse_param(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--env-param {text!r} must be KEY=VALUE (VALUE read as JSON, else as a string)")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``trl-ext-env-server``."""
    parser = argparse.ArgumentParser(prog=PROG, description="Serve an agent environment in AgentGym's protocol.")
    parser.add_argument("--env", required=True, help="the environment's registered name (webshop, alfworld, ...)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--dialect", choices=("webshop", "alfworld", "id"), help="override the name's dialect")
    parser.add_argument("--max-episode-length", type=int, help="the served environments' own step limit")
    parser.add_argument("--env-param", action="append", default=[], metavar="KEY=VALUE",
                        help="an environment parameter (repeatable), e.g. --env-param num_products=20")  # fmt: skip
    parser.add_argument("--agentgym-only", action="store_true", help="serve AgentGym's endpoints only")
    parser.add_argument("--log-level", default="info")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``trl-ext-env-server --env NAME [--host H] [--port P] [...]``; a user error prints one line and gives exit
    status 2 (:func:`trl_ext.common.entry.run_main`)."""
    from trl_ext.common.entry import run_main

    args = build_parser().parse_args(argv)

    def run() -> None:
        params = dict(_parse_param(p) for p in args.env_param)
        if args.max_episode_length is not None:
            params["max_episode_length"] = args.max_episode_length
        app = create_app(args.env, dialect=args.dialect, extensions=not args.agentgym_only, **params)
        serve(app, host=args.host, port=args.port, log_level=args.log_level)

    return run_main(run, prog=PROG)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
