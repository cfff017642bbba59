"""Command-line/YAML arguments that select the reasoning tasks and their parameters (shared by recipes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class AffineTaskArguments:
    """Which tasks to generate and with which parameters.

    Every field is a flag of the recipes (``--tasks sat --sat_n 10 ...``) and a key of their YAML configs.
    """

    tasks: list[str] = field(
        default_factory=lambda: ["sat"],
        metadata={"help": "Task names to generate (see `trl_ext.data.tasks.available_tasks()`)."},
    )
    sat_n: int = field(default=15, metadata={"help": "SAT: number of variables n (Affine default 15)."})
    sat_k: int = field(default=10, metadata={"help": "SAT: literals per clause k (Affine default 10)."})
    sat_clause_ratio: float = field(
        default=4.26, metadata={"help": "SAT: clauses per variable; m = floor(ratio * n) (Affine default 4.26)."}
    )
    sat_preset: str | None = field(
        default=None,
        metadata={"help": "SAT: 'document' draws n in 10..20, k in 3..5, ratio 4.2 per instance (overrides n/k)."},
    )

    def task_params(self) -> dict[str, dict[str, Any]]:
        """``{task name: constructor kwargs}`` for every selected task (validated by the registry)."""
        from trl_ext.data.tasks import get_task_class

        params: dict[str, dict[str, Any]] = {}
        for name in self.tasks:
            get_task_class(name)  # unknown names fail here, with the list of known ones
            if name == "sat":
                params[name] = (
                    {"preset": self.sat_preset}
                    if self.sat_preset
                    else {"n": self.sat_n, "k": self.sat_k, "clause_ratio": self.sat_clause_ratio}
                )
            else:
                params[name] = {}
        return params
