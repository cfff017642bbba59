"""The interface of the agent environments of stage 2 (docs/tasks.md, "Agent environments").

An environment is a text game: :meth:`AgentEnv.reset` (seeded) returns the first observation, which holds the goal;
:meth:`AgentEnv.step` takes one text action and returns a :class:`StepResult`. What every environment shares,
implemented here once:

* **actions** are parsed from model output by :func:`parse_action` (the text after the last ``Action:``, else the
  last non-empty line; ``None`` for empty output, which counts as an invalid action);
* **invalid actions** (malformed, unknown, or not possible in the current state) leave the state unchanged, earn
  0, return the observation ``"Invalid action: <why>"`` and are counted in ``info["invalid_actions"]``;
* **the episode length limit**: after ``max_episode_length`` steps (default 50, the document's) the episode ends
  with ``info["truncated"] = True``;
* **the expert**: :meth:`AgentEnv.expert_action` gives the next action of a scripted solver from the current state;
  :func:`run_episode` plays a policy (the expert by default) to the end. Model play sets ``expert_enabled = False``
  so an engine may skip work only the expert needs (SciWorld's gold path, a third of its reset).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from trl_ext.common.errors import ConfigError

__all__ = ["AgentEnv", "Episode", "StepResult", "parse_action", "run_episode"]

_ACTION = re.compile(r"^\s*Action\s*:\s*(.*)$", re.IGNORECASE | re.MULTILINE)


def parse_action(text: str | None) -> str | None:
    """The action of a model's turn: the text after the last ``Action:`` (the AgentGym format ``Thought: ...
    Action: ...``), else the last non-empty line, stripped; ``None`` when there is none."""
    if not text or not text.strip():
        return None
    found = _ACTION.findall(text)
    action = found[-1] if found else [line for line in text.splitlines() if line.strip()][-1]
    return action.strip() or None


@dataclass(frozen=True)
class StepResult:
    """One step: the next ``observation``, the step's ``reward``, whether the episode is ``done``, and ``info``
    (``success``, ``invalid_actions``, ``truncated``, ``steps`` and environment-specific progress)."""

    observation: str
    reward: float
    done: bool
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Episode:
    """A played episode: the first observation, then (action, observation, reward) per step."""

    env: str
    seed: int
    first_observation: str
    actions: list[str] = field(default_factory=list)
    observations: list[str] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    success: bool = False
    truncated: bool = False
    invalid_actions: int = 0

    @property
    def total_reward(self) -> float:
        return float(sum(self.rewards))

    @property
    def length(self) -> int:
        return len(self.actions)


class AgentEnv(ABC):
    """A text environment (see the module docstring). Subclasses set ``name`` and ``instructions`` (the system
    prompt: the task and the action grammar) and implement :meth:`_reset`, :meth:`_step` and
    :meth:`expert_action`."""

    name: ClassVar[str]
    instructions: ClassVar[str]
    heldout_params: ClassVar[dict[str, Any]] = {}
    """Constructor parameters of held-out (evaluation) episodes, for an environment whose episodes come from a finite
    set (SciWorld's task variations, TextCraft's goals) that training must not share; procedurally generated
    environments need none (held-out seeds differ from training seeds)."""

    def __init__(self, max_episode_length: int = 50) -> None:
        if isinstance(max_episode_length, bool) or not isinstance(max_episode_length, int) or max_episode_length < 1:
            raise ConfigError(f"{self.name}: max_episode_length={max_episode_length!r} must be an int >= 1")
        self.max_episode_length = max_episode_length
        self.expert_enabled = True  # False: only a model plays, and an engine may skip what the expert needs
        self.steps = 0
        self.invalid_actions = 0
        self.done = True
        self.success = False

    def reset(self, seed: int) -> str:
        """Start the episode of ``seed`` (the same seed gives the same episode); returns the first observation."""
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"{self.name}: seed={seed!r} must be an int")
        self.steps, self.invalid_actions, self.done, self.success = 0, 0, False, False
        return self._reset(seed)

    def step(self, action: str | None) -> StepResult:
        """Take ``action`` (already parsed: see :func:`parse_action`; ``None`` is an invalid action)."""
        if self.done:
            raise RuntimeError(f"{self.name}: step() after the episode ended; call reset(seed)")
        self.steps += 1
        if action is None or not action.strip():
            observation, reward, valid = "Invalid action: the output holds no action", 0.0, False
        else:
            observation, reward, valid = self._step(action.strip())
        if not valid:
            self.invalid_actions += 1
            reward = 0.0
        truncated = not self.done and self.steps >= self.max_episode_length
        self.done = self.done or truncated
        info = {"success": self.success, "invalid_actions": self.invalid_actions, "truncated": truncated,
                "steps": self.steps, "valid": valid, **self.progress()}  # fmt: skip
        return StepResult(observation, float(reward), self.done, info)

    def close(self) -> None:  # noqa: B027 (a no-op by default, not abstract)
        """Release what the environment holds (an engine process, a server session); a no-op by default."""

    def progress(self) -> dict[str, Any]:
        """Environment-specific progress kept in ``info`` (e.g. a real engine's own score)."""
        return {}

    @abstractmethod
    def _reset(self, seed: int) -> str:
        """Draw the episode of ``seed``; the first observation."""

    @abstractmethod
    def _step(self, action: str) -> tuple[str, float, bool]:
        """``(observation, reward, valid)``; an invalid action must not change the state. Set ``self.done`` and
        ``self.success`` when the episode ends."""

    @abstractmethod
    def expert_action(self) -> str:
        """The scripted solver's next action from the current state."""


def run_episode(env: AgentEnv, seed: int, policy: Callable[[AgentEnv, str], str | None] | None = None) -> Episode:
    """Play one episode of ``env`` from ``seed`` with ``policy(env, observation) -> action`` (default: the expert)."""
    observation = env.reset(seed)
    episode = Episode(env.name, seed, observation)
    while not env.done:
        action = env.expert_action() if policy is None else policy(env, observation)
        result = env.step(action)
        observation = result.observation
        episode.actions.append(action if action is not None else "")
        episode.observations.append(observation)
        episode.rewards.append(result.reward)
    episode.success, episode.truncated = env.success, bool(result.info["truncated"])
    episode.invalid_actions = env.invalid_actions
    return episode
