"""Collecting a sweep: ``results.json`` per run into ``runs.csv``, ``summary.csv``/``.json`` and the Pareto plot."""

from __future__ import annotations

import csv
import importlib.util
import inspect
import itertools
import json
import math
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trl_ext.sweep.plan import CONFIG, MANIFEST, RESULTS, SEED_DIR_PATTERN, SweepError, load_yaml, run_id

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# ----------------------------------------------------------------------------------------------------------------
# Collect, summarise, Pareto front, plot


# Top-level keys of ``results.json`` that identify a run rather than measure it: a recipe may echo its ``--seed``
# (recipes/selective_generalisation.py does), but the run's seed is its ``seed_<N>`` folder, never a metric to average;
# ``run_id`` and ``timestamp`` are added by the sweep when it records a run (trl_ext.sweep.run.stamp_results).
NON_METRIC_KEYS = frozenset({"seed", "run_id", "timestamp"})
PLOT_FUNCTION = "plot"
"""The function a ``--plotting_path`` script defines: ``plot(results, output_dir)`` (:func:`run_plotting_hook`)."""


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


def _load_results(seed_dir: Path) -> dict[str, Any]:
    """``<seed_dir>/results.json`` as a dict; an error names the folder."""
    try:
        data = json.loads((seed_dir / RESULTS).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SweepError(f"run folder {seed_dir}: {RESULTS} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise SweepError(f"run folder {seed_dir}: {RESULTS} is not a JSON object")
    return data


def run_identity(seed_dir: Path, data: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``(run_id, timestamp)`` of a run from its ``results.json`` content ``data``. Results the sweep did not record
    (written by hand, or by a sweep older than these keys) have no timestamp (``None``), and their run id is computed
    from ``<seed_dir>/config.yaml`` (:func:`~trl_ext.sweep.plan.run_id`; ``None`` without a readable one)."""
    rid, timestamp = data.get("run_id"), data.get("timestamp")
    if not isinstance(rid, str):
        rid = None
        try:
            config = load_yaml(seed_dir / CONFIG, "run config")
        except SweepError:
            config = None
        if isinstance(config, Mapping):
            rid = run_id(config)
    return rid, timestamp if isinstance(timestamp, str) else None


def read_results(seed_dir: Path, required: Sequence[str], data: Mapping[str, Any] | None = None) -> dict[str, float]:
    """The flattened numeric metrics of ``<seed_dir>/results.json`` (or of its content ``data``, already read),
    without the :data:`NON_METRIC_KEYS` (``seed``, ``run_id``, ``timestamp``); an error names the folder and a
    missing key."""
    data = _load_results(seed_dir) if data is None else data
    metrics = flatten_metrics({k: v for k, v in data.items() if k not in NON_METRIC_KEYS})
    for key in required:
        if key not in metrics:
            available = ", ".join(sorted(metrics)) or "(none)"
            raise SweepError(
                f"run folder {seed_dir}: {RESULTS} has no numeric metric '{key}'; available keys: {available}"
            )
    return metrics


def collect_rows(output_dir: Path, manifest: Mapping[str, Any], required: Sequence[str]) -> tuple[list, list]:
    """Read every ``seed_*/results.json`` of the manifest's combinations.

    Returns ``(rows, missing)``: one row ``{"combination", "attributes", "seed", "run_id", "timestamp", "metrics"}``
    per results file (:func:`run_identity`), and the ``<combination>/seed_<N>`` labels of the manifest's seeds that
    have no results.
    """
    rows, missing = [], []
    for combo in manifest["combinations"]:
        found = _seed_dirs(output_dir / combo["name"])
        with_results = {seed for seed, d in found if (d / RESULTS).is_file()}
        for seed, seed_dir in found:
            if seed in with_results:
                data = _load_results(seed_dir)
                metrics = read_results(seed_dir, required, data)
                rid, timestamp = run_identity(seed_dir, data)
                rows.append(
                    {
                        "combination": combo["name"],
                        "attributes": combo["attributes"],
                        "seed": seed,
                        "run_id": rid,
                        "timestamp": timestamp,
                        "metrics": metrics,
                    }
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
    """``runs.csv``: combination, attributes, seed, run_id, timestamp and every numeric metric (dotted keys) of each
    run."""
    metric_names = list(dict.fromkeys(k for r in rows for k in r["metrics"]))
    identity = ("seed", "run_id", "timestamp")
    records = [
        {"combination": r["combination"], **r["attributes"], **{k: r.get(k) for k in identity}, **r["metrics"]}
        for r in rows
    ]
    _write_csv(path, ["combination", *attributes, *identity, *metric_names], records)


def write_summary_csv(path: Path, summary: Sequence[Mapping[str, Any]], attributes: Sequence[str]) -> None:
    """``summary.csv``: combination, attributes, n_seeds, seeds (a JSON list), pareto, then ``<metric>_mean`` and
    ``<metric>_std`` for every metric."""
    metric_names = list(dict.fromkeys(k for s in summary for k in s["metrics"]))
    columns = ["combination", *attributes, "n_seeds", "seeds", "pareto"]
    columns += [f"{m}_{stat}" for m in metric_names for stat in ("mean", "std")]
    records = []
    for s in summary:
        stats = {f"{m}_{stat}": v[stat] for m, v in s["metrics"].items() for stat in ("mean", "std")}
        records.append(
            {
                "combination": s["combination"],
                **s["attributes"],
                "n_seeds": s["n_seeds"],
                "seeds": s["seeds"],
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


# The plot's own size (inches); the figure adds the key of combinations beside or below it, sized to the key.
PLOT_SIZE = (7.0, 5.5)
KEY_FONT_SIZE = 7
KEY_PAD = 0.15  # inches around the key


def pareto_figure(
    summary: Sequence[Mapping[str, Any]],
    x_metric: str,
    y_metric: str,
    minimize_x: bool = False,
    minimize_y: bool = False,
) -> Figure:
    """The Pareto plot as a matplotlib figure (Agg canvas): each combination's mean with ±std error bars (0 for one
    seed) in both axes, numbered; the Pareto-optimal ones in red, joined by the step line bounding the region they
    dominate; a legend inside the axes.

    Layout: ``fig.axes[0]`` is the plot and ``fig.texts[0]`` the key naming the numbered combinations. The
    figure is the plot (``PLOT_SIZE`` inches) plus a panel exactly as large as the key's text (``KEY_PAD`` around
    it): beside the plot when the key is no wider for its height than the plot (many combinations), below it
    otherwise (few or long names), whichever leaves the plot the larger share of the figure. A constrained layout
    fits the plot and its labels into the rest, so no part of the figure is left blank for the key.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure()
    FigureCanvasAgg(fig)
    lines = [f"{n:>2}  {s['combination']}" + ("  *" if s["pareto"] else "") for n, s in enumerate(summary, start=1)]
    key = fig.text(
        0.0, 1.0, "\n".join(["combinations (* Pareto-optimal)", *lines]), va="top", ha="left",
        fontsize=KEY_FONT_SIZE, family="monospace",
    )  # fmt: skip
    # the key's extent in inches does not depend on the figure's size: measure it, then size the figure around it
    extent = key.get_window_extent(renderer=fig.canvas.get_renderer())
    key_w, key_h = extent.width / fig.dpi + 2 * KEY_PAD, extent.height / fig.dpi + 2 * KEY_PAD
    plot_w, plot_h = PLOT_SIZE
    if key_w * plot_h <= key_h * plot_w:  # beside: the plot keeps plot_w / (plot_w + key_w) of the figure
        width, height = plot_w + key_w, max(plot_h, key_h)
        plot_rect = (0.0, 0.0, plot_w / width, 1.0)
        key.set_position((plot_w / width + KEY_PAD / width, 1.0 - KEY_PAD / height))
    else:  # below: the plot keeps plot_h / (plot_h + key_h)
        width, height = max(plot_w, key_w), plot_h + key_h
        plot_rect = (0.0, key_h / height, 1.0, plot_h / height)
        key.set_position((KEY_PAD / width, (key_h - KEY_PAD) / height))
    fig.set_size_inches(width, height)
    fig.set_layout_engine("constrained", rect=plot_rect)  # lays out the axes only; the key stays where it is
    ax = fig.add_subplot()

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
    return fig


def plot_pareto(
    summary: Sequence[Mapping[str, Any]],
    x_metric: str,
    y_metric: str,
    path: Path,
    minimize_x: bool = False,
    minimize_y: bool = False,
) -> None:
    """Save :func:`pareto_figure` to ``path`` (PNG at 150 dpi, the figure's own size: no cropping)."""
    pareto_figure(summary, x_metric, y_metric, minimize_x, minimize_y).savefig(path, dpi=150)


def collect(
    output_dir: str | Path,
    x_metric: str = "task",
    y_metric: str = "proxy",
    minimize_x: bool = False,
    minimize_y: bool = False,
) -> dict[str, Any]:
    """Collect a sweep folder: write ``runs.csv``, ``summary.csv``, ``summary.json`` and ``pareto.png``.

    Every ``seed_*/results.json`` of the manifest's combinations is read (each must have ``x_metric`` and
    ``y_metric``); runs without results are listed under ``missing``. A ``seed`` key in a results file is not a
    metric (:data:`NON_METRIC_KEYS`): the seeds of a combination are its ``seeds`` list and ``n_seeds``, and no
    ``seed`` mean or std is written (nor of ``run_id`` and ``timestamp``). Returns the ``summary.json`` content: the
    settings, ``missing``, ``pareto``, ``combinations`` (one summary per combination) and ``runs`` (one row per run:
    combination, attributes, seed, run_id, timestamp, metrics), what a ``--plotting_path`` hook receives.
    """
    for flag, metric in (("x_metric", x_metric), ("y_metric", y_metric)):
        if metric in NON_METRIC_KEYS:
            raise SweepError(f"--{flag} {metric}: '{metric}' identifies a run, not a metric")
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
        "runs": rows,
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
# The plotting hook (--plotting_path)


def load_plotting_hook(path: str | Path) -> Callable[..., Any]:
    """Import the Python file ``path`` as a module (``importlib``, under the private name
    ``_trl_ext_sweep_plotting_<stem>``) and return its ``plot`` function (:data:`PLOT_FUNCTION`).

    Raises:
        SweepError: the file is missing or not a ``.py`` file, importing it raises, or it has no callable ``plot``
            taking two arguments; the message names the script.
    """
    path = Path(path).resolve()
    what = f"--plotting_path {path}"
    if not path.is_file():
        raise SweepError(f"{what}: no such file")
    if path.suffix != ".py":
        raise SweepError(f"{what}: not a Python file (.py)")
    spec = importlib.util.spec_from_file_location(f"_trl_ext_sweep_plotting_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise SweepError(f"{what}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import would (dataclasses and pickle look the module up there)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # the user's module, anything may go wrong: name the script
        del sys.modules[spec.name]
        raise SweepError(f"{what}: importing it raised {_where_raised(err, path)}") from err
    hook = getattr(module, PLOT_FUNCTION, None)
    if not callable(hook):
        defined = ", ".join(n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_"))
        raise SweepError(
            f"{what} defines no function '{PLOT_FUNCTION}(results, output_dir)' "
            f"(functions defined: {defined or 'none'})"
        )
    try:
        inspect.signature(hook).bind(None, None)
    except TypeError:
        raise SweepError(f"{what}: '{PLOT_FUNCTION}' must take two arguments: plot(results, output_dir)") from None
    except ValueError:  # no signature to inspect (a builtin): let the call tell
        pass
    return hook


def _where_raised(err: BaseException, path: Path) -> str:
    """``Type: message`` of ``err``, with the line of ``path`` it was raised from (the innermost such frame)."""
    text = f"{type(err).__name__}: {err}"
    frames = [f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename).resolve() == path]
    if isinstance(err, SyntaxError) and err.lineno is not None:
        return f"{text} (line {err.lineno})"
    return f"{text} (line {frames[-1].lineno}: {frames[-1].line})" if frames else text


def run_plotting_hook(
    path: str | Path, results: Mapping[str, Any], output_dir: str | Path, hook: Callable[..., Any] | None = None
) -> Any:
    """Call ``plot(results, output_dir)`` of the script ``path`` (:func:`load_plotting_hook`; ``hook``: the function
    already loaded from it) once, with the collected
    ``results`` (what :func:`collect` returns: the ``summary.json`` content, per-combination summaries under
    ``combinations`` and per-run rows under ``runs``) and the sweep folder as a :class:`~pathlib.Path`; returns
    what it returns.

    Raises:
        SweepError: loading fails (see :func:`load_plotting_hook`) or ``plot`` raises; the message names the script,
            the exception and the script's line it came from.
    """
    path = Path(path).resolve()
    hook = load_plotting_hook(path) if hook is None else hook
    try:
        return hook(results, Path(output_dir))
    except Exception as err:  # the user's code: name the script
        raise SweepError(f"--plotting_path {path}: {PLOT_FUNCTION}() raised {_where_raised(err, path)}") from err
