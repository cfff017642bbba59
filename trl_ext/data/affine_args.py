"""Command-line/YAML arguments that select the reasoning tasks and their parameters (shared by recipes)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


def _int_or_range(name: str, value: Any) -> int | tuple[int, int] | None:
    """``None`` -> None; ``5`` or ``[5]`` -> 5; ``[lo, hi]`` -> ``(lo, hi)``; otherwise ValueError naming ``name``."""
    if value is None or isinstance(value, int):
        return value
    values = list(value)
    if len(values) == 1:
        return int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    raise ValueError(f"--{name} takes one int or two ints `lo hi`, got {values!r}")


@dataclass
class AffineTaskArguments:
    """Which tasks to generate and with which parameters.

    Every field is a flag of the recipes (``--tasks sat --sat_n 10 ...``) and a key of their YAML configs.
    SAT fields left at ``None`` use the task's defaults (n=15, k=10, ratio 4.26) or the preset's values;
    fields that are set override the preset.
    """

    tasks: list[str] = field(
        default_factory=lambda: ["sat", "abd", "ded"],
        metadata={"help": "Registered task names to sample (the document's: sat abd ded)."},
    )
    sat_n: list[int] | None = field(
        default=None, metadata={"help": "SAT variables: one int, or two ints `lo hi` (inclusive range). Default 15."}
    )
    sat_k: list[int] | None = field(
        default=None, metadata={"help": "SAT literals per clause: one int, or `lo hi`. Default 10."}
    )
    sat_clause_ratio: float | None = field(
        default=None, metadata={"help": "SAT clauses per variable, m = floor(ratio * n). Default 4.26."}
    )
    sat_num_clauses: int | None = field(
        default=None, metadata={"help": "SAT fixed clause count m; overrides sat_clause_ratio."}
    )
    sat_preset: str | None = field(
        default=None, metadata={"help": "SAT preset: None or 'document' (n 10..20, k 3..5, ratio 4.2)."}
    )

    program_dataset: str = field(
        default="builtin",
        metadata={"help": "ABD/DED rows (program, inputs, output, prompt, test_cases): 'builtin' (64 shipped "
                  "programs), a .jsonl/.json/.parquet/.csv file or a Hub dataset id such as satpalsr/rl-python."},
    )  # fmt: skip
    program_heldout_fraction: float = field(
        default=0.2, metadata={"help": "Share of the ABD/DED rows (by id hash) kept for the held-out evaluation."}
    )
    sandbox_isolation: str = field(
        default="auto",
        metadata={"help": "Sandbox of ABD/DED: 'auto' (bubblewrap, else rlimits with a warning), 'required', 'none'."},
    )
    sandbox_workers: int | None = field(
        default=None, metadata={"help": "Programs run at once by the ABD/DED scorers (default: the cores available)."}
    )

    environments: list[str] = field(
        default_factory=lambda: ["webshop", "alfworld", "babyai", "sciworld", "textcraft"],
        metadata={"help": "Agent environments of the episodes (the document's five; [] for none)."},
    )
    max_episode_length: int = field(
        default=50, metadata={"help": "Steps before an agent episode is cut (the document's 50)."}
    )
    env_servers: list[str] = field(
        default_factory=list,
        metadata={"help": "Environments served over HTTP, as name=url (AgentGym's protocol, e.g. "
                  "webshop=http://host:36001, or trl-ext-env-server): their episodes run there."},
    )  # fmt: skip

    def env_params(self, max_episode_length: int | None = None) -> dict[str, dict[str, Any]]:
        """``{environment name: get_env keyword arguments}`` (``max_episode_length`` overrides the field's);
        unknown or repeated names are errors."""
        from trl_ext.tasks.envs import available_envs

        length = self.max_episode_length if max_episode_length is None else max_episode_length
        known = available_envs()
        params: dict[str, dict[str, Any]] = {}
        for name in self.environments:
            if name in params:
                raise ValueError(f"--environments lists {name!r} twice")
            if name not in known:
                raise ValueError(
                    f"--environments: unknown environment {name!r}; known environments: {', '.join(known)}"
                )
            params[name] = {"max_episode_length": length}
        for entry in self.env_servers:
            name, sep, url = entry.partition("=")
            if not sep or not url:
                raise ValueError(f"--env_servers: {entry!r} is not name=url")
            if name not in params:
                raise ValueError(f"--env_servers: {name!r} is not one of --environments {sorted(params)}")
            params[name]["server_url"] = url
        if params and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
            raise ValueError(f"max_episode_length={length!r} must be an int >= 1")
        return params

    def task_params(self) -> dict[str, dict[str, Any]]:
        """``{task name: get_task keyword arguments}``; unknown or repeated task names are errors.

        ``sat`` takes the ``sat_*`` fields (unset ones are omitted so the task's defaults apply); ``abd`` and
        ``ded`` take ``program_dataset``, ``program_heldout_fraction``, ``sandbox_isolation`` and
        ``sandbox_workers``.
        """
        from trl_ext.tasks import get_task, get_task_class

        params: dict[str, dict[str, Any]] = {}
        for name in self.tasks:
            if name in params:
                raise ValueError(f"--tasks lists {name!r} twice")
            get_task_class(name)  # unknown names fail here, with the list of known ones
            params[name] = {}
        if "sat" in params:
            sat = {
                "n": _int_or_range("sat_n", self.sat_n),
                "k": _int_or_range("sat_k", self.sat_k),
                "clause_ratio": self.sat_clause_ratio,
                "num_clauses": self.sat_num_clauses,
                "preset": self.sat_preset,
            }
            params["sat"] = {key: value for key, value in sat.items() if value is not None}
        for name in ("abd", "ded"):
            if name in params:
                params[name] = {
                    "dataset": self.program_dataset,
                    "heldout_fraction": self.program_heldout_fraction,
                    "isolation": self.sandbox_isolation,
                    "workers": self.sandbox_workers,
                }
                get_task(name, **params[name]).check()  # bad rows and a refused sandbox fail here
        return params


@dataclass
class AffineRecipeArguments(AffineTaskArguments):
    """Task data and held-out evaluation arguments shared by the affine recipes (SFT, PPO)."""

    data_dir: str = field(
        default="data/affine",
        metadata={"help": "Folder with train.jsonl and validation.jsonl; collected there first if missing."},
    )
    num_samples: int = field(default=10000, metadata={"help": "Examples to collect when data_dir is empty."})
    num_episodes: int = field(
        default=5000, metadata={"help": "Expert episodes to collect over the environments when data_dir is empty."}
    )
    collect_seed: int = field(default=42, metadata={"help": "Seed of the data collection."})
    val_fraction: float = field(default=0.1, metadata={"help": "Validation share of the collected data."})
    heldout_samples: int = field(
        default=50, metadata={"help": "Held-out tasks generated per task for the evaluations (0: skip)."}
    )
    heldout_seed: int = field(default=20_261_121, metadata={"help": "Seed of the held-out tasks."})
    heldout_batch_size: int = field(default=8, metadata={"help": "Generation batch size of the evaluations."})
    heldout_max_new_tokens: int = field(default=256, metadata={"help": "Tokens generated per held-out answer."})
    heldout_episodes: int = field(
        default=20, metadata={"help": "Held-out episodes played per environment in the evaluations (0: skip)."}
    )
    heldout_max_episode_length: int | None = field(
        default=None, metadata={"help": "Steps of a held-out episode (default: max_episode_length)."}
    )
    max_turn_tokens: int = field(default=64, metadata={"help": "Tokens generated per turn of a held-out episode."})
    wandb_project: str | None = field(
        default=None,
        metadata={"help": "Track the run in this Weights & Biases project (sets WANDB_PROJECT, adds wandb to "
                  "report_to; WANDB_MODE=offline works without an account)."},
    )  # fmt: skip

    def apply_wandb(self, training_args: Any) -> None:
        """:func:`apply_wandb_project` with ``wandb_project``; call it before the trainer is built."""
        apply_wandb_project(self.wandb_project, training_args)

    def load_data(self):
        """The task data of ``data_dir`` as a ``DatasetDict``, collected there first when it is empty."""
        from trl_ext.data.affine import load_or_collect_affine

        envs = self.env_params()
        return load_or_collect_affine(
            self.data_dir, self.task_params(), self.num_samples, self.collect_seed, self.val_fraction,
            envs=envs, num_episodes=self.num_episodes if envs else 0,
        )  # fmt: skip

    def evaluate(self, model_path: str, dtype: str | None = None, load_in_4bit: bool = False) -> dict[str, Any]:
        """Evaluate ``model_path`` on ``heldout_samples`` fresh instances per task; returns the report."""
        from trl_ext.eval.tasks import evaluate_heldout

        return evaluate_heldout(
            model_path,
            self.task_params(),
            num_per_task=self.heldout_samples,
            seed=self.heldout_seed,
            batch_size=self.heldout_batch_size,
            max_new_tokens=self.heldout_max_new_tokens,
            dtype=dtype,
            load_in_4bit=load_in_4bit,
            env_params=self.env_params(self.heldout_max_episode_length),
            num_episodes=self.heldout_episodes,
            max_turn_tokens=self.max_turn_tokens,
        )


def apply_wandb_project(project: str | None, training_args: Any) -> None:
    """Send the run to the Weights & Biases project ``project`` (the document's ``tracking.wandb_project``).

    Sets ``WANDB_PROJECT`` (read by transformers' ``WandbCallback`` when the run starts) and adds ``"wandb"`` to
    ``training_args.report_to`` (other reporters are kept; ``"none"`` is dropped). Must run before the trainer is
    built: the trainer creates its reporting callbacks from ``report_to`` in its constructor. ``None`` or ``""``
    changes nothing. A missing ``wandb`` package is a ``ValueError`` here, before any model is loaded.
    """
    if not project:
        return
    from transformers.integrations import is_wandb_available

    if not is_wandb_available():
        raise ValueError(f"--wandb_project {project!r} needs the wandb package: pip install wandb")
    os.environ["WANDB_PROJECT"] = project
    report_to = training_args.report_to
    if report_to is None or isinstance(report_to, str):
        report_to = [] if report_to in (None, "none") else [report_to]
    report_to = [r for r in report_to if r != "none"]
    if "all" not in report_to and "wandb" not in report_to:
        report_to.append("wandb")
    training_args.report_to = report_to
