"""Agent environments of stage 2 (docs/tasks.md, "Agent environments"): text games with ``reset(seed)`` /
``step(action)``, the document's reward shapes, an expert, and a registry (``get_env``)."""

from trl_ext.tasks.envs.base import AgentEnv, Episode, StepResult, parse_action, run_episode
from trl_ext.tasks.envs.client import AgentGymEnv, EnvServerError
from trl_ext.tasks.envs.registry import available_envs, env_class, get_env, register_env

__all__ = ["AgentEnv", "AgentGymEnv", "EnvServerError", "Episode", "StepResult", "available_envs", "env_class",
           "get_env", "parse_action", "register_env", "run_episode"]  # fmt: skip
