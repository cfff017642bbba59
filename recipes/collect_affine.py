"""Generate the SFT dataset as TRL conversational prompt–completion JSONL (docs/tasks.md): task instances (SAT, ABD,
DED) and expert episodes of the agent environments (multi-turn rows: system, observation, action, observation, ...).

Writes ``<output_dir>/train.jsonl`` and ``<output_dir>/validation.jsonl`` (row format in
:mod:`trl_ext.data.affine`) and prints the row counts per task and environment.

Usage::

    python recipes/collect_affine.py --output_dir data/affine --num_samples 10000 --seed 42
    python recipes/collect_affine.py --config recipes/configs/collect_affine.yaml --sat_preset document
    python recipes/collect_affine.py --sat_n 10 20 --sat_k 3 5 --sat_clause_ratio 4.2   # ranges: lo hi

Every field of :class:`CollectArguments` is a CLI flag and a YAML key; command-line flags override the
config file, and an unknown YAML key is an error naming it.
"""

from __future__ import annotations

from trl_ext.common.noise import quiet_dependency_noise

quiet_dependency_noise()  # first: the known-harmless messages of dependencies (trl_ext/common/noise.py)

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import trl_ext  # noqa: F401
except ImportError:  # running from a source checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trl import TrlParser

from trl_ext.common.entry import run_main
from trl_ext.data.affine import collect_affine, write_affine_dataset
from trl_ext.data.affine_args import AffineTaskArguments


@dataclass
class CollectArguments(AffineTaskArguments):
    """Arguments of ``recipes/collect_affine.py`` (task selection and SAT parameters come from the base class)."""

    output_dir: str = field(
        default="data/affine", metadata={"help": "Directory for train.jsonl and validation.jsonl."}
    )
    num_samples: int = field(
        default=10000, metadata={"help": "Total instances over all tasks (split evenly; the document's 10000)."}
    )
    num_episodes: int = field(
        default=5000, metadata={"help": "Expert episodes over all environments (split evenly; the document's 5000)."}
    )
    seed: int = field(default=42, metadata={"help": "Seed for generation, shuffling and the split."})
    val_fraction: float = field(
        default=0.1, metadata={"help": "Validation share: round(val_fraction * N), at least 1 when N >= 2."}
    )


def task_params(args: AffineTaskArguments) -> dict[str, dict[str, Any]]:
    """``{task name: get_task keyword arguments}`` (see :meth:`AffineTaskArguments.task_params`)."""
    return args.task_params()


def main(args: CollectArguments) -> dict[str, Any]:
    """Collect, split and write the dataset; returns ``{"train": n_train, "validation": n_val, paths...}``."""
    envs = args.env_params() if args.num_episodes else {}
    train_rows, val_rows = collect_affine(
        task_params(args), args.num_samples, args.seed, args.val_fraction, envs=envs,
        num_episodes=args.num_episodes if envs else 0,
    )  # fmt: skip
    train_path, val_path = write_affine_dataset(args.output_dir, train_rows, val_rows)
    counts = Counter(row["task"] for row in train_rows + val_rows)
    print(f"wrote {len(train_rows)} train rows to {train_path}")
    print(f"wrote {len(val_rows)} validation rows to {val_path}")
    print("rows per task / environment: " + ", ".join(f"{name} {n}" for name, n in counts.items()))
    return {"train": len(train_rows), "validation": len(val_rows), "train_path": train_path, "val_path": val_path,
            "counts": dict(counts)}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> CollectArguments:
    """Parse ``argv`` (default ``sys.argv[1:]``) with ``trl.TrlParser``; ``--config file.yaml`` supported."""
    (args,) = TrlParser((CollectArguments,)).parse_args_and_config(argv)
    return args


if __name__ == "__main__":
    sys.exit(run_main(lambda: main(parse_args())))
