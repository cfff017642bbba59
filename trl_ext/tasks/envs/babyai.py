"""BabyAI on the real engine (docs/tasks.md, "BabyAI"): follow a grid-world instruction in minigrid's BabyAI levels.

Every episode is a real ``minigrid`` BabyAI level (the gymnasium ids ``BabyAI-<Level>-v0``): the level of seed
``s`` is ``levels[s % len(levels)]`` and its minigrid environment is reset with ``seed=s`` (the same seed gives
the same grid, mission and episode). The default ``levels`` are ten small levels, the goal in the agent's room, on
which minigrid's BabyAI bot finishes in at most 22 actions (seeds 0-2999; :data:`DEFAULT_LEVELS`).

Observations, as AgentGym renders BabyAI (text only): the first one is ``"Your goal: <mission>"`` then what the
agent sees in its 7x7 view (walls and closed doors hide what is behind them): every visible object (key, ball,
box, door with its state, goal, lava) with its colour and position relative to the agent (``"There is a red ball
2 steps in front of you and 1 step to your left."``, nearest first), the first obstacle straight ahead (``"You
are facing a wall 3 steps away."``) and what the agent carries. Later observations are the view alone.

Actions (minigrid's primitive actions, case-insensitive; minigrid's own names ``left``, ``right``, ``forward``,
``pickup`` work too): ``turn left``, ``turn right``, ``move forward``, ``pick up``, ``drop``, ``toggle``.
An action that the engine would take but that changes nothing (moving into a wall or a closed door, picking up
with full hands or from an empty cell, dropping with empty hands or onto an object, toggling a wall, a ball, a key,
empty floor or a locked door without its key) is **invalid**: it is "not possible in the current state", so it
never reaches the engine (no state change, minigrid's step counter does not move), earns 0 and is counted; so is
unknown text and ``done`` (minigrid's ``done`` is a no-op in BabyAI unless ``BABYAI_DONE_ACTIONS`` is set).

Reward: **1.0** on the step that completes the mission (minigrid's success), which ends the episode; 0 otherwise.
minigrid's own reward (``1 - 0.9 * step_count / max_steps`` at success) is kept in ``info["engine_reward"]``.
The episode also ends, with 0, when minigrid fails the mission (strict ``...Debug`` levels, lava) or when its own
``max_steps`` runs out (``info["engine_truncated"] = True``; ``info["truncated"]`` stays the AgentEnv's
``max_episode_length`` cut, which comes first with the defaults, or on the same step for OpenRedDoor, whose
``max_steps`` is 50 too). The expert is minigrid's ``BabyAIBot``, kept in step with every action the engine takes
(any policy's), its action mapped to the text.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, ClassVar

from trl_ext.common.errors import ConfigError
from trl_ext.tasks.envs.base import AgentEnv
from trl_ext.tasks.envs.registry import register_env

__all__ = ["ACTIONS", "DEFAULT_LEVELS", "BabyAIEnv", "known_levels"]

DEFAULT_LEVELS = ("GoToRedBallGrey", "GoToRedBall", "GoToRedBallNoDists", "GoToObj", "GoToLocal", "GoToDoor",
                  "OpenDoor", "OpenRedDoor", "PickupLoc", "PutNextLocalS6N4")  # fmt: skip
ACTIONS = ("turn left", "turn right", "move forward", "pick up", "drop", "toggle")  # minigrid's actions 0..5
_ALIASES = {"left": "turn left", "right": "turn right", "forward": "move forward", "pickup": "pick up"}
_OBJECTS = ("key", "ball", "box", "door", "goal", "lava")  # what the view lists (walls, floor and empty cells not)
_VIEW = 7  # minigrid's agent_view_size: the agent sits at column 3 of row 6 and looks towards row 0


def known_levels() -> list[str]:
    """The BabyAI levels minigrid registers (``BabyAI-<name>-v0``), by name."""
    import gymnasium
    import minigrid  # noqa: F401  (registers the BabyAI ids)

    return sorted(i[len("BabyAI-") : -len("-v0")] for i in gymnasium.registry if i.startswith("BabyAI-"))


def _steps(n: int) -> str:
    return f"{n} step{'' if n == 1 else 's'}"


def _name(obj: Any) -> str:
    """``"red ball"``, ``"green closed door"`` (AgentGym's names: colour, door state, type)."""
    if obj.type == "door":
        state = "open" if obj.is_open else "locked" if obj.is_locked else "closed"
        return f"{obj.color} {state} door"
    return f"{obj.color} {obj.type}"


def _where(forward: int, right: int) -> str:
    parts = [f"{_steps(forward)} in front of you"] if forward else []
    if right:
        parts.append(f"{_steps(abs(right))} to your {'right' if right > 0 else 'left'}")
    return " and ".join(parts)


@register_env
class BabyAIEnv(AgentEnv):
    """BabyAI levels of minigrid with text observations and actions (see the module docstring).

    Args:
        levels: the BabyAI level names to draw from (``"GoToRedBall"`` or ``"BabyAI-GoToRedBall-v0"``;
            default :data:`DEFAULT_LEVELS`); seed ``s`` plays ``levels[s % len(levels)]``.
        max_episode_length: steps (invalid ones included) before the episode is cut (default 50).
    """

    name = "babyai"
    instructions: ClassVar[str] = (
        "You are an exploration master that wants to finish every goal you are given. Every round I will give you "
        "an observation, and you have to respond an action and your thought based on the observation to finish the "
        "given task. You are placed in a room and you need to accomplish the given goal with actions.\n\n"
        "You can use the following actions:\n"
        "- turn left\n- turn right\n- move forward: one step, into an empty cell or an open door\n"
        "- pick up: pick up the object right in front of you (you can carry one object)\n"
        "- drop: drop what you carry onto the empty cell right in front of you\n"
        "- toggle: open or close the door right in front of you (a locked door needs a key of its colour), or open "
        "the box right in front of you\n"
        "An action that is not possible (for example moving into a wall) is invalid and changes nothing. "
        "Your response should use the following format:\nThought:\n<Your Thought>\n\nAction:\n<Your Action>"
    )

    def __init__(self, levels: tuple[str, ...] | list[str] | None = None, max_episode_length: int = 50) -> None:
        super().__init__(max_episode_length)
        if levels is None:
            levels = DEFAULT_LEVELS
        if isinstance(levels, str) or not isinstance(levels, (list, tuple)) or not levels:
            raise ConfigError(f"babyai: levels={levels!r} must be a non-empty list of BabyAI level names")
        names = [str(lv).removeprefix("BabyAI-").removesuffix("-v0") for lv in levels]
        known = known_levels()
        unknown = [lv for lv, n in zip(levels, names) if n not in known]
        if unknown:
            raise ConfigError(f"babyai: levels: unknown level(s) {unknown}; known levels: {', '.join(known)}")
        self.levels = tuple(names)
        self._engines: dict[str, Any] = {}  # level -> gymnasium env, created once per level
        self.engine: Any = None
        self.bot: Any = None

    # ------------------------------------------------------------------ episode

    def _reset(self, seed: int) -> str:
        if seed < 0:
            self.done = True  # no episode started
            raise ConfigError(f"babyai: seed={seed} must be >= 0 (minigrid's seeds)")
        import gymnasium

        self.level = self.levels[seed % len(self.levels)]
        if self.level not in self._engines:
            self._engines[self.level] = gymnasium.make(f"BabyAI-{self.level}-v0")
        self.engine = self._engines[self.level]
        with contextlib.redirect_stdout(io.StringIO()):  # minigrid prints its rejected samplings
            self.engine.reset(seed=seed)
        self.game = self.engine.unwrapped
        self.mission = self.game.mission
        self.engine_reward, self.engine_truncated = 0.0, False
        self.bot, self._suggestion = None, None
        self._replan(None)
        return f"Your goal: {self.mission}\n{self.observation()}"

    def observation(self) -> str:
        """What the agent sees in its 7x7 view and what it carries (the module docstring's wording)."""
        image = self.game.gen_obs()["image"]  # [column, row, (type, colour, state)] after the visibility mask
        seen = []
        for column in range(_VIEW):
            for row in range(_VIEW):
                forward, right = _VIEW - 1 - row, column - _VIEW // 2
                cell = self._cell(forward, right)
                if (forward or right) and image[column, row, 0] > 0 and cell is not None and cell.type in _OBJECTS:
                    seen.append((forward + abs(right), forward, right, cell))
        if seen:
            text = "In front of you in this room, you can see several objects: " + " ".join(
                f"There is a {_name(obj)} {_where(f, r)}." for _, f, r, obj in sorted(seen, key=lambda s: s[:3])
            )
        else:
            text = "You cannot see any objects within sight."
        text += " The room has walls around you."
        for forward in range(1, _VIEW):
            cell = self._cell(forward, 0)
            if image[_VIEW // 2, _VIEW - 1 - forward, 0] == 0:  # unseen
                break
            if cell is not None and not cell.can_overlap():
                thing = "wall" if cell.type == "wall" else _name(cell)
                text += f" You are facing a {thing} {_steps(forward)} away."
                break
        carrying = self.game.carrying
        return text + (f" You are carrying a {_name(carrying)}." if carrying else " You are not carrying anything.")

    def _cell(self, forward: int, right: int) -> Any:
        """The world object ``forward`` cells ahead and ``right`` cells to the right of the agent (None: empty)."""
        x, y = self.game.agent_pos + forward * self.game.dir_vec + right * self.game.right_vec
        if not (0 <= x < self.game.width and 0 <= y < self.game.height):
            return None
        return self.game.grid.get(int(x), int(y))

    # ------------------------------------------------------------------ steps

    def _why_not(self, action: str) -> str | None:
        """Why ``action`` (one of :data:`ACTIONS`) would change nothing now; ``None`` when it has an effect."""
        ahead, carrying = self._cell(1, 0), self.game.carrying
        thing = "nothing" if ahead is None else "a wall" if ahead.type == "wall" else f"a {_name(ahead)}"
        if action == "move forward" and ahead is not None and not ahead.can_overlap():
            return f"you cannot move forward, there is {thing} in front of you"
        if action == "pick up":
            if carrying is not None:
                return f"you are already carrying a {_name(carrying)}; drop it first"
            if ahead is None:
                return "there is nothing to pick up in front of you"
            if not ahead.can_pickup():
                return f"{thing} cannot be picked up"
        if action == "drop":
            if carrying is None:
                return "you are not carrying anything"
            if ahead is not None:
                return f"you cannot drop here, there is {thing} in front of you"
        if action == "toggle":
            if ahead is None:
                return "there is nothing to toggle in front of you"
            if ahead.type not in ("door", "box"):
                return f"{thing} cannot be toggled"
            has_key = carrying is not None and carrying.type == "key" and carrying.color == ahead.color
            if ahead.type == "door" and ahead.is_locked and not has_key:
                return f"the {_name(ahead)} needs a {ahead.color} key"
        return None

    def _step(self, action: str) -> tuple[str, float, bool]:
        text = " ".join(action.lower().rstrip(".").split())
        text = _ALIASES.get(text, text)
        if text == "done":
            return "Invalid action: 'done' is not needed, the episode ends when the goal is reached", 0.0, False
        if text not in ACTIONS:
            return f"Invalid action: {action!r} is not a BabyAI action (use one of: {', '.join(ACTIONS)})", 0.0, False
        why = self._why_not(text)
        if why is not None:
            return f"Invalid action: {why}", 0.0, False
        _, reward, terminated, truncated, _ = self.engine.step(ACTIONS.index(text))
        self.engine_reward = float(reward)
        observation = self.observation()
        if terminated or truncated:
            self.done, self.success = True, bool(terminated and reward > 0)
            self.engine_truncated = bool(truncated and not terminated)
            if self.success:
                observation += " The task is completed."
            elif self.engine_truncated:
                observation += f" The level's limit of {self.game.max_steps} steps is reached; the task has failed."
            else:
                observation += " The task has failed."
        else:
            self._replan(ACTIONS.index(text))
        return observation, 1.0 if self.success else 0.0, True

    # ------------------------------------------------------------------ expert

    def _replan(self, action_taken: int | None) -> None:
        """Keep the bot in step with the engine (it tracks what it has seen and undoes off-plan actions)."""
        from minigrid.utils.baby_ai_bot import BabyAIBot

        try:
            if self.bot is None:
                self.bot, action_taken = BabyAIBot(self.engine), None
            self._suggestion = self.bot.replan(action_taken)
        except Exception:  # the bot gives up on some off-plan states (e.g. a box it needs was opened)
            self.bot, self._suggestion = None, None

    def expert_action(self) -> str:
        """minigrid's BabyAI bot's next action, as text (a bot rebuilt from the current state if it gave up)."""
        if self._suggestion is None:
            self._replan(None)
        suggestion = self._suggestion
        return ACTIONS[int(suggestion)] if suggestion is not None and int(suggestion) < len(ACTIONS) else "turn left"

    def progress(self) -> dict[str, Any]:
        if self.engine is None:
            return {}
        return {"level": self.level, "mission": self.mission, "engine_reward": self.engine_reward,
                "engine_steps": int(self.game.step_count), "engine_truncated": self.engine_truncated}  # fmt: skip

    def close(self) -> None:
        """Close the minigrid environments (one per level played)."""
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()
        self.engine = self.bot = None
