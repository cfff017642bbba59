"""WebShop, simulated (docs/tasks.md, "WebShop"): find the product an instruction describes and buy it.

WebShop's product catalogue and search index are not on the package registries, so this is a small deterministic
simulator with WebShop's action grammar and text observations (``[SEP]``-separated pages); AgentGym's real server
is reached through the environment-server client (next). One episode, drawn from ``random.Random(seed)``: a
catalogue of ``num_products`` (12) products, each an adjective and a noun with two or three colours, two or three
sizes and a price; the goal is one of them, with one colour, one size and a price bound above its price. At least
two other products share the goal's noun or adjective, so a search does not end the task.

Pages and actions (an action not listed for the current page is invalid: no state change, 0 reward):

* search page: ``search[<query>]`` -> the results: the 5 products sharing most words with the query (ties by id);
* results page: ``click[<product id>]`` -> that product's page; ``click[back to search]``;
* product page: ``click[<colour>]``, ``click[<size>]`` (select an option), ``click[buy now]`` (ends the episode),
  ``click[< prev]`` (back to the results), ``click[back to search]``.

Rewards, the document's 0.1 / 0.3 / 1.0: **0.1** for the episode's first search, **0.3** the first time the goal
product's page is opened, **1.0** for buying the goal product with the goal's colour and size (its price is within
the bound by construction); buying anything else ends the episode with 0. ``success`` is the goal purchase; the
expert's episode (search the goal's adjective and noun, open it, pick the colour and the size, buy) earns 1.4.
"""

from __future__ import annotations

import random
import re
from typing import ClassVar

from trl_ext.common.errors import ConfigError
from trl_ext.tasks.envs.base import AgentEnv
from trl_ext.tasks.envs.registry import register_env

__all__ = ["WebShopEnv"]

NOUNS = ("shirt", "mug", "lamp", "backpack", "headphones", "sneakers", "jacket", "watch", "blender", "pillow")
ADJECTIVES = ("lightweight", "waterproof", "vintage", "wireless", "cotton", "ceramic", "portable", "organic")
COLOURS = ("black", "white", "red", "blue", "green", "grey")
SIZES = ("small", "medium", "large", "x-large")
PAGE_SIZE = 5
_CLICK = re.compile(r"^click\[(.+)\]$", re.IGNORECASE)
_SEARCH = re.compile(r"^search\[(.*)\]$", re.IGNORECASE)


@register_env
class WebShopEnv(AgentEnv):
    """The WebShop simulator (see the module docstring).

    Args:
        num_products: catalogue size per episode (>= 3).
        max_episode_length: steps before the episode is cut (default 50).
    """

    name = "webshop"
    instructions: ClassVar[str] = (
        "You are web shopping. I will give you instructions about what to do. You have to follow the instructions. "
        "Every round I will give you an observation and a list of available actions, you have to respond an action "
        "based on the state and instruction. You can use search action if search is available. You can click one of "
        "the buttons in clickables. An action should be of the following structure:\n"
        "search[keywords]\nclick[value]\n"
        "If the action is not valid, perform nothing. Keywords in search are up to you, but the value in click must "
        "be a value in the list of available actions. Your response should use the following format:\n\n"
        "Thought: I think ...\nAction: click[something]"
    )

    def __init__(self, num_products: int = 12, max_episode_length: int = 50) -> None:
        super().__init__(max_episode_length)
        if isinstance(num_products, bool) or not isinstance(num_products, int) or num_products < 3:
            raise ConfigError(f"webshop: num_products={num_products!r} must be an int >= 3")
        self.num_products = num_products

    # ------------------------------------------------------------------ episode

    def _reset(self, seed: int) -> str:
        rng = random.Random(f"webshop:{seed}")
        noun, adjective = rng.choice(NOUNS), rng.choice(ADJECTIVES)
        titles = {(adjective, noun)}
        titles.add((rng.choice([a for a in ADJECTIVES if a != adjective]), noun))  # same noun
        titles.add((adjective, rng.choice([n for n in NOUNS if n != noun])))  # same adjective
        while len(titles) < self.num_products:
            titles.add((rng.choice(ADJECTIVES), rng.choice(NOUNS)))
        ids = rng.sample(range(10_000, 99_999), self.num_products)
        self.products = {}
        order = sorted(titles)  # a set's order follows the string hash seed: sort, then shuffle with the episode's rng
        rng.shuffle(order)
        for pid, (adj, n) in zip(ids, order):
            self.products[f"B{pid:05d}"] = {
                "title": f"{adj} {n}",
                "colours": sorted(rng.sample(COLOURS, rng.randint(2, 3))),
                "sizes": sorted(rng.sample(SIZES, rng.randint(2, 3)), key=SIZES.index),
                "price": round(rng.uniform(5, 80), 2),
            }
        self.goal_id = next(p for p, info in self.products.items() if info["title"] == f"{adjective} {noun}")
        goal = self.products[self.goal_id]
        self.goal = {"colour": rng.choice(goal["colours"]), "size": rng.choice(goal["sizes"]),
                     "price_bound": float(int(goal["price"]) + rng.choice((10, 20, 30)))}  # fmt: skip
        self.instruction = (
            f"i need a {goal['title']}, {self.goal['colour']}, size {self.goal['size']}, and price lower than "
            f"{self.goal['price_bound']:.2f} dollars"
        )
        self.page, self.results, self.current, self.selected = "search", [], None, {}
        self.searched, self.opened_goal = False, False
        return self.observation()

    def observation(self) -> str:
        """The current page as WebShop's text mode renders it (``[SEP]``-separated)."""
        head = f"Instruction: [SEP] {self.instruction}"
        if self.page == "search":
            return f"WebShop [SEP] {head} [SEP] Search"
        if self.page == "results":
            items = " [SEP] ".join(
                f"{pid} [SEP] {self.products[pid]['title']} [SEP] ${self.products[pid]['price']:.2f}"
                for pid in self.results
            )
            return f"{head} [SEP] Back to Search [SEP] Page 1 (Total results: {len(self.results)}) [SEP] {items}"
        info = self.products[self.current]
        chosen = ", ".join(f"{k}: {v}" for k, v in sorted(self.selected.items())) or "none"
        return (
            f"{head} [SEP] Back to Search [SEP] < Prev [SEP] colour [SEP] {' [SEP] '.join(info['colours'])} [SEP] "
            f"size [SEP] {' [SEP] '.join(info['sizes'])} [SEP] {info['title']} [SEP] Price: ${info['price']:.2f} "
            f"[SEP] Selected: {chosen} [SEP] Buy Now"
        )

    def available_actions(self) -> list[str]:
        """The actions the current page takes (``search[...]`` stands for any query)."""
        if self.page == "search":
            return ["search[...]"]
        if self.page == "results":
            return ["click[back to search]", *(f"click[{pid}]" for pid in self.results)]
        info = self.products[self.current]
        options = [*info["colours"], *info["sizes"]]
        return ["click[back to search]", "click[< prev]", *(f"click[{o}]" for o in options), "click[buy now]"]

    def _search(self, query: str) -> list[str]:
        words = set(query.lower().split())
        scored = [(-len(words & set(info["title"].split())), pid) for pid, info in self.products.items()]
        return [pid for _, pid in sorted(scored)[:PAGE_SIZE]]

    # ------------------------------------------------------------------ steps

    def _step(self, action: str) -> tuple[str, float, bool]:
        search, click = _SEARCH.match(action), _CLICK.match(action)
        if search is None and click is None:
            return f"Invalid action: {action!r} is neither search[...] nor click[...]", 0.0, False
        if search is not None:
            if self.page != "search":
                return "Invalid action: search is only available on the search page", 0.0, False
            if not search.group(1).strip():
                return "Invalid action: the search query is empty", 0.0, False
            reward = 0.0 if self.searched else 0.1
            self.searched, self.page, self.results = True, "results", self._search(search.group(1))
            return self.observation(), reward, True
        value = click.group(1).strip()
        target = value.lower()
        if target == "back to search" and self.page != "search":
            self.page, self.current, self.selected = "search", None, {}
            return self.observation(), 0.0, True
        if self.page == "results" and value.upper() in self.results:
            self.page, self.current, self.selected = "item", value.upper(), {}
            reward = 0.3 if self.current == self.goal_id and not self.opened_goal else 0.0
            self.opened_goal = self.opened_goal or self.current == self.goal_id
            return self.observation(), reward, True
        if self.page == "item":
            info = self.products[self.current]
            if target == "< prev":
                self.page, self.current, self.selected = "results", None, {}
                return self.observation(), 0.0, True
            if target in info["colours"] or target in info["sizes"]:
                self.selected["colour" if target in info["colours"] else "size"] = target
                return self.observation(), 0.0, True
            if target == "buy now":
                self.done = True
                self.success = self.current == self.goal_id and self.selected == {
                    "colour": self.goal["colour"], "size": self.goal["size"]
                }  # fmt: skip
                bought = f"{info['title']} ({', '.join(f'{k} {v}' for k, v in sorted(self.selected.items()))})"
                return f"Thank you for shopping with us! You bought: {bought}", 1.0 if self.success else 0.0, True
        available = ", ".join(self.available_actions())
        return f"Invalid action: click[{value}] is not on this page (available: {available})", 0.0, False

    def expert_action(self) -> str:
        """Search the goal's title, open the goal, select its colour then its size, buy."""
        goal = self.products[self.goal_id]
        if self.page == "search":
            return f"search[{goal['title']}]"
        if self.page == "results":
            return f"click[{self.goal_id}]" if self.goal_id in self.results else "click[back to search]"
        if self.current != self.goal_id:
            return "click[< prev]"
        for key in ("colour", "size"):
            if self.selected.get(key) != self.goal[key]:
                return f"click[{self.goal[key]}]"
        return "click[buy now]"

    def progress(self) -> dict:
        return {"page": self.page, "searched": self.searched, "opened_goal": self.opened_goal}
