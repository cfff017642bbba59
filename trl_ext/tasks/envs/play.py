"""Episodes as conversations and as token sequences (docs/tasks.md, "Agent episodes for SFT, PPO and evaluation").

One episode of an environment is the conversation::

    system: env.instructions     user: first observation
    assistant: "Action: a_1"     user: observation_1      ...      assistant: "Action: a_n"

(the last observation is not part of it: nothing acts on it). The same layout serves three uses, one
implementation each, here:

* **SFT rows** (:func:`expert_rows`): the expert's episodes as TRL conversational prompt–completion rows, the prompt
  the system message and the first observation, the completion every later turn; SFT trains on the assistant turns
  only (``assistant_only_loss``).
* **Model play** (:func:`play_episodes`): a policy plays a batch of episodes side by side, one batched generation
  per turn for every unfinished episode; each episode comes back with the token ids of its prompt and of its
  completion (the policy's turns and the environment's text between them) and ``env_mask`` (1 on the policy's
  tokens, 0 on the environment's), which is what multi-turn PPO trains on and evaluation scores.
* **Environment text** (:func:`turn_separator`): the tokens between two policy turns are exactly what the chat
  template renders between the end of an assistant message and the next generation prompt, so the model sees at
  play time the text it was fine-tuned on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from trl_ext.common.errors import ConfigError
from trl_ext.common.generation import stop_token_ids
from trl_ext.tasks.envs.base import AgentEnv, Episode, parse_action, run_episode

__all__ = [
    "EPISODE_KIND",
    "PlayedEpisode",
    "action_message",
    "check_tokenizer",
    "episode_messages",
    "expert_rows",
    "is_episode_payload",
    "play_episodes",
    "turn_separator",
]

EPISODE_KIND = "episode"
"""``payload["kind"]`` of an episode row (task rows have no ``kind``)."""

Generator = Callable[[list[list[int]]], list[list[int]]]
"""``generate(contexts) -> new token ids`` per context, each cut after its first end-of-turn token (kept)."""


def action_message(action: str) -> str:
    """The assistant turn of an expert action (AgentGym's ``Action:`` line; :func:`parse_action` reads it back)."""
    return f"Action: {action}"


def episode_messages(env: AgentEnv, episode: Episode) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """``(prompt, completion)`` messages of a played episode (see the module docstring)."""
    prompt = [{"role": "system", "content": env.instructions}, {"role": "user", "content": episode.first_observation}]
    completion: list[dict[str, str]] = []
    for i, action in enumerate(episode.actions):
        if i:
            completion.append({"role": "user", "content": episode.observations[i - 1]})
        completion.append({"role": "assistant", "content": action_message(action)})
    return prompt, completion


def is_episode_payload(payload: str | Mapping[str, Any]) -> bool:
    """Whether a row's payload (JSON string or dict) is an agent episode's rather than a task instance's."""
    data = json.loads(payload) if isinstance(payload, str) else payload
    return isinstance(data, Mapping) and data.get("kind") == EPISODE_KIND


def expert_rows(env: AgentEnv, seeds: Sequence[int], *, index: int = 0, progress: bool = True) -> list[dict[str, Any]]:
    """The expert's episodes of ``env`` for ``seeds`` as prompt–completion rows (``task`` = the environment's name,
    ``id`` = ``<env>-<index>``, ``payload`` = ``{"kind": "episode", "env", "seed", "return", "success", "length"}``).

    Raises:
        RuntimeError: the expert fails an episode (a broken expert must not become training data silently).
    """
    rows = []
    for i, seed in enumerate(tqdm(seeds, desc=f"{env.name} expert episodes", disable=not progress)):
        episode = run_episode(env, int(seed))
        if not episode.success:
            raise RuntimeError(
                f"{env.name}: the expert did not reach the goal on seed {seed} ({episode.length} steps, "
                f"truncated={episode.truncated}, {episode.invalid_actions} invalid actions)"
            )
        prompt, completion = episode_messages(env, episode)
        payload = {"kind": EPISODE_KIND, "env": env.name, "seed": int(seed), "return": episode.total_reward,
                   "success": episode.success, "length": episode.length}  # fmt: skip
        rows.append({"prompt": prompt, "completion": completion, "task": env.name, "id": f"{env.name}-{index + i:06d}",
                     "payload": json.dumps(payload, sort_keys=True)})  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------------------ token level


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"multi-turn episodes need a tokenizer with a chat template; {type(tokenizer).__name__} "
            f"({getattr(tokenizer, 'name_or_path', '?')}) has none"
        )
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def turn_separator(tokenizer: Any, observation: str, *, ended_with: str | None = None) -> str:
    """The text between a policy turn and the next generation: what the chat template renders after an assistant
    message's content up to the next generation prompt, with ``observation`` as the user turn between. When the turn
    ended with a stop token whose text (``ended_with``, e.g. ``<|im_end|>``) is where the template's text starts, that
    part is dropped (the policy wrote it); otherwise (a turn cut at its token limit, or a stop token the template does
    not use) the template's whole end of turn is environment text.

    Raises:
        ConfigError: the tokenizer has no chat template, or the template does not render a conversation as a prefix of
            its continuation.
    """
    marker = "\x00TURN\x00"
    base = [{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}]
    before = _render(tokenizer, base, False)
    after = _render(tokenizer, [*base, {"role": "user", "content": observation}], True)
    if not after.startswith(before) or marker not in before:
        raise ConfigError(
            "the tokenizer's chat template does not render a conversation as a prefix of its continuation, so the "
            "environment's turns cannot be appended token by token"
        )
    tail = before[before.index(marker) + len(marker) :] + after[len(before) :]
    if ended_with and tail.startswith(ended_with):
        tail = tail[len(ended_with) :]
    return tail


def check_tokenizer(tokenizer: Any) -> None:
    """Fail early (before training or an evaluation) when ``tokenizer`` cannot render multi-turn episodes."""
    turn_separator(getattr(tokenizer, "tokenizer", tokenizer), "observation")


@dataclass
class PlayedEpisode:
    """An episode played by a model: the :class:`Episode` record (actions, observations, rewards, success) and its
    tokens: ``prompt_ids``, ``completion_ids`` and ``env_mask`` (1 = the policy's token, 0 = environment text), and
    ``texts``, the policy's raw turns. ``context_limited`` is true when the token budget ended the episode."""

    episode: Episode
    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    context_limited: bool = False


def play_episodes(
    envs: Sequence[AgentEnv],
    seeds: Sequence[int],
    tokenizer: Any,
    generate: Generator,
    *,
    max_new_tokens: int = 0,
    max_context_tokens: int | None = None,
    stop_ids: set[int] | None = None,
    progress: bool = False,
    desc: str = "episodes",
) -> list[PlayedEpisode]:
    """Play episode ``i`` of ``envs[i]`` from ``seeds[i]``, all side by side: each round generates one turn for every
    unfinished episode in one ``generate`` call, parses the action (:func:`parse_action`), steps the environment and
    appends the observation as environment tokens. An episode ends when its environment says done (success, failure
    or its ``max_episode_length``) or, with ``max_context_tokens``, when the next turn (the observation's tokens and
    ``max_new_tokens``, the most ``generate`` writes per turn) would not fit in it (``context_limited``; the episode
    then counts as truncated). ``stop_ids`` are the tokens that end a turn (default the tokenizer's EOS; see
    :func:`stop_token_ids`). The environments must be distinct objects.

    Raises:
        ConfigError: a first observation that leaves no room for a turn within ``max_context_tokens`` (naming the
            environment and the seed), or a tokenizer that cannot render the conversation.
    """
    if len(envs) != len(seeds):
        raise ValueError(f"{len(envs)} environments but {len(seeds)} seeds")
    if len({id(env) for env in envs}) != len(envs):
        raise ValueError("play_episodes needs one environment object per episode (the same object appears twice)")
    stop_ids = stop_token_ids(tokenizer) if stop_ids is None else set(stop_ids)
    played: list[PlayedEpisode] = []
    for env, seed in zip(envs, seeds):
        observation = env.reset(int(seed))
        prompt = [{"role": "system", "content": env.instructions}, {"role": "user", "content": observation}]
        ids = tokenizer(_render(tokenizer, prompt, True), add_special_tokens=False)["input_ids"]
        if max_context_tokens is not None and len(ids) + max_new_tokens > max_context_tokens:
            raise ConfigError(
                f"{env.name} seed {seed}: the prompt is {len(ids)} tokens, so with {max_new_tokens} new tokens per "
                f"turn no turn fits in max_context_tokens={max_context_tokens}"
            )
        played.append(PlayedEpisode(Episode(env.name, int(seed), observation), list(ids)))
    active = list(range(len(played)))
    bar = tqdm(total=len(played), desc=desc, disable=not progress)
    while active:
        new_tokens = generate([played[i].prompt_ids + played[i].completion_ids for i in active])
        if len(new_tokens) != len(active):
            raise RuntimeError(f"generate returned {len(new_tokens)} completions for {len(active)} contexts")
        still = []
        for i, tokens in zip(active, new_tokens):
            p, env = played[i], envs[i]
            tokens = list(tokens)
            p.completion_ids += tokens
            p.env_mask += [1] * len(tokens)
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            p.texts.append(text)
            action = parse_action(text)
            result = env.step(action)
            p.episode.actions.append(action or "")
            p.episode.observations.append(result.observation)
            p.episode.rewards.append(result.reward)
            if not result.done:
                ended_with = tokenizer.convert_ids_to_tokens(tokens[-1]) if tokens and tokens[-1] in stop_ids else None
                sep = turn_separator(tokenizer, result.observation, ended_with=ended_with)
                sep_ids = list(tokenizer(sep, add_special_tokens=False)["input_ids"])
                if max_context_tokens is not None and (
                    len(p.prompt_ids) + len(p.completion_ids) + len(sep_ids) + max_new_tokens > max_context_tokens
                ):
                    p.context_limited = True
                else:
                    p.completion_ids += sep_ids
                    p.env_mask += [0] * len(sep_ids)
                    still.append(i)
                    continue
            p.episode.success = env.success
            p.episode.truncated = bool(result.info.get("truncated")) or p.context_limited
            p.episode.invalid_actions = env.invalid_actions
            bar.update(1)
        active = still
    bar.close()
    return played
