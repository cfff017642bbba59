"""What the diversity trainer records about a batch: its metrics and its samples table (docs/diversity.md, "Metrics").

Pure functions of the gathered block table (:func:`~trl_ext.diversity.objective.block_table`, cluster column filled)
and the batch loss (:class:`~trl_ext.diversity.objective.DiversityLoss`); the trainer appends the metrics to its own
(so every ``report_to`` integration sees them) and writes the samples table.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from trl_ext.diversity.objective import ROLE_CONCEPT, ROLE_FOLLOWING

__all__ = [
    "NamedOption",
    "append_samples",
    "batch_metrics",
    "log_samples_to_wandb",
    "loss_metrics",
    "sample_rows",
    "trim_samples",
]


def loss_metrics(result: Any, concepts: Sequence[Any], log_z: float | None, log_reward: float | None) -> dict:
    """The losses, the cluster-mass entropy, the unclustered flag of every option and, for TB, mean log Z and log R."""
    out = {
        "diversity/loss/total": float(result.loss.detach()),
        "diversity/loss/concept": float(result.concept.detach()),
        "diversity/loss/open_block": float(result.open_block.detach()),
    }
    if result.tb is not None:
        out["diversity/loss/tb"] = float(result.tb.detach())
        out["diversity/log_z"] = float(log_z)
        out["diversity/log_reward"] = float(log_reward)
    for c, concept in enumerate(concepts):
        for o, option in enumerate(concept.options):
            out[f"diversity/unclustered/{concept.name}/{option}"] = float((c, o) in result.unclustered)
    if result.cluster_entropy is not None:
        out["diversity/cluster_mass_entropy"] = result.cluster_entropy
    return out


def batch_metrics(table: torch.Tensor, concepts: Sequence[Any], buffer_sizes: dict[tuple[int, int], int]) -> dict:
    """Option shares, no-match share, distinct options, clusters seen and buffer sizes of the gathered batch."""
    out: dict[str, float] = {}
    n = table.shape[0]
    cells = set()
    for c, concept in enumerate(concepts):
        concept_rows = (table[:, :, 2] == c) & (table[:, :, 4] == ROLE_CONCEPT)
        options = table[:, :, 3][concept_rows]
        counts = torch.bincount(options, minlength=len(concept.options)).tolist() if options.numel() else []
        for o, option in enumerate(concept.options):
            out[f"diversity/option_share/{concept.name}/{option}"] = counts[o] / n if counts else 0.0
            out[f"diversity/buffer_size/{concept.name}/{option}"] = float(buffer_sizes[(c, o)])
        out[f"diversity/no_match/{concept.name}"] = 1.0 - int(concept_rows.any(dim=1).sum()) / n
        out[f"diversity/distinct_options/{concept.name}"] = float(sum(1 for k in counts if k))
        following = (table[:, :, 2] == c) & (table[:, :, 4] == ROLE_FOLLOWING) & (table[:, :, 5] >= 0)
        cells |= {(c, int(o), int(k)) for o, k in zip(table[:, :, 3][following], table[:, :, 5][following])}
    out["diversity/clusters_seen"] = float(len(cells))
    return out


def sample_rows(keys, texts, table: torch.Tensor, concepts: Sequence[Any], epoch: int, step: int) -> list[dict]:
    """One row per completion: ``epoch, step, prompt, completion, <concept>, <concept>_cluster`` (None when the
    completion names no option or its following block has no cluster: an empty CSV cell)."""
    rows = []
    for i, (key, text) in enumerate(zip(keys, texts)):
        row = {"epoch": epoch, "step": step, "prompt": key, "completion": text}
        for c, concept in enumerate(concepts):
            picked = table[i][(table[i, :, 2] == c) & (table[i, :, 4] == ROLE_CONCEPT)]
            follow = table[i][(table[i, :, 2] == c) & (table[i, :, 4] == ROLE_FOLLOWING)]
            row[concept.name] = concept.options[int(picked[0, 3])] if picked.shape[0] else None
            cluster = int(follow[0, 5]) if follow.shape[0] else -1
            row[f"{concept.name}_cluster"] = cluster if cluster >= 0 else None
        rows.append(row)
    return rows


def append_samples(path: Path, rows: list[dict]) -> None:
    """Append ``rows`` to the CSV at ``path`` (with a header when the file is new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)


def trim_samples(path: Path, step: int) -> None:
    """Keep the rows of the CSV at ``path`` logged at or before ``step`` (a resume from that step's checkpoint)."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    kept = [r for r in rows if int(r["step"]) <= step]
    with path.open("w", newline="") as f:
        if kept:
            writer = csv.DictWriter(f, fieldnames=list(kept[0]))
            writer.writeheader()
            writer.writerows(kept)


def log_samples_to_wandb(rows: list[dict], report_to: Sequence[str] | None) -> None:
    """Log ``rows`` as a ``wandb.Table`` named ``samples`` when wandb is reported to and a run is active."""
    if "wandb" not in (report_to or []):
        return
    import wandb

    if wandb.run is not None:
        wandb.log({"samples": wandb.Table(columns=list(rows[0]), data=[list(r.values()) for r in rows])})


class NamedOption:
    """The reward function GRPO logs when the user gives none: 1.0 for a completion that names an option of
    every concept (has a concept block for each), else 0.0 — so ``reward`` is the share of such completions. It is
    logged, not trained on (the diversity losses replace GRPO's policy gradient)."""

    __name__ = "named_option"

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def __call__(self, prompts, completions, completion_ids, **kwargs) -> list[float]:
        n = len(self.trainer.concepts)
        return [
            float(sum(b.kind == "concept" for b in self.trainer._segment(list(ids))) == n) for ids in completion_ids
        ]
