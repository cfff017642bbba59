"""A sweep's plan: configs (YAML), the vary file's combinations, their folders and the run commands."""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import re
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trl_ext.common.errors import UserInputError

MANIFEST = "sweep.json"
STATUS = "sweep_status.json"
RESULTS = "results.json"
CONFIG = "config.yaml"
LOG = "log.txt"
MAX_NAME_LENGTH = 100
RESERVED_KEYS = ("output_dir", "seed")  # set by the sweep itself for every run
VARY_FORM_KEYS = ("grid", "runs", "slurm")  # the keys of the mapping form of a vary file
SEED_DIR_PATTERN = re.compile(r"^seed_(-?\d+)$")
RUN_ID_LENGTH = 12  # hex digits of the SHA-256 of a run's config (:func:`run_id`)


class SweepError(UserInputError):
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


def _mapping_form(vary: Any) -> bool:
    """Whether ``vary`` is the mapping form ``{grid: ..., runs: ..., slurm: ...}`` (rather than a plain grid)."""
    return isinstance(vary, Mapping) and bool(vary) and set(vary) <= set(VARY_FORM_KEYS)


def expand_vary(vary: Any, where: str = "vary file") -> list[dict[str, Any]]:
    """Expand a vary specification into the list of attribute overrides, one per combination, in a fixed order.

    Accepted forms: ``{attr: [values], ...}`` (grid product; a scalar is a single value), ``{grid: {...},
    runs: [{...}, ...]}`` (each explicit run combined with each grid point; run keys first in the result),
    or a bare list of runs. An attribute in both a run and the grid, an empty list and a repeated
    combination are errors naming the item. The mapping form's ``slurm`` key (sbatch defaults) does not change
    the combinations; :func:`slurm_defaults` reads it.
    """
    if vary is None or (isinstance(vary, (Mapping, list)) and not vary):
        raise SweepError(f"{where} is empty: give attributes to vary")
    if isinstance(vary, list):
        grid, runs = None, vary
    elif _mapping_form(vary):
        grid, runs = vary.get("grid"), vary.get("runs")
        if not grid and runs is None:
            raise SweepError(f"{where} is empty: 'grid' has no attributes and there are no 'runs'")
    elif isinstance(vary, Mapping):
        if isinstance(vary.get("slurm"), Mapping):
            raise SweepError(
                f"{where}: 'slurm' (the sbatch defaults) goes beside 'grid' and 'runs': put the attributes to "
                "vary under 'grid:'"
            )
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


def slurm_option(key: Any, value: Any, where: str) -> tuple[str, str | bool]:
    """One sbatch option as submitit's ``slurm_additional_parameters`` takes it: ``(key, value)``.

    The key loses surrounding spaces and leading ``-`` and has ``-`` replaced by ``_`` (``--cpus-per-task`` ->
    ``cpus_per_task``, so it meets submitit's own parameter of that name); the value is a string (a number is
    written out, ``32`` -> ``"32"``) or ``True`` for a bare flag such as ``exclusive``. Both ``--slurm_option``
    and a vary file's ``slurm:`` mapping go through here; ``where`` names the option in the errors.

    Raises:
        SweepError: an empty key, ``array`` (the sweep submits one array job itself) or a value that is not a
            string, a number or ``true``.
    """
    name = str(key).strip().lstrip("-")
    if not name:
        raise SweepError(f"{where} has no key: give an sbatch option such as partition, time, gpus or cpus_per_task")
    name = name.replace("-", "_")
    if name == "array":
        raise SweepError(f"{where} is not allowed: the sweep submits one array job itself (one task per run)")
    if value is True or isinstance(value, str):
        return name, value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return name, str(value)
    raise SweepError(
        f"{where}: the value must be a string, a number or true (a bare flag), got {value!r} ({type(value).__name__})"
    )


def slurm_defaults(vary: Any, where: str = "vary file") -> dict[str, str | bool]:
    """The sbatch defaults of a vary file: its ``slurm:`` mapping (mapping form only), each entry normalised by
    :func:`slurm_option`; ``{}`` without one (or for ``slurm:`` with nothing under it).

    ``--slurm_option KEY=VALUE`` overrides the default of the same key (:func:`trl_ext.sweep.slurm.slurm_parameters`).

    Raises:
        SweepError: ``slurm`` is not a mapping, an entry is invalid (see :func:`slurm_option`), or two entries
            are the same option once normalised (``cpus-per-task`` and ``cpus_per_task``); the message names
            ``where`` and the key.
    """
    if not _mapping_form(vary) or vary.get("slurm") is None:
        return {}
    slurm = vary["slurm"]
    if not isinstance(slurm, Mapping):
        raise SweepError(
            f"{where}: 'slurm' must be a mapping of sbatch options (e.g. {{cpus_per_task: 32, mem: 64G, gpus: 1}}), "
            f"got {type(slurm).__name__}"
        )
    defaults: dict[str, str | bool] = {}
    for key, value in slurm.items():
        name, text = slurm_option(key, value, f"{where}: slurm option '{key}'")
        if name in defaults:
            raise SweepError(f"{where}: slurm option '{key}' is set twice (as '{name}')")
        defaults[name] = text
    return defaults


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

    @property
    def run_id(self) -> str:
        """The run's id: :func:`run_id` of its (resolved) config."""
        return run_id(self.config)


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
    slurm_defaults: dict[str, str | bool] = field(default_factory=dict)  # the vary file's ``slurm:`` (normalised)


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
    The vary file's ``slurm:`` defaults are validated here too (:func:`slurm_defaults`), with or without
    ``--slurm``, and kept in :attr:`SweepPlan.slurm_defaults`.
    """
    script = Path(script).resolve()
    if not script.is_file():
        raise SweepError(f"--script not found: {script}")
    base_path, vary_path = Path(base_config).resolve(), Path(vary).resolve()
    base = load_yaml(base_path, "--base_config") or {}
    if not isinstance(base, Mapping):
        raise SweepError(f"base config {base_path} must be a mapping of keys to values, got {type(base).__name__}")
    vary_spec = load_yaml(vary_path, "--vary file")
    overrides = expand_vary(vary_spec, where=f"vary file {vary_path}")
    defaults = slurm_defaults(vary_spec, where=f"vary file {vary_path}")  # checked even when not submitting
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
        slurm_defaults=defaults,
    )
    plan.runs = [_make_run(plan, combo, seed) for combo in plan.combinations for seed in plan.seeds]
    return plan


def _make_run(plan: SweepPlan, combo: Combination, seed: int) -> Run:
    """The run of ``combo`` at ``seed``: folder ``<output_dir>/<combo>/seed_<seed>``, its config (base config, then
    the combination's attributes, then ``output_dir`` and ``seed``, then the derived fields resolved:
    :func:`resolve_references`) and command."""
    seed_dir = plan.output_dir / combo.name / f"seed_{seed}"
    merged = merge_config(plan.base_config, combo.overrides, output_dir=str(seed_dir), seed=seed)
    from trl_ext.sweep.references import resolve_references  # (it raises this module's SweepError)

    config = resolve_references(merged, where=f"run {combo.name}/seed_{seed}")
    command = build_command(plan.launcher, plan.script, seed_dir / CONFIG, seed_dir, seed)
    return Run(combo, seed, seed_dir, config, command)


def run_id(config: Mapping[str, Any]) -> str:
    """A run's id: the first 12 hex digits of the SHA-256 of the canonical JSON of its config without
    ``output_dir`` (sorted keys, no spaces). The same config gives the same id wherever the sweep folder is; two
    seeds of a combination, or two combinations, give different ids."""
    identity = {k: v for k, v in config.items() if k != "output_dir"}
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:RUN_ID_LENGTH]


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

    A combination's ``config.yaml`` keeps the ``${...}`` references as written (it has no seed to resolve them
    with); each seed's ``config.yaml`` is the run's config, references resolved.

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
