"""ALFWorld, simulated (docs/tasks.md, "ALFWorld"): household tasks in a text room, the six ALFWorld task types.

ALFWorld's game files are not on the package registries, so this is a small deterministic simulator with its text
grammar and observation style; AgentGym's real server is reached through the environment-server client (next).
One episode, drawn from ``random.Random(seed)``: a room of ten receptacles (cabinets and a drawer, fridge and
microwave that open and close, a sink basin, a desk with a desk lamp, ...), 6–8 objects with numbered instances
spread over them, and one task of the six types:

=======================  ===================================  ============================================
type                     instruction                          sub-goals (0.2 each, the first time)
=======================  ===================================  ============================================
``pick_and_place``       put a mug in cabinet 1.              take a mug
``pick_clean_then_place`` put a clean mug in cabinet 1.       take a mug, clean it (sinkbasin 1)
``pick_heat_then_place`` put a hot apple in countertop 1.     take an apple, heat it (microwave 1)
``pick_cool_then_place`` put a cool apple in shelf 1.         take an apple, cool it (fridge 1)
``look_at_obj_in_light`` look at book under the desklamp.     take a book
``pick_two_obj_and_place`` put two pens in drawer 1.          take the first, put it, take the second
=======================  ===================================  ============================================

Rewards, the document's "0.2 per step + 1.0": **0.2** for each sub-goal of the table reached for the first time,
**1.0** on completion (the last ``put``; for the light task ``use desklamp 1`` at the desk while holding the
object), which ends the episode. Any other valid action earns 0 (no reward for wandering).

Actions (ALFWorld's): ``go to <receptacle>``, ``open <r>``, ``close <r>``, ``take <object> from <r>``,
``put <object> in/on <r>`` (also ``move <object> to <r>``), ``clean <object> with sinkbasin 1``, ``heat <object>
with microwave 1``, ``cool <object> with fridge 1``, ``use desklamp 1``, ``examine <thing>``, ``look``,
``inventory``. An action that names something absent, far away, closed, or needs empty or full hands is invalid
(no state change). The expert knows where everything is and walks the shortest plan: to the object, opening what
is closed, take, to the appliance, treat, to the target, opening it, put.
"""

from __future__ import annotations

import random
import re
from typing import ClassVar

from trl_ext.tasks.envs.base import AgentEnv
from trl_ext.tasks.envs.registry import register_env

__all__ = ["TASK_TYPES", "AlfWorldEnv"]

RECEPTACLES = ("cabinet 1", "cabinet 2", "countertop 1", "diningtable 1", "drawer 1", "fridge 1", "microwave 1",
               "sinkbasin 1", "shelf 1", "desk 1")  # fmt: skip
OPENABLE = {"cabinet 1", "cabinet 2", "drawer 1", "fridge 1", "microwave 1"}
APPLIANCE = {"clean": "sinkbasin 1", "heat": "microwave 1", "cool": "fridge 1"}
OBJECTS = ("apple", "mug", "plate", "book", "keychain", "cellphone", "potato", "bowl", "pen", "cloth")
TREATABLE = {"clean": ("mug", "plate", "bowl", "cloth", "apple"), "heat": ("apple", "potato", "mug", "plate"),
             "cool": ("apple", "potato", "mug", "bowl")}  # fmt: skip
TARGETS = ("cabinet 1", "cabinet 2", "countertop 1", "diningtable 1", "drawer 1", "shelf 1")
TASK_TYPES = ("pick_and_place", "pick_clean_then_place", "pick_heat_then_place", "pick_cool_then_place",
              "look_at_obj_in_light", "pick_two_obj_and_place")  # fmt: skip
_TREATMENT = {"pick_clean_then_place": "clean", "pick_heat_then_place": "heat", "pick_cool_then_place": "cool"}
_ADJECTIVE = {"clean": "clean", "heat": "hot", "cool": "cool"}


def _listing(items: list[str]) -> str:
    if not items:
        return "nothing"
    names = [f"a {i}" for i in items]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + f", and {names[-1]}"


@register_env
class AlfWorldEnv(AgentEnv):
    """The ALFWorld simulator (see the module docstring).

    Args:
        task_types: the task types to draw from (default: all six).
        max_episode_length: steps before the episode is cut (default 50).
    """

    name = "alfworld"
    instructions: ClassVar[str] = (
        "Interact with a household to solve a task. Imagine you are an intelligent agent in a household environment "
        "and your target is to perform actions to complete the task goal. At the beginning of your interactions, you "
        "will be given the detailed description of the current environment and your goal to accomplish. For each of "
        "your turn, you will be given the observation of the last turn. You should first think about the current "
        "condition and plan for your future actions, and then output your action in this turn. Your output must "
        'strictly follow this format:"Thought: your thoughts.\\nAction: your next action".\n'
        "The available actions are: go to {recep}; take {obj} from {recep}; put {obj} in/on {recep}; open {recep}; "
        "close {recep}; clean {obj} with {recep}; heat {obj} with {recep}; cool {obj} with {recep}; use {lamp}; "
        "examine {obj or recep}; look; inventory."
    )

    def __init__(self, task_types: tuple[str, ...] | list[str] | None = None, max_episode_length: int = 50) -> None:
        super().__init__(max_episode_length)
        self.task_types = tuple(task_types or TASK_TYPES)
        unknown = [t for t in self.task_types if t not in TASK_TYPES]
        if unknown or not self.task_types:
            from trl_ext.common.errors import UnknownNameError

            raise UnknownNameError(f"alfworld: unknown task type(s) {unknown}; known: {', '.join(TASK_TYPES)}")

    # ------------------------------------------------------------------ episode

    def _reset(self, seed: int) -> str:
        rng = random.Random(f"alfworld:{seed}")
        self.task_type = rng.choice(self.task_types)
        treatment = _TREATMENT.get(self.task_type)
        kind = rng.choice(TREATABLE[treatment] if treatment else OBJECTS)
        self.target = None if self.task_type == "look_at_obj_in_light" else rng.choice(TARGETS)
        kinds = [kind, *rng.sample([o for o in OBJECTS if o != kind], rng.randint(5, 7))]
        places = [r for r in RECEPTACLES if r not in ("sinkbasin 1", "microwave 1") and r != self.target]
        self.location_of: dict[str, str] = {}
        for k in kinds:
            count = 2 if k == kind and self.task_type == "pick_two_obj_and_place" else rng.randint(1, 2)
            for n in range(1, count + 1):
                self.location_of[f"{k} {n}"] = rng.choice(places)
        self.kind, self.treatment = kind, treatment
        self.opened = dict.fromkeys(OPENABLE, False)
        self.treated: set[str] = set()
        self.placed: list[str] = []
        self.at, self.holding, self.reached = None, None, set()
        if self.task_type == "look_at_obj_in_light":
            goal = f"look at {kind} under the desklamp."
        elif self.task_type == "pick_two_obj_and_place":
            goal = f"put two {kind}s in {self.target}."
        elif treatment:
            goal = f"put a {_ADJECTIVE[treatment]} {kind} in {self.target}."
        else:
            goal = f"put a {kind} in {self.target}."
        self.goal_text = goal
        return (
            f"You are in the middle of a room. Looking quickly around you, you see {_listing(list(RECEPTACLES))}.\n"
            f"Your task is to: {goal}"
        )

    def _contents(self, receptacle: str) -> list[str]:
        return sorted(o for o, r in self.location_of.items() if r == receptacle)

    def _is_kind(self, obj: str | None) -> bool:
        """Whether ``obj`` (``"mug 2"``) is of the task's object kind."""
        return obj is not None and obj.rsplit(" ", 1)[0] == self.kind

    def _subgoal(self, name: str) -> float:
        if name in self.reached:
            return 0.0
        self.reached.add(name)
        return 0.2

    # ------------------------------------------------------------------ steps

    def _step(self, action: str) -> tuple[str, float, bool]:
        act = " ".join(action.lower().split())
        if act == "look":
            where = f"You are facing the {self.at}." if self.at else "You are in the middle of a room."
            return f"{where} Next to it, you see nothing.", 0.0, True
        if act == "inventory":
            return (
                (f"You are carrying: a {self.holding}." if self.holding else "You are not carrying anything."),
                0.0,
                True,
            )
        if (m := re.fullmatch(r"go to (.+)", act)) is not None:
            return self._go(m.group(1))
        if (m := re.fullmatch(r"(open|close) (.+)", act)) is not None:
            return self._open(m.group(2), m.group(1) == "open")
        if (m := re.fullmatch(r"take (.+) from (.+)", act)) is not None:
            return self._take(m.group(1), m.group(2))
        if (m := re.fullmatch(r"(?:put (.+) (?:in|on|in/on) (.+)|move (.+) to (.+))", act)) is not None:
            return self._put(m.group(1) or m.group(3), m.group(2) or m.group(4))
        if (m := re.fullmatch(r"(clean|heat|cool) (.+) with (.+)", act)) is not None:
            return self._treat(m.group(1), m.group(2), m.group(3))
        if act == "use desklamp 1":
            if self.at != "desk 1":
                return "Invalid action: the desklamp 1 is not here", 0.0, False
            if self.task_type == "look_at_obj_in_light" and self._is_kind(self.holding):
                self.done = self.success = True
                return f"You turn on the desklamp 1. You look at the {self.holding} under the desklamp 1.", 1.0, True
            return "You turn on the desklamp 1.", 0.0, True
        if (m := re.fullmatch(r"examine (.+)", act)) is not None:
            thing = m.group(1)
            if thing in RECEPTACLES and thing == self.at:
                return f"On the {thing}, you see {_listing(self._contents(thing))}.", 0.0, True
            if thing == self.holding or (thing in self.location_of and self.location_of[thing] == self.at):
                state = ", ".join(
                    sorted(_ADJECTIVE[t] for t in ("clean", "heat", "cool") if (thing, t) in self.treated)
                )
                return f"This is a normal {thing}." + (f" It is {state}." if state else ""), 0.0, True
            return f"Invalid action: there is no {thing} here", 0.0, False
        return f"Invalid action: {action!r} is not an ALFWorld action", 0.0, False

    def _go(self, receptacle: str) -> tuple[str, float, bool]:
        if receptacle not in RECEPTACLES:
            return f"Invalid action: there is no {receptacle} in this room", 0.0, False
        if receptacle == self.at:
            return f"Invalid action: you are already at the {receptacle}", 0.0, False
        self.at = receptacle
        if receptacle in OPENABLE and not self.opened[receptacle]:
            return f"You arrive at {receptacle}. The {receptacle} is closed.", 0.0, True
        return (
            f"You arrive at {receptacle}. On the {receptacle}, you see {_listing(self._contents(receptacle))}.",
            0.0,
            True,
        )

    def _open(self, receptacle: str, opening: bool) -> tuple[str, float, bool]:
        if receptacle != self.at or receptacle not in OPENABLE:
            return f"Invalid action: you cannot {'open' if opening else 'close'} {receptacle} from here", 0.0, False
        if self.opened[receptacle] == opening:
            return f"Invalid action: the {receptacle} is already {'open' if opening else 'closed'}", 0.0, False
        self.opened[receptacle] = opening
        if not opening:
            return f"You close the {receptacle}.", 0.0, True
        return (f"You open the {receptacle}. The {receptacle} is open. In it, you see "
                f"{_listing(self._contents(receptacle))}."), 0.0, True  # fmt: skip

    def _reachable(self, receptacle: str) -> bool:
        return receptacle == self.at and (receptacle not in OPENABLE or self.opened[receptacle])

    def _take(self, obj: str, receptacle: str) -> tuple[str, float, bool]:
        if self.holding is not None:
            return f"Invalid action: you are already carrying the {self.holding}", 0.0, False
        if not self._reachable(receptacle) or self.location_of.get(obj) != receptacle:
            return f"Invalid action: there is no {obj} you can take from {receptacle}", 0.0, False
        del self.location_of[obj]
        self.holding = obj
        reward = 0.0
        if self._is_kind(obj) and obj not in self.placed:
            reward = self._subgoal(f"take:{len(self.placed)}")
        return f"You pick up the {obj} from the {receptacle}.", reward, True

    def _put(self, obj: str, receptacle: str) -> tuple[str, float, bool]:
        if obj != self.holding:
            return f"Invalid action: you are not carrying {obj}", 0.0, False
        if not self._reachable(receptacle):
            return f"Invalid action: you cannot put anything in {receptacle} from here", 0.0, False
        self.location_of[obj], self.holding = receptacle, None
        message = f"You put the {obj} in/on the {receptacle}."
        right = receptacle == self.target and self._is_kind(obj)
        if right and (self.treatment is None or (obj, self.treatment) in self.treated):
            self.placed.append(obj)
            needed = 2 if self.task_type == "pick_two_obj_and_place" else 1
            if len(self.placed) == needed:
                self.done = self.success = True
                return message, 1.0, True
            return message, self._subgoal("put:0"), True
        return message, 0.0, True

    def _treat(self, verb: str, obj: str, appliance: str) -> tuple[str, float, bool]:
        if obj != self.holding:
            return f"Invalid action: you are not carrying {obj}", 0.0, False
        if appliance != APPLIANCE[verb] or self.at != appliance:
            return f"Invalid action: you cannot {verb} anything with {appliance} here", 0.0, False
        self.treated.add((obj, verb))
        reward = self._subgoal(verb) if verb == self.treatment and self._is_kind(obj) else 0.0
        past = {"clean": "clean", "heat": "heat", "cool": "cool"}[verb]
        return f"You {past} the {obj} using the {appliance}.", reward, True

    # ------------------------------------------------------------------ expert

    def expert_action(self) -> str:
        """The shortest plan from the current state (the expert sees every object's place)."""
        if self.holding is None:
            todo = sorted(o for o in self.location_of if self._is_kind(o) and o not in self.placed)
            obj = todo[0]
            where = self.location_of[obj]
            if self.at != where:
                return f"go to {where}"
            if where in OPENABLE and not self.opened[where]:
                return f"open {where}"
            return f"take {obj} from {where}"
        obj = self.holding
        if self.treatment is not None and (obj, self.treatment) not in self.treated:
            appliance = APPLIANCE[self.treatment]
            return f"{self.treatment} {obj} with {appliance}" if self.at == appliance else f"go to {appliance}"
        if self.task_type == "look_at_obj_in_light":
            return "use desklamp 1" if self.at == "desk 1" else "go to desk 1"
        if self.at != self.target:
            return f"go to {self.target}"
        if self.target in OPENABLE and not self.opened[self.target]:
            return f"open {self.target}"
        return f"put {obj} in/on {self.target}"

    def progress(self) -> dict:
        return {"task_type": self.task_type, "subgoals": sorted(self.reached)}
