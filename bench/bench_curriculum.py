"""Cost of the auto-curriculum: difficulty estimation as a share of an epoch, and the sampler's overhead.

The issue's targets:

1. **difficulty share**: at the default curriculum knobs (``difficulty_sample_size`` 100 rows per dataset,
   ``difficulty_batch_size`` 8, ``difficulty_max_length`` 256, one update per epoch), the time of the curriculum
   update (frozen-model refresh + difficulty estimate + weight update, ``trainer.curriculum.history[i]["seconds"]``)
   is **at most 10 %** of the epoch's wall time;
2. **sampler overhead**: an epoch of ``CurriculumSFTTrainer`` *without* its update time takes **at most 1.02x** an
   epoch of plain ``trl.SFTTrainer`` (torch's ``RandomSampler``) on the same concatenated data.

What is run
    Every run trains the embedded tiny model (``trl_ext.models.get_tiny_model_path()``: Qwen2, hidden 64, 2 layers,
    full fine-tuning, no LoRA) for one epoch on the curriculum demo (``make_curriculum_demo(rows, seed)``: the
    ``repeat``, ``dialog`` and ``random`` text datasets, ``rows`` rows each), batch ``--batch_size`` (8),
    ``max_length`` ``--max_length`` (128), lr 1e-3 constant, AdamW, clipping at 1.0, fp32, ``logging_steps`` 50, no
    evaluation, no checkpoints, no reporting, one torch thread. Arms:

    * ``curriculum``: ``CurriculumSFTTrainer`` with ``CurriculumSFTConfig`` and every curriculum knob at its default
      (``train_dataset`` = the three datasets; its sampler is a ``CurriculumSampler``; one update, at the start of
      the epoch; the first refresh of the frozen model is a deep copy);
    * ``plain``: ``trl.SFTTrainer`` with ``SFTConfig`` holding the same settings, on the three datasets concatenated
      in the same order (accelerate's seedable ``RandomSampler``, untouched).

How
    (1) Difficulty share, for each ``--sizes`` value (rows per dataset; default 256, 1024, 4096), ``--share_repeats``
    (3) curriculum runs. A callback registered before the curriculum's takes ``perf_counter``/``process_time`` at
    ``on_epoch_begin`` and ``on_epoch_end``, so the epoch time holds the update, every data fetch (sampler included)
    and every step. ``share = Σ update seconds / epoch seconds`` (median over the runs). The update is broken down
    by wrapping the instance's ``frozen.refresh`` and ``batch_losses`` (the scoring forwards); a wrapper around
    ``update`` itself cross-checks the callback's own timing (it also holds the ``Trainer.log`` of the metrics).
    The *implied* share counts passes: the update's D difficulty batches are forward passes without grad, each taken
    as 1/3 of a training step (forward + backward ≈ 3 forwards), against the epoch's S steps::

        implied share = (D/3) / (S + D/3)

    ``fwd/step`` is the measured cost of a difficulty batch over the cost of a training step (data fetch included),
    to compare with that 1/3. The share falls as the epoch grows (D is fixed by the knobs: 3 x ceil(min(rows, 100)
    / 8) batches), so the table also gives the rows per dataset at which the measured update time would be exactly
    10 % of an epoch.

    (2a) Sampler micro-benchmark: one full pass of a ``CurriculumSampler`` over three datasets of
    ``--micro_indices`` (100k) rows in all, of ``torch.utils.data.RandomSampler`` and of accelerate's
    ``SeedableRandomSampler`` (what the plain trainer's ``RandomSampler`` becomes under ``accelerator.prepare``) over
    as many, ``--micro_repeats`` (5) times in a rotating order; µs per index (median). With the plain epoch time this
    implies an epoch ratio ``1 + (µs_curriculum − µs_seedable) x epoch rows / plain epoch``.

    (2b) Training overhead: ``--repeats`` (7) rounds at ``--overhead_rows`` rows per dataset (1024), each
    running both arms (the order alternates round by round), after one untimed warm-up run of each arm (not with
    ``--quick``). Curriculum epoch time minus the update time (``history[*]["seconds"]``; for CPU time, the CPU time
    of the wrapped ``update``) over the plain epoch time: the median over rounds of the per-round ratios, in wall and
    in CPU time. The two arms draw different batches, whose padded lengths differ: the collator is wrapped (in both
    arms) to count the padded tokens of the epoch, and ``per token`` is the ratio of seconds per padded token. A
    load-robust second estimate: the same callback takes the interval from one ``on_step_end`` to the next (the next
    batch's fetch, sampler included, + the step + its log; the first step left out) and ``step ratio`` is the ratio of
    the two arms' median intervals (a spike from another process moves a sum, hardly a median). Each interval is
    split at ``on_step_begin`` into *fetch* (drawing the indices, reading and collating the batch: everything the
    sampler can cost) and *step* (forward, backward, optimizer: identical work in both arms); a difference in the
    step part cannot come from the sampler. Because whole runs
    differ by several per cent even on an idle machine, a third, in-process estimate attributes the time of what
    differs between the arms: the train sampler is wrapped after ``accelerator.prepare`` in both arms and every
    ``next`` on it is timed (``CurriculumSampler`` vs accelerate's ``SeedableRandomSampler``), and so are the
    curriculum callback's hooks (``on_train_begin``/``on_epoch_begin``/``on_step_end``, update excluded);
    ``attributed ratio = 1 + (sampler_c + hooks_c − sampler_p) / plain epoch``. The timing wrapper costs the same
    in both arms and cancels in the difference.

Reading the output
    Table 1: per size, steps S, difficulty batches D, epoch seconds, update seconds (refresh / scoring), measured
    and implied share, ``fwd/step``, MET/NOT MET against 10 %; the ``TARGET 1`` line below judges the headline size
    (``--rows``, default 1024). Table 2: the micro-benchmark. Table 3: the epoch times of both arms and the ratios,
    MET/NOT MET against 1.02, judged on the wall-time ratio (the CPU and attributed ratios get their own verdicts). Per
    arm, the spread of what makes runs differ: wall minus CPU time, the hypervisor's steal time (``/proc/stat``; this
    machine is a VM), system time and minor page faults (``getrusage``) of the epoch. The 1-minute load average is
    printed: above the number of cores, wall times are inflated by other processes -- compare the CPU columns.

    .venv/bin/python bench/bench_curriculum.py                                  # about 5 to 8 minutes on 2 cores
    .venv/bin/python bench/bench_curriculum.py --sizes 128 256 512 --json /tmp/bench_curriculum.json
    .venv/bin/python bench/bench_curriculum.py --quick      # smoke run, under a minute; its verdicts mean nothing
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import BenchSession, arm_order, bench_parser, check_common, quiet_offline_torch, require, verdict

TARGET_SHARE = 0.10
"""Difficulty estimation: at most this share of an epoch's wall time, at the default knobs."""
TARGET_RATIO = 1.02
"""Curriculum epoch (update time excluded) over plain epoch: at most this."""
FORWARD_FRACTION = 1 / 3
"""Cost of a no-grad forward relative to a training step (forward + backward ≈ 3 forwards)."""
CURRICULUM, PLAIN = "curriculum", "plain"

TRAIN_SETTINGS: dict[str, Any] = {
    "gradient_accumulation_steps": 1,
    "learning_rate": 1e-3,
    "lr_scheduler_type": "constant",
    "warmup_steps": 0,
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "bf16": False,
    "dataloader_num_workers": 0,
    "logging_steps": 50,
    "eval_strategy": "no",
    "save_strategy": "no",
    "report_to": "none",
    "use_cpu": True,
    "disable_tqdm": True,
}
"""``SFTConfig`` fields shared by both arms (the demo's training set-up: full fine-tuning, lr 1e-3 constant)."""


# ---------------------------------------------------------------------------------------------- runs


@dataclass
class EpochRun:
    """Measurements of one one-epoch training run."""

    arm: str
    rows: int
    """Rows per dataset."""
    phase: str
    """``share``, ``overhead`` or ``warmup``."""
    round: int
    steps: int = 0
    epoch_s: float = 0.0
    epoch_cpu_s: float = 0.0
    interval_s: list[float] = field(default_factory=list)
    """Wall seconds from one ``on_step_end`` to the next: fetching a batch (sampler included) + the step + its log.
    The first step's interval (from ``on_epoch_begin``, holding the update) is left out."""
    interval_cpu_s: list[float] = field(default_factory=list)
    fetch_s: list[float] = field(default_factory=list)
    """The part of each interval from ``on_step_end`` to the next ``on_step_begin``: drawing the indices, reading
    and collating the batch (and the callbacks' ``on_step_end`` after this timer's)."""
    step_s: list[float] = field(default_factory=list)
    """``on_step_begin`` -> ``on_step_end``: forward, backward, clipping, optimizer and scheduler step."""
    sys_s: float = 0.0
    """System CPU seconds of the epoch (``getrusage``): mostly page faults of the allocator."""
    minor_faults: int = 0
    steal_s: float | None = None
    """CPU seconds the hypervisor took from this VM during the epoch (``/proc/stat`` steal, all CPUs)."""
    train_runtime_s: float = 0.0
    build_s: float = 0.0
    update_s: list[float] = field(default_factory=list)
    """Wall seconds of each curriculum update measured around the wrapped ``CurriculumCallback.update`` (also
    holds the ``Trainer.log`` of the update's metrics, which ``history`` leaves out)."""
    update_cpu_s: list[float] = field(default_factory=list)
    history_s: list[float] = field(default_factory=list)
    """``trainer.curriculum.history[*]["seconds"]`` (the callback's own timing of the same updates)."""
    refresh_s: list[float] = field(default_factory=list)
    scoring_s: list[float] = field(default_factory=list)
    difficulty_batches: int = 0
    difficulty_rows: int = 0
    difficulty_tokens: int = 0
    """Padded tokens of one difficulty estimate."""
    padded_tokens: int = 0
    """Padded tokens of every training batch collated in the epoch."""
    sampler_s: float = 0.0
    """Wall seconds spent drawing the epoch's indices from the train sampler (timed around every ``next``)."""
    sampler_indices: int = 0
    hooks_s: float = 0.0
    """Wall seconds in the curriculum callback's ``on_train_begin``/``on_epoch_begin``/``on_step_end``, update
    excluded."""
    batches: int = 0
    weights: list[float] = field(default_factory=list)

    @property
    def update_total_s(self) -> float:
        """Wall seconds of the updates as the callback records them (``history[*]["seconds"]``)."""
        return sum(self.history_s)

    @property
    def share(self) -> float:
        return self.update_total_s / self.epoch_s

    @property
    def net_epoch_s(self) -> float:
        """Epoch wall time without the curriculum update."""
        return self.epoch_s - self.update_total_s

    @property
    def net_epoch_cpu_s(self) -> float:
        return self.epoch_cpu_s - sum(self.update_cpu_s)


def steal_seconds() -> float | None:
    """Cumulative steal time of all CPUs (``/proc/stat``, in seconds), or None where there is none."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def make_epoch_timer(result: EpochRun) -> Any:
    """A ``TrainerCallback`` timing ``on_epoch_begin`` -> ``on_epoch_end`` (pass it in ``callbacks=``, so that its
    ``on_epoch_begin`` runs before the curriculum's update)."""
    from transformers import TrainerCallback

    class EpochTimer(TrainerCallback):
        def __init__(self) -> None:
            self._t0 = 0.0
            self._c0 = 0.0
            self._last: tuple[float, float] | None = None
            self._begin = 0.0

        def on_epoch_begin(self, args, state, control, **kwargs):
            self._last = None
            self._usage = resource.getrusage(resource.RUSAGE_SELF)
            self._steal = steal_seconds()
            self._c0 = time.process_time()
            self._t0 = time.perf_counter()

        def on_step_begin(self, args, state, control, **kwargs):
            self._begin = time.perf_counter()
            if self._last is not None:
                result.fetch_s.append(self._begin - self._last[0])

        def on_step_end(self, args, state, control, **kwargs):
            t, c = time.perf_counter(), time.process_time()
            if self._last is not None:
                result.interval_s.append(t - self._last[0])
                result.interval_cpu_s.append(c - self._last[1])
                result.step_s.append(t - self._begin)
            self._last = (t, c)

        def on_epoch_end(self, args, state, control, **kwargs):
            t1, c1 = time.perf_counter(), time.process_time()
            result.epoch_s += t1 - self._t0
            result.epoch_cpu_s += c1 - self._c0
            usage, steal = resource.getrusage(resource.RUSAGE_SELF), steal_seconds()
            result.sys_s += usage.ru_stime - self._usage.ru_stime
            result.minor_faults += usage.ru_minflt - self._usage.ru_minflt
            if steal is not None and self._steal is not None:
                result.steal_s = (result.steal_s or 0.0) + steal - self._steal

    return EpochTimer()


def wrap(obj: Any, name: str, sink: Callable[[float, float, Any], None]) -> None:
    """Replace the bound method ``obj.<name>`` (on the instance only) by one reporting (wall s, CPU s, result)."""
    original = getattr(obj, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        c0, t0 = time.process_time(), time.perf_counter()
        out = original(*args, **kwargs)
        sink(time.perf_counter() - t0, time.process_time() - c0, out)
        return out

    setattr(obj, name, timed)


def count_tokens(trainer: Any, result: EpochRun) -> None:
    """Wrap the trainer's collator so that ``result`` counts the padded tokens and batches it collates."""
    collator = trainer.data_collator

    def counting(features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collator(features)
        result.padded_tokens += int(batch["input_ids"].numel())
        result.batches += 1
        return batch

    trainer.data_collator = counting


class TimedSampler:
    """Stands in for the train sampler inside the prepared ``BatchSampler``: yields its indices and adds the time of
    each ``next`` (and of creating the iterator) to ``result.sampler_s``. Other attributes (``set_epoch``, …) are the
    wrapped sampler's."""

    def __init__(self, inner: Any, result: EpochRun) -> None:
        self.inner = inner
        self.result = result

    def __iter__(self) -> Any:
        clock, result = time.perf_counter, self.result
        t0 = clock()
        it = iter(self.inner)
        result.sampler_s += clock() - t0
        while True:
            t0 = clock()
            try:
                index = next(it)
            except StopIteration:
                result.sampler_s += clock() - t0
                return
            result.sampler_s += clock() - t0
            result.sampler_indices += 1
            yield index

    def __len__(self) -> int:
        return len(self.inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def time_sampler(trainer: Any, result: EpochRun) -> None:
    """Put a :class:`TimedSampler` around the sampler of the train dataloader, after ``accelerator.prepare`` (so
    the plain arm keeps the ``SeedableRandomSampler`` that accelerate puts in place of ``RandomSampler``)."""
    original = trainer.get_train_dataloader

    def timed_dataloader() -> Any:
        dataloader = original()
        batch_sampler = dataloader.batch_sampler
        batch_sampler.sampler = TimedSampler(batch_sampler.sampler, result)
        return dataloader

    trainer.get_train_dataloader = timed_dataloader


def time_hooks(callback: Any, result: EpochRun) -> None:
    """Add the time of the curriculum callback's per-epoch and per-step hooks to ``result.hooks_s`` (the update's
    own time is taken out afterwards, from ``result.update_s``)."""
    for event in ("on_train_begin", "on_epoch_begin", "on_step_end"):
        original = getattr(callback, event)

        def timed(*args: Any, _original: Callable[..., Any] = original, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                result.hooks_s += time.perf_counter() - t0

        setattr(callback, event, timed)


def train_config(arm: str, output_dir: str, opts: argparse.Namespace) -> Any:
    """``CurriculumSFTConfig`` (curriculum knobs at their defaults) or ``SFTConfig`` with :data:`TRAIN_SETTINGS`."""
    common: dict[str, Any] = {
        "output_dir": output_dir,
        "per_device_train_batch_size": opts.batch_size,
        "num_train_epochs": 1,
        "max_length": opts.max_length,
        "seed": opts.seed,
        **TRAIN_SETTINGS,
    }
    if arm == CURRICULUM:
        from trl_ext.curriculum.config import CurriculumSFTConfig

        return CurriculumSFTConfig(**common)
    from trl import SFTConfig

    return SFTConfig(**common)


class DemoData:
    """The demo datasets per row count (built once), as the curriculum's mapping and as one concatenation."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._named: dict[int, dict[str, Any]] = {}
        self._concat: dict[int, Any] = {}

    def named(self, rows: int) -> dict[str, Any]:
        if rows not in self._named:
            from trl_ext.curriculum.demo import make_curriculum_demo

            self._named[rows] = make_curriculum_demo(rows, self.seed)
        return self._named[rows]

    def concatenated(self, rows: int) -> Any:
        if rows not in self._concat:
            import datasets

            parts = list(self.named(rows).values())
            columns = parts[0].column_names
            self._concat[rows] = datasets.concatenate_datasets([p.select_columns(columns) for p in parts])
        return self._concat[rows]


def run_epoch(
    arm: str,
    rows: int,
    phase: str,
    rnd: int,
    model_path: Path,
    data: DemoData,
    workdir: Path,
    opts: argparse.Namespace,
    max_steps: int | None = None,
) -> EpochRun:
    """Build a fresh trainer for ``arm`` on ``rows`` rows per dataset and train one epoch (or ``max_steps``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, set_seed

    result = EpochRun(arm=arm, rows=rows, phase=phase, round=rnd)
    gc.collect()
    t0 = time.perf_counter()
    set_seed(opts.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    args = train_config(arm, str(workdir / f"{arm}-{phase}-{rows}-{rnd}"), opts)
    if max_steps is not None:
        args.max_steps = max_steps
    timer = make_epoch_timer(result)
    if arm == CURRICULUM:
        from trl_ext.curriculum.trainer import CurriculumSFTTrainer

        trainer = CurriculumSFTTrainer(
            model=model, args=args, train_dataset=data.named(rows), processing_class=tokenizer, callbacks=[timer]
        )
        cb = trainer.curriculum
        wrap(cb, "update", lambda w, c, _: (result.update_s.append(w), result.update_cpu_s.append(c)))
        wrap(cb.frozen, "refresh", lambda w, c, _: result.refresh_s.append(w))
        wrap(cb, "batch_losses", lambda w, c, _: result.scoring_s.append(w))
        time_hooks(cb, result)
        result.difficulty_batches = sum(len(b) for b in cb.batches)
        result.difficulty_rows = sum(len(batch) for b in cb.batches for batch in b)
        result.difficulty_tokens = sum(len(batch) * max(map(len, batch)) for b in cb.batches for batch in b)
    else:
        from trl import SFTTrainer

        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=data.concatenated(rows),
            processing_class=tokenizer,
            callbacks=[timer],
        )
    trainer.remove_callback(PrinterCallback)
    count_tokens(trainer, result)
    time_sampler(trainer, result)
    t1 = time.perf_counter()
    out = trainer.train()
    result.build_s = t1 - t0
    result.train_runtime_s = float(out.metrics.get("train_runtime", time.perf_counter() - t1))
    result.steps = trainer.state.global_step
    if arm == CURRICULUM:
        result.history_s = [float(h["seconds"]) for h in trainer.curriculum.history]
        result.weights = trainer.curriculum_sampler.weights.tolist()
        result.hooks_s -= sum(result.update_s)
    del trainer, model
    gc.collect()
    return result


# ---------------------------------------------------------------------------------------------- micro-benchmark


def sampler_micro(opts: argparse.Namespace) -> dict[str, Any]:
    """µs per index of a full pass of ``CurriculumSampler`` (3 datasets), of torch's ``RandomSampler`` and of
    accelerate's ``SeedableRandomSampler`` (what ``Trainer``'s ``RandomSampler`` becomes in the plain arm), over the
    same number of indices; the samplers alternate in a rotating order."""
    import torch
    from accelerate.data_loader import SeedableRandomSampler
    from torch.utils.data import RandomSampler

    from trl_ext.curriculum.sampler import CurriculumSampler

    n = opts.micro_indices
    sizes = [n - 2 * (n // 3), n // 3, n // 3]
    names = [CURRICULUM, "random", "seedable_random"]
    timings: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(opts.micro_repeats):
        seed = opts.seed + rep
        samplers: dict[str, Any] = {
            CURRICULUM: CurriculumSampler(sizes, seed=seed),
            "random": RandomSampler(range(n), generator=torch.Generator().manual_seed(seed)),
            "seedable_random": SeedableRandomSampler(range(n), data_seed=seed),
        }
        for name in names[rep % 3 :] + names[: rep % 3]:
            t0 = time.perf_counter()
            count = sum(1 for _ in samplers[name])
            timings[name].append(1e6 * (time.perf_counter() - t0) / count)
    us = {name: statistics.median(values) for name, values in timings.items()}
    return {
        "indices": n,
        "sizes": sizes,
        "us_per_index": us,
        "us_per_index_runs": timings,
        "slowdown": us[CURRICULUM] / us["random"],
        "slowdown_vs_seedable": us[CURRICULUM] / us["seedable_random"],
    }


# ---------------------------------------------------------------------------------------------- summary


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def summarise_share(runs: list[EpochRun], sizes: list[int], batch_size: int) -> list[dict[str, Any]]:
    """Per size: medians over the curriculum runs of the share phase."""
    table = []
    for rows in sizes:
        rs = [r for r in runs if r.arm == CURRICULUM and r.phase == "share" and r.rows == rows]
        steps, d = rs[0].steps, rs[0].difficulty_batches
        epoch, update = _median([r.epoch_s for r in rs]), _median([r.update_total_s for r in rs])
        step_ms = 1e3 * _median([r.net_epoch_s / r.steps for r in rs])
        fwd_ms = 1e3 * _median([sum(r.scoring_s) / r.difficulty_batches for r in rs])
        implied = d * FORWARD_FRACTION / (steps + d * FORWARD_FRACTION)
        share = _median([r.share for r in rs])
        # rows per dataset at which this update time would be 10 % of an epoch of this step time
        crossing = math.ceil(update * (1 / TARGET_SHARE - 1) / (step_ms / 1e3) * batch_size / 3)
        table.append(
            {
                "rows_per_dataset": rows,
                "epoch_rows": 3 * rows,
                "steps": steps,
                "difficulty_batches": d,
                "difficulty_rows": rs[0].difficulty_rows,
                "difficulty_tokens": rs[0].difficulty_tokens,
                "epoch_padded_tokens": _median([float(r.padded_tokens) for r in rs]),
                "epoch_s": epoch,
                "epoch_cpu_s": _median([r.epoch_cpu_s for r in rs]),
                "train_runtime_s": _median([r.train_runtime_s for r in rs]),
                "update_s": update,
                "refresh_s": _median([sum(r.refresh_s) for r in rs]),
                "scoring_s": _median([sum(r.scoring_s) for r in rs]),
                "update_wrapped_s": _median([sum(r.update_s) for r in rs]),
                "share": share,
                "share_runs": [r.share for r in rs],
                "share_of_train_runtime": _median([r.update_total_s / r.train_runtime_s for r in rs]),
                "implied_share": implied,
                "step_ms": step_ms,
                "difficulty_forward_ms": fwd_ms,
                "forward_over_step": fwd_ms / step_ms,
                "rows_per_dataset_at_target": crossing,
                "meets_target": share <= TARGET_SHARE,
                "runs": len(rs),
            }
        )
    return table


def summarise_overhead(runs: list[EpochRun], micro: dict[str, Any], opts: argparse.Namespace) -> dict[str, Any]:
    """Curriculum (update excluded) vs plain epoch times, per round and as medians."""
    rounds = sorted({r.round for r in runs if r.phase == "overhead"})
    per_round: list[dict[str, float]] = []
    for rnd in rounds:
        c = next(r for r in runs if r.phase == "overhead" and r.round == rnd and r.arm == CURRICULUM)
        p = next(r for r in runs if r.phase == "overhead" and r.round == rnd and r.arm == PLAIN)
        per_round.append(
            {
                "round": rnd,
                "curriculum_net_s": c.net_epoch_s,
                "curriculum_update_s": c.update_total_s,
                "plain_s": p.epoch_s,
                "ratio": c.net_epoch_s / p.epoch_s,
                "cpu_ratio": c.net_epoch_cpu_s / p.epoch_cpu_s,
                "token_ratio": c.padded_tokens / p.padded_tokens,
                "per_token_ratio": (c.net_epoch_s / c.padded_tokens) / (p.epoch_s / p.padded_tokens),
                "curriculum_interval_ms": 1e3 * _median(c.interval_s),
                "plain_interval_ms": 1e3 * _median(p.interval_s),
                "interval_ratio": _median(c.interval_s) / _median(p.interval_s),
                "interval_cpu_ratio": _median(c.interval_cpu_s) / _median(p.interval_cpu_s),
                "curriculum_fetch_ms": 1e3 * _median(c.fetch_s),
                "plain_fetch_ms": 1e3 * _median(p.fetch_s),
                "curriculum_step_ms": 1e3 * _median(c.step_s),
                "plain_step_ms": 1e3 * _median(p.step_s),
                "step_only_ratio": _median(c.step_s) / _median(p.step_s),
                "curriculum_sampler_ms": 1e3 * c.sampler_s,
                "plain_sampler_ms": 1e3 * p.sampler_s,
                "curriculum_hooks_ms": 1e3 * c.hooks_s,
                "attributed_ratio": 1 + (c.sampler_s + c.hooks_s - p.sampler_s) / p.epoch_s,
                "update_wrapped_minus_history_s": sum(c.update_s) - sum(c.history_s),
            }
        )
    cur = [r for r in runs if r.phase == "overhead" and r.arm == CURRICULUM]
    plain = [r for r in runs if r.phase == "overhead" and r.arm == PLAIN]
    plain_epoch = _median([r.epoch_s for r in plain])
    rows_epoch = 3 * opts.overhead_rows
    extra_s = (micro["us_per_index"][CURRICULUM] - micro["us_per_index"]["seedable_random"]) * 1e-6 * rows_epoch
    ratio = _median([x["ratio"] for x in per_round])
    return {
        "rows_per_dataset": opts.overhead_rows,
        "steps": cur[0].steps,
        "per_round": per_round,
        "curriculum_net_epoch_s": _median([r.net_epoch_s for r in cur]),
        "curriculum_net_epoch_cpu_s": _median([r.net_epoch_cpu_s for r in cur]),
        "curriculum_update_s": _median([r.update_total_s for r in cur]),
        "plain_epoch_s": plain_epoch,
        "plain_epoch_cpu_s": _median([r.epoch_cpu_s for r in plain]),
        "ratio_median_of_rounds": ratio,
        "ratio_of_medians": _median([r.net_epoch_s for r in cur]) / plain_epoch,
        "cpu_ratio_median_of_rounds": _median([x["cpu_ratio"] for x in per_round]),
        "per_token_ratio_median_of_rounds": _median([x["per_token_ratio"] for x in per_round]),
        "token_ratio_median_of_rounds": _median([x["token_ratio"] for x in per_round]),
        "interval_ratio_median_of_rounds": _median([x["interval_ratio"] for x in per_round]),
        "interval_cpu_ratio_median_of_rounds": _median([x["interval_cpu_ratio"] for x in per_round]),
        "interval_ratio_pooled": _median([t for r in cur for t in r.interval_s])
        / _median([t for r in plain for t in r.interval_s]),
        "curriculum_sampler_ms": 1e3 * _median([r.sampler_s for r in cur]),
        "plain_sampler_ms": 1e3 * _median([r.sampler_s for r in plain]),
        "curriculum_hooks_ms": 1e3 * _median([r.hooks_s for r in cur]),
        "sampler_indices": cur[0].sampler_indices,
        "attributed_ratio_median_of_rounds": _median([x["attributed_ratio"] for x in per_round]),
        "step_only_ratio_median_of_rounds": _median([x["step_only_ratio"] for x in per_round]),
        "fetch_ms_curriculum_minus_plain_median_of_rounds": _median(
            [x["curriculum_fetch_ms"] - x["plain_fetch_ms"] for x in per_round]
        ),
        "noise": {
            arm: {
                "wall_minus_cpu_s": [r.epoch_s - r.epoch_cpu_s for r in rs],
                "steal_s": [r.steal_s for r in rs],
                "sys_s": [r.sys_s for r in rs],
                "minor_faults": [r.minor_faults for r in rs],
            }
            for arm, rs in ((CURRICULUM, cur), (PLAIN, plain))
        },
        "implied_ratio_from_micro": 1 + extra_s / plain_epoch,
        "sampler_extra_s_from_micro": extra_s,
        "meets_target": ratio <= TARGET_RATIO,
        "meets_target_cpu": _median([x["cpu_ratio"] for x in per_round]) <= TARGET_RATIO,
        "meets_target_attributed": _median([x["attributed_ratio"] for x in per_round]) <= TARGET_RATIO,
    }


# ---------------------------------------------------------------------------------------------- report


def _span(values: list[float], spec: str) -> str:
    """``min-max`` of ``values`` (one value: itself)."""
    lo, hi = min(values), max(values)
    return format(lo, spec) if lo == hi else f"{lo:{spec}}-{hi:{spec}}"


def print_report(summary: dict[str, Any], opts: argparse.Namespace) -> None:
    """Tables 1-3 and the two verdicts."""
    print()
    print(
        f"(1) Difficulty estimation share of a 1-epoch run, default knobs (100 rows/dataset, batch 8, max_length 256,"
        f" 1 update/epoch); training batch {opts.batch_size}, max_length {opts.max_length}; median of "
        f"{opts.share_repeats} run(s)"
    )
    header = (
        f"{'rows/ds':>7} {'steps S':>7} {'diff D':>6} {'epoch s':>8} {'update s':>8} {'refresh':>8} {'scoring':>8} "
        f"{'share':>7} {'implied':>7} {'fwd/step':>8} {'10% at rows/ds':>14} {'<=10%':>5}"
    )
    print(header)
    print("-" * len(header))
    for row in summary["difficulty_share"]["sizes"]:
        print(
            f"{row['rows_per_dataset']:>7d} {row['steps']:>7d} {row['difficulty_batches']:>6d} {row['epoch_s']:>8.2f} "
            f"{row['update_s']:>8.3f} {row['refresh_s']:>8.3f} {row['scoring_s']:>8.3f} {100 * row['share']:>6.2f}% "
            f"{100 * row['implied_share']:>6.2f}% {row['forward_over_step']:>8.3f} "
            f"{row['rows_per_dataset_at_target']:>14d} {verdict(row['meets_target']):>5}"
        )
    print("-" * len(header))
    head = summary["difficulty_share"]["headline"]
    print(
        "share = sum of update seconds / epoch wall time (on_epoch_begin -> on_epoch_end); implied = (D/3)/(S+D/3); "
        "fwd/step = one difficulty batch / one training step (data fetch included)"
    )
    print(
        f"TARGET 1 (share <= {100 * TARGET_SHARE:.0f} % at {head['rows_per_dataset']} rows x 3 datasets): "
        f"{100 * head['share']:.2f} % (implied {100 * head['implied_share']:.2f} %) -> "
        f"{verdict(head['meets_target'])}"
    )

    micro = summary["sampler_micro"]
    print()
    print(f"(2a) Sampler micro-benchmark: one pass over {micro['indices']} indices, median of {opts.micro_repeats}")
    print(f"  CurriculumSampler (3 datasets):   {micro['us_per_index'][CURRICULUM]:8.3f} us/index")
    print(f"  torch RandomSampler:              {micro['us_per_index']['random']:8.3f} us/index")
    print(f"  accelerate SeedableRandomSampler: {micro['us_per_index']['seedable_random']:8.3f} us/index (plain arm)")
    print(
        f"  slowdown per index: {micro['slowdown']:.1f}x vs RandomSampler, "
        f"{micro['slowdown_vs_seedable']:.1f}x vs SeedableRandomSampler"
    )

    ov = summary["sampler_overhead"]
    print()
    print(
        f"(2b) Epoch time, CurriculumSFTTrainer (update excluded) vs plain SFTTrainer: {ov['rows_per_dataset']} rows "
        f"x 3 datasets, {ov['steps']} steps, {len(ov['per_round'])} round(s)"
    )
    header = (
        f"{'round':>5} {'curriculum s':>12} {'(update s)':>10} {'plain s':>8} {'ratio':>7} {'cpu ratio':>9} "
        f"{'tokens c/p':>10} {'per token':>9} {'step c ms':>9} {'step p ms':>9} {'step ratio':>10} {'step cpu':>8}"
    )
    print(header)
    print("-" * len(header))
    for x in ov["per_round"]:
        print(
            f"{x['round'] + 1:>5d} {x['curriculum_net_s']:>12.3f} {x['curriculum_update_s']:>10.3f} "
            f"{x['plain_s']:>8.3f} {x['ratio']:>7.3f} {x['cpu_ratio']:>9.3f} {x['token_ratio']:>10.3f} "
            f"{x['per_token_ratio']:>9.3f} {x['curriculum_interval_ms']:>9.2f} {x['plain_interval_ms']:>9.2f} "
            f"{x['interval_ratio']:>10.3f} {x['interval_cpu_ratio']:>8.3f}"
        )
    print("-" * len(header))
    print(
        f"  median of rounds: wall {ov['ratio_median_of_rounds']:.3f}, cpu {ov['cpu_ratio_median_of_rounds']:.3f}, "
        f"per padded token {ov['per_token_ratio_median_of_rounds']:.3f}; ratio of medians {ov['ratio_of_medians']:.3f}"
    )
    print(
        f"  median step interval (on_step_end to on_step_end: fetch + step; robust to load spikes): ratio "
        f"{ov['interval_ratio_median_of_rounds']:.3f} (median of rounds), cpu "
        f"{ov['interval_cpu_ratio_median_of_rounds']:.3f}, pooled {ov['interval_ratio_pooled']:.3f}"
    )
    print(
        "  interval = fetch (on_step_end -> on_step_begin: sampler, dataset read, collator) + step (on_step_begin -> "
        "on_step_end); medians, ms:"
    )
    print(
        "  "
        + "  ".join(
            f"r{x['round'] + 1}: fetch {x['curriculum_fetch_ms']:.2f}/{x['plain_fetch_ms']:.2f} step "
            f"{x['curriculum_step_ms']:.1f}/{x['plain_step_ms']:.1f}"
            for x in ov["per_round"]
        )
        + "  (curriculum/plain)"
    )
    print(
        f"  fetch, curriculum - plain: {ov['fetch_ms_curriculum_minus_plain_median_of_rounds']:+.3f} ms per step; "
        f"step-only ratio (no fetch: the sampler is not in it) {ov['step_only_ratio_median_of_rounds']:.3f}"
    )
    for arm in (CURRICULUM, PLAIN):
        noise = ov["noise"][arm]
        steal = [x for x in noise["steal_s"] if x is not None]
        print(
            f"  {arm:<10} per epoch: wall - cpu {_span(noise['wall_minus_cpu_s'], '.2f')} s, hypervisor steal "
            f"{_span(steal, '.2f') if steal else '-'} s (2 CPUs), system time {_span(noise['sys_s'], '.2f')} s, "
            f"minor page faults {_span([f / 1e3 for f in noise['minor_faults']], '.0f')}k"
        )
    print(
        f"  attributed in-process: sampler {ov['curriculum_sampler_ms']:.1f} ms (plain's {ov['plain_sampler_ms']:.1f} "
        f"ms) for {ov['sampler_indices']} indices + curriculum hooks {ov['curriculum_hooks_ms']:.2f} ms per epoch -> "
        f"ratio {ov['attributed_ratio_median_of_rounds']:.4f}"
    )
    print(
        f"  implied by the micro-benchmark: {ov['implied_ratio_from_micro']:.4f} "
        f"({1e3 * ov['sampler_extra_s_from_micro']:.1f} ms of sampling per epoch)"
    )
    print(
        f"TARGET 2 (ratio <= {TARGET_RATIO:.2f}): wall {ov['ratio_median_of_rounds']:.3f} -> "
        f"{verdict(ov['meets_target'])}; cpu {ov['cpu_ratio_median_of_rounds']:.3f} -> "
        f"{verdict(ov['meets_target_cpu'])}; attributed {ov['attributed_ratio_median_of_rounds']:.4f} -> "
        f"{verdict(ov['meets_target_attributed'])}"
    )


# ---------------------------------------------------------------------------------------------- main

CODE_FILES = (
    "trl_ext/curriculum/sampler.py",
    "trl_ext/curriculum/callback.py",
    "trl_ext/curriculum/trainer.py",
    "trl_ext/curriculum/difficulty.py",
)
"""The curriculum code whose cost is measured (fingerprinted in the JSON, to tell versions apart)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags (``--quick``: 48 rows per dataset, one run each, small micro-benchmark)."""
    parser = bench_parser(
        __doc__,
        repeats=7,
        repeats_help="Rounds of (curriculum, plain) epochs of the overhead measurement.",
        quick_help="Smoke run: 48 rows/dataset, 1 run per size and arm, 10k indices.",
    )
    parser.add_argument("--rows", type=int, default=1024, help="Rows per dataset of the headline share (in --sizes).")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[256, 1024, 4096], help="Rows per dataset of the share table."
    )
    parser.add_argument("--share_repeats", type=int, default=3, help="Curriculum runs per size for the share.")
    parser.add_argument("--overhead_rows", type=int, default=1024, help="Rows per dataset of the overhead runs.")
    parser.add_argument("--micro_indices", type=int, default=100_000, help="Indices per micro-benchmark pass.")
    parser.add_argument("--micro_repeats", type=int, default=5, help="Passes per sampler in the micro-benchmark.")
    parser.add_argument("--batch_size", type=int, default=8, help="Training batch size.")
    parser.add_argument("--max_length", type=int, default=128, help="Training max_length.")
    opts = parser.parse_args(argv)
    if opts.quick:
        opts.rows, opts.sizes, opts.share_repeats = 48, [48], 1
        opts.overhead_rows, opts.repeats = 48, 1
        opts.micro_indices, opts.micro_repeats = 10_000, 1
    opts.sizes = sorted(set(opts.sizes) | {opts.rows})
    check_common(parser, opts)
    require(
        parser,
        min(opts.sizes + [opts.overhead_rows, opts.share_repeats, opts.micro_repeats]) >= 1,
        "row counts and repeats must be >= 1",
    )
    require(
        parser,
        min(opts.sizes + [opts.overhead_rows]) >= opts.batch_size,
        "rows per dataset must be >= --batch_size (at least 3 steps per epoch: step intervals need 2)",
    )
    require(
        parser,
        opts.batch_size >= 1 and opts.max_length >= 2 and opts.micro_indices >= 3,
        "--batch_size must be >= 1, --max_length >= 2, --micro_indices >= 3",
    )
    return opts


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the report, optionally write JSON; returns the summary."""
    opts = parse_args(argv)
    quiet_offline_torch(opts.threads)
    from trl_ext.models import get_tiny_model_path

    session = BenchSession(opts, code_files=CODE_FILES)
    model_path = get_tiny_model_path()
    data = DemoData(opts.seed)
    runs: list[EpochRun] = []

    def report(r: EpochRun, total: int, index: int) -> None:
        extra = f"  update {r.update_total_s:6.3f} s  share {100 * r.share:5.2f} %" if r.arm == CURRICULUM else ""
        print(
            f"[{r.phase} {index}/{total}] {r.arm:<10} {r.rows:>5} rows/ds  {r.steps:>5} steps  "
            f"epoch {r.epoch_s:7.2f} s  cpu {r.epoch_cpu_s:7.2f} s{extra}  build {r.build_s:5.2f} s",
            flush=True,
        )

    print(f"model {model_path}; {opts.threads} torch thread(s); load average {session.load_start}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_curriculum_") as tmp:
        workdir = Path(tmp)
        if not opts.quick:  # process warm-up (lazy imports, allocator): not recorded
            for arm in (CURRICULUM, PLAIN):
                run_epoch(arm, min(opts.sizes), "warmup", -1, model_path, data, workdir, opts, max_steps=10)
        total = len(opts.sizes) * opts.share_repeats
        for rep in range(opts.share_repeats):
            for rows in opts.sizes:
                runs.append(run_epoch(CURRICULUM, rows, "share", rep, model_path, data, workdir, opts))
                report(runs[-1], total, len([r for r in runs if r.phase == "share"]))
        micro = sampler_micro(opts)
        print(
            f"[micro] us/index: curriculum {micro['us_per_index'][CURRICULUM]:.3f}, "
            f"random {micro['us_per_index']['random']:.3f}",
            flush=True,
        )
        for rnd in range(opts.repeats):
            for arm in arm_order([CURRICULUM, PLAIN], rnd):  # alternating: curriculum first in even rounds
                runs.append(run_epoch(arm, opts.overhead_rows, "overhead", rnd, model_path, data, workdir, opts))
                report(runs[-1], 2 * opts.repeats, len([r for r in runs if r.phase == "overhead"]))

    sizes = summarise_share(runs, opts.sizes, opts.batch_size)
    summary: dict[str, Any] = {
        "targets": {"difficulty_share": TARGET_SHARE, "sampler_ratio": TARGET_RATIO},
        "difficulty_share": {
            "headline": next(row for row in sizes if row["rows_per_dataset"] == opts.rows),
            "sizes": sizes,
            "forward_fraction": FORWARD_FRACTION,
        },
        "sampler_micro": micro,
        "sampler_overhead": summarise_overhead(runs, micro, opts),
    }
    session.finish(summary)
    print_report(summary, opts)
    session.print_footer(summary, hint="see the cpu ratio")
    runs_json = [{**asdict(r), "share": r.share if r.arm == CURRICULUM else None} for r in runs]
    session.write(summary, runs_json, train_settings=TRAIN_SETTINGS)
    return summary


if __name__ == "__main__":
    main()
