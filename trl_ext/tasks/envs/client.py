"""The client of AgentGym's environment-server protocol (docs/tasks.md, "Environment servers (HTTP)").

:class:`AgentGymEnv` is an :class:`~trl_ext.tasks.envs.base.AgentEnv` whose episodes run on a server: AgentGym's own
WebShop / ALFWorld / BabyAI / ... servers, or this package's (``trl-ext-env-server``, :mod:`.server`). It speaks one
of three dialects over HTTP (``httpx``), chosen from the environment name:

* ``webshop``: ``POST /create`` -> ``int``; ``POST /reset {env_idx, session_id}`` -> ``[observation, null]``;
  ``POST /step {env_idx, action}`` -> ``{state, reward, done, info}``; ``GET /observation?env_idx=``;
* ``alfworld``: ``POST /create`` -> ``{id}``; ``POST /reset {id, game, world_type}`` -> ``{id, observation,
  available_actions, task_type}``; ``POST /step {id, action}`` -> ``{observation, reward, available_actions, done}``;
* ``id`` (every other name: BabyAI, SciWorld, TextCraft, ...): like ``alfworld`` with ``POST /reset {id, data_idx}``.

The seed of :meth:`AgentEnv.reset` is the ``session_id`` / ``game`` / ``data_idx``. The client subclasses AgentEnv so
that the base class does what it does in-process, locally and identically: empty actions are invalid without a round
trip, invalid actions are counted and earn 0, and the episode is cut at the client's ``max_episode_length``. What the
server decides comes from its answers: the observation, the reward, ``done``; with this package's server also
``valid``, ``success`` and a server-side truncation (its ``info``); with a real AgentGym server (no ``info``) an action
is invalid when the observation starts with ``Invalid action``, is ALFWorld's ``Nothing happens.``, or (WebShop and
``id``) repeats the previous observation with no reward, and an episode that ends with a positive reward (WebShop:
1.0) is a success. The server's raw reward of each step is kept in ``info["server_reward"]``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx

from trl_ext.common.errors import ConfigError
from trl_ext.tasks.envs.base import AgentEnv, StepResult

__all__ = ["DIALECTS", "AgentGymEnv", "EnvServerError", "dialect_of"]

DIALECTS = ("webshop", "alfworld", "id")
ID_FIELD = {"webshop": "env_idx", "alfworld": "id", "id": "id"}
SEED_FIELD = {"webshop": "session_id", "alfworld": "game", "id": "data_idx"}
OBSERVATION_FIELD = {"webshop": "state", "alfworld": "observation", "id": "observation"}
WORLD_TYPES = ("Text", "Embody", "Hybrid")
# the keys of the step info that the base class computes itself (never taken from the server's info)
BASE_INFO_KEYS = frozenset({"success", "invalid_actions", "truncated", "steps", "valid"})


def dialect_of(env: str, dialect: str | None = None) -> str:
    """The protocol dialect of environment ``env``: ``dialect`` when given, else ``webshop`` / ``alfworld`` for those
    names and the generic ``id`` dialect for every other."""
    if dialect is None:
        return env if env in ("webshop", "alfworld") else "id"
    if dialect not in DIALECTS:
        raise ConfigError(f"unknown environment-server dialect {dialect!r}; known dialects: {', '.join(DIALECTS)}")
    return dialect


class EnvServerError(RuntimeError):
    """The environment server could not be reached, or answered with an error (``status_code`` when it answered)."""

    def __init__(self, message: str, status_code: int | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


class AgentGymEnv(AgentEnv):
    """An environment served over HTTP in AgentGym's protocol (see the module docstring).

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000``.
        env: the environment's name (``webshop``, ``alfworld``, ...): names the episodes and picks the dialect.
        dialect: ``webshop``, ``alfworld`` or ``id`` to override the name's dialect.
        timeout: seconds per request.
        max_episode_length: steps before the episode is cut (default 50), counted by the client.
        world_type: the ALFWorld dialect's ``world_type`` (``Text``, ``Embody`` or ``Hybrid``).
        instructions: the system prompt; default: the server's (``GET /env_info``), else the locally registered
            environment of the same name's.
        data_len: the number of items a real server holds (AgentGym's ``data_len``): the index sent on reset is
            ``seed % data_len`` (seeds such as the held-out ones, >= 10**9, would be out of range there); ``None``
            sends the seed itself.

    One instance holds one server-side environment (created on the first :meth:`reset`, released by
    :meth:`close`) and is not thread-safe: use one instance per rollout thread.
    """

    name: ClassVar[str] = "agentgym"

    def __init__(
        self,
        base_url: str,
        env: str = "webshop",
        *,
        dialect: str | None = None,
        timeout: float = 300.0,
        max_episode_length: int = 50,
        world_type: str = "Text",
        instructions: str | None = None,
        data_len: int | None = None,
    ) -> None:
        if not isinstance(env, str) or not env:
            raise ConfigError(f"AgentGymEnv: env={env!r} must be a non-empty environment name")
        self.name = env  # type: ignore[misc]  # the instance's name: the served environment's
        super().__init__(max_episode_length)
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"{env}: base_url={base_url!r} must be an http:// or https:// URL")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError(f"{env}: timeout={timeout!r} must be a number of seconds > 0")
        if world_type not in WORLD_TYPES:
            raise ConfigError(f"{env}: world_type={world_type!r} must be one of {', '.join(WORLD_TYPES)}")
        if data_len is not None and (isinstance(data_len, bool) or not isinstance(data_len, int) or data_len < 1):
            raise ConfigError(f"{env}: data_len={data_len!r} must be None or an int >= 1")
        self.data_len = data_len
        self.base_url = base_url.rstrip("/")
        self.dialect = dialect_of(env, dialect)
        self.timeout = float(timeout)
        self.world_type = world_type
        self._instructions = instructions
        self._http: httpx.Client | None = None
        self.env_id: int | None = None
        self.last_observation: str | None = None
        self.server_info: dict[str, Any] = {}
        self.server_reward: float | None = None
        self._server_truncated = False

    # ------------------------------------------------------------------ HTTP

    @property
    def _id_field(self) -> str:
        return ID_FIELD[self.dialect]

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None, with_id: bool = True) -> Any:
        """One request; raises :class:`EnvServerError` naming the URL on a transport error, an HTTP error status,
        a body that is not JSON, or an AgentGym-style ``{"error": ...}`` answer."""
        url = f"{self.base_url}/{path}"
        params = {self._id_field: self.env_id} if method == "GET" and with_id else None
        if self._http is None:
            self._http = httpx.Client(timeout=self.timeout)
        try:
            response = self._http.request(method, url, json=body, params=params)
        except httpx.TimeoutException as err:
            raise EnvServerError(
                f"{self.name}: the environment server at {self.base_url} did not answer {method} /{path} within "
                f"{self.timeout:g} s ({type(err).__name__})"
            ) from err
        except httpx.HTTPError as err:
            raise EnvServerError(
                f"{self.name}: cannot reach the environment server at {url} ({type(err).__name__}: {err})"
            ) from err
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code != 200:
            detail = payload.get("detail", payload) if isinstance(payload, dict) else response.text[:300]
            raise EnvServerError(
                f"{self.name}: {method} {url} failed with HTTP {response.status_code}: {detail}",
                response.status_code,
                detail,
            )
        if payload is None and response.text.strip() != "null":
            raise EnvServerError(f"{self.name}: {method} {url} answered with a body that is not JSON")
        if isinstance(payload, dict) and set(payload) == {"error"}:
            raise EnvServerError(
                f"{self.name}: the environment server at {self.base_url} reported an error on /{path} for "
                f"{self._id_field}={self.env_id}: {payload['error']}",
                response.status_code,
                payload["error"],
            )
        return payload

    def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._request("POST", path, None if body is None else {self._id_field: self.env_id, **body})

    def _field(self, payload: Any, key: str, path: str) -> Any:
        if not isinstance(payload, dict) or key not in payload:
            raise EnvServerError(
                f"{self.name}: the environment server at {self.base_url} answered /{path} without {key!r} "
                f"(is it a {self.dialect}-dialect server?): {str(payload)[:300]}"
            )
        return payload[key]

    # ------------------------------------------------------------------ the AgentEnv contract

    def _create(self) -> None:
        payload = self._request("POST", "create")
        env_id = payload if self.dialect == "webshop" else self._field(payload, "id", "create")
        if isinstance(env_id, bool) or not isinstance(env_id, int):
            raise EnvServerError(f"{self.name}: POST {self.base_url}/create answered {payload!r}, not an id")
        self.env_id = env_id

    def _reset(self, seed: int) -> str:
        if self.env_id is None:
            self._create()
        body: dict[str, Any] = {SEED_FIELD[self.dialect]: seed if self.data_len is None else seed % self.data_len}
        if self.dialect == "alfworld":
            body["world_type"] = self.world_type
        payload = self._post("reset", body)
        if self.dialect == "webshop":
            ok = isinstance(payload, list) and payload and isinstance(payload[0], str)
            observation = payload[0] if ok else self.observe()
        else:
            observation = self._field(payload, "observation", "reset")
        self.server_info, self.server_reward, self._server_truncated = {}, None, False
        self.last_observation = str(observation)
        return self.last_observation

    def step(self, action: str | None) -> StepResult:
        """Take ``action`` on the server (see :meth:`AgentEnv.step`); a server-side truncation is reported as one."""
        self.server_reward = None  # stays None when the step never reaches the server (an empty action)
        result = super().step(action)
        if self._server_truncated and not result.info["truncated"]:
            return StepResult(result.observation, result.reward, result.done, {**result.info, "truncated": True})
        return result

    def _step(self, action: str) -> tuple[str, float, bool]:
        path = "step"
        payload = self._post(path, {"action": action})
        observation = str(self._field(payload, OBSERVATION_FIELD[self.dialect], path))
        reward, done = float(self._field(payload, "reward", path)), bool(self._field(payload, "done", path))
        info = payload.get("info")
        if isinstance(info, dict) and "valid" in info:  # this package's server: its own signals
            valid, success, truncated = bool(info["valid"]), bool(info.get("success")), bool(info.get("truncated"))
            self.server_info = {k: v for k, v in info.items() if k not in BASE_INFO_KEYS}
        else:  # a real AgentGym server: read the signals off the answer
            valid = self._looks_valid(observation, reward, done)
            success, truncated = done and (reward >= 1.0 if self.dialect == "webshop" else reward > 0), False
            skip = {OBSERVATION_FIELD[self.dialect], "reward", "done", "info"}
            self.server_info = {k: v for k, v in payload.items() if k not in skip}
        self.server_reward = reward
        if done:
            self.done, self.success, self._server_truncated = True, success, truncated
        self.last_observation = observation
        return observation, reward, valid

    def _looks_valid(self, observation: str, reward: float, done: bool) -> bool:
        """Whether a real AgentGym server took the action (it has no validity signal)."""
        if observation.lstrip().lower().startswith("invalid action"):
            return False
        if self.dialect == "alfworld":
            return observation.strip() != "Nothing happens."
        return done or reward != 0 or observation != self.last_observation

    def progress(self) -> dict[str, Any]:
        """The server's own step info (its progress keys; a real server's extra fields such as
        ``available_actions``) and ``server_reward``, the server's raw reward of the step."""
        return {**self.server_info, "server_reward": self.server_reward}

    def observe(self) -> str:
        """The server's current observation (``GET /observation``)."""
        self._require_id("observe()")
        return str(self._request("GET", "observation"))

    def expert_action(self) -> str:
        """The server's expert's next action (``GET /expert_action``, this package's extension: a real AgentGym
        server has none and this raises :class:`EnvServerError` naming it)."""
        self._require_id("expert_action()")
        try:
            return str(self._request("GET", "expert_action"))
        except EnvServerError as err:
            if err.status_code in (404, 405) and "unknown environment id" not in str(err.detail):
                raise EnvServerError(
                    f"{self.name}: the environment server at {self.base_url} has no /expert_action endpoint (a real "
                    "AgentGym server has no expert); serve the environment with trl-ext-env-server to collect "
                    "expert episodes remotely",
                    err.status_code,
                    err.detail,
                ) from err
            raise

    @property
    def instructions(self) -> str:  # type: ignore[override]
        """The system prompt (see the class docstring)."""
        if self._instructions is None:
            try:
                self._instructions = str(self._field(self._request("GET", "env_info", with_id=False),
                                                     "instructions", "env_info"))  # fmt: skip
            except EnvServerError as err:
                from trl_ext.tasks.envs import registry

                local = registry.env_class(self.name) if self.name in registry.available_envs() else None
                if local is None:
                    raise EnvServerError(
                        f"{self.name}: no instructions: the server at {self.base_url} gives none ({err}) and no "
                        f"environment {self.name!r} is registered here; pass instructions=..."
                    ) from err
                self._instructions = local.instructions
        return self._instructions

    def close(self) -> None:
        """Release the server-side environment (``POST /close``; real WebShop and ALFWorld servers have no
        ``/close``, and an unreachable server is not an error here) and the HTTP connections."""
        if self.env_id is not None:
            try:
                self._post("close", {})
            except EnvServerError as err:
                if err.status_code not in (None, 404, 405):
                    raise
            self.env_id, self.done = None, True
        if self._http is not None:
            self._http.close()
            self._http = None

    def _require_id(self, what: str) -> None:
        if self.env_id is None:
            raise RuntimeError(f"{self.name}: {what} before reset(seed): no environment on the server yet")
