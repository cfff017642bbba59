"""Cost of ``LatentCommTrainer``: its step against the sum of its required passes, its memory, the sender tool.

The embedded tiny model (``trl_ext.models.get_tiny_model_path()``) is sender and receiver; the data: ``--rows``
synthetic rows with a plan each, written by ``write_sender_states``. Details and figures: bench/README.md.

1. **Step vs the sum of its passes** (target: at most 1.10x). Per round a fresh ``LatentCommTrainer`` (the
   ``LatentCommConfig`` defaults, ``--batch_size``, fp32 on CPU, ``logging_steps=1``) trains ``--steps`` steps under
   ``harness.make_step_timer``; right after each step (after its timed ``on_log``) its batch is replayed with the
   ratios drawn for it, on the same receiver and optimizer, as timed components: (b) the plan teacher forward (no
   grad), (c) the negative forward (no grad; row i reads row i + 1's latents, length-matched, plus the noise), (a) the
   latent forward + the full loss (CE + w_plan L_plan + w_rc L_rc, ``trl_ext.latent.losses``) + its backward, the
   optimizer step (clipping, ``step``, scheduler, ``zero_grad``) and, for information, (a') the latent forward + CE
   alone + backward. Judged: the median over rounds of (median step / median of a + b + c + optimizer over the timed
   steps), wall and CPU (``paired_ratios``).
2. **Peak memory** against a plain ``transformers.Trainer`` (CE on the conversation without the message) on the same
   causal LM and batches, each arm in its own worker process (this file with ``--worker``): ``VmHWM`` reset when step
   ``skip + 1`` begins, read at each step's log; ``+peak`` = that peak minus the RSS at the reset. No target.
3. **Sender tool**: rows/s and tokens/s of ``write_sender_states`` at each of ``--sender_batch_sizes``.

    .venv/bin/python bench/bench_latent.py                      # 20 steps x 5 rounds, 64 rows, ~2 minutes
    .venv/bin/python bench/bench_latent.py --steps 30 --repeats 7 --json /tmp/bench_latent.json
    .venv/bin/python bench/bench_latent.py --quick              # smoke run (the test); verdicts mean nothing
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness as hx

TARGET_RATIO = 1.10
"""Trainer step over the sum of its required passes: at most this."""
PARTS = ("plan_forward", "negative_forward", "latent_fwd_bwd", "optimizer", "latent_fwd_bwd_ce")
LABELS = {
    "step": "trainer step", "plan_forward": "(b) plan teacher forward, no grad",
    "negative_forward": "(c) negative forward, no grad", "latent_fwd_bwd": "(a) latent fwd + full loss + bwd",
    "optimizer": "optimizer (clip, step, sched, zero)", "latent_fwd_bwd_ce": "(a') latent fwd + CE + bwd (info)",
    "sum": "sum a + b + c + optimizer", "sum_ce": "sum a' + b + c + optimizer (info)",
}  # fmt: skip
RATIOS = {"ratio": (0, "sum"), "cpu_ratio": (1, "sum"), "ratio_ce": (0, "sum_ce"), "cpu_ratio_ce": (1, "sum_ce")}
"""Summary key -> (0 wall / 1 CPU, the denominator of the step)."""
MEMORY_ARMS = ("latent", "plain")
MEMORY_MARKER = "BENCH_LATENT_MEMORY "
TRAIN_SETTINGS: dict[str, Any] = {
    "learning_rate": 1e-4, "logging_steps": 1, "report_to": "none", "use_cpu": True, "disable_tqdm": True,
    "save_strategy": "no", "dataloader_num_workers": 0,
}  # fmt: skip
"""``TrainingArguments`` fields of both trainers (besides batch size, steps and seed); the rest are defaults."""
TRAINING_FIELDS = ("max_grad_norm", "optim", "lr_scheduler_type", "weight_decay", "learning_rate")
MEASURED = "trainer receiver injection adapter losses collator sender"
CODE_FILES = tuple(f"trl_ext/latent/{name}.py" for name in MEASURED.split())
WORDS = "cat dog red blue seven three river stone light sum plan move left right up down north south".split()


@dataclass
class LatentRun(hx.StepTimes):
    """One training run: the harness's step times, each step's batch shape and its replayed components."""

    components: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    """Component -> step -> [wall, CPU] seconds of its replay on that step's batch."""
    batch_shapes: dict[int, list[int]] = field(default_factory=dict)
    """Step -> [rows, conversation tokens T, latent positions K, plan tokens P] (padded widths)."""

    def as_json(self) -> dict[str, Any]:
        out = super().as_json()
        out["components"] = {k: {str(s): v for s, v in sorted(d.items())} for k, d in self.components.items()}
        return out


def make_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` rows of the document's format with a plan each (questions of 4-16 words, answers of 3-10)."""
    rng = random.Random(seed)
    words = lambda lo, hi: " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))  # noqa: E731
    return [
        {"id": f"row{i:04d}", "plan": f"Plan: {words(3, 8)}.",
         "conversations": [{"from": "human", "value": f"Question {i}: {words(4, 16)}?"},
                           {"from": "gpt", "value": f"{words(3, 10)}."}]}
        for i in range(n)
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------- training runs


def build_trainer(arm: str, model_path: str, rows_file: str, out: str, opts: Any, steps: int) -> Any:
    """A ``LatentCommTrainer`` (``latent``) or a plain ``transformers.Trainer`` (``plain``) on the same rows."""
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from trl_ext.latent import LatentCollator, LatentCommConfig, LatentCommTrainer, LatentDataset, read_latent_file
    from trl_ext.latent.injection import add_latent_tokens
    from trl_ext.models import load_causal_lm, load_tokenizer

    common = dict(output_dir=out, max_steps=steps, per_device_train_batch_size=opts.batch_size, seed=opts.seed)
    model, tokenizer, rows = load_causal_lm(model_path), load_tokenizer(model_path), read_latent_file(rows_file)
    if arm == "latent":
        args = LatentCommConfig(**common, **TRAIN_SETTINGS)
        data = LatentDataset(rows, args.prepended_length)
        trainer = LatentCommTrainer(model, args, train_dataset=data, processing_class=tokenizer)
    else:
        add_latent_tokens(tokenizer, model)  # the same embeddings (and marker token) as the receiver's model
        collate, keep = LatentCollator(tokenizer), ("input_ids", "attention_mask", "labels")
        args = TrainingArguments(**common, **TRAIN_SETTINGS, remove_unused_columns=False, label_names=["labels"])
        trainer = Trainer(
            model, args, train_dataset=LatentDataset(rows, 256), processing_class=tokenizer,
            data_collator=lambda items: {k: v for k, v in collate(items).items() if k in keep},
        )  # fmt: skip
    trainer.remove_callback(PrinterCallback)
    return trainer


def run_latent(rnd: int, model_path: str, rows_file: str, workdir: Path, opts: Any, steps: int) -> LatentRun:
    """Train ``steps`` steps of a fresh ``LatentCommTrainer``; each step's batch is replayed right after the step."""
    from transformers import TrainerCallback, set_seed

    result = LatentRun(arm="latent", round=rnd)
    gc.collect()
    can_reset = hx.reset_peak_rss()
    result.start_rss_mib = hx.current_rss_mib()
    t0 = time.perf_counter()
    set_seed(opts.seed)
    trainer = build_trainer("latent", model_path, rows_file, str(workdir / f"latent-{rnd}"), opts, steps)
    batches: dict[int, list[Any]] = {}
    draw_ratios, compute_loss = trainer._ratios, trainer.compute_loss

    def ratios(key: str, has_plan: Any) -> list[float]:  # keeps the ratios the trainer draws for the step
        batches[trainer.state.global_step + 1][1] = drawn = draw_ratios(key, has_plan)
        return drawn

    def loss(model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:  # keeps the step's batch
        step = trainer.state.global_step + 1
        batches[step] = [inputs, None]
        shape = [*inputs["input_ids"].shape, inputs["hidden_states"].shape[1], inputs["plan_mask"].shape[1]]
        result.batch_shapes[step] = [int(x) for x in shape]
        return compute_loss(model, inputs, *args, **kwargs)

    class Replay(TrainerCallback):  # after the step timer's on_log: outside the step, before the next one
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                replay(trainer, state.global_step, *batches.pop(state.global_step), result)

    trainer._ratios, trainer.compute_loss = ratios, loss
    timer = hx.make_step_timer(result)
    trainer.add_callback(timer)  # its on_log runs after every other callback's but the replay's
    trainer.add_callback(Replay())
    t1 = time.perf_counter()
    trainer.train()
    result.build_s, result.train_s = t1 - t0, time.perf_counter() - t1
    hx.record_peak(result, can_reset, timer)
    return result


def replay(trainer: Any, step: int, inputs: dict[str, Any], ratios: Any, result: LatentRun) -> None:
    """Time (b), (c), (a), the optimizer step and (a') on one step's batch (see the module docstring)."""
    import torch
    import torch.nn.functional as F

    from trl_ext.latent.losses import align_supervised, plan_similarity_sums, random_contrast_sums
    from trl_ext.latent.trainer import length_matched

    receiver, args = trainer.model.train(), trainer.args
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # the torch optimizer under accelerate's
    batch = {k: v for k, v in inputs.items() if k != "ids"}
    hidden, pad = batch["hidden_states"], batch["latent_padding"]
    negatives = torch.zeros_like(hidden)
    for i in range(hidden.shape[0]):  # row i reads row i + 1's latents, length-matched, with the noise
        j, n = (i + 1) % hidden.shape[0], int((~pad[i]).sum())
        noise = args.negative_noise_std * torch.randn(n, hidden.shape[2])
        negatives[i, :n] = length_matched(hidden[j][~pad[j]], n) + noise

    @contextlib.contextmanager
    def timed(name: str) -> Any:
        c0, t0 = time.process_time(), time.perf_counter()
        yield
        result.components.setdefault(name, {})[step] = [time.perf_counter() - t0, time.process_time() - c0]

    with torch.no_grad():
        with timed("plan_forward"):
            plan_logits, plan_labels, _ = receiver(**batch, source="plan")
        with timed("negative_forward"):
            neg_logits, _, _ = receiver(**{**batch, "hidden_states": negatives}, source="latent", ratios=ratios)
    with timed("latent_fwd_bwd"):
        logits, labels, _ = receiver(**batch, source="latent", ratios=ratios)
        mask = labels.ne(-100)
        lat, teacher, aligned = align_supervised(logits, mask, plan_logits, plan_labels.ne(-100))
        s = plan_similarity_sums(lat, teacher, aligned)
        plan = 0.7 * s["kl_sum"] / s["tokens"].clamp(min=1) + 0.3 * s["cosine_sum"] / s["rows"].clamp(min=1)
        rc = random_contrast_sums(logits, neg_logits, mask, args.contrast_margin)
        ce = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        contrast = rc["hinge_sum"] / rc["rows"].clamp(min=1)
        (ce + args.plan_similarity_weight * plan + args.random_contrast_weight * contrast).backward()
    with timed("optimizer"):
        torch.nn.utils.clip_grad_norm_([p for p in receiver.parameters() if p.requires_grad], args.max_grad_norm)
        optimizer.step()
        trainer.lr_scheduler.step()
        optimizer.zero_grad()
    with timed("latent_fwd_bwd_ce"):
        logits, labels, _ = receiver(**batch, source="latent", ratios=ratios)
        F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100).backward()
    optimizer.zero_grad()


def memory_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One arm of the memory comparison in this fresh process: train, peak RSS over the steps after the skipped."""
    import torch
    from transformers import TrainerCallback

    torch.set_num_threads(spec["threads"])
    probe: dict[str, Any] = {"before": None, "peak": None, "reset": False}

    class PeakProbe(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == spec["skip_steps"]:
                gc.collect()
                probe["before"], probe["reset"] = hx.current_rss_mib(), hx.reset_peak_rss()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                probe["peak"] = hx.peak_rss_mib()  # read before on_train_end (the loss plot imports matplotlib)

    with tempfile.TemporaryDirectory(prefix="bench_latent_mem_") as tmp:
        opts = argparse.Namespace(**spec)
        trainer = build_trainer(spec["arm"], spec["model_path"], spec["rows_file"], tmp, opts, spec["steps"])
        trainer.add_callback(PeakProbe())
        trainer.train()
    ok = probe["reset"] and probe["peak"] is not None and probe["before"] is not None
    return {"arm": spec["arm"], "peak_above_mib": probe["peak"] - probe["before"] if ok else None,
            "peak_rss_mib": probe["peak"], "rss_before_mib": probe["before"],
            "trainable": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)}  # fmt: skip


def run_memory(model_path: str, rows_file: str, opts: Any) -> list[dict[str, Any]]:
    """``--memory_repeats`` workers per arm, the order alternating."""
    spec = {"model_path": model_path, "rows_file": rows_file, "threads": opts.threads, "steps": opts.memory_steps}
    spec.update(skip_steps=opts.skip_steps, batch_size=opts.batch_size, seed=opts.seed)
    env = dict(os.environ)
    if opts.malloc_mmap_threshold > 0:
        env["MALLOC_MMAP_THRESHOLD_"] = str(opts.malloc_mmap_threshold)

    def one(arm: str, rnd: int) -> dict[str, Any]:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps({**spec, "arm": arm})]
        what = f"memory worker {arm}"
        res, wall = hx.run_worker_process(cmd, MEMORY_MARKER, threads=opts.threads, timeout=600, what=what, env=env)
        return {**res, "round": rnd, "worker_wall_s": wall}

    return hx.run_rounds(
        MEMORY_ARMS, opts.memory_repeats, one, desc="memory workers",
        describe=lambda r: f"+peak {hx.fmt(r['peak_above_mib'], '7.1f')} MiB  peak RSS {r['peak_rss_mib']:7.1f} MiB",
    )[0]  # fmt: skip


def run_sender(model_path: str, rows: list[dict[str, Any]], workdir: Path, opts: Any) -> list[dict[str, Any]]:
    """``write_sender_states`` on ``rows`` at each batch size, ``--repeats`` rounds (order rotating)."""
    from trl_ext.latent import write_sender_states
    from trl_ext.latent.sender import first_user_prompt
    from trl_ext.models import load_causal_lm, load_tokenizer

    model, tok = load_causal_lm(model_path), load_tokenizer(model_path)
    texts = [tok.apply_chat_template(first_user_prompt(r), tokenize=False, add_generation_prompt=True) for r in rows]
    tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    for bs in opts.sender_batch_sizes:
        write_sender_states(model, tok, rows[:4], workdir / f"warm-{bs}", batch_size=bs, show_progress=False)

    def one(bs: int, rnd: int) -> dict[str, Any]:
        out = workdir / f"sender-{bs}-{rnd}"
        c0, t0 = time.process_time(), time.perf_counter()
        path = write_sender_states(model, tok, rows, out, batch_size=bs, show_progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        return {"batch_size": bs, "round": rnd, "wall_s": wall, "cpu_s": cpu, "rows": len(rows), "tokens": tokens,
                "rows_per_s": len(rows) / wall, "tokens_per_s": tokens / wall, "rows_file": str(path)}  # fmt: skip

    return hx.run_rounds(
        opts.sender_batch_sizes, opts.repeats, one, label=lambda bs: f"batch {bs}", desc="sender",
        describe=lambda r: f"{r['rows_per_s']:8.1f} rows/s {r['tokens_per_s']:9.0f} tokens/s",
    )[0]  # fmt: skip


def series(r: LatentRun, skip: int, cpu: int) -> dict[str, list[float]]:
    """The step and every component (and the two sums) of each timed step of a run, in seconds (wall or CPU)."""
    steps = [s for s in sorted(r.step_s) if s > skip]
    out = {"step": r.timed_steps(skip, bool(cpu)), **{n: [r.components[n][s][cpu] for s in steps] for n in PARTS}}
    out["sum"] = [sum(x) for x in zip(*(out[n] for n in PARTS[:4]))]
    out["sum_ce"] = [s - a + a_ce for s, a, a_ce in zip(out["sum"], out["latent_fwd_bwd"], out["latent_fwd_bwd_ce"])]
    return out


def summarise(runs: list[LatentRun], memory: list[dict], sender: list[dict], opts: Any) -> dict[str, Any]:
    """(1) the table and the ratios, (2) memory per arm and the ratios, (3) sender throughput per batch size."""
    per = {cpu: [series(r, opts.skip_steps, cpu) for r in runs] for cpu in (0, 1)}
    table: dict[str, Any] = {}
    for name in LABELS:
        wall, cpu = ([x for s in per[c] for x in s[name]] for c in (0, 1))
        table[name] = {**hx.spread_ms(wall), "cpu_median_ms": 1e3 * statistics.median(cpu)}
        table[name]["share_of_step"] = table[name]["median_ms"] / table["step"]["median_ms"]
    st: dict[str, Any] = {"components": table}
    for key, (cpu, den) in RATIOS.items():
        st[key] = hx.paired_ratios(*([statistics.median(s[k]) for s in per[cpu]] for k in ("step", den)))
    st["meets_target"] = st["ratio"]["median_of_rounds"] <= TARGET_RATIO
    st["meets_target_cpu"] = st["cpu_ratio"]["median_of_rounds"] <= TARGET_RATIO
    shapes = [v for r in runs for s, v in r.batch_shapes.items() if s > opts.skip_steps]
    st["batch_shape_mean"] = {k: statistics.fmean(v[i] for v in shapes) for i, k in enumerate(("rows", "T", "K", "P"))}
    st.update({k: statistics.median(getattr(r, k) or 0.0 for r in runs) for k in ("peak_rss_mib", "train_s")})
    st["step1_losses"] = [r.step1_loss for r in runs]
    mem: dict[str, Any] = {"arms": {}}
    for arm in MEMORY_ARMS:
        rs = [r for r in memory if r["arm"] == arm]
        above = [r["peak_above_mib"] for r in rs if r["peak_above_mib"] is not None]
        mem["arms"][arm] = {k: statistics.median(r[k] for r in rs) for k in ("peak_rss_mib", "rss_before_mib")}
        mem["arms"][arm].update(peak_above_mib=statistics.median(above) if above else None, workers=len(rs),
                                trainable=rs[0]["trainable"])  # fmt: skip
    a, b = mem["arms"]["latent"], mem["arms"]["plain"]
    ok = a["peak_above_mib"] and b["peak_above_mib"]
    mem["ratio_peak_above"] = a["peak_above_mib"] / b["peak_above_mib"] if ok else None
    mem["ratio_peak_rss"] = a["peak_rss_mib"] / b["peak_rss_mib"]

    snd: dict[str, Any] = {"rows": sender[0]["rows"], "tokens": sender[0]["tokens"], "batch_sizes": {}}
    for bs in opts.sender_batch_sizes:
        rs, keys = [r for r in sender if r["batch_size"] == bs], ("rows_per_s", "tokens_per_s", "wall_s", "cpu_s")
        snd["batch_sizes"][str(bs)] = {k: statistics.median(r[k] for r in rs) for k in keys}
    summary = {"targets": {"step_over_passes": TARGET_RATIO}, "steps": st, "memory": mem, "sender": snd}
    summary["verdicts"] = {"step_over_passes": hx.verdict(st["meets_target"])}
    summary["verdicts"]["step_over_passes_cpu"] = hx.verdict(st["meets_target_cpu"])
    return summary


def print_report(summary: dict[str, Any], opts: Any) -> None:
    st, mem, snd, model = summary["steps"], summary["memory"], summary["sender"], summary["model"]
    shape, table, verdicts = st["batch_shape_mean"], st["components"], summary["verdicts"]
    print(f"\n(1) LatentCommTrainer step vs its passes: tiny model ({model['parameters'] / 1e6:.3f} M parameters), "
          f"batches of {shape['rows']:.0f} rows, mean widths T {shape['T']:.1f}, K {shape['K']:.1f}, plan "
          f"{shape['P']:.1f}; {table['step']['n']} timed steps, {opts.repeats} round(s)")  # fmt: skip
    header = f"{'':<36} {'median ms':>9} {'p10 / p90':>17} {'cpu ms':>8} {'share':>7}"
    print(header + "\n" + "-" * len(header))
    for name, c in table.items():
        print(f"{LABELS[name]:<36} {c['median_ms']:>9.2f} {c['p10_ms']:>8.2f} / {c['p90_ms']:<6.2f} "
              f"{c['cpu_median_ms']:>8.2f} {100 * c['share_of_step']:>6.1f}%")  # fmt: skip
    print("-" * len(header))
    for key, (cpu, den) in RATIOS.items():
        r, rounds = st[key], " ".join(f"{x:.3f}" for x in st[key]["per_round"])
        label = f"{'cpu' if cpu else 'wall'}: step / {LABELS[den].split(' (')[0][4:]}"
        print(f"{label:<38} median of rounds {r['median_of_rounds']:.3f}, of medians {r['of_medians']:.3f}; {rounds}")
    print(
        f"TARGET (step <= {TARGET_RATIO:.2f}x the sum of its passes): {st['ratio']['median_of_rounds']:.3f} -> "
        f"{verdicts['step_over_passes']} (cpu {st['cpu_ratio']['median_of_rounds']:.3f} -> "
        f"{verdicts['step_over_passes_cpu']})"
    )
    print(f"\n(2) Peak memory: {opts.memory_steps} steps per worker, peak over the steps after step {opts.skip_steps}")
    header = f"{'arm':<8} {'+peak MiB':>10} {'peak RSS MiB':>13} {'RSS before':>11} {'trainable':>10} {'workers':>8}"
    print(header + "\n" + "-" * len(header))
    for arm, a in mem["arms"].items():
        print(f"{arm:<8} {hx.fmt(a['peak_above_mib'], '10.1f')} {a['peak_rss_mib']:>13.1f} "
              f"{a['rss_before_mib']:>11.1f} {a['trainable']:>10d} {a['workers']:>8d}")  # fmt: skip
    print(f"ratio latent/plain: +peak {hx.fmt(mem['ratio_peak_above'], '.3f')}, peak RSS {mem['ratio_peak_rss']:.3f}")
    print(f"\n(3) write_sender_states: {snd['rows']} rows, {snd['tokens']} tokens read, median of {opts.repeats}")
    for bs, r in snd["batch_sizes"].items():
        print(f"batch {bs:>3}: {r['rows_per_s']:8.1f} rows/s {r['tokens_per_s']:9.0f} tokens/s "
              f"({1e3 * r['wall_s']:.1f} ms, cpu {1e3 * r['cpu_s']:.1f} ms)")  # fmt: skip


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The harness's flags and the sizes; ``--quick``: 3 steps, 1 round, 16 rows, no warm-up, 1 worker per arm."""
    parser = hx.bench_parser(
        __doc__, repeats=5, repeats_help="Rounds: training runs with their replays, sender runs per batch size (5).",
        quick_help="Smoke run: 3 steps (1 dropped), 1 round, 16 rows, no warm-up run, 1 memory worker per arm.",
    )  # fmt: skip
    parser.add_argument("--steps", type=int, default=20, help="Optimizer steps per training run (default 20).")
    parser.add_argument("--skip_steps", type=int, default=1, help="Warm-up steps dropped from the timing (1).")
    parser.add_argument("--batch_size", type=int, default=8, help="per_device_train_batch_size (default 8).")
    parser.add_argument("--rows", type=int, default=64, help="Rows of the data, each with a plan (default 64).")
    parser.add_argument("--memory_steps", type=int, default=6, help="Steps per memory worker (default 6).")
    parser.add_argument("--memory_repeats", type=int, default=2, help="Memory workers per arm (default 2).")
    parser.add_argument("--sender_batch_sizes", type=int, nargs="+", default=[1, 8], help="Default: 1 8.")
    parser.add_argument("--malloc_mmap_threshold", type=int, default=65536, help="Of the memory workers (0: glibc's).")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.worker is not None:
        return opts
    if opts.quick:
        opts.steps, opts.skip_steps, opts.repeats, opts.rows = 3, 1, 1, 16
        opts.memory_steps, opts.memory_repeats = 3, 1
    hx.check_common(parser, opts)
    ok = opts.steps > opts.skip_steps >= 0 and opts.memory_steps > opts.skip_steps
    hx.require(parser, ok, "--steps and --memory_steps must exceed --skip_steps (>= 0)")
    hx.require(parser, opts.rows >= opts.batch_size >= 2, "need --rows >= --batch_size >= 2")
    hx.require(parser, opts.memory_repeats >= 1 and min(opts.sender_batch_sizes) >= 1, "counts must be >= 1")
    return opts


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the report, optionally write JSON; returns the summary."""
    opts = parse_args(argv)
    hx.quiet_offline_torch(opts.threads)
    if opts.worker is not None:
        hx.emit_result(MEMORY_MARKER, memory_worker(json.loads(opts.worker)))
        return {}
    from trl_ext.latent import LatentCommConfig
    from trl_ext.models import get_tiny_model_path, load_causal_lm

    session = hx.BenchSession(opts, code_files=CODE_FILES)
    model_path = str(get_tiny_model_path())
    config = json.loads((Path(model_path) / "config.json").read_text())
    model = {"path": model_path, **{k: config[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size")}}
    model["parameters"] = sum(p.numel() for p in load_causal_lm(model_path).parameters())
    print(f"model {model_path}; {opts.rows} rows; {opts.threads} torch thread(s)", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_latent_") as tmp:
        workdir = Path(tmp)
        sender = run_sender(model_path, make_rows(opts.rows, opts.seed), workdir, opts)
        rows_file = sender[-1]["rows_file"]

        def describe(r: LatentRun) -> str:
            s = {k: statistics.median(v) for k, v in series(r, opts.skip_steps, 0).items()}
            return f"step {1e3 * s['step']:7.2f} ms  passes {1e3 * s['sum']:7.2f} ms  build {r.build_s:.1f} s"

        runs, _ = hx.run_rounds(
            ["latent"], opts.repeats, lambda _, rnd: run_latent(rnd, model_path, rows_file, workdir, opts, opts.steps),
            describe=describe, warmup=() if opts.quick else ["latent"], desc="training runs",
            run_warmup=lambda _: run_latent(-1, model_path, rows_file, workdir, opts, opts.skip_steps + 2),
        )  # fmt: skip
        memory = run_memory(model_path, rows_file, opts)
        args = LatentCommConfig(output_dir=str(workdir / "settings"), **TRAIN_SETTINGS)
    summary = summarise(runs, memory, sender, opts)
    summary["model"] = model
    session.finish(summary)
    print_report(summary, opts)
    session.print_footer(summary, hint="compare the cpu columns")
    own = list(LatentCommConfig.__annotations__)  # the fields of its own body (and TRAINING_FIELDS)
    latent = json.loads(json.dumps({k: getattr(args, k) for k in (*own, *TRAINING_FIELDS)}, default=str))
    settings = {"shared": TRAIN_SETTINGS, "batch_size": opts.batch_size, "latent": latent}
    runs_json = [r.as_json() for r in runs]
    session.write(summary, runs_json, train_settings=settings, memory_runs=memory, sender_runs=sender)
    return summary


if __name__ == "__main__":
    main()
