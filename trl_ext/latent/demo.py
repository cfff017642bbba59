"""The tiny latent-communication demo: data in which the answer is only in the sender's input (docs/latent.md).

Each row hides a *secret* word, drawn (seeded) from :data:`DEMO_SECRETS`. The sender reads a prompt that states it
(``"The code word is blue."``, :func:`demo_sender_messages`); the receiver's conversation asks for it
(``"What is the code word?"``) and the assistant turn answers with the word alone, so the conversation never holds
the secret and a receiver can only answer from the latent message. The row's ``plan`` (``"Answer blue."``) holds it
too, for the trainer's plan teacher (the receiver reading the plan). :func:`build_demo` runs the sender (default: the
embedded tiny model) with :func:`~trl_ext.latent.sender.write_sender_states` and writes the shards and
``rows.jsonl``, the input of :func:`~trl_ext.latent.data.read_latent_file`; each row also keeps its ``secret`` and
``sender_prompt`` (ignored by the reader). The same seed gives the same rows and the same hidden states.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from trl_ext.common.errors import ConfigError

__all__ = ["DEMO_QUESTION", "DEMO_SECRETS", "build_demo", "demo_rows", "demo_sender_messages"]

DEMO_SECRETS = ("red", "blue", "green", "pink", "black", "white")
"""The secret words: one to three tokens each in the tiny tokenizer, each with its own first token."""
DEMO_QUESTION = "What is the code word?"
"""The receiver's question (its conversation's human turn)."""
DEMO_MAX_POSITIONS = 12
"""The sender's last positions kept as the message (the secret, the end of the prompt and the generation prompt)."""


def _sender_prompt(secret: str) -> str:
    return f"The code word is {secret}."


def demo_rows(num_rows: int = 64, seed: int = 0) -> list[dict[str, Any]]:
    """The demo's rows without hidden states: ``{id, secret, sender_prompt, conversations, plan}``; the secrets
    are drawn with ``random.Random(seed)``."""
    _check(num_rows, seed)
    rng = random.Random(seed)
    rows = []
    for i in range(num_rows):
        secret = rng.choice(DEMO_SECRETS)
        rows.append(
            {
                "id": f"demo_{i:05d}",
                "secret": secret,
                "sender_prompt": _sender_prompt(secret),
                "conversations": [{"from": "human", "value": DEMO_QUESTION}, {"from": "gpt", "value": secret}],
                "plan": f"Answer {secret}.",
            }
        )
    return rows


def demo_sender_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    """What the sender reads for a demo row: one user turn stating the secret."""
    return [{"role": "user", "content": row["sender_prompt"]}]


def _check(num_rows: Any, seed: Any) -> None:
    if isinstance(num_rows, bool) or not isinstance(num_rows, int) or num_rows < 2:
        raise ConfigError(f"num_rows must be an integer >= 2, got {num_rows!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")


def build_demo(
    output_dir: str | os.PathLike,
    num_rows: int = 64,
    seed: int = 0,
    sender: str | os.PathLike | None = None,
    show_progress: bool = False,
) -> Path:
    """Write the demo (``num_rows`` rows, secrets seeded by ``seed``) into ``output_dir``: the sender's hidden-state
    shards and ``rows.jsonl``, whose path it returns. ``sender``: a model folder (default: the embedded tiny model,
    :func:`~trl_ext.models.get_tiny_model_path`).

    Raises:
        ConfigError: ``num_rows`` < 2 or not an integer, ``seed`` not an integer >= 0, ``sender`` not a folder, or
            ``output_dir`` an existing file.
    """
    from trl_ext.latent.sender import write_sender_states
    from trl_ext.models import get_tiny_model_path, load_causal_lm, load_tokenizer

    _check(num_rows, seed)
    if sender is not None and not Path(sender).is_dir():
        raise ConfigError(f"sender must be a model folder, got {str(sender)!r} (None: the embedded tiny model)")
    if Path(output_dir).exists() and not Path(output_dir).is_dir():
        raise ConfigError(f"output_dir {str(output_dir)!r} is a file, not a folder")
    path = str(sender) if sender is not None else str(get_tiny_model_path())
    model, tokenizer = load_causal_lm(path), load_tokenizer(path)
    return write_sender_states(
        model,
        tokenizer,
        demo_rows(num_rows, seed),
        output_dir,
        max_positions=DEMO_MAX_POSITIONS,
        sender_messages=demo_sender_messages,
        show_progress=show_progress,
    )
