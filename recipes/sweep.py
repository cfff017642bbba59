r"""Sweep a recipe over attribute combinations and seeds, collect ``results.json`` and plot the Pareto front.

    python recipes/sweep.py --script recipes/selective_generalisation.py --base_config base.yaml \
        --vary vary.yaml --seeds 0 1 2 --output_dir outputs/sweep_kl
    python recipes/sweep.py ... --launcher "accelerate launch --config_file accelerate_configs/cpu.yaml"
    python recipes/sweep.py ... --slurm --slurm_option partition=gpu --slurm_option gpus=1 --slurm_option time=04:00:00
    python recipes/sweep.py --output_dir outputs/sweep_kl --collect_only [--x_metric eval.task --y_metric proxy]

A recipe is run as ``<launcher> <script> --config <yaml> --output_dir <dir> --seed <int>`` (``<launcher>``
defaults to this Python interpreter) and must write ``<output_dir>/results.json``, a JSON object of metrics
(nested objects are read by dotted key, e.g. ``eval.task``).

The vary file (YAML or JSON) maps attributes to lists of values (their grid product is swept), or is
``{grid: {...}, runs: [{...}, ...]}`` where every explicit run (one value per attribute) is combined with every
grid point. Each combination gets a folder under ``--output_dir`` named from its attributes
(``strategy-kl_divergence_beta_kl-100``) holding the merged ``config.yaml`` and one ``seed_<N>`` folder per seed
(its ``config.yaml``, ``log.txt`` and the recipe's outputs). Runs go one after the other; a run whose
``results.json`` exists is skipped (an interrupted sweep resumes) unless ``--rerun``. A failing run is recorded
in ``sweep_status.json`` and the sweep goes on; the exit status is then 1 (2 for bad input). Finally the
results are collected into ``runs.csv``, ``summary.csv``, ``summary.json`` and ``pareto.png`` (x metric vs
y metric, mean ± std over seeds, the Pareto-optimal combinations highlighted; std is the sample std, ddof=1,
left empty for a single seed). ``--slurm`` writes ``sweep_runs.txt`` and the array script ``sweep.sbatch``
instead of running; ``--collect_only`` gathers the results once the array is done.
"""

from __future__ import annotations

import argparse
import copy
import csv
import difflib
import hashlib
import itertools
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

MANIFEST = "sweep.json"
STATUS = "sweep_status.json"
RUNS_FILE = "sweep_runs.txt"
SBATCH_FILE = "sweep.sbatch"
RESULTS = "results.json"
CONFIG = "config.yaml"
LOG = "log.txt"
MAX_NAME_LENGTH = 100
RESERVED_KEYS = ("output_dir", "seed")  # set by the sweep itself for every run
SEED_DIR_PATTERN = re.compile(r"^seed_(-?\d+)$")


class SweepError(Exception):
    """A problem with the sweep's input or results; the message names the file, run or key at fault."""


# ----------------------------------------------------------------------------------------------------------------
# YAML and configs


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader that also reads ``1e-4`` (exponent without a dot) as a float, like YAML 1.2 and JSON."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def load_yaml(path: str | Path, what: str) -> Any:
    """Load a YAML (or JSON) file with :class:`_Loader`; ``what`` names the file in the error if it is missing."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"{what} not found: {path}")
    try:
        return yaml.load(path.read_text(), Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.YAMLError as err:
        raise SweepError(f"{what} {path} is not valid YAML/JSON: {err}") from err


def dump_yaml(data: Any, path: Path) -> None:
    """Write ``data`` as YAML to ``path`` keeping the key order (parents are created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def config_keys(config: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every key of ``config``, nested mappings included as dotted paths (``a``, ``a.b``, ...)."""
    keys = []
    for key, value in config.items():
        full = f"{prefix}{key}"
        keys.append(full)
        if isinstance(value, Mapping):
            keys.extend(config_keys(value, prefix=f"{full}."))
    return keys


def _key_path(config: Mapping[str, Any], key: str) -> list[str] | None:
    """Where ``key`` lives in ``config``: ``[key]`` for a top-level key, the dotted path's parts for a nested one."""
    if key in config:
        return [key]
    node: Any = config
    parts = key.split(".")
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return parts


def set_key(config: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` (top-level, or a dotted path into nested mappings) to ``value``; a new key is set at top level."""
    path = _key_path(config, key) or [key]
    node = config
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = copy.deepcopy(value)


def merge_config(base: Mapping[str, Any], overrides: Mapping[str, Any], **fixed: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with ``overrides`` then ``fixed`` (e.g. ``output_dir``, ``seed``) applied."""
    config = copy.deepcopy(dict(base))
    for key, value in {**overrides, **fixed}.items():
        set_key(config, key, value)
    return config


def check_attributes(attributes: Iterable[str], base: Mapping[str, Any], base_path: Path, allow_new: bool) -> None:
    """Check that every varied attribute is a key of the base config (unless ``allow_new``) and not reserved.

    The error for an unknown key lists the close matches among the base config's keys (``difflib``).
    """
    known = config_keys(base)
    for key in attributes:
        if key in RESERVED_KEYS:
            raise SweepError(f"attribute '{key}' cannot be varied: the sweep sets it for every run (use --seeds)")
        if allow_new or _key_path(base, key) is not None:
            continue
        close = difflib.get_close_matches(key, known, n=5, cutoff=0.6)
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        raise SweepError(
            f"attribute '{key}' of the vary file is not a key of the base config {base_path}{hint} "
            "(pass --allow_new_keys to add keys the base config does not have)"
        )


# ----------------------------------------------------------------------------------------------------------------
# Combinations


@dataclass(frozen=True)
class Combination:
    """One point of the sweep: a folder ``name`` and the attribute ``overrides`` applied to the base config."""

    name: str
    overrides: dict[str, Any]


def _as_values(key: str, values: Any, where: str) -> list[Any]:
    """The list of values of one grid attribute: a list as is, a scalar as a single value; empty is an error."""
    if isinstance(values, list):
        if not values:
            raise SweepError(f"{where}: attribute '{key}' has an empty list of values")
        return values
    if isinstance(values, Mapping):
        raise SweepError(f"{where}: attribute '{key}' must map to a list of values, got a mapping")
    return [values]


def _grid_points(grid: Any, where: str) -> list[dict[str, Any]]:
    """All points of the grid product of ``grid`` (attribute -> values), in file order; ``[{}]`` for no grid."""
    if grid is None:
        return [{}]
    if not isinstance(grid, Mapping):
        raise SweepError(f"{where}: 'grid' must be a mapping attribute -> list of values, got {type(grid).__name__}")
    keys = [str(k) for k in grid]
    value_lists = [_as_values(str(k), v, where) for k, v in grid.items()]
    return [dict(zip(keys, point)) for point in itertools.product(*value_lists)]


def _explicit_runs(runs: Any, where: str) -> list[dict[str, Any]]:
    """The explicit runs (each a mapping attribute -> one value); ``[{}]`` when there are none."""
    if runs is None:
        return [{}]
    if not isinstance(runs, list):
        raise SweepError(f"{where}: 'runs' must be a list of mappings attribute -> value, got {type(runs).__name__}")
    if not runs:
        raise SweepError(f"{where}: 'runs' is an empty list")
    for i, run in enumerate(runs):
        if not isinstance(run, Mapping):
            raise SweepError(f"{where}: runs[{i}] must be a mapping attribute -> value, got {type(run).__name__}")
    return [{str(k): v for k, v in run.items()} for run in runs]


def expand_vary(vary: Any, where: str = "vary file") -> list[dict[str, Any]]:
    """Expand a vary specification into the list of attribute overrides, one per combination, in a fixed order.

    Accepted forms: ``{attr: [values], ...}`` (grid product; a scalar is a single value), ``{grid: {...},
    runs: [{...}, ...]}`` (each explicit run combined with each grid point; run keys first in the result),
    or a bare list of runs. An attribute in both a run and the grid, an empty list and a repeated
    combination are errors naming the item.
    """
    if vary is None or (isinstance(vary, (Mapping, list)) and not vary):
        raise SweepError(f"{where} is empty: give attributes to vary")
    if isinstance(vary, list):
        grid, runs = None, vary
    elif isinstance(vary, Mapping) and set(vary) <= {"grid", "runs"}:
        grid, runs = vary.get("grid"), vary.get("runs")
        if not grid and runs is None:
            raise SweepError(f"{where} is empty: 'grid' has no attributes and there are no 'runs'")
    elif isinstance(vary, Mapping):
        grid, runs = vary, None
    else:
        raise SweepError(f"{where} must be a mapping or a list, got {type(vary).__name__}")
    combos = []
    for i, run in enumerate(_explicit_runs(runs, where)):
        for point in _grid_points(grid, where):
            shared = sorted(set(run) & set(point))
            if shared:
                raise SweepError(f"{where}: attribute '{shared[0]}' is set both in runs[{i}] and in the grid")
            combos.append({**run, **point})
    _check_unique(combos, where)
    return combos


def _canonical(overrides: Mapping[str, Any]) -> str:
    """A canonical JSON text of ``overrides`` (sorted keys) identifying a combination."""
    return json.dumps(overrides, sort_keys=True, default=repr)


def _check_unique(combos: Sequence[Mapping[str, Any]], where: str) -> None:
    """Raise if the same combination of attribute values appears twice."""
    seen: set[str] = set()
    for combo in combos:
        key = _canonical(combo)
        if key in seen:
            raise SweepError(f"{where}: the combination {key} appears more than once")
        seen.add(key)


def format_value(value: Any) -> str:
    """Short text of an attribute value for folder names: ``true``, ``null``, ``0.0001``, lists joined by ``+``."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "+".join(format_value(v) for v in value) or "empty"
    if isinstance(value, Mapping):
        return "+".join(f"{k}-{format_value(v)}" for k, v in value.items()) or "empty"
    return str(value)


def _short_hash(overrides: Mapping[str, Any]) -> str:
    """Eight hex digits of the SHA-1 of the canonical combination."""
    return hashlib.sha1(_canonical(overrides).encode()).hexdigest()[:8]


def combination_name(overrides: Mapping[str, Any]) -> str:
    """The folder name of a combination: ``key-value`` pairs joined by ``_`` (``base`` for no overrides).

    Characters other than letters, digits and ``._+-`` become ``_``; a name longer than 100 characters is cut to
    91 and ends with ``-`` and a hash of the combination, so names are deterministic and filesystem-safe.
    """
    if not overrides:
        return "base"
    raw = "_".join(f"{key}-{format_value(value)}" for key, value in overrides.items())
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", raw).lstrip(".-") or "_"
    if len(name) > MAX_NAME_LENGTH:
        name = f"{name[: MAX_NAME_LENGTH - 9]}-{_short_hash(overrides)}"
    return name


def make_combinations(overrides_list: Sequence[Mapping[str, Any]]) -> list[Combination]:
    """Name each combination (:func:`combination_name`); names that collide get the combination's hash appended."""
    names = [combination_name(o) for o in overrides_list]
    counts = {n: names.count(n) for n in names}
    return [
        Combination(name if counts[name] == 1 else f"{name[: MAX_NAME_LENGTH - 9]}-{_short_hash(o)}", dict(o))
        for name, o in zip(names, overrides_list)
    ]


# ----------------------------------------------------------------------------------------------------------------
# Runs


@dataclass(frozen=True)
class Run:
    """One recipe invocation: a combination at one seed, with its config and command line."""

    combination: Combination
    seed: int
    seed_dir: Path
    config: dict[str, Any]
    command: list[str]

    @property
    def label(self) -> str:
        """``<combination>/seed_<N>``, the run's folder relative to the sweep's output folder."""
        return f"{self.combination.name}/seed_{self.seed}"

    @property
    def results_path(self) -> Path:
        """``<seed_dir>/results.json``."""
        return self.seed_dir / RESULTS

    @property
    def log_path(self) -> Path:
        """``<seed_dir>/log.txt``, the run's stdout and stderr."""
        return self.seed_dir / LOG


@dataclass
class SweepPlan:
    """Everything a sweep does, computed before anything is written (see :func:`plan_sweep`)."""

    script: Path
    base_config_path: Path
    vary_path: Path
    output_dir: Path
    launcher: list[str]
    seeds: list[int]
    base_config: dict[str, Any]
    combinations: list[Combination]
    runs: list[Run] = field(default_factory=list)


def build_command(launcher: Sequence[str], script: Path, config: Path, output_dir: Path, seed: int) -> list[str]:
    """``<launcher> <script> --config <config> --output_dir <output_dir> --seed <seed>``."""
    return [*launcher, str(script), "--config", str(config), "--output_dir", str(output_dir), "--seed", str(seed)]


def plan_sweep(
    script: str | Path,
    base_config: str | Path,
    vary: str | Path,
    output_dir: str | Path,
    seeds: Sequence[int] = (0, 1, 2),
    launcher: str | Sequence[str] | None = None,
    allow_new_keys: bool = False,
) -> SweepPlan:
    """Validate the inputs and compute every combination and run (absolute paths); writes nothing.

    ``launcher`` is a command line (string, split like a shell would) or a list; ``None`` means this interpreter.
    """
    script = Path(script).resolve()
    if not script.is_file():
        raise SweepError(f"--script not found: {script}")
    base_path, vary_path = Path(base_config).resolve(), Path(vary).resolve()
    base = load_yaml(base_path, "--base_config") or {}
    if not isinstance(base, Mapping):
        raise SweepError(f"base config {base_path} must be a mapping of keys to values, got {type(base).__name__}")
    overrides = expand_vary(load_yaml(vary_path, "--vary file"), where=f"vary file {vary_path}")
    check_attributes(dict.fromkeys(k for o in overrides for k in o), base, base_path, allow_new_keys)
    if not seeds:
        raise SweepError("--seeds is empty")
    if len(set(seeds)) != len(seeds):
        raise SweepError(f"--seeds has duplicates: {list(seeds)}")
    launcher = [sys.executable] if launcher is None else launcher
    launcher = shlex.split(launcher) if isinstance(launcher, str) else list(launcher)
    if not launcher:
        raise SweepError("--launcher is empty")
    plan = SweepPlan(
        script,
        base_path,
        vary_path,
        Path(output_dir).resolve(),
        launcher,
        list(seeds),
        dict(base),
        make_combinations(overrides),
    )
    plan.runs = [_make_run(plan, combo, seed) for combo in plan.combinations for seed in plan.seeds]
    return plan


def _make_run(plan: SweepPlan, combo: Combination, seed: int) -> Run:
    """The run of ``combo`` at ``seed``: folder ``<output_dir>/<combo>/seed_<seed>``, its config and command."""
    seed_dir = plan.output_dir / combo.name / f"seed_{seed}"
    config = merge_config(plan.base_config, combo.overrides, output_dir=str(seed_dir), seed=seed)
    command = build_command(plan.launcher, plan.script, seed_dir / CONFIG, seed_dir, seed)
    return Run(combo, seed, seed_dir, config, command)


def _same_config(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two run configs are equal apart from ``output_dir`` (so a moved sweep folder still matches)."""
    return {k: v for k, v in a.items() if k != "output_dir"} == {k: v for k, v in b.items() if k != "output_dir"}


def run_state(run: Run) -> str:
    """``"todo"`` (no results.json), ``"done"``, or ``"stale"`` (results.json of a different config.yaml)."""
    if not run.results_path.is_file():
        return "todo"
    config_path = run.seed_dir / CONFIG
    if config_path.is_file():
        try:
            previous = yaml.load(config_path.read_text(), Loader=_Loader)
        except yaml.YAMLError:
            return "stale"
        if not isinstance(previous, Mapping) or not _same_config(previous, run.config):
            return "stale"
    return "done"


def pending_runs(runs: Sequence[Run], rerun: bool = False) -> list[Run]:
    """The runs to execute: all with ``rerun``, else those without results of the same config."""
    return [run for run in runs if rerun or run_state(run) != "done"]


def write_plan(plan: SweepPlan, pending: Sequence[Run], x_metric: str, y_metric: str) -> None:
    """Write the combination and seed ``config.yaml`` files and the manifest ``sweep.json``.

    Results of the runs about to execute (re-run or stale) are first renamed to ``results.previous.json`` so that
    a failing re-run never leaves old results to be collected.
    """
    for combo in plan.combinations:
        run_dir = plan.output_dir / combo.name
        dump_yaml(merge_config(plan.base_config, combo.overrides, output_dir=str(run_dir)), run_dir / CONFIG)
    for run in pending:
        if run.results_path.is_file():
            run.results_path.replace(run.seed_dir / "results.previous.json")
    for run in plan.runs:
        dump_yaml(run.config, run.seed_dir / CONFIG)
    manifest = {
        "script": str(plan.script),
        "base_config": str(plan.base_config_path),
        "vary": str(plan.vary_path),
        "launcher": plan.launcher,
        "seeds": plan.seeds,
        "x_metric": x_metric,
        "y_metric": y_metric,
        "combinations": [{"name": c.name, "attributes": c.overrides} for c in plan.combinations],
    }
    (plan.output_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")


# ----------------------------------------------------------------------------------------------------------------
# Local execution


@dataclass
class RunStatus:
    """The outcome of one run: ``status`` is ``ok``, ``failed`` or ``skipped`` (results.json already there)."""

    run: str
    combination: str
    seed: int
    status: str
    returncode: int | None = None
    log: str | None = None
    seconds: float | None = None
    reason: str | None = None


def _check_results_file(path: Path) -> str | None:
    """``None`` if ``path`` holds a JSON object, else the reason it does not."""
    if not path.is_file():
        return f"no {RESULTS} written"
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return f"{RESULTS} is not valid JSON: {err}"
    return None if isinstance(data, dict) else f"{RESULTS} is not a JSON object"


def execute_run(run: Run) -> RunStatus:
    """Run one recipe with stdout and stderr in ``<seed_dir>/log.txt``; failed if it exits non-zero or wrote no
    results.json (the log starts with the command line)."""
    run.seed_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(run.log_path, "w") as log:
        log.write(f"$ {shlex.join(run.command)}\n")
        log.flush()
        try:
            proc = subprocess.run(run.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            returncode, reason = proc.returncode, None
        except OSError as err:
            returncode, reason = None, f"could not start the command: {err}"
            log.write(f"{reason}\n")
    seconds = round(time.monotonic() - start, 3)
    if reason is None and returncode != 0:
        reason = f"exit code {returncode}"
    if reason is None:
        reason = _check_results_file(run.results_path)
    status = "ok" if reason is None else "failed"
    return RunStatus(run.label, run.combination.name, run.seed, status, returncode, str(run.log_path), seconds, reason)


def write_status(path: Path, statuses: Sequence[RunStatus]) -> None:
    """Write ``sweep_status.json``: counts per status and one entry per run."""
    counts = {s: sum(st.status == s for st in statuses) for s in ("ok", "failed", "skipped")}
    data = {**counts, "runs": [asdict(s) for s in statuses]}
    path.write_text(json.dumps(data, indent=2) + "\n")


def execute_sweep(plan: SweepPlan, pending: Sequence[Run]) -> list[RunStatus]:
    """Run the pending runs one after the other with a progress bar, keeping ``sweep_status.json`` up to date
    after every run (so an interrupted sweep leaves an accurate record); other runs are recorded as skipped."""
    from tqdm import tqdm

    todo = {run.label for run in pending}
    statuses: list[RunStatus] = []
    status_path = plan.output_dir / STATUS
    with tqdm(total=len(plan.runs), desc="sweep", unit="run", dynamic_ncols=True) as bar:
        for run in plan.runs:
            if run.label not in todo:
                statuses.append(RunStatus(run.label, run.combination.name, run.seed, "skipped", log=str(run.log_path)))
                bar.update()
                continue
            bar.set_postfix_str(run.label)
            status = execute_run(run)
            statuses.append(status)
            if status.status == "failed":
                bar.write(f"FAILED {run.label}: {status.reason} (log: {status.log})")
            write_status(status_path, statuses)
            bar.update()
    write_status(status_path, statuses)
    return statuses


def _log_tail(path: str | None, lines: int = 5) -> list[str]:
    """The last ``lines`` lines of a run's log, without its first line (the command); empty if unreadable."""
    try:
        return Path(path).read_text(errors="replace").splitlines()[1:][-lines:] if path else []
    except OSError:
        return []


def report_failures(statuses: Sequence[RunStatus]) -> list[RunStatus]:
    """Print every failed run (reason, log path and the log's last lines) to stderr; returns the failed runs."""
    failed = [s for s in statuses if s.status == "failed"]
    ran = [s for s in statuses if s.status != "skipped"]
    if not failed:
        print(f"all {len(ran)} runs succeeded ({len(statuses) - len(ran)} skipped: results already there)")
        return failed
    print(f"\n{len(failed)} of {len(ran)} runs FAILED:", file=sys.stderr)
    for s in failed:
        print(f"  {s.run}: {s.reason}; log: {s.log}", file=sys.stderr)
        for line in _log_tail(s.log):
            print(f"      | {line}", file=sys.stderr)
    return failed


# ----------------------------------------------------------------------------------------------------------------
# Slurm


def _slurm_directive(option: str) -> tuple[str, str]:
    """``KEY=VALUE`` (or a bare ``KEY`` flag) -> ``(key, "#SBATCH --KEY=VALUE")``; one-letter keys use ``-k VALUE``."""
    key, sep, value = option.partition("=")
    key = key.strip().lstrip("-")
    if not key:
        raise SweepError(f"--slurm_option '{option}' has no key; use KEY=VALUE, e.g. partition=gpu")
    if key == "array":
        raise SweepError("--slurm_option array=... is not allowed: the sweep sets the array range")
    if len(key) == 1:
        return key, f"#SBATCH -{key} {value}" if sep else f"#SBATCH -{key}"
    return key, f"#SBATCH --{key}={value}" if sep else f"#SBATCH --{key}"


def sbatch_script(
    runs_file: Path, n_runs: int, log_dir: Path, workdir: Path, options: Sequence[str] = (), max_parallel: int = 0
) -> str:
    """The text of a Slurm array script running line ``$SLURM_ARRAY_TASK_ID + 1`` of ``runs_file``.

    ``options`` are ``KEY=VALUE`` strings becoming ``#SBATCH --KEY=VALUE``; they override the defaults for
    ``job-name``, ``output`` and ``chdir`` (``workdir``, so relative paths in the launcher keep working).
    ``max_parallel > 0`` limits the number of tasks running at once (``--array=0-N%M``).
    """
    user = dict(_slurm_directive(o) for o in options)
    array = f"0-{n_runs - 1}" + (f"%{max_parallel}" if max_parallel > 0 else "")
    defaults = {
        "job-name": f"#SBATCH --job-name=sweep-{runs_file.parent.name}",
        "output": f"#SBATCH --output={log_dir}/%A_%a.out",
        "chdir": f"#SBATCH --chdir={workdir}",
    }
    directives = [f"#SBATCH --array={array}", *(v for k, v in defaults.items() if k not in user), *user.values()]
    quoted = shlex.quote(str(runs_file))
    body = [
        "set -euo pipefail",
        f"RUNS_FILE={quoted}",
        "LINE=$((SLURM_ARRAY_TASK_ID + 1))",
        'CMD=$(sed -n "${LINE}p" "$RUNS_FILE")',
        'if [ -z "$CMD" ]; then echo "no line $LINE in $RUNS_FILE" >&2; exit 1; fi',
        'echo "task $SLURM_ARRAY_TASK_ID: $CMD"',
        'eval "$CMD"',
    ]
    header = [
        "#!/bin/bash",
        f"# Written by recipes/sweep.py: {n_runs} runs, one per line of {runs_file.name}.",
        "# Collect afterwards with: python recipes/sweep.py --output_dir <this folder> --collect_only",
    ]
    return "\n".join([*header, *directives, "", *body]) + "\n"


def write_slurm(plan: SweepPlan, pending: Sequence[Run], options: Sequence[str], max_parallel: int = 0) -> Path:
    """Write ``sweep_runs.txt`` (one command per pending run) and ``sweep.sbatch``; returns the sbatch path."""
    runs_file = plan.output_dir / RUNS_FILE
    runs_file.write_text("".join(shlex.join(run.command) + "\n" for run in pending))
    log_dir = plan.output_dir / "slurm_logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    sbatch = plan.output_dir / SBATCH_FILE
    sbatch.write_text(sbatch_script(runs_file, len(pending), log_dir, Path.cwd(), options, max_parallel))
    return sbatch


# ----------------------------------------------------------------------------------------------------------------
# Collect, summarise, Pareto front, plot


def flatten_metrics(data: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric leaves of a (nested) JSON object keyed by dotted path; booleans, strings and lists are left out."""
    flat: dict[str, float] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, prefix=f"{full}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[full] = float(value)
    return flat


def pareto_front(points: Sequence[tuple[float, float]], maximize_x: bool = True, maximize_y: bool = True) -> list[int]:
    """Indices (ascending) of the Pareto-optimal points of a 2-D set.

    With both coordinates maximised, a point is dominated iff another point is ``>=`` in both coordinates and
    ``>`` in at least one; so identical points are all optimal or all dominated. ``maximize_x/maximize_y=False``
    minimises that coordinate. Points with a NaN coordinate are never optimal and dominate nothing.
    How: sort by x (best first) and sweep, keeping the best y among strictly better x; within a group of equal x
    only the points with the group's best y can be optimal, and they are iff that y beats the running best.
    """
    sx, sy = (1.0 if maximize_x else -1.0), (1.0 if maximize_y else -1.0)
    valid = [(sx * x, sy * y, i) for i, (x, y) in enumerate(points) if not (math.isnan(x) or math.isnan(y))]
    valid.sort(key=lambda p: -p[0])
    front: list[int] = []
    best_y = -math.inf
    for _, group in itertools.groupby(valid, key=lambda p: p[0]):
        group = list(group)
        top = max(p[1] for p in group)
        if top > best_y:
            front.extend(p[2] for p in group if p[1] == top)
            best_y = top
    return sorted(front)


def load_manifest(output_dir: Path) -> dict[str, Any]:
    """Read ``<output_dir>/sweep.json`` (written when a sweep is run or prepared for Slurm)."""
    path = output_dir / MANIFEST
    if not path.is_file():
        raise SweepError(
            f"no {MANIFEST} in {output_dir}: not a sweep folder (run the sweep, or prepare it with --slurm, first)"
        )
    return json.loads(path.read_text())


def _seed_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """``(seed, folder)`` for every ``seed_<N>`` folder of a combination, by seed."""
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := SEED_DIR_PATTERN.match(p.name))]
    return sorted(found)


def read_results(seed_dir: Path, required: Sequence[str]) -> dict[str, float]:
    """The flattened numeric metrics of ``<seed_dir>/results.json``; an error names the folder and a missing key."""
    path = seed_dir / RESULTS
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SweepError(f"run folder {seed_dir}: {RESULTS} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise SweepError(f"run folder {seed_dir}: {RESULTS} is not a JSON object")
    metrics = flatten_metrics(data)
    for key in required:
        if key not in metrics:
            available = ", ".join(sorted(metrics)) or "(none)"
            raise SweepError(
                f"run folder {seed_dir}: {RESULTS} has no numeric metric '{key}'; available keys: {available}"
            )
    return metrics


def collect_rows(output_dir: Path, manifest: Mapping[str, Any], required: Sequence[str]) -> tuple[list, list]:
    """Read every ``seed_*/results.json`` of the manifest's combinations.

    Returns ``(rows, missing)``: one row ``{"combination", "attributes", "seed", "metrics"}`` per results file,
    and the ``<combination>/seed_<N>`` labels of the manifest's seeds that have no results.
    """
    rows, missing = [], []
    for combo in manifest["combinations"]:
        found = _seed_dirs(output_dir / combo["name"])
        with_results = {seed for seed, d in found if (d / RESULTS).is_file()}
        for seed, seed_dir in found:
            if seed in with_results:
                metrics = read_results(seed_dir, required)
                rows.append(
                    {"combination": combo["name"], "attributes": combo["attributes"], "seed": seed, "metrics": metrics}
                )
        expected = set(manifest.get("seeds", [])) | {seed for seed, _ in found}
        missing.extend(f"{combo['name']}/seed_{s}" for s in sorted(expected - with_results))
    return rows, missing


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1) of ``values``; the std is ``None`` for a single value."""
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def summarise(
    rows: Sequence[Mapping[str, Any]],
    combinations: Sequence[Mapping[str, Any]],
    x_metric: str,
    y_metric: str,
    minimize_x: bool = False,
    minimize_y: bool = False,
) -> list[dict[str, Any]]:
    """One entry per combination with results: attributes, seeds, ``n_seeds``, per metric ``{mean, std, n}``
    (std: sample std, ddof=1, ``None`` for one value) and ``pareto`` (optimal by the means of x and y)."""
    summary = []
    for combo in combinations:
        mine = [r for r in rows if r["combination"] == combo["name"]]
        if not mine:
            continue
        metric_names = list(dict.fromkeys(k for r in mine for k in r["metrics"]))
        metrics = {}
        for name in metric_names:
            values = [r["metrics"][name] for r in mine if name in r["metrics"]]
            mean, std = _mean_std(values)
            metrics[name] = {"mean": mean, "std": std, "n": len(values)}
        entry = {"combination": combo["name"], "attributes": combo["attributes"], "seeds": [r["seed"] for r in mine]}
        summary.append({**entry, "n_seeds": len(mine), "metrics": metrics, "pareto": False})
    points = [(s["metrics"][x_metric]["mean"], s["metrics"][y_metric]["mean"]) for s in summary]
    for i in pareto_front(points, maximize_x=not minimize_x, maximize_y=not minimize_y):
        summary[i]["pareto"] = True
    return summary


def _cell(value: Any) -> Any:
    """A CSV cell: ``None``/NaN -> empty, lists and mappings -> JSON text, anything else as is."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


def _write_csv(path: Path, columns: Sequence[str], records: Iterable[Mapping[str, Any]]) -> None:
    """Write ``records`` (mappings) with the given column order; missing cells stay empty."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for record in records:
            writer.writerow([_cell(record.get(c)) for c in columns])


def write_runs_csv(path: Path, rows: Sequence[Mapping[str, Any]], attributes: Sequence[str]) -> None:
    """``runs.csv``: combination, attributes, seed and every numeric metric (dotted keys) of each run."""
    metric_names = list(dict.fromkeys(k for r in rows for k in r["metrics"]))
    records = [{"combination": r["combination"], **r["attributes"], "seed": r["seed"], **r["metrics"]} for r in rows]
    _write_csv(path, ["combination", *attributes, "seed", *metric_names], records)


def write_summary_csv(path: Path, summary: Sequence[Mapping[str, Any]], attributes: Sequence[str]) -> None:
    """``summary.csv``: combination, attributes, n_seeds, pareto, then ``<metric>_mean`` and ``<metric>_std``."""
    metric_names = list(dict.fromkeys(k for s in summary for k in s["metrics"]))
    columns = ["combination", *attributes, "n_seeds", "pareto"]
    columns += [f"{m}_{stat}" for m in metric_names for stat in ("mean", "std")]
    records = []
    for s in summary:
        stats = {f"{m}_{stat}": v[stat] for m, v in s["metrics"].items() for stat in ("mean", "std")}
        records.append(
            {
                "combination": s["combination"],
                **s["attributes"],
                "n_seeds": s["n_seeds"],
                "pareto": s["pareto"],
                **stats,
            }
        )
    _write_csv(path, columns, records)


def _json_safe(value: Any) -> Any:
    """``value`` with NaN/inf floats replaced by ``None`` (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def plot_pareto(
    summary: Sequence[Mapping[str, Any]],
    x_metric: str,
    y_metric: str,
    path: Path,
    minimize_x: bool = False,
    minimize_y: bool = False,
) -> None:
    """Save the Pareto plot: each combination's mean with ±std error bars (0 for one seed) in both axes, numbered
    (the key beside the axes names them, so overlapping points stay readable); the Pareto-optimal ones in red,
    joined by the step line bounding the region they dominate (Agg backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 6))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.06, 0.1, 0.44, 0.82))
    key = []
    for number, s in enumerate(summary, start=1):
        x, y = s["metrics"][x_metric], s["metrics"][y_metric]
        color = "tab:red" if s["pareto"] else "tab:blue"
        ax.errorbar(
            x["mean"],
            y["mean"],
            xerr=x["std"] or 0.0,
            yerr=y["std"] or 0.0,
            fmt="o",
            color=color,
            ecolor=color,
            alpha=0.85,
            capsize=3,
            markersize=7 if s["pareto"] else 5,
        )
        ax.annotate(str(number), (x["mean"], y["mean"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        key.append(f"{number:>2}  {s['combination']}" + ("  *" if s["pareto"] else ""))
    front = sorted((s["metrics"][x_metric]["mean"], s["metrics"][y_metric]["mean"]) for s in summary if s["pareto"])
    if front:
        xs, ys = zip(*front)
        ax.step(
            xs,
            ys,
            where="pre" if not minimize_x else "post",
            color="tab:red",
            linewidth=1.5,
            label="Pareto front",
            zorder=0,
        )
    ax.plot([], [], "o", color="tab:blue", label="combination (mean ± std over seeds)")
    better = {False: "higher is better", True: "lower is better"}
    ax.set_xlabel(f"{x_metric} ({better[minimize_x]})")
    ax.set_ylabel(f"{y_metric} ({better[minimize_y]})")
    ax.set_title(f"{y_metric} vs {x_metric}: {len(summary)} combinations")
    ax.margins(0.12)  # room for the labels
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.text(1.03, 1.0, "\n".join(["combinations (* Pareto-optimal)", *key]), transform=ax.transAxes, va="top",
            fontsize=7, family="monospace")  # fmt: skip
    fig.savefig(path, dpi=150)


def collect(
    output_dir: str | Path,
    x_metric: str = "task",
    y_metric: str = "proxy",
    minimize_x: bool = False,
    minimize_y: bool = False,
) -> dict[str, Any]:
    """Collect a sweep folder: write ``runs.csv``, ``summary.csv``, ``summary.json`` and ``pareto.png``.

    Every ``seed_*/results.json`` of the manifest's combinations is read (each must have ``x_metric`` and
    ``y_metric``); runs without results are listed under ``missing``. Returns the ``summary.json`` content.
    """
    output_dir = Path(output_dir).resolve()
    manifest = load_manifest(output_dir)
    rows, missing = collect_rows(output_dir, manifest, [x_metric, y_metric])
    if not rows:
        expected = len(manifest["combinations"]) * len(manifest.get("seeds", []))
        raise SweepError(f"no {RESULTS} found under {output_dir} ({expected} runs expected); nothing to collect")
    combinations = manifest["combinations"]
    attributes = list(dict.fromkeys(k for c in combinations for k in c["attributes"]))
    summary = summarise(rows, combinations, x_metric, y_metric, minimize_x, minimize_y)
    write_runs_csv(output_dir / "runs.csv", rows, attributes)
    write_summary_csv(output_dir / "summary.csv", summary, attributes)
    plot_pareto(summary, x_metric, y_metric, output_dir / "pareto.png", minimize_x, minimize_y)
    result = {
        "x_metric": x_metric,
        "y_metric": y_metric,
        "minimize_x": minimize_x,
        "minimize_y": minimize_y,
        "std": "sample standard deviation (ddof=1); null for a single seed",
        "n_runs": len(rows),
        "missing": missing,
        "pareto": [s["combination"] for s in summary if s["pareto"]],
        "combinations": summary,
    }
    (output_dir / "summary.json").write_text(json.dumps(_json_safe(result), indent=2) + "\n")
    return result


def print_summary(result: Mapping[str, Any], output_dir: Path) -> None:
    """Print the summary table (``*`` marks the Pareto front), missing runs and the files written."""
    x, y = result["x_metric"], result["y_metric"]
    rows = [("combination", "n", f"{x} mean ± std", f"{y} mean ± std", "pareto")]
    for s in result["combinations"]:
        cells = [
            f"{m['mean']:.4g} ± {m['std']:.2g}" if m["std"] is not None else f"{m['mean']:.4g}"
            for m in (s["metrics"][x], s["metrics"][y])
        ]
        rows.append((s["combination"], str(s["n_seeds"]), *cells, "*" if s["pareto"] else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if result["missing"]:
        print(f"{len(result['missing'])} runs have no {RESULTS}: {', '.join(result['missing'])}", file=sys.stderr)
    names = ", ".join(("runs.csv", "summary.csv", "summary.json", "pareto.png"))
    print(f"wrote {names} to {output_dir}")


# ----------------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (default ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(
        prog="sweep.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("--script", help="Recipe script to run (required unless --collect_only).")
    parser.add_argument("--base_config", help="Base YAML config of the recipe (required unless --collect_only).")
    parser.add_argument("--vary", help="YAML/JSON file of attributes to vary (required unless --collect_only).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Seeds to run (default: 0 1 2).")
    parser.add_argument("--output_dir", required=True, help="Sweep folder: one sub-folder per combination.")
    parser.add_argument("--x_metric", default="task", help="Metric on the x axis (dotted key; default: task).")
    parser.add_argument("--y_metric", default="proxy", help="Metric on the y axis (dotted key; default: proxy).")
    parser.add_argument("--minimize_x", action="store_true", help="Lower x is better (default: higher).")
    parser.add_argument("--minimize_y", action="store_true", help="Lower y is better (default: higher).")
    parser.add_argument(
        "--launcher",
        help="Command that runs the script, e.g. 'accelerate launch --config_file ...' (default: this "
        "Python interpreter).",
    )
    parser.add_argument("--allow_new_keys", action="store_true", help="Allow attributes not in the base config.")
    parser.add_argument("--rerun", action="store_true", help="Re-run runs whose results.json already exists.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--collect_only", action="store_true", help="Do not run: collect results and plot.")
    mode.add_argument("--dry_run", action="store_true", help="Print the commands; write and run nothing.")
    mode.add_argument("--slurm", action="store_true", help="Write sweep_runs.txt and sweep.sbatch; run nothing.")
    parser.add_argument(
        "--slurm_option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Extra '#SBATCH --KEY=VALUE' line (repeatable), e.g. partition=gpu, time=04:00:00, gpus=1.",
    )
    parser.add_argument("--slurm_max_parallel", type=int, default=0, help="At most this many array tasks at once.")
    return parser.parse_args(argv)


def _require_inputs(args: argparse.Namespace) -> None:
    """Raise if one of the inputs needed to plan a sweep was not given."""
    for flag in ("script", "base_config", "vary"):
        if not getattr(args, flag):
            raise SweepError(f"--{flag} is required (unless --collect_only)")


def _dry_run(plan: SweepPlan, pending: Sequence[Run]) -> None:
    """Print every run's command, marking those that would be skipped."""
    todo = {run.label for run in pending}
    for run in plan.runs:
        prefix = "" if run.label in todo else "# skip (results.json exists): "
        print(prefix + shlex.join(run.command))
    print(f"# dry run: {len(pending)} of {len(plan.runs)} runs would execute; nothing was written")


def _collect_and_print(args: argparse.Namespace, output_dir: Path) -> dict[str, Any]:
    """Collect ``output_dir`` with the metric options of ``args`` and print the summary."""
    result = collect(output_dir, args.x_metric, args.y_metric, args.minimize_x, args.minimize_y)
    print_summary(result, output_dir)
    return result


def run_sweep(args: argparse.Namespace) -> int:
    """Do what the parsed command line asks; returns the exit status (1 if a run failed)."""
    if args.collect_only:
        _collect_and_print(args, Path(args.output_dir).resolve())
        return 0
    _require_inputs(args)
    plan = plan_sweep(
        args.script, args.base_config, args.vary, args.output_dir, args.seeds, args.launcher, args.allow_new_keys
    )
    pending = pending_runs(plan.runs, rerun=args.rerun)
    if args.dry_run:
        _dry_run(plan, pending)
        return 0
    if args.slurm:
        for option in args.slurm_option:  # validate before writing anything
            _slurm_directive(option)
        if not pending:
            print(f"all {len(plan.runs)} runs have results; nothing to submit (--rerun to redo, --collect_only)")
            return 0
        write_plan(plan, pending, args.x_metric, args.y_metric)
        sbatch = write_slurm(plan, pending, args.slurm_option, args.slurm_max_parallel)
        print(f"wrote {len(pending)} commands to {plan.output_dir / RUNS_FILE} and the array script {sbatch}")
        print(f"submit with:\n  sbatch {shlex.quote(str(sbatch))}")
        collect_cmd = shlex.join([sys.executable, __file__, "--output_dir", str(plan.output_dir), "--collect_only"])
        print(f"then collect with:\n  {collect_cmd}")
        return 0
    if shutil.which(plan.launcher[0]) is None:
        raise SweepError(f"launcher '{plan.launcher[0]}' not found (--launcher {shlex.join(plan.launcher)})")
    write_plan(plan, pending, args.x_metric, args.y_metric)
    statuses = execute_sweep(plan, pending)
    try:
        _collect_and_print(args, plan.output_dir)
    finally:  # the failures come last, even when collecting fails
        failed = report_failures(statuses)
    if failed:
        print(f"sweep finished with {len(failed)} failed runs (see {plan.output_dir / STATUS})", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: parse ``argv``, run, and turn a :class:`SweepError` into a message and status 2."""
    args = parse_args(argv)
    try:
        return run_sweep(args)
    except SweepError as err:
        print(f"sweep.py: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
