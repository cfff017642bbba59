"""Step-time cost of each selective-generalisation strategy against a plain TRL ``SFTTrainer`` step.

The issue's target: for every strategy of ``trl_ext.selective.config.STRATEGIES``, the step-time ratio
strategy/plain is **within 10 % of the ratio implied by the forward/backward passes the strategy needs** (the
measured/implied ratio lies in [0.90, 1.10]). SafeLoRA: the time of ``safelora_project`` on a model whose
q/k/v/o/gate/up/down projections all carry LoRA.

What is compared
    * ``plain``: ``trl.SFTTrainer`` with an ``SFTConfig`` holding the settings below.
    * one arm per strategy: ``trl_ext.SelectiveSFTTrainer`` with a ``SelectiveConfig`` holding the same settings
      plus the strategy and the defaults of docs/selective.md of its knobs, except ``beta_kl`` (``--beta_kl``, default
      0.1, where the default 0.0 would make ``kl_divergence`` a zero-weighted term and drop the KL from
      ``positive_negative_proxy``). Every selective arm gets both proxy sets (A⁺ and A⁻); ``safe_lora`` gets a
      copy of the model minus a rank-32 delta on its projections as ``safelora_base_model`` (the trained model
      is the "aligned" one: base + a merged proxy LoRA).

    Every arm trains the embedded tiny model (``trl_ext.models.get_tiny_model_path()``; or a random-init Qwen2 of
    ``--hidden_size``/``--intermediate_size``/``--layers`` with the tiny tokenizer) with the same LoRA adapter
    (r 32, alpha 64, rsLoRA, dropout 0, ``target_modules="all-linear"``: the 7 projections of every layer) on the
    selective demo's data (``trl_ext.selective.demo.make_demo``: ``outcome_train``, ``proxy_positive`` and
    ``proxy_negative``, 32 rows each, conversational prompt-completion), batch ``--batch_size`` (proxy batches the
    same size), the same seed, lr 1e-3 constant, AdamW (β₂ 0.98, no weight decay), clipping at 1.0, fp32,
    ``max_length`` 64, ``logging_steps=1``, no evaluation, no saving, no reporting.

How
    One process. Two untimed warm-up runs (plain and the first strategy, ``--skip_steps`` + 2 steps; none with
    ``--quick``) absorb the process's own warm-up (lazy imports, allocator growth). Every round then runs every
    arm once, then the component measurements; the arm order rotates by one position each round. Every run
    reloads the model from disk, re-seeds and builds a fresh trainer in its own temporary folder. Step times come
    from ``harness.make_step_timer`` (registered last): ``perf_counter`` and ``process_time`` from
    ``on_step_begin`` to the end of the step's ``on_log``, i.e. forward, backward, gradient surgery, clipping,
    optimizer and scheduler step, weight edits and per-step logging; the outcome batch is fetched before
    ``on_step_begin`` (not counted), proxy batches are drawn inside the step (counted). The first
    ``--skip_steps`` steps of each run are dropped. One-off work is timed separately and is not in the step
    times: the alignment plane / precomputed proxy gradient (``_prepare_plane_and_proxy_grad``, run by
    ``train()`` before the first step), the train-end edits (``EndSteering``) and the SafeLoRA projection at
    train end (``SafeLoRACallback.on_train_end``, which loads the base weights from disk).

    Pass counting: in every run a forward pre-hook on the decoder trunk counts forwards with and without grad,
    with the adapter disabled (base model) and with ``output_hidden_states``; a forward hook on decoder layer 0
    puts a tensor hook on its output that counts the backward passes that run through the trunk. Counts are
    kept per optimizer step (``on_step_begin`` to ``on_step_end``) and outside the steps (set-up, train end) and
    are compared with :data:`PASS_TABLE`.

    Implied ratio: after the arms, every round measures the components on the demo batches with the trainer's own
    code (a ``SelectiveSFTTrainer`` whose strategy adds no loss term, so ``training_step`` is SFT's): the outcome
    forward+backward (``training_step``), the optimizer part of a step (clip, AdamW step, scheduler step,
    ``zero_grad``), the proxy draw (``_draw``: both streams collated), ``proxy_forward`` + CE + backward and the
    no-grad ``base_forward`` on A⁺ and on A⁻, the same on A⁺ with hidden states (+ representation MSE for the
    backward), and the small tensor operations (``project_gradients``, ``PrecomputedProjection.surgery``,
    ``GradientSteering.surgery``, the orth/directional ``PlanePenalty`` term + its backward; plane and proxy
    gradient are random tensors of the right shapes). For strategy s in round r::

        implied_ms = plain_step_ms(r) + Σ_c PASS_TABLE[s][c]·t_c(r) + Σ_o OPS_TABLE[s][o]·t_o(r)
                     + (tokens_s(r)/tokens_plain(r) − 1)·t_fb_outcome(r)

    (the last term: the outcome pass on the strategy's own batches, which hold more padded tokens for ``naive``,
    whose batches come from the union T ∪ A⁺; it is 0 for every other strategy, whose outcome batches are plain's).
        implied ratio = implied_ms / plain_step_ms(r)

    The reported implied ratio is the median over rounds, the measured ratio the median over rounds of
    (strategy median step / plain median step), and measured/implied the median over rounds of their quotient
    (the same in CPU time). ``passes only`` is the implied ratio without the ops (draw and tensor operations).

    SafeLoRA: ``safelora_project`` (threshold 0.5; ``approx`` and ``exact``) on a PEFT model with LoRA (r 32,
    random A and B) on all 7 projections of every layer, base = the model's weights, aligned = base + a rank-32
    delta per projection (entries about 1 % of the weight's std: a merged proxy LoRA), for the tiny model and a
    random-init Qwen2 (hidden 512, intermediate 1376, 8 layers, 8 heads, 2 KV heads; ``--safelora_*``). The
    adapter's B matrices are restored before each of ``--safelora_repeats`` timings. ``exact`` runs a float64
    SVD of the full ``out × in`` alignment matrix whatever its rank.

Reading the output
    Table 1: median step time, ratios vs plain (wall and CPU), implied ratio, measured/implied, and whether it is
    within 10 %. Table 2: the pass table next to the passes counted per step. Table 3: one-off costs. Table 4: the
    components. Table 5: SafeLoRA. The 1-minute load average is printed: above the number of cores, wall times are
    inflated by other processes -- compare the CPU columns.

    .venv/bin/python bench/bench_selective.py                               # 20 steps x 5 rounds, 1 thread
    .venv/bin/python bench/bench_selective.py --strategies dpo grad_project --json /tmp/bench_selective.json
    .venv/bin/python bench/bench_selective.py --quick                       # smoke run: 4 steps x 1 round
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import statistics
import tempfile
import time
from collections.abc import Callable
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
    median_or_none,
    quiet_offline_torch,
    record_peak,
    require,
    reset_peak_rss,
    run_rounds,
    spread_ms,
)

PLAIN = "plain"
TARGET_TOLERANCE = 0.10
"""|measured/implied − 1| ≤ this (the issue: step-time ratio within 10 % of the implied ratio)."""
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_SETTINGS: dict[str, Any] = {"r": 32, "lora_alpha": 64, "use_rslora": True, "lora_dropout": 0.0}
NUM_PROXY = 32
"""Rows of A⁺ and of A⁻ (the demo's default)."""

TRAIN_SETTINGS: dict[str, Any] = {
    "gradient_accumulation_steps": 1,
    "learning_rate": 1e-3,
    "lr_scheduler_type": "constant",
    "warmup_steps": 0,
    "weight_decay": 0.0,
    "adam_beta2": 0.98,
    "max_grad_norm": 1.0,
    "gradient_checkpointing": False,
    "bf16": False,
    "max_length": 64,
    "dataloader_num_workers": 0,
}
"""``SFTConfig`` fields shared by every arm (the selective demo's outcome stage, plus clipping at 1.0)."""

COMPONENTS = (
    "fb_outcome",
    "optimizer",
    "draw",
    "fb_pos",
    "fb_neg",
    "f_base_pos",
    "f_base_neg",
    "fb_pos_hidden",
    "f_base_pos_hidden",
    "project",
    "project_out",
    "steer",
    "orth_penalty",
    "directional_penalty",
)
COMPONENT_HELP: dict[str, str] = {
    "fb_outcome": "outcome micro-batch: training_step (SFT compute_loss + backward)",
    "optimizer": "clip_grad_norm_ + AdamW step + scheduler step + zero_grad",
    "draw": "proxy draw: ProxyCycler.next_batches (A⁺ and A⁻ collated) + _prepare_input",
    "fb_pos": "A⁺ proxy_forward (grad, full logits) + CE + backward",
    "fb_neg": "A⁻ proxy_forward (grad, full logits) + CE + backward",
    "f_base_pos": "A⁺ base_forward (adapter off, no grad)",
    "f_base_neg": "A⁻ base_forward (adapter off, no grad)",
    "fb_pos_hidden": "A⁺ proxy_forward with hidden states (last-position logits) + representation MSE + backward",
    "f_base_pos_hidden": "A⁺ base_forward with hidden states (last-position logits)",
    "project": "project_gradients(g_T, g_A, strict) + set_gradients + 4 logged stats",
    "project_out": "PrecomputedProjection.surgery (g − ⟨g,ḡ⟩/‖ḡ‖² ḡ)",
    "steer": "GradientSteering.surgery (g + α S)",
    "orth_penalty": "PlanePenalty orth term + its backward",
    "directional_penalty": "PlanePenalty directional term + its backward",
}

PASS_TABLE: dict[str, dict[str, int]] = {
    PLAIN: {},
    "naive": {},  # CE on the union T ∪ A⁺: the same passes, batches drawn from the union
    "positive_negative_proxy": {"fb_pos": 1, "f_base_pos": 1, "fb_neg": 1},  # CE(A⁺) + KL (β_kl > 0) − CE(A⁻)
    "kl_divergence": {"fb_pos": 1, "f_base_pos": 1},
    "representation_constraint": {"fb_pos_hidden": 1, "f_base_pos_hidden": 1},
    "dpo": {"fb_pos": 1, "fb_neg": 1, "f_base_pos": 1, "f_base_neg": 1},
    "grad_project": {"fb_pos": 1},  # its own forward + backward in the surgery (proxy_gradient)
    "grad_project_precomputed_proxy_grad": {},
    "orth_penalty": {},
    "directional_penalty": {},
    "steering_weights": {},
    "steering_weights_add_alignment_plane": {},
    "safe_lora": {},
}
"""Extra forward/backward passes per optimizer step on top of the outcome micro-batch's forward + backward,
read from ``selective_mechanisms.py`` / ``selective_mixin.py``: ``fb_*`` = a forward with grad whose graph is
backpropagated, ``f_base_*`` = a no-grad forward with the adapter disabled, ``*_hidden`` = with hidden states."""

OPS_TABLE: dict[str, dict[str, int]] = {
    PLAIN: {},
    "naive": {},
    "positive_negative_proxy": {"draw": 1},
    "kl_divergence": {"draw": 1},
    "representation_constraint": {"draw": 1},
    "dpo": {"draw": 1},
    "grad_project": {"draw": 1, "project": 1},
    "grad_project_precomputed_proxy_grad": {"project_out": 1},
    "orth_penalty": {"orth_penalty": 1},
    "directional_penalty": {"directional_penalty": 1},
    "steering_weights": {"steer": 1},
    "steering_weights_add_alignment_plane": {},
    "safe_lora": {},
}
"""Per-step work other than passes: the proxy draw and the strategy's tensor operations."""

ONE_OFF: dict[str, str] = {
    "grad_project_precomputed_proxy_grad": "mean proxy gradient: one proxy training pass over A⁺",
    "orth_penalty": "alignment plane: proxy training passes over A⁺ and A⁻",
    "directional_penalty": "alignment plane: proxy training passes over A⁺ and A⁻",
    "steering_weights": "alignment plane: proxy training passes over A⁺ and A⁻",
    "steering_weights_add_alignment_plane": "alignment plane (A⁺, A⁻) at start; θ ← θ − αS at train end",
    "safe_lora": "SafeLoRA projection at train end (base weights loaded from disk)",
}
"""Work outside the steps, per strategy (timed separately)."""

COUNT_KEYS = ("fwd_grad", "bwd", "fwd_nograd", "fwd_base", "fwd_hidden")


def expected_counts(strategy: str) -> dict[str, int]:
    """Per-step counts the hooks must see for ``strategy``: the outcome pass plus :data:`PASS_TABLE`'s."""
    table = PASS_TABLE[strategy]
    fb = sum(n for c, n in table.items() if c.startswith("fb_"))
    f = sum(n for c, n in table.items() if c.startswith("f_base_"))
    hidden = sum(n for c, n in table.items() if c.endswith("_hidden"))
    return {"fwd_grad": 1 + fb, "bwd": 1 + fb, "fwd_nograd": f, "fwd_base": f, "fwd_hidden": hidden}


def expected_setup_counts(strategy: str, batch_size: int) -> dict[str, int]:
    """Forward/backward passes of the one-off proxy training passes before the first step."""
    batches = math.ceil(NUM_PROXY / batch_size)
    if strategy == "grad_project_precomputed_proxy_grad":
        n = batches
    elif strategy in (
        "orth_penalty",
        "directional_penalty",
        "steering_weights",
        "steering_weights_add_alignment_plane",
    ):
        n = 2 * batches
    else:
        n = 0
    return {"fwd_grad": n, "bwd": n, "fwd_nograd": 0, "fwd_base": 0, "fwd_hidden": 0}


# ---------------------------------------------------------------------------------------------- pass counting


def make_pass_counter(model: Any) -> Any:
    """A ``TrainerCallback`` counting trunk forwards/backwards per optimizer step (hooks on ``model``)."""
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer
    from transformers import TrainerCallback

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    trunk = base.model
    layer0 = trunk.layers[0]
    tuner = next((m for m in model.modules() if isinstance(m, BaseTunerLayer)), None)

    class PassCounter(TrainerCallback):
        def __init__(self) -> None:
            self.outside = dict.fromkeys(COUNT_KEYS, 0)
            self.steps: dict[int, dict[str, int]] = {}
            self.outcome_tokens: dict[int, int] = {}
            self._bucket = self.outside
            self._in_step = False
            self._step_tokens: int | None = None
            self.handles = [
                trunk.register_forward_pre_hook(self._pre, with_kwargs=True),
                layer0.register_forward_hook(self._post),
            ]

        def _pre(self, module, args, kwargs):
            grad = torch.is_grad_enabled()
            self._bucket["fwd_grad" if grad else "fwd_nograd"] += 1
            if tuner is not None and tuner.disable_adapters:
                self._bucket["fwd_base"] += 1
            if kwargs.get("output_hidden_states"):
                self._bucket["fwd_hidden"] += 1
            ids = kwargs.get("input_ids", args[0] if args else None)
            if self._in_step and grad and self._step_tokens is None and ids is not None:
                self._step_tokens = int(ids.numel())  # the first forward of a step is the outcome micro-batch

        def _post(self, module, args, output):
            hidden = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(hidden, torch.Tensor) and hidden.requires_grad:
                hidden.register_hook(self._on_backward)

        def _on_backward(self, grad):
            self._bucket["bwd"] += 1
            return None

        def on_step_begin(self, args, state, control, **kwargs):
            self._bucket, self._in_step, self._step_tokens = dict.fromkeys(COUNT_KEYS, 0), True, None

        def on_step_end(self, args, state, control, **kwargs):
            self.steps[state.global_step] = self._bucket
            if self._step_tokens is not None:
                self.outcome_tokens[state.global_step] = self._step_tokens
            self._bucket, self._in_step = self.outside, False

        def remove(self) -> None:
            for handle in self.handles:
                handle.remove()

    return PassCounter()


# ---------------------------------------------------------------------------------------------- runs


@dataclass
class ArmResult(StepTimes):
    """One training run of one arm in one round: the harness's step times plus passes and one-off costs."""

    pass_counts: dict[int, dict[str, int]] = field(default_factory=dict)
    """Optimizer step -> counts of the hooks during that step."""
    outside_counts: dict[str, int] = field(default_factory=dict)
    """Counts outside every step (one-off set-up, train end)."""
    outcome_tokens: dict[int, int] = field(default_factory=dict)
    """Optimizer step -> padded tokens of its outcome micro-batch."""
    setup_s: float | None = None
    """``_prepare_plane_and_proxy_grad`` (alignment plane / precomputed proxy gradient)."""
    train_end_s: float | None = None
    """The trainer's train-end weight edits (``_SelectiveHooks.on_train_end``)."""
    safelora_s: float | None = None
    """``SafeLoRACallback.on_train_end`` (load base weights + project)."""
    safelora_projected: str | None = None


def lora_config() -> Any:
    """LoRA r 32, alpha 64, rsLoRA, no dropout, on all linear layers (the 7 projections)."""
    from peft import LoraConfig

    return LoraConfig(target_modules="all-linear", task_type="CAUSAL_LM", **LORA_SETTINGS)


def train_config(strategy: str, output_dir: str, opts: argparse.Namespace, safelora_base: Path | None) -> Any:
    """``SFTConfig`` (plain) or ``SelectiveConfig`` (a strategy) with :data:`TRAIN_SETTINGS`."""
    common: dict[str, Any] = {
        "output_dir": output_dir,
        "per_device_train_batch_size": opts.batch_size,
        "max_steps": opts.steps,
        "logging_steps": 1,
        "eval_strategy": "no",
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": opts.seed,
        **TRAIN_SETTINGS,
    }
    if strategy == PLAIN:
        from trl import SFTConfig

        return SFTConfig(**common)
    from trl_ext import SelectiveConfig

    extra: dict[str, Any] = {"strategy": strategy, "beta_kl": opts.beta_kl, "proxy_batch_size": opts.batch_size}
    if strategy == "safe_lora":
        extra["safelora_base_model"] = str(safelora_base)
    return SelectiveConfig(**common, **extra)


def run_arm(
    strategy: str, rnd: int, model_path: Path, data: dict[str, Any], workdir: Path, opts: argparse.Namespace
) -> ArmResult:
    """Build a fresh trainer for ``strategy`` (or ``plain``) from the saved weights and train ``opts.steps`` steps."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, set_seed

    from trl_ext.common.lm_head_tiles import vocab_tile

    result = ArmResult(arm=strategy, round=rnd)
    gc.collect()
    can_reset = reset_peak_rss()
    result.start_rss_mib = current_rss_mib()
    t0 = time.perf_counter()
    set_seed(opts.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    args = train_config(strategy, str(workdir / f"{strategy}-{rnd}"), opts, workdir / "safelora_base")
    if strategy == PLAIN:
        from trl import SFTTrainer

        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=data["outcome_train"],
            processing_class=tokenizer,
            peft_config=lora_config(),
        )
    else:
        from trl_ext import SelectiveSFTTrainer

        trainer = SelectiveSFTTrainer(
            model=model,
            args=args,
            train_dataset=data["outcome_train"],
            proxy_dataset=data["proxy_positive"],
            negative_proxy_dataset=data["proxy_negative"],
            processing_class=tokenizer,
            peft_config=lora_config(),
        )
        instrument_one_offs(trainer, result)
    trainer.remove_callback(PrinterCallback)
    counter = make_pass_counter(trainer.model)
    timer = make_step_timer(result)
    trainer.add_callback(counter)
    trainer.add_callback(timer)  # last: its on_log runs after every other callback's
    t1 = time.perf_counter()
    # plain TRL has no lm_head_vocab_tile: it gets trl_ext's tile here (as every selective arm does inside its
    # train()) unless --plain_lm_head_tile trl, so that the arms differ only by the strategy's work
    with vocab_tile(plain_tile(opts, args.device) if strategy == PLAIN else None):
        trainer.train()
    t2 = time.perf_counter()
    counter.remove()

    result.build_s, result.train_s = t1 - t0, t2 - t1
    result.pass_counts, result.outside_counts = counter.steps, counter.outside
    result.outcome_tokens = counter.outcome_tokens
    record_peak(result, can_reset, timer)
    del trainer, model, counter, timer
    gc.collect()
    return result


def plain_tile(opts: argparse.Namespace, device: Any) -> int | None:
    """The fused-LM-head tile of the plain arm: trl_ext's (as the selective arms run) or None (TRL's own)."""
    from trl_ext.common.lm_head_tiles import resolve_vocab_tile

    return resolve_vocab_tile(None, device) if opts.plain_lm_head_tile == "trl_ext" else None


def instrument_one_offs(trainer: Any, result: ArmResult) -> None:
    """Time the set-up (plane / proxy gradient), the train-end edits and SafeLoRA of ``trainer`` into ``result``."""
    from trl_ext.selective.safelora.callback import SafeLoRACallback

    def setup_sink(seconds: float, kwargs: dict[str, Any]) -> None:
        result.setup_s = seconds

    instrument(trainer, "_prepare_plane_and_proxy_grad", setup_sink)
    for callback in trainer.callback_handler.callbacks:
        if type(callback).__name__ == "_SelectiveHooks":  # the trainer's mechanism hooks (a private class)

            def end_sink(seconds: float, kwargs: dict[str, Any]) -> None:
                result.train_end_s = seconds

            instrument(callback, "on_train_end", end_sink)
        elif isinstance(callback, SafeLoRACallback):

            def safelora_sink(seconds: float, kwargs: dict[str, Any], cb: Any = callback) -> None:
                result.safelora_s = seconds
                if cb.report is not None:
                    result.safelora_projected = f"{cb.report.num_projected}/{len(cb.report.modules)}"

            instrument(callback, "on_train_end", safelora_sink)


# ---------------------------------------------------------------------------------------------- components


@dataclass
class ComponentResult:
    """Per-iteration wall and CPU seconds of every component in one round."""

    round: int
    wall_s: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in COMPONENTS})
    cpu_s: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in COMPONENTS})

    def median_ms(self, component: str, skip: int, cpu: bool = False) -> float:
        values = (self.cpu_s if cpu else self.wall_s)[component][skip:]
        return 1e3 * statistics.median(values)


def run_components(
    rnd: int, model_path: Path, data: dict[str, Any], workdir: Path, opts: argparse.Namespace
) -> ComponentResult:
    """Time each component ``opts.steps`` times on the demo batches with the trainer's own code paths."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    from trl_ext import SelectiveSFTTrainer
    from trl_ext.common.lm_head_tiles import vocab_tile
    from trl_ext.selective.losses import representation_mse
    from trl_ext.selective.mechanisms import (
        GradientSteering,
        PlanePenalty,
        PrecomputedProjection,
        _ce_from_logits,
    )
    from trl_ext.selective.projection import project_gradients

    result = ComponentResult(round=rnd)
    gc.collect()
    set_seed(opts.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    # grad_project adds no loss term: training_step is SFTTrainer's; its surgery is never reached here
    args = train_config("grad_project", str(workdir / f"components-{rnd}"), opts, None)
    trainer = SelectiveSFTTrainer(
        model=model,
        args=args,
        train_dataset=data["outcome_train"],
        proxy_dataset=data["proxy_positive"],
        negative_proxy_dataset=data["proxy_negative"],
        processing_class=tokenizer,
        peft_config=lora_config(),
    )
    model = trainer.model
    trainer.create_optimizer_and_scheduler(num_training_steps=opts.steps)
    optimizer, scheduler = trainer.optimizer, trainer.lr_scheduler
    params = trainer.trainable_parameters()
    gen = torch.Generator().manual_seed(opts.seed)
    trainer.plane = {n: 1e-3 * torch.randn(p.shape, generator=gen) for n, p in params.items()}
    trainer.proxy_grad = {n: 1e-3 * torch.randn(p.shape, generator=gen) for n, p in params.items()}
    steering = GradientSteering(args.steering_alpha, args.final_steering_alpha, args.alpha_warmup_steps, False)
    penalties = {
        "orth_penalty": PlanePenalty(args.lambda_plane, "orth"),
        "directional_penalty": PlanePenalty(args.lambda_plane, "directional"),
    }
    loader = iter(trainer.get_train_dataloader())
    # the components run outside train(): apply the tile that the trainer's train() applies (until the return)
    tile = contextlib.ExitStack()
    tile.enter_context(vocab_tile(trainer.lm_head_vocab_tile))

    def timed(component: str, fn: Callable[[], Any]) -> Any:
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        t1, c1 = time.perf_counter(), time.process_time()
        result.wall_s[component].append(t1 - t0)
        result.cpu_s[component].append(c1 - c0)
        return out

    def set_grads(grads: dict[str, torch.Tensor]) -> None:
        trainer.set_gradients({n: g.clone() for n, g in grads.items()})

    def fb_proxy(name: str) -> None:
        trainer._step_outputs = {}
        out = trainer.proxy_forward(name)
        _ce_from_logits(out.logits, trainer.proxy_batch(name)["labels"]).backward()

    def f_base(name: str) -> Any:
        trainer._step_outputs = {}
        return trainer.base_forward(name)

    def optimizer_part() -> None:
        trainer.accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        model.zero_grad()

    for _ in range(opts.steps):
        batches, num_items = trainer.get_batch_samples(loader, 1, args.device)
        model.zero_grad()
        timed("fb_outcome", lambda b=batches[0], n=num_items: trainer.training_step(model, b, n))
        g_task = {n: g.detach().clone() for n, g in trainer.current_gradients().items()}
        timed("optimizer", optimizer_part)

        timed("draw", lambda: trainer._draw(["positive", "negative"]))
        for name in ("pos", "neg"):
            stream = "positive" if name == "pos" else "negative"
            timed(f"f_base_{name}", lambda s=stream: f_base(s))
            model.zero_grad()
            timed(f"fb_{name}", lambda s=stream: fb_proxy(s))
            if name == "pos":
                g_proxy = {n: g.detach().clone() for n, g in trainer.current_gradients().items()}
        # as the trainer runs representation_constraint: hidden states, and logits only at the last position
        trainer._needs_hidden, trainer._logits_to_keep = True, 1
        ref = timed("f_base_pos_hidden", lambda: f_base("positive"))
        model.zero_grad()

        def fb_hidden(ref: Any = ref) -> None:
            out = trainer.proxy_forward("positive")
            mask = trainer.proxy_batch("positive")["attention_mask"]
            representation_mse(out.hidden_states, ref.hidden_states, mask).backward()

        timed("fb_pos_hidden", fb_hidden)
        trainer._needs_hidden, trainer._logits_to_keep = False, 0
        trainer._step_outputs = {}

        def project(g_proxy: dict[str, torch.Tensor] = g_proxy) -> None:
            projected, stats = project_gradients(trainer.current_gradients(), g_proxy, strict=True)
            trainer.set_gradients(projected)
            for key, value in stats.items():
                trainer.log_metric(f"grad_project/{key}", value)

        set_grads(g_task)
        timed("project", project)
        set_grads(g_task)
        timed("project_out", lambda: PrecomputedProjection().surgery(trainer, trainer.current_gradients()))
        set_grads(g_task)
        timed("steer", lambda: steering.surgery(trainer, trainer.current_gradients()))
        for key, penalty in penalties.items():
            model.zero_grad()

            def penalty_fb(penalty: PlanePenalty = penalty) -> None:
                sum(penalty.loss(trainer, model, None).values()).backward()

            timed(key, penalty_fb)
        model.zero_grad()
        for values in trainer._metrics.values():
            values.clear()
    tile.close()
    return result  # the trainer and its closures form cycles: the next run's gc.collect() frees them


# ---------------------------------------------------------------------------------------------- SafeLoRA


def time_safelora(label: str, model: Any, opts: argparse.Namespace) -> list[dict[str, Any]]:
    """``safelora_project`` (approx and exact, threshold) timings for ``model`` with LoRA on all 7 projections."""
    import torch
    from peft import LoraConfig, get_peft_model

    from trl_ext.selective.safelora import load_state_dict_from, safelora_project

    gen = torch.Generator().manual_seed(opts.seed)
    base_sd = load_state_dict_from(model)
    aligned_sd = {k: v + alignment_delta(v, gen) if _is_projection(k) else v.clone() for k, v in base_sd.items()}
    peft_model = get_peft_model(model, LoraConfig(target_modules=list(LORA_TARGETS), **LORA_SETTINGS))
    from peft.tuners.lora import LoraLayer

    layers = [m for m in peft_model.modules() if isinstance(m, LoraLayer)]
    with torch.no_grad():
        for layer in layers:
            for weights in (layer.lora_A["default"].weight, layer.lora_B["default"].weight):
                weights.copy_(0.02 * torch.randn(weights.shape, generator=gen))
    saved_b = [layer.lora_B["default"].weight.detach().clone() for layer in layers]
    numel = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" not in n)
    rows = []
    for projection in ("approx", "exact"):
        seconds, report = [], None
        for _ in range(opts.safelora_repeats):
            with torch.no_grad():
                for layer, b in zip(layers, saved_b):
                    layer.lora_B["default"].weight.copy_(b)
            t0 = time.perf_counter()
            report = safelora_project(peft_model, base_sd, aligned_sd, projection=projection, select="threshold")
            seconds.append(time.perf_counter() - t0)
        assert report is not None
        rows.append(
            {
                "model": label,
                "parameters": numel,
                "projection": projection,
                "select": "threshold",
                "threshold": 0.5,
                "num_modules": len(report.modules),
                "num_projected": report.num_projected,
                "seconds": seconds,
                "seconds_median": statistics.median(seconds),
                "ms_per_module": 1e3 * statistics.median(seconds) / len(report.modules),
            }
        )
    return rows


ALIGNMENT_RANK = 32
"""Rank of the synthetic alignment delta W_aligned − W_base (a merged proxy LoRA of r 32, as in ``safe_lora``)."""


def _is_projection(name: str) -> bool:
    """True for the weight of one of the 7 projections (``...q_proj.weight`` etc.)."""
    parts = name.split(".")
    return len(parts) >= 2 and parts[-1] == "weight" and parts[-2] in LORA_TARGETS


def alignment_delta(weight: Any, gen: Any) -> Any:
    """A rank-:data:`ALIGNMENT_RANK` delta with entries of about 1 % of ``weight``'s std (a merged LoRA)."""
    import torch

    out_dim, in_dim = weight.shape
    left = torch.randn(out_dim, ALIGNMENT_RANK, generator=gen)
    right = torch.randn(ALIGNMENT_RANK, in_dim, generator=gen)
    return (0.01 * weight.detach().float().std() / math.sqrt(ALIGNMENT_RANK)) * (left @ right)


def random_qwen2(hidden: int, intermediate: int, layers: int, vocab_size: int, seed: int) -> Any:
    """A random-init ``Qwen2ForCausalLM`` (8 heads or fewer, 2 KV heads, tied embeddings); nothing downloaded."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    heads = 8 if hidden % 8 == 0 else 4
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def run_safelora(model_path: Path, opts: argparse.Namespace) -> list[dict[str, Any]]:
    """SafeLoRA timings on the training model and on the bigger random Qwen2 (``--safelora_*``)."""
    from transformers import AutoModelForCausalLM

    rows = time_safelora("training model", AutoModelForCausalLM.from_pretrained(model_path), opts)
    big = random_qwen2(opts.safelora_hidden, opts.safelora_intermediate, opts.safelora_layers, 1024, opts.seed)
    label = f"qwen2 h{opts.safelora_hidden} i{opts.safelora_intermediate} L{opts.safelora_layers}"
    rows += time_safelora(label, big, opts)
    return rows


# ---------------------------------------------------------------------------------------------- data and models


def prepare_models(workdir: Path, opts: argparse.Namespace) -> Path:
    """The training model folder (tiny, or random Qwen2 with the tiny tokenizer) and the SafeLoRA base copy."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_ext.models import get_tiny_model_path

    tiny = get_tiny_model_path()
    model_path = tiny
    if opts.hidden_size is not None:
        tokenizer = AutoTokenizer.from_pretrained(tiny)
        model = random_qwen2(opts.hidden_size, opts.intermediate_size, opts.layers, len(tokenizer), opts.seed)
        model_path = workdir / "model"
        model.save_pretrained(model_path)
        tokenizer.save_pretrained(model_path)
    # safe_lora: the trained model is the aligned one; the "unaligned base" is a perturbed copy
    model = AutoModelForCausalLM.from_pretrained(model_path)
    gen = torch.Generator().manual_seed(opts.seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if _is_projection(name):
                p.sub_(alignment_delta(p, gen))  # base = aligned − merged "proxy LoRA"
    model.save_pretrained(workdir / "safelora_base")
    return model_path


def build_data(opts: argparse.Namespace) -> dict[str, Any]:
    """The demo's outcome (enough rows for every run and the components, no epoch boundary) and proxy sets."""
    from trl_ext.selective.demo import make_demo

    num_outcome = max(256, (opts.steps + 1) * opts.batch_size)
    return make_demo(num_outcome=num_outcome, num_proxy=NUM_PROXY, num_negative=NUM_PROXY, num_eval=0, seed=0)


# ---------------------------------------------------------------------------------------------- report


def _mean_tokens(result: ArmResult, skip: int) -> float:
    """Mean padded tokens of the outcome micro-batch over the timed steps of one run (1.0 when not counted)."""
    tokens = [t for step, t in result.outcome_tokens.items() if step > skip]
    return statistics.fmean(tokens) if tokens else 1.0


def summarise(
    arms: list[str], results: list[ArmResult], components: list[ComponentResult], skip: int, batch_size: int
) -> dict[str, Any]:
    """Per-arm statistics, component medians, implied ratios and the pass-count check."""
    rounds = sorted({r.round for r in results})
    by_key = {(r.arm, r.round): r for r in results}
    comp_by_round = {c.round: c for c in components}
    plain_wall = {rnd: by_key[PLAIN, rnd].median_step_ms(skip) for rnd in rounds}
    plain_cpu = {rnd: by_key[PLAIN, rnd].median_step_ms(skip, cpu=True) for rnd in rounds}

    summary: dict[str, Any] = {"arms": {}, "components": {}, "target_tolerance": TARGET_TOLERANCE}
    for comp in COMPONENTS:
        wall = [comp_by_round[rnd].median_ms(comp, skip) for rnd in rounds]
        cpu = [comp_by_round[rnd].median_ms(comp, skip, cpu=True) for rnd in rounds]
        summary["components"][comp] = {
            "ms_median": statistics.median(wall),
            "cpu_ms_median": statistics.median(cpu),
            "round_ms": wall,
            "round_cpu_ms": cpu,
            "share_of_plain_step": statistics.median(w / plain_wall[r] for w, r in zip(wall, rounds)),
        }

    for arm in arms:
        runs = [by_key[arm, rnd] for rnd in rounds]
        wall = spread_ms([t for r in runs for t in r.timed_steps(skip)])
        cpu_steps = [t for r in runs for t in r.timed_steps(skip, cpu=True)]
        wall_r = [r.median_step_ms(skip) for r in runs]
        cpu_r = [r.median_step_ms(skip, cpu=True) for r in runs]
        ratio_r = [w / plain_wall[rnd] for w, rnd in zip(wall_r, rounds)]
        cpu_ratio_r = [c / plain_cpu[rnd] for c, rnd in zip(cpu_r, rounds)]

        def implied(rnd: int, cpu: bool, with_ops: bool = True, arm: str = arm) -> float:
            plain = plain_cpu[rnd] if cpu else plain_wall[rnd]
            items = {**PASS_TABLE[arm], **(OPS_TABLE[arm] if with_ops else {})}
            extra = sum(n * comp_by_round[rnd].median_ms(c, skip, cpu=cpu) for c, n in items.items())
            # the outcome pass on this arm's own batches: naive's union batches hold more tokens than plain's
            scale = _mean_tokens(by_key[arm, rnd], skip) / _mean_tokens(by_key[PLAIN, rnd], skip)
            extra += (scale - 1.0) * comp_by_round[rnd].median_ms("fb_outcome", skip, cpu=cpu)
            return (plain + extra) / plain

        implied_r = [implied(rnd, False) for rnd in rounds]
        implied_cpu_r = [implied(rnd, True) for rnd in rounds]
        implied_passes_r = [implied(rnd, False, with_ops=False) for rnd in rounds]
        quot_r = [m / i for m, i in zip(ratio_r, implied_r)]
        cpu_quot_r = [m / i for m, i in zip(cpu_ratio_r, implied_cpu_r)]

        per_step = [r.pass_counts[s] for r in runs for s in sorted(r.pass_counts)]
        unique = [dict(c) for c in {tuple(sorted(c.items())) for c in per_step}]
        expected = expected_counts(arm)
        outside = [r.outside_counts for r in runs]
        expected_outside = expected_setup_counts(arm, batch_size)
        tokens = [t for r in runs for s, t in sorted(r.outcome_tokens.items()) if s > skip]
        losses = [r.step1_loss for r in runs]
        rss = [r.peak_rss_mib - r.start_rss_mib for r in runs if r.peak_rss_mib is not None and r.start_rss_mib]
        measured_over_implied = statistics.median(quot_r)
        cpu_measured_over_implied = statistics.median(cpu_quot_r)
        summary["arms"][arm] = {
            "timed_steps": wall["n"],
            "step_ms_median": wall["median_ms"],
            "step_ms_p10": wall["p10_ms"],
            "step_ms_p90": wall["p90_ms"],
            "cpu_step_ms_median": spread_ms(cpu_steps)["median_ms"],
            "round_step_ms_medians": wall_r,
            "round_cpu_step_ms_medians": cpu_r,
            "ratio_per_round": ratio_r,
            "ratio_median_of_rounds": statistics.median(ratio_r),
            "cpu_ratio_per_round": cpu_ratio_r,
            "cpu_ratio_median_of_rounds": statistics.median(cpu_ratio_r),
            "implied_ratio": statistics.median(implied_r),
            "implied_ratio_per_round": implied_r,
            "implied_ratio_passes_only": statistics.median(implied_passes_r),
            "cpu_implied_ratio": statistics.median(implied_cpu_r),
            "measured_over_implied": measured_over_implied,
            "measured_over_implied_per_round": quot_r,
            "cpu_measured_over_implied": cpu_measured_over_implied,
            "within_target": abs(measured_over_implied - 1) <= TARGET_TOLERANCE,
            "within_target_cpu": abs(cpu_measured_over_implied - 1) <= TARGET_TOLERANCE,
            "pass_table": PASS_TABLE[arm],
            "ops_table": OPS_TABLE[arm],
            "expected_passes_per_step": expected,
            "counted_passes_per_step": unique[0] if len(unique) == 1 else unique,
            "passes_match": len(unique) == 1 and unique[0] == expected,
            "counted_outside_steps": outside,
            "expected_outside_steps": expected_outside,
            "outside_passes_match": all(c == expected_outside for c in outside),
            "outcome_tokens_per_step_mean": statistics.fmean(tokens) if tokens else None,
            "one_off": ONE_OFF.get(arm),
            "setup_s": [r.setup_s for r in runs],
            "train_end_s": [r.train_end_s for r in runs],
            "safelora_train_end_s": [r.safelora_s for r in runs],
            "safelora_projected": [r.safelora_projected for r in runs],
            "build_s_median": statistics.median(r.build_s for r in runs),
            "train_s_median": statistics.median(r.train_s for r in runs),
            "step1_losses": losses,
            "step1_loss_identical": len(set(losses)) == 1,
            "peak_minus_start_rss_mib_median": statistics.median(rss) if rss else None,
        }
    return summary


def _passes_text(table: dict[str, int]) -> str:
    return " + ".join(f"{n}x{c}" if n > 1 else c for c, n in table.items()) or "-"


def _counts_text(counts: dict[str, int] | list[dict[str, int]]) -> str:
    if isinstance(counts, list):
        return "varies: " + "; ".join(_counts_text(c) for c in counts)
    return "/".join(str(counts.get(k, 0)) for k in COUNT_KEYS)


def print_report(summary: dict[str, Any], opts: argparse.Namespace) -> None:
    """Tables 1-5: ratios vs implied, passes, one-off costs, components, SafeLoRA."""
    arms = summary["arms"]
    print()
    print(
        f"Selective strategies vs plain SFTTrainer step  ({opts.repeats} rounds x {opts.steps} steps, first "
        f"{opts.skip_steps} dropped, batch {opts.batch_size} + proxy batches {opts.batch_size}, "
        f"{opts.threads} torch thread(s))"
    )
    head = (
        f"{'strategy':<37} {'step ms':>8} {'cpu ms':>7} {'ratio':>6} {'cpu':>6} {'implied':>8} {'passes':>7} "
        f"{'meas/impl':>9} {'cpu m/i':>8} {'within 10%?':>12}"
    )
    print(head)
    print("-" * len(head))
    for arm, a in arms.items():
        within = (
            "-"
            if arm == PLAIN
            else f"{'yes' if a['within_target'] else 'NO'} / {'yes' if a['within_target_cpu'] else 'NO'}"
        )
        print(
            f"{arm:<37} {a['step_ms_median']:>8.2f} {a['cpu_step_ms_median']:>7.2f} "
            f"{a['ratio_median_of_rounds']:>6.3f} {a['cpu_ratio_median_of_rounds']:>6.3f} {a['implied_ratio']:>8.3f} "
            f"{a['implied_ratio_passes_only']:>7.3f} {a['measured_over_implied']:>9.3f} "
            f"{a['cpu_measured_over_implied']:>8.3f} {within:>12}"
        )
    print("-" * len(head))
    print(
        "ratio / cpu: strategy/plain, median of per-round ratios (wall / CPU time); implied: (plain + passes + ops)"
        " / plain; passes: without the ops; within 10%?: |meas/impl - 1| <= 0.10, wall / cpu"
    )

    print()
    print(f"Passes per optimizer step (counted: {'/'.join(COUNT_KEYS)}; expected = outcome fwd+bwd + pass table)")
    head = (
        f"{'strategy':<37} {'extra passes (pass table)':<42} {'ops':<22} {'counted':>11} {'expected':>11} "
        f"{'match':>6} {'tokens':>7}"
    )
    print(head)
    print("-" * len(head))
    for arm, a in arms.items():
        print(
            f"{arm:<37} {_passes_text(a['pass_table']):<42} {_passes_text(a['ops_table']):<22} "
            f"{_counts_text(a['counted_passes_per_step']):>11} {_counts_text(a['expected_passes_per_step']):>11} "
            f"{'yes' if a['passes_match'] else 'NO':>6} {fmt(a['outcome_tokens_per_step_mean'], '.0f'):>7}"
        )
    print("-" * len(head))
    print("tokens: mean padded tokens of the outcome micro-batch per timed step")

    print()
    print("One-off costs (not in the step times; median over rounds)")
    head = (
        f"{'strategy':<37} {'set-up s':>9} {'train-end s':>12} {'SafeLoRA s':>11} {'outside-step passes':>20} "
        f"{'build s':>8}  what"
    )
    print(head)
    print("-" * len(head))
    for arm, a in arms.items():
        outside = a["counted_outside_steps"][0] if a["counted_outside_steps"] else {}
        has_one_off = a["one_off"] is not None
        setup = median_or_none(a["setup_s"]) if has_one_off else None
        train_end = median_or_none(a["train_end_s"]) if has_one_off else None
        print(
            f"{arm:<37} {fmt(setup, '.3f'):>9} {fmt(train_end, '.4f'):>12} "
            f"{fmt(median_or_none(a['safelora_train_end_s']), '.3f'):>11} {_counts_text(outside):>20} "
            f"{a['build_s_median']:>8.2f}  {a['one_off'] or ''}"
        )
    print("-" * len(head))

    print()
    print("Components (median over rounds of the per-round median)")
    head = f"{'component':<20} {'ms':>8} {'cpu ms':>8} {'/ plain':>8}  what"
    print(head)
    print("-" * len(head))
    for comp, c in summary["components"].items():
        print(
            f"{comp:<20} {c['ms_median']:>8.3f} {c['cpu_ms_median']:>8.3f} {c['share_of_plain_step']:>8.3f}  "
            f"{COMPONENT_HELP[comp]}"
        )
    print("-" * len(head))
    plain = arms[PLAIN]["step_ms_median"]
    fb, opt = summary["components"]["fb_outcome"]["ms_median"], summary["components"]["optimizer"]["ms_median"]
    print(
        f"plain step {plain:.2f} ms = outcome fwd+bwd {fb:.2f} + optimizer part {opt:.2f} + rest (logging, "
        f"callbacks, bookkeeping) {plain - fb - opt:.2f} ms"
    )

    if summary.get("safelora"):
        print()
        print("SafeLoRA: safelora_project, select=threshold (0.5), LoRA r 32 on q/k/v/o/gate/up/down of every layer")
        head = (
            f"{'model':<28} {'params':>10} {'projection':>10} {'modules':>8} {'projected':>10} {'s (median)':>11} "
            f"{'ms/module':>10}"
        )
        print(head)
        print("-" * len(head))
        for row in summary["safelora"]:
            print(
                f"{row['model']:<28} {row['parameters']:>10d} {row['projection']:>10} {row['num_modules']:>8d} "
                f"{row['num_projected']:>10d} {row['seconds_median']:>11.4f} {row['ms_per_module']:>10.3f}"
            )
        print("-" * len(head))
    mismatched = [arm for arm, a in arms.items() if not a["passes_match"]]
    if mismatched:
        print(f"PASS COUNT MISMATCH (trainer runs other passes than the pass table says): {', '.join(mismatched)}")
    varying = [arm for arm, a in arms.items() if not a["step1_loss_identical"]]
    if varying:
        print(f"step-1 loss differs between rounds (runs not comparable!): {', '.join(varying)}")


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags (``--quick``: 4 steps x 1 round, small SafeLoRA model, one repeat)."""
    from trl_ext.selective.config import STRATEGIES

    parser = bench_parser(
        __doc__,
        repeats=5,
        repeats_help="Rounds; each runs every arm and the components.",
        quick_help="Smoke run: 4 steps, 1 round, no warm-up runs, SafeLoRA on a 256-wide 2-layer model.",
    )
    parser.add_argument("--steps", type=int, default=20, help="Optimizer steps per run (and component iterations).")
    parser.add_argument("--batch_size", type=int, default=16, help="Outcome and proxy batch size (demo: 16).")
    parser.add_argument("--skip_steps", type=int, default=1, help="Warm-up steps per run left out of the timing.")
    parser.add_argument("--beta_kl", type=float, default=0.1, help="β_kl (> 0) for kl_divergence and pos/neg proxy.")
    parser.add_argument(
        "--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES), help="Strategies to time."
    )
    parser.add_argument("--hidden_size", type=int, default=None, help="Train a random Qwen2 of this width.")
    parser.add_argument("--intermediate_size", type=int, default=None, help="With --hidden_size (default 2.7x).")
    parser.add_argument("--layers", type=int, default=2, help="With --hidden_size: decoder layers.")
    parser.add_argument("--safelora_hidden", type=int, default=512, help="SafeLoRA timing model: hidden size.")
    parser.add_argument("--safelora_intermediate", type=int, default=1376, help="... intermediate size.")
    parser.add_argument("--safelora_layers", type=int, default=8, help="... decoder layers.")
    parser.add_argument("--safelora_repeats", type=int, default=3, help="Timings per SafeLoRA configuration.")
    parser.add_argument("--no_safelora", action="store_true", help="Skip the standalone SafeLoRA timings.")
    parser.add_argument(
        "--plain_lm_head_tile",
        choices=("trl_ext", "trl"),
        default="trl_ext",
        help="Fused-LM-head tile of the plain SFTTrainer arm: trl_ext's (the selective arms' own, default) or TRL's.",
    )
    opts = parser.parse_args(argv)
    if opts.quick:
        opts.steps, opts.repeats, opts.skip_steps = 4, 1, 1
        opts.safelora_hidden, opts.safelora_intermediate, opts.safelora_layers, opts.safelora_repeats = 256, 688, 2, 1
    check_common(parser, opts)
    require(parser, opts.steps > opts.skip_steps, "--steps must be larger than --skip_steps")
    require(
        parser,
        min(opts.batch_size, opts.safelora_repeats) >= 1 and opts.skip_steps >= 0,
        "--batch_size and --safelora_repeats must be >= 1, --skip_steps >= 0",
    )
    require(
        parser, opts.beta_kl > 0, "--beta_kl must be > 0 (PASS_TABLE counts the KL's base forward in pos/neg proxy)"
    )
    if opts.hidden_size is not None and opts.intermediate_size is None:
        opts.intermediate_size = int(round(2.6875 * opts.hidden_size))
    opts.strategies = [s for s in STRATEGIES if s in opts.strategies]  # canonical order, no duplicates
    return opts


CODE_FILES = (
    "trl_ext/selective/mixin.py",
    "trl_ext/selective/mechanisms.py",
    "trl_ext/selective/losses.py",
    "trl_ext/selective/projection.py",
    "trl_ext/selective/plane.py",
    "trl_ext/selective/proxy.py",
    "trl_ext/selective/safelora/core.py",
)
"""The selective code whose cost is measured (fingerprinted in the JSON)."""


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the report, optionally write JSON; returns the summary."""
    opts = parse_args(argv)
    quiet_offline_torch(opts.threads)

    session = BenchSession(opts, code_files=CODE_FILES)
    arms = [PLAIN, *opts.strategies]
    with tempfile.TemporaryDirectory(prefix="bench_selective_") as tmp:
        workdir = Path(tmp)
        model_path = prepare_models(workdir, opts)
        data = build_data(opts)
        print(
            f"model {model_path}; {len(data['outcome_train'])} outcome rows, {NUM_PROXY} A+ and {NUM_PROXY} A- rows; "
            f"{opts.threads} torch thread(s)",
            flush=True,
        )
        warmup = argparse.Namespace(**{**vars(opts), "steps": opts.skip_steps + 2})
        results, components = run_rounds(
            arms,
            opts.repeats,
            lambda arm, rnd: run_arm(arm, rnd, model_path, data, workdir, opts),
            rotate=True,  # the arm order rotates by one position each round
            describe=lambda r: (
                f"median step {r.median_step_ms(opts.skip_steps):8.2f} ms  train() {r.train_s:6.2f} s  "
                f"build {r.build_s:5.2f} s"
            ),
            per_round=lambda rnd: run_components(rnd, model_path, data, workdir, opts),
            # process warm-up (lazy imports, allocator): not recorded; none with --quick
            warmup=[] if opts.quick else [PLAIN, opts.strategies[0]],
            run_warmup=lambda arm: run_arm(arm, -1, model_path, data, workdir, warmup),
        )
        summary = summarise(arms, results, components, opts.skip_steps, opts.batch_size)
        summary["safelora"] = [] if opts.no_safelora else run_safelora(model_path, opts)
    session.finish(summary)
    print_report(summary, opts)
    session.print_footer(summary)

    runs = []
    for r in results:
        run = r.as_json()
        run.pop("safelora_projected", None)
        runs.append(run)
    session.write(
        summary,
        runs,
        train_settings=TRAIN_SETTINGS,
        lora={**LORA_SETTINGS, "target_modules": "all-linear"},
        pass_table=PASS_TABLE,
        ops_table=OPS_TABLE,
        one_off=ONE_OFF,
        count_keys=list(COUNT_KEYS),
        components=[{"round": c.round, "wall_s": c.wall_s, "cpu_s": c.cpu_s} for c in components],
    )
    return summary


if __name__ == "__main__":
    main()
