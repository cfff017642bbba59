"""The training state of a diversity run beyond the model: one replay buffer per (concept, option), the learned
``log Z`` and whether the buffers are prefilled; written into checkpoints and read back on resume
(docs/diversity.md, "Replay buffers").

Layout of a folder: ``diversity_buffers/buffer_<c>_<o>.{json,safetensors}`` (:meth:`ReplayBuffer.save`) and
``diversity_state.json`` (``{"log_z": ..., "prefilled": ...}``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trl_ext.common.checkpoint import read_json, write_json
from trl_ext.diversity.buffer import ReplayBuffer
from trl_ext.diversity.log_z import LogPartition

__all__ = ["BUFFER_FOLDER", "STATE_FILE", "load_state", "make_buffers", "save_state"]

STATE_FILE = "diversity_state.json"
BUFFER_FOLDER = "diversity_buffers"


def make_buffers(args: Any, concepts: list, embed: Any) -> dict[tuple[int, int], ReplayBuffer]:
    """One :class:`ReplayBuffer` per (concept index, option index), configured from a ``DiversityConfig``."""
    return {
        (c, o): ReplayBuffer(
            embed,
            n_clusters=args.n_clusters,
            buffer_size=args.buffer_size,
            update_clusters_every=args.update_clusters_every,
            min_samples_for_clustering=args.min_samples_for_clustering,
            seed=args.seed,
            name=f"{concept.name}/{option}",
        )
        for c, concept in enumerate(concepts)
        for o, option in enumerate(concept.options)
    }


def save_state(folder: str | Path, buffers: dict, log_z: LogPartition, prefilled: bool) -> None:
    """Write the buffers, ``log Z`` and the prefill flag into ``folder``."""
    folder = Path(folder)
    (folder / BUFFER_FOLDER).mkdir(parents=True, exist_ok=True)
    for (c, o), buffer in buffers.items():
        buffer.save(folder / BUFFER_FOLDER, f"buffer_{c}_{o}")
    write_json(folder, STATE_FILE, {"log_z": log_z.state_dict(), "prefilled": prefilled})


def load_state(folder: str | Path, buffers: dict, log_z: LogPartition) -> bool | None:
    """Restore the buffers and ``log Z`` from ``folder``; the prefill flag, or None when it holds no state."""
    state = read_json(folder, STATE_FILE)
    if state is None:
        return None
    log_z.load_state_dict(state["log_z"])
    for (c, o), buffer in buffers.items():
        buffer.load(Path(folder) / BUFFER_FOLDER, f"buffer_{c}_{o}")
    return bool(state["prefilled"])
