"""``loss_log.csv`` and ``loss_curve.png``: every logged value, and one curve per logged loss term.

Works with any ``transformers.Trainer`` (and so every TRL and trl_ext trainer): each ``on_log`` call adds
one row (``step``, ``epoch`` and every numeric value logged then, e.g. ``loss``, ``eval_loss``,
``learning_rate``, ``loss/plan_kl``). The CSV is appended to, and rewritten only when a new column
appears. On resume, rows logged after the checkpoint's step are dropped, so the file matches the
training that actually happened. The plot has one line per key that names a loss (contains ``loss``),
written at the end of training (and on demand with :func:`plot_loss_log`); curriculum sampling weights, when
logged, get a panel of their own.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from transformers import TrainerCallback

CSV_NAME = "loss_log.csv"
PNG_NAME = "loss_curve.png"
_FIXED = ["step", "epoch"]
# Summary values transformers logs once at the end of training; they are not curves.
CURRICULUM_PREFIX = "curriculum/"
CURRICULUM_WEIGHT_PREFIX = "curriculum/weight/"
_SUMMARY_KEYS = {"train_loss", "train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos"}


def is_loss_key(key: str) -> bool:
    """Keys plotted as loss curves: every key containing ``loss`` except the end-of-training summary."""
    return "loss" in key and key not in _SUMMARY_KEYS


def read_loss_log(path: str | os.PathLike) -> tuple[list[str], list[dict[str, float]]]:
    """Read a ``loss_log.csv``: (columns, rows); empty cells are absent from a row's dict."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in reader]
        return list(reader.fieldnames or []), rows


def _draw(ax, rows: list[dict[str, float]], keys: list[str], label_prefix: str = "") -> None:
    for key in keys:
        pts = [(r["step"], r[key]) for r in rows if key in r and "step" in r and math.isfinite(r[key])]
        if not pts:
            continue
        xs, ys = zip(*pts)
        marker = "o" if key.startswith("eval") or key.startswith(CURRICULUM_PREFIX) or len(pts) == 1 else None
        ax.plot(xs, ys, label=key[len(label_prefix) :] if key.startswith(label_prefix) else key, marker=marker)


def plot_loss_log(csv_path: str | os.PathLike, png_path: str | os.PathLike, title: str | None = None) -> list[str]:
    """Plot every loss column of ``csv_path`` against ``step`` into ``png_path``; returns the plotted keys.

    Terms whose name starts with ``eval`` are drawn with markers (they are sparse). When the log has curriculum
    weights (``curriculum/weight/<dataset>``, :class:`~trl_ext.curriculum.callback.CurriculumCallback`), a second
    panel shows them (one line per dataset, a marker per update); their keys are returned after the loss keys.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns, rows = read_loss_log(csv_path)
    keys = [c for c in columns if is_loss_key(c)]
    weight_keys = [c for c in columns if c.startswith(CURRICULUM_WEIGHT_PREFIX)]
    fig = Figure(figsize=(8, 8 if weight_keys else 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(2 if weight_keys else 1, 1, 1)
    _draw(ax, rows, keys)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title or "training losses")
    ax.grid(True, alpha=0.3)
    if keys:
        ax.legend()
    if weight_keys:
        wax = fig.add_subplot(2, 1, 2, sharex=ax)
        _draw(wax, rows, weight_keys, label_prefix=CURRICULUM_WEIGHT_PREFIX)
        wax.set_xlabel("step")
        wax.set_ylabel("sampling weight")
        wax.set_title("curriculum weights")
        wax.grid(True, alpha=0.3)
        wax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    return keys + weight_keys


class LossLogCallback(TrainerCallback):
    """Write ``loss_log.csv`` during training and ``loss_curve.png`` at its end.

    Args:
        output_dir: folder for both files; defaults to the trainer's ``args.output_dir``.
        plot: draw ``loss_curve.png`` at the end of training.

    Only the main process writes.
    """

    def __init__(self, output_dir: str | os.PathLike | None = None, plot: bool = True) -> None:
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.plot = plot
        self._columns: list[str] = list(_FIXED)
        self._rows: list[dict[str, float]] = []

    def _dir(self, args) -> Path:
        return self.output_dir if self.output_dir is not None else Path(args.output_dir)

    def csv_path(self, args) -> Path:
        return self._dir(args) / CSV_NAME

    def png_path(self, args) -> Path:
        return self._dir(args) / PNG_NAME

    def on_train_begin(self, args, state, control, **kwargs):
        self._columns, self._rows = list(_FIXED), []
        path = self.csv_path(args)
        if state.is_world_process_zero and path.exists() and state.global_step > 0:
            # resuming: keep the history up to the checkpoint, drop what came after it
            columns, rows = read_loss_log(path)
            self._columns = columns or list(_FIXED)
            self._rows = [r for r in rows if r.get("step", 0) <= state.global_step]
            self._rewrite(path)
        elif state.is_world_process_zero and path.exists():
            path.unlink()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row: dict[str, float] = {"step": float(state.global_step)}
        if state.epoch is not None:
            row["epoch"] = float(state.epoch)
        for key, value in logs.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            row[key] = float(value)
        path = self.csv_path(args)
        path.parent.mkdir(parents=True, exist_ok=True)
        new_cols = [k for k in row if k not in self._columns]
        self._rows.append(row)
        if new_cols or not path.exists():
            self._columns.extend(new_cols)
            self._rewrite(path)
        else:
            with open(path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self._columns).writerow(row)

    def on_train_end(self, args, state, control, **kwargs):
        path = self.csv_path(args)
        if self.plot and state.is_world_process_zero and path.exists():
            plot_loss_log(path, self.png_path(args))

    def _rewrite(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns)
            writer.writeheader()
            writer.writerows(self._rows)
