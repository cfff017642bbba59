"""Agent environments of stage 2 (docs/tasks.md, "Agent environments"): text games with ``reset(seed)`` /
``step(action)``, the document's reward shapes, an expert, and a registry (``get_env``)."""

from trl_ext.tasks.envs.base import AgentEnv, Episode, StepResult, parse_action, run_episode
from trl_ext.tasks.envs.registry import available_envs, get_env, register_env

__all__ = ["AgentEnv", "Episode", "StepResult", "available_envs", "get_env", "parse_action", "register_env",
           "run_episode"]  # fmt: skip
