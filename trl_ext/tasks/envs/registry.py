"""Name -> agent environment registry: ``get_env("webshop", max_episode_length=20)``; unknown names fail loudly."""

from __future__ import annotations

from typing import Any

from trl_ext.common.errors import ConfigError, UnknownNameError
from trl_ext.tasks.envs.base import AgentEnv

__all__ = ["available_envs", "env_class", "get_env", "register_env"]

_ENVS: dict[str, type[AgentEnv]] = {}


def register_env(cls: type[AgentEnv]) -> type[AgentEnv]:
    """Class decorator: register ``cls`` under ``cls.name``."""
    if cls.name in _ENVS and _ENVS[cls.name] is not cls:
        raise ValueError(f"environment name {cls.name!r} is already registered by {_ENVS[cls.name].__name__}")
    _ENVS[cls.name] = cls
    return cls


def available_envs() -> list[str]:
    """Sorted names of every registered environment."""
    _load_builtin()
    return sorted(_ENVS)


def env_class(name: str) -> type[AgentEnv]:
    """The class registered as ``name``.

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the known ones).
    """
    _load_builtin()
    if name not in _ENVS:
        raise UnknownNameError(f"unknown environment {name!r}; known environments: {', '.join(sorted(_ENVS))}")
    return _ENVS[name]


def get_env(name: str, **params: Any) -> AgentEnv:
    """A new environment ``name`` built with ``params``; with ``server_url=...`` among them, a client of the
    environment served there instead (:class:`trl_ext.tasks.envs.client.AgentGymEnv`, AgentGym's protocol; the
    other parameters are the client's: ``max_episode_length``, ``data_len``, ``timeout``, ...), so that
    ``env_params={"webshop": {"server_url": "http://host:36001"}}`` trains on a remote or real AgentGym server.

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the known ones).
        ConfigError: a parameter the environment does not take, or an invalid value.
    """
    params = dict(params)
    if "server_url" in params:
        from trl_ext.tasks.envs.client import AgentGymEnv

        try:
            return AgentGymEnv(params.pop("server_url"), name, **params)
        except TypeError as err:
            raise ConfigError(
                f"environment {name!r} (served): invalid client parameters {sorted(params)}: {err}"
            ) from err
    cls = env_class(name)
    try:
        return cls(**params)
    except TypeError as err:
        raise ConfigError(f"environment {name!r}: invalid parameters {sorted(params)}: {err}") from err


def _load_builtin() -> None:
    from trl_ext.tasks.envs import alfworld, babyai, sciworld, textcraft, webshop  # noqa: F401
