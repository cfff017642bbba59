"""Step-time overhead of the SFT recipe's trainer set-up (trl_ext) against plain TRL ``SFTTrainer``.

What is compared
    * ``trl_ext``: the configuration of ``recipes/sft_affine.py`` -- TRL ``SFTTrainer`` with
      ``trl_ext.LossLogCallback`` and the recipe's ``SFTConfig`` (``sft_affine_tiny.yaml`` values),
      the cosine schedule given a floor by ``trl_ext.common.recipes.apply_min_lr_ratio(args, 0.1)`` and
      ``resolve_precision`` (bf16 off on CPU).
    * ``plain``: the same TRL ``SFTTrainer``, model, data, seed and ``SFTConfig``, with no trl_ext piece:
      plain ``cosine`` schedule and no extra callback.

    Both arms train the embedded tiny model (``trl_ext.models.get_tiny_model_path()``, built under
    ``$TRL_EXT_CACHE`` on first use) with the same LoRA adapter (r 16, alpha 32, dropout 0.05 on all
    attention and MLP projections) on SAT rows from ``collect_affine({"sat": {"n": 5, "k": 3}}, ...)``
    (``prompt``/``completion`` columns only). ``logging_steps=1``, so ``LossLogCallback.on_log`` appends a
    CSV row at every step; no evaluation, no checkpoints, no reporting integration.

How
    One process; the arms alternate (trl_ext, plain, trl_ext, plain, ...) for ``--repeats`` rounds. Every run
    reloads the model from disk (same initial weights), re-seeds, and builds a fresh trainer in its own
    temporary output folder. A timing callback, registered last, records ``time.perf_counter()`` at
    ``on_step_begin`` and again in its own ``on_log`` -- i.e. after every other callback's ``on_log``,
    including ``LossLogCallback``'s -- so a step time is forward + backward + clipping + optimizer and
    scheduler step + ``on_step_end`` + the per-step log (``.item()`` syncs, every ``on_log``). Fetching
    the next batch happens before ``on_step_begin`` and is the same in both arms; it is not counted.
    The first ``--skip_steps`` steps of every run (default 1) are warm-up and are dropped. transformers'
    ``PrinterCallback`` (``disable_tqdm=True`` prints every log dict to stdout) is removed in both arms.
    ``LossLogCallback.on_log`` and ``on_train_end`` (the PNG plot) are additionally wrapped with a timer,
    so the table shows how much of the trl_ext step time is spent in the callback itself.

    Each step is also timed in process CPU time (``time.process_time``): on a busy machine (other jobs on the
    same cores) wall time also counts the time the process waited for a core, CPU time does not.

    Memory: the peak resident set size of each run is Linux's ``VmHWM`` from ``/proc/self/status``, reset
    before the run by writing ``5`` to ``/proc/self/clear_refs`` (it covers model load, trainer build and
    training; the interpreter, torch and whatever earlier runs left in the allocator are part of it, hence
    also ``+RSS``, the peak minus the RSS at the run's start). Where the reset is not allowed, the largest RSS
    sampled from ``/proc/self/statm`` at each step end is shown instead. The whole process's peak is
    ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` combined with the ``VmHWM`` read before each reset (Linux
    lowers ``ru_maxrss`` together with ``VmHWM``). Neither tracemalloc nor psutil is used.

Reading the output
    ``step ms`` is the median wall time over all timed steps of all rounds of an arm; ``p10``/``p90`` show the
    spread; ``cpu ms`` is the median CPU time. The ratios trl_ext/plain come in two forms, each for wall and
    CPU time: ``median of rounds`` is the median over rounds of (trl_ext median / plain median) in that round,
    which alternation makes robust to slow drifts of the machine; ``ratio of medians`` divides the pooled
    medians. The issue's target is ratio <= 1.05 (judged on the median of rounds). ``on_log ms`` is the median
    time of one ``LossLogCallback.on_log`` call (its share of a step is printed); ``train_end ms`` the time
    of its end-of-training PNG plot, which is outside the step times but inside ``train() s``. ``step-1
    loss`` must be identical in every run (same weights, same data, same seed): the arms differ only in the
    learning-rate schedule and the callback. The 1-minute load average is printed: above the number of
    cores, wall times are inflated by other processes and their ratio is noisy -- compare the CPU column.

    .venv/bin/python bench/bench_sft.py                      # 20 steps x 5 rounds, 1 thread
    .venv/bin/python bench/bench_sft.py --threads 2 --json /tmp/bench_sft.json
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import (
    BenchSession,
    StepTimes,
    bench_parser,
    check_common,
    current_rss_mib,
    fmt,
    instrument,
    make_step_timer,
    paired_ratios,
    process_peak_rss_mib,
    quiet_offline_torch,
    record_peak,
    require,
    reset_peak_rss,
    run_rounds,
    spread_ms,
    verdict,
)

TARGET_RATIO = 1.05
ARMS = ("trl_ext", "plain")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MIN_LR_RATIO = 0.1

# Training settings of recipes/configs/sft_affine_tiny.yaml that matter for a step (no eval, no saving here).
RECIPE_SFT_SETTINGS: dict[str, Any] = {
    "gradient_accumulation_steps": 1,
    "learning_rate": 2.0e-3,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 5,
    "weight_decay": 0.01,
    "max_grad_norm": 1.0,
    "gradient_checkpointing": False,
    "bf16": False,
    "max_length": 512,
    "dataloader_num_workers": 0,
}


CODE_FILES = ("trl_ext/common/loss_log.py", "trl_ext/common/recipes.py")
"""The trl_ext code whose cost is measured (fingerprinted in the JSON)."""


@dataclass
class RunResult(StepTimes):
    """One training run: the harness's step times plus the ``LossLogCallback`` timings (trl_ext arm)."""

    callback_on_log_s: list[float] = field(default_factory=list)
    """Seconds of each per-step ``LossLogCallback.on_log`` call (trl_ext arm only)."""
    callback_train_end_s: float | None = None


# ---------------------------------------------------------------------------------------------- runs


def build_dataset(num_samples: int, seed: int) -> Any:
    """The recipe's data: SAT (n 5, k 3) rows in conversational prompt-completion form, train split."""
    from datasets import Dataset

    from trl_ext.data.affine import collect_affine

    train_rows, _ = collect_affine({"sat": {"n": 5, "k": 3}}, num_samples, seed, 0.1, progress=False)
    return Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in train_rows])


def make_sft_config(arm: str, output_dir: str, opts: argparse.Namespace) -> Any:
    """The recipe's ``SFTConfig`` (trl_ext arm: min-lr cosine + precision resolution; plain arm: as is)."""
    from trl import SFTConfig

    args = SFTConfig(
        output_dir=output_dir,
        per_device_train_batch_size=opts.batch_size,
        max_steps=opts.steps,
        logging_steps=1,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=opts.seed,
        **RECIPE_SFT_SETTINGS,
    )
    if arm == "trl_ext":
        from trl_ext.common.recipes import apply_min_lr_ratio, resolve_precision

        apply_min_lr_ratio(args, MIN_LR_RATIO)
        resolve_precision(args)
    return args


def run_once(arm: str, rnd: int, model_path: Path, dataset: Any, workdir: Path, opts: argparse.Namespace) -> RunResult:
    """Build a fresh trainer for ``arm`` from the saved weights and train ``opts.steps`` steps."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, set_seed
    from trl import SFTTrainer

    result = RunResult(arm=arm, round=rnd)
    gc.collect()
    can_reset = reset_peak_rss()
    result.start_rss_mib = current_rss_mib()
    t0 = time.perf_counter()

    set_seed(opts.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    peft_config = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.05, target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM"
    )
    timer = make_step_timer(result)
    callbacks: list[Any] = []
    if arm == "trl_ext":
        from trl_ext.common.loss_log import LossLogCallback

        loss_log = LossLogCallback()

        def on_log_sink(seconds: float, kwargs: dict[str, Any]) -> None:
            if "loss" in (kwargs.get("logs") or {}):
                result.callback_on_log_s.append(seconds)

        def train_end_sink(seconds: float, kwargs: dict[str, Any]) -> None:
            result.callback_train_end_s = seconds

        instrument(loss_log, "on_log", on_log_sink)
        instrument(loss_log, "on_train_end", train_end_sink)
        callbacks.append(loss_log)
    callbacks.append(timer)  # last: its on_log runs after LossLogCallback's

    trainer = SFTTrainer(
        model=model,
        args=make_sft_config(arm, str(workdir / f"{arm}-{rnd}"), opts),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)
    t1 = time.perf_counter()
    trainer.train()
    t2 = time.perf_counter()

    result.build_s, result.train_s = t1 - t0, t2 - t1
    record_peak(result, can_reset, timer)
    del trainer, model
    gc.collect()
    return result


# ---------------------------------------------------------------------------------------------- report


def summarise(results: list[RunResult], skip: int) -> dict[str, Any]:
    """Per-arm statistics and the two trl_ext/plain ratios (wall and CPU time)."""
    summary: dict[str, Any] = {"arms": {}}
    for arm in ARMS:
        runs = [r for r in results if r.arm == arm]
        wall = spread_ms([t for r in runs for t in r.timed_steps(skip)])
        on_log = [t for r in runs for t in r.callback_on_log_s[skip:]]
        train_end = [r.callback_train_end_s for r in runs if r.callback_train_end_s is not None]
        rss = [r.peak_rss_mib for r in runs if r.peak_rss_mib is not None]
        summary["arms"][arm] = {
            "timed_steps": wall["n"],
            "step_ms_median": wall["median_ms"],
            "step_ms_p10": wall["p10_ms"],
            "step_ms_p90": wall["p90_ms"],
            "round_step_ms_medians": [r.median_step_ms(skip) for r in runs],
            "cpu_step_ms_median": spread_ms([t for r in runs for t in r.timed_steps(skip, cpu=True)])["median_ms"],
            "round_cpu_step_ms_medians": [r.median_step_ms(skip, cpu=True) for r in runs],
            "callback_on_log_ms_median": 1e3 * statistics.median(on_log) if on_log else None,
            "callback_train_end_ms_median": 1e3 * statistics.median(train_end) if train_end else None,
            "train_s_median": statistics.median(r.train_s for r in runs),
            "build_s_median": statistics.median(r.build_s for r in runs),
            "peak_rss_mib_median": statistics.median(rss) if rss else None,
            "peak_rss_mib_max": max(rss) if rss else None,
            "peak_minus_start_rss_mib_median": statistics.median(
                r.peak_rss_mib - r.start_rss_mib for r in runs if r.peak_rss_mib is not None and r.start_rss_mib
            )
            if rss
            else None,
            "peak_rss_source": runs[0].peak_rss_source,
            "step1_losses": [r.step1_loss for r in runs],
        }
    a, b = summary["arms"]["trl_ext"], summary["arms"]["plain"]
    for prefix, key in (("", "round_step_ms_medians"), ("cpu_", "round_cpu_step_ms_medians")):
        ratios = paired_ratios(a[key], b[key])
        summary[f"{prefix}ratio_per_round"] = ratios["per_round"]
        summary[f"{prefix}ratio_median_of_rounds"] = ratios["median_of_rounds"]
        summary[f"{prefix}ratio_of_medians"] = ratios["of_medians"]
    # pooled medians (all steps of all rounds), as the table shows them
    summary["ratio_of_medians"] = a["step_ms_median"] / b["step_ms_median"]
    summary["cpu_ratio_of_medians"] = a["cpu_step_ms_median"] / b["cpu_step_ms_median"]
    summary["target_ratio"] = TARGET_RATIO
    summary["meets_target"] = summary["ratio_median_of_rounds"] <= TARGET_RATIO
    summary["meets_target_cpu"] = summary["cpu_ratio_median_of_rounds"] <= TARGET_RATIO
    losses = a["step1_losses"] + b["step1_losses"]
    summary["step1_loss_identical"] = len(set(losses)) == 1
    summary["process_peak_rss_mib"] = process_peak_rss_mib()
    return summary


def print_report(summary: dict[str, Any], opts: argparse.Namespace) -> None:
    """The result table, the ratios, the target check and the memory figures."""
    a, b = summary["arms"]["trl_ext"], summary["arms"]["plain"]
    print()
    print(
        f"SFT step time: trl_ext recipe set-up vs plain TRL SFTTrainer  "
        f"({opts.repeats} rounds x {opts.steps} steps, first {opts.skip_steps} dropped, "
        f"batch {opts.batch_size}, {opts.threads} torch thread(s))"
    )
    header = (
        f"{'arm':<8} {'step ms':>8} {'p10':>7} {'p90':>7} {'cpu ms':>7} {'n':>4} {'on_log ms':>10} "
        f"{'train_end ms':>13} {'train() s':>10} {'peak RSS MiB':>13} {'+RSS MiB':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, arm in (("trl_ext", a), ("plain", b)):
        print(
            f"{name:<8} {arm['step_ms_median']:>8.2f} {arm['step_ms_p10']:>7.2f} {arm['step_ms_p90']:>7.2f} "
            f"{arm['cpu_step_ms_median']:>7.2f} {arm['timed_steps']:>4d} "
            f"{fmt(arm['callback_on_log_ms_median'], '.3f'):>10} "
            f"{fmt(arm['callback_train_end_ms_median'], '.1f'):>13} {arm['train_s_median']:>10.2f} "
            f"{fmt(arm['peak_rss_mib_median'], '.1f'):>13} {fmt(arm['peak_minus_start_rss_mib_median'], '.1f'):>9}"
        )
    print("-" * len(header))
    print("ratio trl_ext/plain        wall (step ms)   cpu (cpu ms)")
    for label, wall_key, cpu_key in (
        ("median of rounds", "ratio_median_of_rounds", "cpu_ratio_median_of_rounds"),
        ("ratio of medians", "ratio_of_medians", "cpu_ratio_of_medians"),
    ):
        print(f"  {label:<24} {summary[wall_key]:>14.3f} {summary[cpu_key]:>14.3f}")
    print(f"  per round (wall)         {'  '.join(f'{r:.3f}' for r in summary['ratio_per_round'])}")
    print(f"  per round (cpu)          {'  '.join(f'{r:.3f}' for r in summary['cpu_ratio_per_round'])}")
    wall, cpu = verdict(summary["meets_target"]), verdict(summary["meets_target_cpu"])
    print(f"target (issue): ratio <= {TARGET_RATIO:.2f}, median of rounds -> wall {wall}, cpu {cpu}")
    on_log = a["callback_on_log_ms_median"]
    if on_log is not None:
        share = on_log / a["step_ms_median"]
        print(f"LossLogCallback.on_log: {on_log:.3f} ms per step = {100 * share:.2f} % of a trl_ext step")
    print(
        f"memory: peak RSS per run from {a['peak_rss_source']} (median over runs; max trl_ext "
        f"{fmt(a['peak_rss_mib_max'], '.1f')}, plain {fmt(b['peak_rss_mib_max'], '.1f')} MiB); '+RSS' = peak minus "
        f"RSS at the run's start; whole process (getrusage ru_maxrss + VmHWM): "
        f"{summary['process_peak_rss_mib']:.1f} MiB"
    )
    same = "yes" if summary["step1_loss_identical"] else "NO (runs are not comparable!)"
    print(f"step-1 loss identical in every run: {same} ({a['step1_losses'][0]})")


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags: the harness's (``--repeats``, ``--threads``, ``--seed``, ``--json``) and the run size."""
    parser = bench_parser(__doc__, repeats=5, repeats_help="Rounds; each runs trl_ext then plain.")
    parser.add_argument("--steps", type=int, default=20, help="Optimizer steps per run (max_steps).")
    parser.add_argument("--batch_size", type=int, default=8, help="per_device_train_batch_size (recipe: 8).")
    parser.add_argument("--skip_steps", type=int, default=1, help="Warm-up steps per run left out of the timing.")
    parser.add_argument("--collect_seed", type=int, default=42, help="Seed of the data collection (recipe: 42).")
    opts = parser.parse_args(argv)
    check_common(parser, opts)
    require(parser, opts.steps > opts.skip_steps, "--steps must be larger than --skip_steps")
    require(parser, opts.batch_size >= 1 and opts.skip_steps >= 0, "--batch_size must be >= 1, --skip_steps >= 0")
    return opts


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the report, optionally write JSON; returns the summary."""
    opts = parse_args(argv)
    quiet_offline_torch(opts.threads)

    from trl_ext.models import get_tiny_model_path

    session = BenchSession(opts, code_files=CODE_FILES)
    model_path = get_tiny_model_path()
    # enough rows that a run never crosses an epoch boundary (the recipe collects 400)
    num_samples = max(400, math.ceil(opts.steps * opts.batch_size / 0.9) + 1)
    dataset = build_dataset(num_samples, opts.collect_seed)
    print(f"model {model_path}; {len(dataset)} training rows; {opts.threads} torch thread(s)", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench_sft_") as tmp:
        results, _ = run_rounds(
            ARMS,
            opts.repeats,
            lambda arm, rnd: run_once(arm, rnd, model_path, dataset, Path(tmp), opts),
            rotate=False,  # trl_ext, plain, trl_ext, plain, ...
            describe=lambda r: (
                f"median step {r.median_step_ms(opts.skip_steps):7.2f} ms  train() {r.train_s:5.2f} s  "
                f"build {r.build_s:5.2f} s"
            ),
        )

    summary = session.finish(summarise(results, opts.skip_steps))
    print_report(summary, opts)
    session.print_footer(summary, hint="compare the cpu column")
    session.write(
        summary,
        [r.as_json() for r in results],
        recipe_sft_settings=RECIPE_SFT_SETTINGS,
        min_lr_ratio=MIN_LR_RATIO,
        num_samples=num_samples,
    )
    return summary


if __name__ == "__main__":
    main()
