"""Output of the diversity report (docs/diversity.md, "Diversity report"): the JSON file, the figure and the
summary table printed by ``trl-ext-diversity-report``."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["JSON_NAME", "PNG_NAME", "format_summary", "plot_report", "write_report"]

JSON_NAME = "diversity_report.json"
PNG_NAME = "diversity_report.png"


# ----------------------------------------------------------------------------------------------------------------
# Output


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_summary(report: Mapping[str, Any]) -> str:
    """A compact text table: per prompt and model, distinct-1/2, mean pairwise distance, option shares and the
    cluster-mass entropy after each option (``-``: not defined, see the JSON's ``reason``)."""
    lines: list[str] = []
    labels = list(report["models"])
    width = max(6, *(len(label) for label in labels))
    for p, entry in enumerate(report["prompts"]):
        prompt = entry["prompt"] if len(entry["prompt"]) <= 70 else entry["prompt"][:67] + "..."
        lines.append(f"prompt {p}: {prompt!r}")
        header = [f"{'model':<{width}}", "   n", "dist-1", "dist-2", "pairwise"]
        for name, c in entry["concepts"].items():
            header += [f"{name}:{o}" for o in c["options"]] + [f"{name}:no_match"]
            header += [f"H({o})" for o in c["options"]]
        lines.append("  ".join(header))
        for label in labels:
            m = entry["models"][label]
            row = [
                f"{label:<{width}}",
                f"{m['num_samples']:>4}",
                f"{_fmt(m['distinct_1']):>6}",
                f"{_fmt(m['distinct_2']):>6}",
                f"{_fmt(m['mean_pairwise_distance']):>8}",
            ]
            for name, c in entry["concepts"].items():
                s = c["models"][label]
                row += [f"{_fmt(s['option_shares'][o]):>{len(name) + len(o) + 1}}" for o in c["options"]] + [
                    f"{_fmt(s['no_match_share']):>{len(name) + 9}}"
                ]
                row += [f"{_fmt(c['clusters'][o]['models'][label]['entropy']):>{len(o) + 3}}" for o in c["options"]]
            lines.append("  ".join(row))
    k = report["settings"]["n_clusters"]
    lines.append(f"entropies in nats; ln K = {math.log(k):.3f} (K = {k})")
    return "\n".join(lines)


def _grouped_bars(ax: Any, groups: Sequence[str], values: Mapping[str, Sequence[float | None]], colors: Any) -> None:
    n_models = max(len(values), 1)
    width = 0.8 / n_models
    x = np.arange(len(groups))
    for i, (label, vals) in enumerate(values.items()):
        heights = [0.0 if v is None else float(v) for v in vals]
        ax.bar(x + (i - (n_models - 1) / 2) * width, heights, width, label=label, color=colors[i % len(colors)])
    ax.set_xticks(x)
    ax.set_xticklabels(groups, fontsize=8)


def plot_report(report: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Save the report's figure (matplotlib, Agg canvas) to ``path``: one row per prompt; columns: distinct-1,
    distinct-2 and mean pairwise distance; then per concept the option shares (with "no match") and the cluster masses
    after each option (titled with each model's entropy and ln K), as grouped bars with one colour per model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = list(report["models"])
    entries = report["prompts"]
    concepts = report["settings"].get("concepts", [])
    n_cols = 1 + sum(1 + len(c["options"]) for c in concepts)
    fig = Figure(figsize=(3.4 * n_cols, 3.0 * len(entries) + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(entries), n_cols, squeeze=False)
    colors = [f"C{i}" for i in range(10)]
    for p, entry in enumerate(entries):
        row = axes[p]
        metrics = ("distinct_1", "distinct_2", "mean_pairwise_distance")
        _grouped_bars(
            row[0],
            ["distinct-1", "distinct-2", "pairwise"],
            {label: [entry["models"][label][k] for k in metrics] for label in labels},
            colors,
        )
        row[0].set_title(f"prompt {p}: diversity", fontsize=9)
        row[0].set_ylim(bottom=0)
        col = 1
        for concept in concepts:
            c = entry["concepts"][concept["name"]]
            options = c["options"]
            _grouped_bars(
                row[col],
                [*options, "no match"],
                {
                    label: [
                        *(c["models"][label]["option_shares"][o] for o in options),
                        c["models"][label]["no_match_share"],
                    ]
                    for label in labels
                },
                colors,
            )
            row[col].set_title(f"{concept['name']}: option shares", fontsize=9)
            row[col].set_ylim(0, 1.05)
            col += 1
            for o in options:
                ax = row[col]
                cl = c["clusters"][o]
                if cl["n_clusters"] is None:
                    note = f"not clustered:\n{cl['num_texts']} continuation(s)"
                    ax.text(0.5, 0.5, note, ha="center", va="center", fontsize=8, transform=ax.transAxes)
                    ax.set_xticks([])
                    ax.set_title(f"after {o!r}", fontsize=9)
                else:
                    k = cl["n_clusters"]
                    masses = {label: cl["models"][label]["cluster_masses"] or [None] * k for label in labels}
                    _grouped_bars(ax, [str(j) for j in range(k)], masses, colors)
                    entropies = ", ".join(f"{label} {_fmt(cl['models'][label]['entropy'], 2)}" for label in labels)
                    ax.set_title(f"after {o!r}: H {entropies} (ln K {math.log(k):.2f})", fontsize=8)
                    ax.set_xlabel("cluster", fontsize=8)
                ax.set_ylim(0, 1.05)
                col += 1
    handles, names = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="outside upper center", ncols=len(names), fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def write_report(report: Mapping[str, Any], output_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``diversity_report.json`` (strict JSON, UTF-8) and ``diversity_report.png`` into ``output_dir``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / JSON_NAME
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    png_path = plot_report(report, output_dir / PNG_NAME)
    return json_path, png_path
