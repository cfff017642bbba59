"""Time per PPO update, peak memory and reward curve: ``trl_ext.PPOTrainer`` against TRL 1.12's removed PPOTrainer.

What is compared
    * ``trl_ext``: :class:`trl_ext.PPOTrainer` (a ``GRPOTrainer`` subclass): value head (2-layer MLP) on the
      policy's last hidden states, ``num_generations=1``, a python reward function. It runs in a venv with the same
      packages as the 1.12 one except TRL (``--trl_ext_venv``, default ``~/.cache/trl_ext/bench_trl116_venv``,
      created on first use like the 1.12 one; this checkout goes on ``PYTHONPATH``), so that both arms import the
      same libraries: transformers and TRL 1.16 import optional packages when present (in the dev venv bitsandbytes,
      scipy, wandb, trackio, gradio_client and deepspeed add about 120 MiB of RSS that no trainer asked for).
      ``--trl_ext_venv current`` runs it in the current interpreter instead.
    * ``trl_1.12``: ``trl.experimental.ppo.PPOTrainer`` of TRL 1.12.0 (removed in 1.13) in a separate venv that this
      script creates on first use (``--trl112_venv``, default ``~/.cache/trl_ext/bench_trl112_venv``: ``trl==1.12.0``,
      the current venv's transformers and CPU torch, accelerate, peft, datasets, bytecode compiled; about a minute,
      once; not a dependency of trl_ext). Its value model is a ``Qwen2ForSequenceClassification(num_labels=1)``
      loaded from the tiny policy's folder (backbone = the policy's weights, fresh ``score`` layer); its reward
      model is a module with the interface 1.12's ``get_reward`` expects (a ``base_model_prefix`` backbone
      returning ``hidden_states`` and a ``score`` layer) that computes the rule below.

    Both arms train the same policy (the embedded tiny model, ``trl_ext.models.get_tiny_model_path()``: Qwen2,
    hidden 64, 2 layers, vocabulary 613, built once under ``$TRL_EXT_CACHE`` and loaded from that folder by both
    arms) on the same 64 chat prompts (all of the same token length) with the same reward: the fraction of response
    tokens (up to and including the first ``<|im_end|>``) that belong to a fixed set of 32 token ids. The trl_ext
    arm computes it in python from the completion ids; the 1.12 arm's reward module computes it in torch from the
    token ids it is given. Every 1.12 run first checks, through 1.12's own ``truncate_response`` and ``get_reward``,
    that the module and the python rule give the same score on 64 test sequences (``reward module vs python rule``
    in the output). Same hyper-parameters as far as the two APIs allow (printed at the start, with both configs):
    rollouts of 16 completions (one per prompt), 1 mini-batch, 4 PPO epochs, 16 response tokens at
    temperature 1, AdamW at lr 1e-3 without weight decay, constant schedule, no gradient clipping, k1 KL penalty
    0.05 in the reward, vf_coef 0.1, clip ranges 0.2 / 0.2, gamma 1, lambda 0.95, whitened advantages, raw
    rewards, no entropy bonus, 25 updates, fp32, 1 torch thread. Round ``r`` uses seed ``--seed + r - 1`` in both
    arms (CPU runs are deterministic: the same seed gives the same curve again).

    Differences that remain (they are the two designs, not settings):
    * value function: trl_ext reads the values from the policy's own forward (hook on the backbone, MLP head), so
      one trunk forward per micro-batch; 1.12 runs a second full trunk (the value model) in every rollout and
      training forward and trains it too (twice the trainable parameters, so twice the gradients and Adam
      moments). ``--trl_ext_value separate`` gives the trl_ext arm a value model with its own trunk as well
      (``value_model_name_or_path`` = the policy folder), ``detached`` keeps the head but stops its gradient at
      the trunk. Initial values differ (MLP head vs. a fresh linear ``score``).
    * rollout: 1.12 takes the rollout log-probs from the generation scores and runs two extra forwards (reference
      model, value model) plus the reward module; trl_ext runs GRPO's generation, then GRPO's no-grad forwards
      (reference log-probs, and the "old" log-probs, computed because ``num_ppo_epochs > 1`` and then replaced by
      trl_ext's own) and its own no-grad forward for the log-probs and values: three trunk forwards. 1.12's
      forwards compute full ``(B, L, V)`` logits; trl_ext's use TRL's fused (chunked) LM head on the completion
      positions only.
    * reward placement: trl_ext adds the score on the last completion token (the ``<|im_end|>`` when there is one);
      1.12 adds it at ``sequence_length + 1``, one position past the ``<|im_end|>`` (a padded position that still
      carries a value), unless the response fills ``response_length``.
    * stopping: both stop a response at ``<|im_end|>`` (1.12: ``stop_token="eos"``). A sampled ``<|pad|>`` ends a
      1.12 response (its padding is "token == pad id"); for trl_ext it is an ordinary token. Counted in the output.
    * batching: 1.12 reshuffles the rollout in every PPO epoch, trl_ext (GRPO) once per rollout; identical with one
      mini-batch. Prompt order comes from each trainer's own sampler. 1.12 steps its scheduler once per update
      (constant here). Both use ``transformers.Trainer.create_optimizer`` (AdamW, weight decay 0).
    * loop: trl_ext runs inside ``transformers.Trainer`` (callbacks, and a gradient-norm computation per optimizer
      step even without clipping; logging once per update); 1.12 has its own loop, which logs once per update and
      calls ``gc.collect()`` twice per update (timed as the ``gc.collect`` phase; ``w/o gc`` leaves it out).

How
    Each run is a fresh subprocess: this file with ``--worker trl_ext`` (``--trl_ext_venv``'s interpreter)
    or ``--worker trl112`` (the 1.12 venv's interpreter); it reads a JSON spec and prints one ``BENCH_PPO_RESULT
    {json}`` line. Runs alternate trl_ext, trl_1.12, trl_ext, ... for ``--repeats`` rounds. A callback takes
    ``time.perf_counter()`` and ``time.process_time()`` at ``on_train_begin`` and at the ``on_step_end`` that closes
    each update (1.12: every step; trl_ext: every ``epochs x mini-batches`` optimizer steps), so the time of update
    ``k`` is the loop period from the end of update ``k-1`` to the end of update ``k``: rollout, PPO epochs,
    logging and callbacks. The first ``--skip_updates`` updates of each run are warm-up and are dropped. The phases
    of each update are timed by wrapping the trainers' functions (generation, each no-grad forward, reward,
    training forward, backward, optimizer step, ``gc.collect``; ``other`` = the rest of the period). Memory, per
    worker process: ``peak RSS`` is ``VmHWM`` (combined with ``getrusage`` ``ru_maxrss``): interpreter, imports,
    models and training; ``after import`` is the RSS once torch, transformers, TRL and the trainer module are
    imported, ``peak-import`` the difference (what the models, the trainer and training add); ``+RSS train`` is
    the peak during ``train()`` (``VmHWM`` reset through ``/proc/self/clear_refs`` just before) minus the RSS at
    its start. ``fp32 state`` counts the weights of every model the trainer holds plus gradient and two Adam
    moments of every trainable parameter: what scales with the model size (the tiny model's is a few MiB, so its
    RSS is dominated by the libraries). No psutil, no tracemalloc.

Reading the output
    ``update s`` is the median wall time per update over the timed updates of all rounds, with p10/p90; ``cpu s``
    the median process CPU time per update; ``w/o gc s`` the median wall time without 1.12's ``gc.collect()``.
    Ratios trl_ext/trl_1.12 (targets from the issue: time <= 1.0, memory <= 1.0): ``median of rounds`` (median
    over rounds of the ratio of the two runs' figures; alternation makes it robust to slow drifts) and ``ratio of
    medians`` (pooled). When the 1-minute load average exceeds the number of cores, wall times are inflated at
    random: compare the cpu column. The reward curves are the mean score (before the KL penalty) of each update's
    16 completions, per round and averaged over rounds; ``last third`` is the mean over the last third of the
    updates (the issue asks trl_ext's to be at least 1.12's, same seeds), ``gain`` the last third minus the first
    third, with the noise of such a mean; the training diagnostics (value loss, approx KL, clip fraction,
    entropy) are averaged over the last third too. With the default 25 updates the policy barely moves (the reward
    starts at about 0.054, the share of the 32 ids under the nearly uniform tiny model); ``--updates 100`` shows
    learning (about 7 minutes). The phase table shows where an update's time goes in each arm.

    HF_HUB_OFFLINE=1 TRL_EXT_CACHE=/tmp/bench_cache .venv/bin/python bench/bench_ppo.py
    .venv/bin/python bench/bench_ppo.py --repeats 5 --json /tmp/bench_ppo.json --plot /tmp/bench_ppo.png
    .venv/bin/python bench/bench_ppo.py --updates 100 --trl_ext_value separate        # reward comparison
    .venv/bin/python bench/bench_ppo.py --hidden_size 256 --layers 4 --updates 8      # a 2.6 M-parameter policy
    .venv/bin/python bench/bench_ppo.py --trl_ext_venv current  # trl_ext arm in the current venv (its packages)
    .venv/bin/python bench/bench_ppo.py --arms trl_ext --repeats 1 --profile /tmp/ppo_prof  # cProfile dumps
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from harness import (
    BenchSession,
    bench_parser,
    check_common,
    current_rss_mib,
    emit_result,
    peak_rss_mib,
    quantile,
    require,
    reset_peak_rss,
    ru_maxrss_mib,
    run_worker_process,
)

ARMS = ("trl_ext", "trl_1.12")
WORKER_OF_ARM = {"trl_ext": "trl_ext", "trl_1.12": "trl112"}
TARGET_TIME_RATIO = 1.0
TARGET_MEMORY_RATIO = 1.0
RESULT_MARKER = "BENCH_PPO_RESULT "
DEFAULT_TRL112_VENV = Path("~/.cache/trl_ext/bench_trl112_venv").expanduser()
DEFAULT_TRL_EXT_VENV = Path("~/.cache/trl_ext/bench_trl116_venv").expanduser()
TRL112_VERSION = "1.12.0"
VENV_MARKER = ".bench_ppo_ready"
REPO_ROOT = Path(__file__).resolve().parent.parent
NUM_PROMPTS = 64
NUM_TARGET_TOKENS = 32
TARGET_SEED = 1234
PHASES = ("generate", "fwd_ref", "fwd_old_logps", "fwd_logps_values", "fwd_values", "reward", "train_fwd")
PHASES += ("backward", "optimizer", "gc")
PHASE_LABELS = {
    "generate": "generate",
    "fwd_ref": "ref fwd",
    "fwd_old_logps": "old-logp fwd",
    "fwd_logps_values": "logp+value fwd",
    "fwd_values": "value fwd",
    "reward": "reward",
    "train_fwd": "train fwd",
    "backward": "backward",
    "optimizer": "optimizer",
    "gc": "gc.collect",
    "other": "other",
}

TRL_EXT_VALUE_OPTIONS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "head": lambda path: {},  # MLP head on the policy's last hidden states (shared trunk)
    "detached": lambda path: {"detach_value_trunk": True},  # head whose loss does not reach the trunk
    "separate": lambda path: {"value_model_name_or_path": str(path)},  # own trunk from the policy folder, as 1.12
}
"""``--trl_ext_value``: the value function of the trl_ext arm (extra ``PPOConfig`` fields)."""

_ADJECTIVES = ["quick", "lazy", "brown", "calm", "loyal", "friendly", "blue", "small", "helpful", "complete", "final"]
_NOUNS = ["fox", "dog", "cat", "model", "program", "answer", "formula", "kitchen", "mug", "shoes", "reward", "result"]
_VERBS = ["Describe", "Explain", "Find", "Write"]


# ---------------------------------------------------------------------------------------------- reward rule


def target_fraction(ids: Sequence[int], targets: Collection[int]) -> float:
    """The reward of both arms: the share of ``ids`` (one response, up to and including its first EOS) in
    ``targets``; 0 for an empty response."""
    return sum(1 for i in ids if i in targets) / len(ids) if len(ids) else 0.0


def response_until_eos(ids: Sequence[int], eos_id: int) -> list[int]:
    """``ids`` cut after the first ``eos_id`` (kept), as GRPO hands completions to reward functions."""
    out: list[int] = []
    for i in ids:
        out.append(int(i))
        if i == eos_id:
            break
    return out


def make_rule_reward_model(targets: Collection[int], vocab_size: int, context_length: int) -> Any:
    """The python rule as a module with the interface of TRL 1.12's ``get_reward``.

    ``get_reward(model, query_responses, pad_token_id, context_length)`` runs ``getattr(model,
    model.base_model_prefix)(input_ids, attention_mask, position_ids, return_dict=True, output_hidden_states=True,
    use_cache=False)`` (padding replaced by id 0, masked out), applies ``model.score`` to ``hidden_states[-1]`` and
    reads the result at the last non-pad position. The backbone here returns, at every position ``t``, the share of
    target ids among the response tokens (positions ``>= context_length``, not masked) up to ``t``; ``score`` is the
    identity. At the last response token that is exactly :func:`target_fraction` of the response.
    """
    import torch
    from torch import nn
    from transformers.modeling_outputs import BaseModelOutputWithPast

    class RuleBackbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            table = torch.zeros(vocab_size, dtype=torch.float32)
            table[sorted(targets)] = 1.0
            self.register_buffer("target_table", table, persistent=False)

        def forward(self, input_ids, attention_mask=None, **_ignored):
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            keep = attention_mask.float()
            keep[:, :context_length] = 0.0
            hits = torch.cumsum(self.target_table[input_ids] * keep, dim=1)
            seen = torch.cumsum(keep, dim=1)
            hidden = (hits / seen.clamp(min=1.0)).unsqueeze(-1)
            return BaseModelOutputWithPast(last_hidden_state=hidden, hidden_states=(hidden,))

    class TargetFractionRewardModel(nn.Module):
        base_model_prefix = "rule"

        def __init__(self) -> None:
            super().__init__()
            self.rule = RuleBackbone()
            self.score = nn.Identity()

    return TargetFractionRewardModel()


# ---------------------------------------------------------------------------------------------- memory


# ---------------------------------------------------------------------------------------------- worker side


class PhaseTimer:
    """Seconds and calls per phase, collected between two update boundaries."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.updates: list[dict[str, Any]] = []

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] += seconds
        self.calls[name] += 1

    def wrap(self, fn: Callable, name_of_call: Callable[..., str | None]) -> Callable:
        """``fn`` timed under the phase ``name_of_call(*args, **kwargs)`` (None: not recorded)."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            name = name_of_call(*args, **kwargs)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if name is not None:
                    self.add(name, time.perf_counter() - t0)

        return timed

    def close_update(self, period_s: float) -> None:
        phases = dict(self.seconds)
        phases["other"] = period_s - sum(phases.values())
        self.updates.append({"seconds": phases, "calls": dict(self.calls)})
        self.seconds.clear()
        self.calls.clear()


def make_update_timer(steps_per_update: int, phases: PhaseTimer, log_keys: dict[str, str]) -> Any:
    """A ``TrainerCallback`` timing each update (``on_train_begin`` / ``on_step_end`` of its last step) and keeping
    the logged values of ``log_keys`` (logged name -> result name)."""
    from transformers import TrainerCallback

    class UpdateTimer(TrainerCallback):
        def __init__(self) -> None:
            self.wall: list[float] = []
            self.cpu: list[float] = []
            self.rss: list[float | None] = []
            self.logged: dict[str, list[float]] = defaultdict(list)
            self._t = self._c = 0.0
            self._opt_t0: float | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            self._t, self._c = time.perf_counter(), time.process_time()
            phases.seconds.clear()
            phases.calls.clear()

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            self._opt_t0 = time.perf_counter()

        def on_optimizer_step(self, args, state, control, **kwargs):
            if self._opt_t0 is not None:
                phases.add("optimizer", time.perf_counter() - self._opt_t0)
                self._opt_t0 = None

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % steps_per_update:
                return
            t, c = time.perf_counter(), time.process_time()
            self.wall.append(t - self._t)
            self.cpu.append(c - self._c)
            self.rss.append(current_rss_mib())
            phases.close_update(t - self._t)
            self._t, self._c = t, c

        def on_log(self, args, state, control, logs=None, **kwargs):
            for key, name in log_keys.items():
                if logs and key in logs:
                    self.logged[name].append(float(logs[key]))

    return UpdateTimer()


def _setup_worker(spec: dict[str, Any]) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(spec["threads"])


def _silence_hf() -> None:
    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()


def _rollout_stats(responses: list[list[int]], pad_id: int, eos_id: int) -> dict[str, float]:
    return {
        "resp_len": statistics.fmean(len(r) for r in responses),
        "eos_frac": statistics.fmean(1.0 if r and r[-1] == eos_id else 0.0 for r in responses),
        "pad_rows": float(sum(1 for r in responses if pad_id in r)),
    }


def count_params(trainable: list[Any], frozen: list[Any]) -> dict[str, int]:
    """Parameters held by a trainer's models (each tensor once) and the fp32 model-state bytes they imply:
    weights of every model, plus gradient and two Adam moments of every trainable parameter."""
    seen: set[int] = set()
    counts = {"trainable": 0, "frozen": 0}
    for kind, modules in (("trainable", trainable), ("frozen", frozen)):
        for module in modules:
            for param in module.parameters() if module is not None else ():
                if id(param) in seen:
                    continue
                seen.add(id(param))
                counts["trainable" if kind == "trainable" and param.requires_grad else "frozen"] += param.numel()
    counts["total"] = counts["trainable"] + counts["frozen"]
    counts["state_bytes_fp32"] = 4 * (counts["total"] + 3 * counts["trainable"])
    return counts


def _memory_point(stage: str) -> dict[str, Any]:
    """RSS and number of loaded modules after ``stage`` (import, build, train)."""
    return {f"rss_after_{stage}_mib": current_rss_mib(), f"modules_after_{stage}": len(sys.modules)}


def _train_measured(trainer: Any, spec: dict[str, Any], result: dict[str, Any]) -> None:
    """``trainer.train()`` with the memory readings around it (and under cProfile with ``spec['profile']``)."""
    import gc

    gc.collect()
    result.update(_memory_point("build"))
    result["peak_rss_setup_mib"] = peak_rss_mib()
    result["peak_rss_source"] = "VmHWM" if reset_peak_rss() else "ru_maxrss"
    result["rss_start_train_mib"] = current_rss_mib()
    t0 = time.perf_counter()
    if spec.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        trainer.train()
        profiler.disable()
        profiler.dump_stats(spec["profile"])
    else:
        trainer.train()
    result["train_s"] = time.perf_counter() - t0
    result.update(_memory_point("train"))
    result["top_level_modules"] = sorted({name.split(".")[0] for name in sys.modules})
    result["peak_rss_train_mib"] = peak_rss_mib()
    result["process_peak_rss_mib"] = max(
        result["peak_rss_setup_mib"] or 0.0, result["peak_rss_train_mib"] or 0.0, ru_maxrss_mib()
    )


def worker_trl_ext(spec: dict[str, Any]) -> dict[str, Any]:
    """One run of ``trl_ext.PPOTrainer`` in this venv."""
    t_start = time.perf_counter()
    _setup_worker(spec)
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, set_seed

    from trl_ext import PPOConfig, PPOTrainer

    _silence_hf()
    result: dict[str, Any] = {"import_s": time.perf_counter() - t_start, **_memory_point("import")}
    t0 = time.perf_counter()
    targets = frozenset(spec["targets"])
    pad_id, eos_id = spec["pad_id"], spec["eos_id"]
    rollouts: list[dict[str, float]] = []

    def target_fraction_reward(prompts, completions, completion_ids, **kwargs):
        scores = [target_fraction(ids, targets) for ids in completion_ids]
        rollouts.append({"score": statistics.fmean(scores), **_rollout_stats(completion_ids, pad_id, eos_id)})
        return scores

    set_seed(spec["seed"])
    tokenizer = AutoTokenizer.from_pretrained(spec["model_path"], padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(spec["model_path"])
    cfg = spec["trl_ext_config"]
    args = PPOConfig(output_dir=spec["output_dir"], seed=spec["seed"], **cfg)
    phases = PhaseTimer()
    steps_per_update = cfg["num_ppo_epochs"] * cfg["num_mini_batches"]
    logged = {"ppo/objective/kl": "kl", "ppo/loss/value": "vf_loss", "ppo/policy/approx_kl": "approx_kl"}
    logged.update({"ppo/policy/clipfrac": "clipfrac", "ppo/policy/entropy": "entropy", "ppo/value/mean": "value"})
    timer = make_update_timer(steps_per_update, phases, logged)
    trainer = PPOTrainer(
        model=model,
        reward_funcs=target_fraction_reward,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": spec["prompts"]}),
        processing_class=tokenizer,
        callbacks=[timer],
    )
    trainer.remove_callback(PrinterCallback)

    # phase timers
    inside_ppo_forward = [False]
    original_lv = trainer._logps_and_values

    def logps_and_values(*a, **k):
        inside_ppo_forward[0] = True
        try:
            return original_lv(*a, **k)
        finally:
            inside_ppo_forward[0] = False

    trainer._logps_and_values = phases.wrap(
        logps_and_values, lambda *a, **k: "fwd_logps_values" if not torch.is_grad_enabled() else "train_fwd"
    )

    def forward_name(model_arg, *a, **k):
        if inside_ppo_forward[0] or torch.is_grad_enabled():
            return None
        if model_arg is trainer.model and getattr(trainer, "_capture_rollout", False):
            return None  # GRPO's old-log-probs forward, turned into the log-probs + values forward (timed inside)
        return "fwd_ref" if model_arg is trainer.ref_model else "fwd_old_logps"

    trainer._get_per_token_logps_and_entropies = phases.wrap(trainer._get_per_token_logps_and_entropies, forward_name)
    trainer._calculate_rewards = phases.wrap(trainer._calculate_rewards, lambda *a, **k: "reward")
    trainer.accelerator.backward = phases.wrap(trainer.accelerator.backward, lambda *a, **k: "backward")
    policy = trainer.accelerator.unwrap_model(trainer.model)
    policy.generate = phases.wrap(policy.generate, lambda *a, **k: "generate")
    result["params"] = count_params(trainable=[trainer.model], frozen=[trainer.ref_model])
    result["build_s"] = time.perf_counter() - t0

    _train_measured(trainer, spec, result)
    result.update(
        update_s=timer.wall,
        update_cpu_s=timer.cpu,
        update_rss_mib=timer.rss,
        phases=phases.updates,
        scores=[r["score"] for r in rollouts],
        kl=timer.logged.get("kl", []),
        diagnostics={k: v for k, v in timer.logged.items() if k not in ("kl", "scores")},
        resp_len=[r["resp_len"] for r in rollouts],
        eos_frac=[r["eos_frac"] for r in rollouts],
        pad_rows=[r["pad_rows"] for r in rollouts],
        torch_threads=torch.get_num_threads(),
        versions={"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
    )
    return result


def check_reward_equivalence(spec: dict[str, Any], reward_model: Any) -> dict[str, Any]:
    """Score 64 sequences with TRL 1.12's ``truncate_response`` + ``get_reward`` on the reward module and with the
    python rule on the same responses cut after their first EOS; returns the largest difference."""
    import random

    import torch
    from trl.experimental.ppo.ppo_trainer import truncate_response
    from trl.experimental.utils import get_reward

    rng = random.Random(0)
    pad_id, eos_id, length = spec["pad_id"], spec["eos_id"], spec["response_length"]
    targets = sorted(spec["targets"])
    ordinary = [i for i in range(spec["vocab_size"]) if i not in (pad_id, eos_id)]
    rows = []
    for b in range(64):
        pool = targets if b % 4 == 0 else ordinary  # some rows rich in target tokens
        row = [rng.choice(pool) if rng.random() < 0.7 else rng.choice(ordinary) for _ in range(length)]
        if b % 2:  # half of the rows stop early (the last one right away: a response of just EOS)
            row[0 if b == 63 else rng.randrange(length)] = eos_id
        rows.append(row)
    queries = torch.tensor([spec["prompt_ids"][b % len(spec["prompt_ids"])] for b in range(64)])
    responses = truncate_response(eos_id, pad_id, torch.tensor(rows))
    context_length = queries.shape[1]
    with torch.no_grad():
        _, scores, _ = get_reward(reward_model, torch.cat([queries, responses], 1), pad_id, context_length)
    expected = [target_fraction(response_until_eos(row, eos_id), set(targets)) for row in rows]
    diffs = [abs(float(s) - e) for s, e in zip(scores.tolist(), expected)]
    return {"sequences": len(rows), "max_abs_diff": max(diffs), "mean_score": statistics.fmean(expected)}


def worker_trl112(spec: dict[str, Any]) -> dict[str, Any]:
    """One run of TRL 1.12's ``trl.experimental.ppo.PPOTrainer`` (in the 1.12 venv)."""
    t_start = time.perf_counter()
    _setup_worker(spec)
    import gc
    import types

    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        PrinterCallback,
        set_seed,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as ppo_module

    _silence_hf()
    result: dict[str, Any] = {"import_s": time.perf_counter() - t_start, **_memory_point("import")}
    t0 = time.perf_counter()
    pad_id, eos_id = spec["pad_id"], spec["eos_id"]
    context_length = len(spec["prompt_ids"][0])

    set_seed(spec["seed"])
    tokenizer = AutoTokenizer.from_pretrained(spec["model_path"], padding_side="left")
    policy = AutoModelForCausalLM.from_pretrained(spec["model_path"])
    value_model = AutoModelForSequenceClassification.from_pretrained(spec["model_path"], num_labels=1)
    reward_model = make_rule_reward_model(spec["targets"], spec["vocab_size"], context_length)
    result["reward_check"] = check_reward_equivalence(spec, reward_model)

    cfg = spec["trl112_config"]
    args = PPOConfig(output_dir=spec["output_dir"], seed=spec["seed"], **cfg)
    phases = PhaseTimer()
    logged = {"objective/scores": "scores", "objective/kl": "kl", "loss/value_avg": "vf_loss"}
    logged.update({"policy/approxkl_avg": "approx_kl", "policy/clipfrac_avg": "clipfrac"})
    logged.update({"policy/entropy_avg": "entropy"})
    timer = make_update_timer(1, phases, logged)
    dataset = Dataset.from_dict({"input_ids": spec["prompt_ids"]})
    trainer = PPOTrainer(
        args=args,
        processing_class=tokenizer,
        model=policy,
        ref_model=None,
        reward_model=reward_model,
        train_dataset=dataset,
        value_model=value_model,
        eval_dataset=dataset,
        callbacks=[timer],
    )
    trainer.remove_callback(PrinterCallback)

    # phase timers (module globals that PPOTrainer.train() looks up at call time)
    rollouts: list[dict[str, float]] = []
    original_batch_generation = ppo_module.batch_generation

    def batch_generation(model, queries, *a, **k):
        query_responses, logits = original_batch_generation(model, queries, *a, **k)
        rows = []
        for row in query_responses[:, queries.shape[1] :].tolist():
            row = response_until_eos(row, eos_id)
            rows.append(row[: row.index(pad_id)] if pad_id in row else row)  # 1.12 treats a pad as the end
        stats = _rollout_stats(rows, pad_id, eos_id)
        stats["pad_rows"] = float(
            sum(1 for r in query_responses[:, queries.shape[1] :].tolist() if pad_id in response_until_eos(r, eos_id))
        )
        rollouts.append(stats)
        return query_responses, logits

    ppo_module.batch_generation = phases.wrap(batch_generation, lambda *a, **k: "generate")
    ppo_module.forward = phases.wrap(
        ppo_module.forward, lambda *a, **k: "train_fwd" if torch.is_grad_enabled() else "fwd_ref"
    )
    ppo_module.get_reward = phases.wrap(
        ppo_module.get_reward, lambda model, *a, **k: "reward" if model is reward_model else "fwd_values"
    )
    ppo_module.gc = types.SimpleNamespace(collect=phases.wrap(gc.collect, lambda *a, **k: "gc"))
    trainer.accelerator.backward = phases.wrap(trainer.accelerator.backward, lambda *a, **k: "backward")
    trainer.optimizer.step = phases.wrap(trainer.optimizer.step, lambda *a, **k: "optimizer")
    result["params"] = count_params(trainable=[trainer.model], frozen=[trainer.ref_model, trainer.reward_model])
    result["build_s"] = time.perf_counter() - t0

    _train_measured(trainer, spec, result)
    result.update(
        update_s=timer.wall,
        update_cpu_s=timer.cpu,
        update_rss_mib=timer.rss,
        phases=phases.updates,
        scores=timer.logged.get("scores", []),
        kl=timer.logged.get("kl", []),
        diagnostics={k: v for k, v in timer.logged.items() if k not in ("kl", "scores")},
        resp_len=[r["resp_len"] for r in rollouts],
        eos_frac=[r["eos_frac"] for r in rollouts],
        pad_rows=[r["pad_rows"] for r in rollouts],
        torch_threads=torch.get_num_threads(),
        versions={"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
    )
    return result


def worker_main(name: str, spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    result = (worker_trl_ext if name == "trl_ext" else worker_trl112)(spec)
    result["ru_maxrss_mib"] = ru_maxrss_mib()
    emit_result(RESULT_MARKER, result)


# ---------------------------------------------------------------------------------------------- parent side


def ensure_venv(
    venv: Path, trl_version: str, torch_version: str, transformers_version: str, find_links: Path | None
) -> Path:
    """Create (once) a venv with ``trl==trl_version`` and this venv's torch/transformers; returns its python."""
    python = venv / "bin" / "python"
    requirements = [
        f"torch=={torch_version}",
        f"trl=={trl_version}",
        f"transformers=={transformers_version}",
        "accelerate",
        "peft",
        "datasets",
    ]
    marker = venv / VENV_MARKER
    if python.exists() and marker.exists() and marker.read_text().split() == requirements:
        return python
    print(f"creating the TRL {trl_version} venv in {venv} (once): {' '.join(requirements)}", flush=True)
    t0 = time.perf_counter()
    venv.parent.mkdir(parents=True, exist_ok=True)
    links = ["--find-links", str(find_links)] if find_links is not None and find_links.is_dir() else []
    uv = shutil.which("uv")
    if uv is not None:
        if not python.exists():
            subprocess.run([uv, "venv", "--python", sys.executable, str(venv)], check=True)
        install = [uv, "pip", "install", "--python", str(python), "--compile-bytecode", *links, *requirements]
        subprocess.run(install, check=True)  # bytecode now: PYTHONDONTWRITEBYTECODE=1 would make every import slow
    else:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *links, *requirements], check=True)
    check = f"import trl, transformers; assert trl.__version__ == {trl_version!r}, trl.__version__"
    subprocess.run([str(python), "-c", check], check=True)
    marker.write_text("\n".join(requirements) + "\n")
    print(f"venv ready in {time.perf_counter() - t0:.0f} s", flush=True)
    return python


def make_prompts(tokenizer: Any, n: int, seed: int) -> tuple[list[str], list[list[int]]]:
    """``n`` chat prompts (ChatML text with the generation prompt) that all tokenise to the same length.

    Equal lengths keep 1.12's rollout batches free of left padding, so its reward module knows where responses
    start, and give both arms identical prompt ids."""
    import random

    by_length: dict[int, list[tuple[str, list[int]]]] = defaultdict(list)
    for verb in _VERBS:
        for adj in _ADJECTIVES:
            for noun in _NOUNS:
                messages = [{"role": "user", "content": f"{verb} the {adj} {noun}."}]
                text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                ids = tokenizer(text)["input_ids"]
                by_length[len(ids)].append((text, ids))
    best = max(by_length.values(), key=len)
    if len(best) < n:
        raise RuntimeError(f"only {len(best)} prompts of equal token length, need {n}")
    random.Random(seed).shuffle(best)
    chosen = best[:n]
    return [t for t, _ in chosen], [ids for _, ids in chosen]


def choose_targets(vocab_size: int, special_ids: Collection[int], k: int, seed: int) -> list[int]:
    import random

    candidates = [i for i in range(vocab_size) if i not in special_ids]
    return sorted(random.Random(seed).sample(candidates, k))


def arm_configs(opts: argparse.Namespace, model_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The keyword arguments of both arms' ``PPOConfig`` (besides ``output_dir`` and ``seed``)."""
    rollout, mb, epochs = opts.rollout_batch, opts.mini_batches, opts.ppo_epochs
    common = {
        "learning_rate": opts.lr,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "temperature": opts.temperature,
        "kl_coef": opts.kl_coef,
        "kl_estimator": "k1",
        "vf_coef": opts.vf_coef,
        "cliprange": opts.cliprange,
        "cliprange_value": opts.cliprange_value,
        "gamma": opts.gamma,
        "lam": opts.lam,
        "whiten_rewards": False,
        "num_ppo_epochs": epochs,
        "num_mini_batches": mb,
        "gradient_accumulation_steps": 1,
        "gradient_checkpointing": False,
        "bf16": False,
        "use_cpu": True,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    trl_ext = {
        **common,
        "per_device_train_batch_size": rollout // mb,
        "num_generations": 1,
        "max_steps": opts.updates * epochs * mb,
        "max_completion_length": opts.response_length,
        "top_p": 1.0,
        "top_k": 0,
        "whiten_advantages": True,
        "entropy_coef": 0.0,
        "max_grad_norm": 0.0,
        "logging_steps": epochs * mb,
        "log_completions": False,
        **TRL_EXT_VALUE_OPTIONS[opts.trl_ext_value](model_path),
        "value_head_hidden_size": opts.value_head_hidden_size,
    }
    trl112 = {
        **common,
        "per_device_train_batch_size": rollout,
        "total_episodes": opts.updates * rollout,
        "local_rollout_forward_batch_size": rollout,
        "response_length": opts.response_length,
        "stop_token": "eos",
        "missing_eos_penalty": None,
        "num_sample_generations": 0,
        "logging_steps": 1,
    }
    return trl_ext, trl112


def run_worker(
    python: Path, arm: str, spec: dict[str, Any], workdir: Path, threads: int, timeout: float
) -> dict[str, Any]:
    """Run one worker subprocess and return its parsed result."""
    tag = f"{arm}-{spec['round']}"
    spec_path = workdir / f"{tag}.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if arm == "trl_ext" and str(python) != sys.executable:
        env["PYTHONPATH"] = str(REPO_ROOT)  # trl_ext from this checkout, in another venv
    cmd = [str(python), str(Path(__file__).resolve()), "--worker", WORKER_OF_ARM[arm], "--spec", str(spec_path)]
    result, wall = run_worker_process(
        cmd,
        RESULT_MARKER,
        threads=threads,
        timeout=timeout,
        what=f"worker {arm} (round {spec['round']})",
        env=env,
        log=workdir / f"{tag}.log",
    )
    result.update(arm=arm, round=spec["round"], seed=spec["seed"], process_wall_s=wall)
    return result


# ---------------------------------------------------------------------------------------------- report


def last_third(curve: list[float]) -> float:
    n = max(1, math.ceil(len(curve) / 3))
    return statistics.fmean(curve[-n:])


def first_third(curve: list[float]) -> float:
    n = max(1, math.ceil(len(curve) / 3))
    return statistics.fmean(curve[:n])


def _noise(curve: list[float]) -> float:
    """Standard error of a third's mean, from the update-to-update scatter (differences remove the trend)."""
    diffs = [b - a for a, b in zip(curve, curve[1:])]
    n = max(1, math.ceil(len(curve) / 3))
    return statistics.pstdev(diffs) / math.sqrt(2) / math.sqrt(n) if len(diffs) > 1 else float("nan")


def mean_curve(curves: list[list[float]]) -> list[float]:
    n = min(len(c) for c in curves)
    return [statistics.fmean(c[i] for c in curves) for i in range(n)]


def _nogc(run: dict[str, Any], skip: int) -> list[float]:
    """Update times of a run without the time spent in ``gc.collect()`` (only 1.12 calls it)."""
    return [t - u["seconds"].get("gc", 0.0) for t, u in zip(run["update_s"][skip:], run["phases"][skip:])]


def summarise(results: list[dict[str, Any]], arms: Sequence[str], skip: int) -> dict[str, Any]:
    summary: dict[str, Any] = {"arms": {}}
    for arm in arms:
        runs = [r for r in results if r["arm"] == arm]
        wall = [t for r in runs for t in r["update_s"][skip:]]
        cpu = [t for r in runs for t in r["update_cpu_s"][skip:]]
        updates = [u for r in runs for u in r["phases"][skip:]]
        phases = {
            p: {
                "ms_median": 1e3 * statistics.median(u["seconds"].get(p, 0.0) for u in updates),
                "calls_per_update": statistics.median(u["calls"].get(p, 0) for u in updates),
            }
            for p in sorted({p for u in updates for p in u["seconds"]})
        }
        peak = [r["process_peak_rss_mib"] for r in runs]
        above_import = [r["process_peak_rss_mib"] - r["rss_after_import_mib"] for r in runs]
        train_plus = [r["peak_rss_train_mib"] - r["rss_start_train_mib"] for r in runs]
        summary["arms"][arm] = {
            "timed_updates": len(wall),
            "update_s_median": statistics.median(wall),
            "update_s_p10": quantile(wall, 0.1),
            "update_s_p90": quantile(wall, 0.9),
            "round_update_s_medians": [statistics.median(r["update_s"][skip:]) for r in runs],
            "cpu_s_median": statistics.median(cpu),
            "round_cpu_s_medians": [statistics.median(r["update_cpu_s"][skip:]) for r in runs],
            "nogc_s_median": statistics.median(t for r in runs for t in _nogc(r, skip)),
            "round_nogc_s_medians": [statistics.median(_nogc(r, skip)) for r in runs],
            "process_peak_rss_mib": peak,
            "process_peak_rss_mib_median": statistics.median(peak),
            "rss_after_import_mib_median": statistics.median(r["rss_after_import_mib"] for r in runs),
            "peak_above_import_mib": above_import,
            "peak_above_import_mib_median": statistics.median(above_import),
            "train_plus_rss_mib": train_plus,
            "train_plus_rss_mib_median": statistics.median(train_plus),
            "params": runs[0]["params"],
            "import_s_median": statistics.median(r["import_s"] for r in runs),
            "build_s_median": statistics.median(r["build_s"] for r in runs),
            "train_s_median": statistics.median(r["train_s"] for r in runs),
            "process_wall_s_median": statistics.median(r["process_wall_s"] for r in runs),
            "reward_curves": [r["scores"] for r in runs],
            "reward_curve_mean": mean_curve([r["scores"] for r in runs]),
            "reward_last_third": [last_third(r["scores"]) for r in runs],
            "reward_last_third_mean": statistics.fmean(last_third(r["scores"]) for r in runs),
            "reward_first_update_mean": statistics.fmean(r["scores"][0] for r in runs),
            "reward_gain": [last_third(r["scores"]) - first_third(r["scores"]) for r in runs],
            "reward_gain_mean": statistics.fmean(last_third(r["scores"]) - first_third(r["scores"]) for r in runs),
            "reward_third_stderr": statistics.fmean(_noise(r["scores"]) for r in runs),
            "diagnostics_last_third": {
                key: statistics.fmean(last_third(r["diagnostics"][key]) for r in runs)
                for key in sorted(set.intersection(*(set(r["diagnostics"]) for r in runs)))
                if all(r["diagnostics"][key] for r in runs)
            },
            "kl_curve_mean": mean_curve([r["kl"] for r in runs]) if all(r["kl"] for r in runs) else [],
            "pad_rows_total": sum(sum(r["pad_rows"]) for r in runs),
            "eos_frac_mean": statistics.fmean(x for r in runs for x in r["eos_frac"]),
            "resp_len_mean": statistics.fmean(x for r in runs for x in r["resp_len"]),
            "phases": phases,
            "versions": runs[0]["versions"],
        }
        checks = [r["reward_check"] for r in runs if "reward_check" in r]
        if checks:
            summary["arms"][arm]["reward_check_max_abs_diff"] = max(c["max_abs_diff"] for c in checks)
    if not all(a in summary["arms"] for a in ARMS):
        return summary
    a, b = summary["arms"]["trl_ext"], summary["arms"]["trl_1.12"]
    ratios: dict[str, Any] = {}
    for name, per_round_key, pooled_key in (
        ("time", "round_update_s_medians", "update_s_median"),
        ("cpu", "round_cpu_s_medians", "cpu_s_median"),
        ("time_without_gc", "round_nogc_s_medians", "nogc_s_median"),
        ("peak_rss", "process_peak_rss_mib", "process_peak_rss_mib_median"),
        ("peak_above_import", "peak_above_import_mib", "peak_above_import_mib_median"),
        ("train_plus_rss", "train_plus_rss_mib", "train_plus_rss_mib_median"),
    ):
        per_round = [x / y for x, y in zip(a[per_round_key], b[per_round_key])]
        ratios[name] = {
            "per_round": per_round,
            "median_of_rounds": statistics.median(per_round),
            "of_medians": a[pooled_key] / b[pooled_key],
        }
    ratios["model_state"] = {"of_medians": a["params"]["state_bytes_fp32"] / b["params"]["state_bytes_fp32"]}
    summary["ratios"] = ratios
    diffs = [x - y for x, y in zip(a["reward_last_third"], b["reward_last_third"])]
    summary["reward_last_third_diff_per_round"] = diffs
    summary["reward_last_third_diff_mean"] = a["reward_last_third_mean"] - b["reward_last_third_mean"]
    summary["meets_time_target"] = ratios["time"]["median_of_rounds"] <= TARGET_TIME_RATIO
    summary["meets_time_target_cpu"] = ratios["cpu"]["median_of_rounds"] <= TARGET_TIME_RATIO
    summary["meets_memory_target"] = ratios["peak_rss"]["median_of_rounds"] <= TARGET_MEMORY_RATIO
    summary["meets_reward_target"] = summary["reward_last_third_diff_mean"] >= 0.0
    return summary


def print_settings(opts: argparse.Namespace, spec: dict[str, Any], arms: Sequence[str]) -> None:
    print(
        f"settings: {opts.updates} updates x rollouts of {opts.rollout_batch} completions (1 per prompt), "
        f"{opts.mini_batches} mini-batch(es), {opts.ppo_epochs} PPO epochs, {opts.response_length} response tokens, "
        f"temperature {opts.temperature}, lr {opts.lr} (AdamW, weight decay 0, constant), "
        f"kl_coef {opts.kl_coef} (k1), vf_coef {opts.vf_coef}, cliprange {opts.cliprange}/{opts.cliprange_value}, "
        f"gamma {opts.gamma}, lam {opts.lam}, advantages whitened, rewards not, no grad clipping, "
        f"{opts.threads} torch thread(s), seeds {opts.seed}..{opts.seed + opts.repeats - 1}, "
        f"first {opts.skip_updates} update(s) not timed"
    )
    print(
        f"policy {spec['model_path']}; {len(spec['prompts'])} prompts of {len(spec['prompt_ids'][0])} tokens; "
        f"reward = share of response tokens in {len(spec['targets'])} target ids {spec['targets'][:6]}..."
    )
    for arm, key in (("trl_ext", "trl_ext_config"), ("trl_1.12", "trl112_config")):
        if arm in arms:
            cfg = ", ".join(f"{k}={v}" for k, v in spec[key].items())
            print(f"  {arm} PPOConfig: {cfg}")


def _curve(values: list[float]) -> str:
    return " ".join(f"{x:.2f}" for x in values)


def print_report(summary: dict[str, Any], opts: argparse.Namespace, arms: Sequence[str]) -> None:
    print()
    print(
        f"PPO update time and memory: trl_ext.PPOTrainer vs TRL 1.12 PPOTrainer ({opts.repeats} rounds x "
        f"{opts.updates} updates, first {opts.skip_updates} dropped, {opts.threads} torch thread(s))"
    )
    header = (
        f"{'arm':<9} {'update s':>9} {'p10':>6} {'p90':>6} {'cpu s':>7} {'w/o gc s':>9} {'n':>4} "
        f"{'import s':>9} {'build s':>8} {'train() s':>10} {'reward 1st':>11} {'last third':>11}"
    )
    print(header)
    print("-" * len(header))
    for arm in arms:
        s = summary["arms"][arm]
        print(
            f"{arm:<9} {s['update_s_median']:>9.3f} {s['update_s_p10']:>6.3f} {s['update_s_p90']:>6.3f} "
            f"{s['cpu_s_median']:>7.3f} {s['nogc_s_median']:>9.3f} {s['timed_updates']:>4d} "
            f"{s['import_s_median']:>9.2f} {s['build_s_median']:>8.2f} {s['train_s_median']:>10.2f} "
            f"{s['reward_first_update_mean']:>11.3f} {s['reward_last_third_mean']:>11.3f}"
        )
    header = (
        f"{'arm':<9} {'peak RSS MiB':>13} {'after import':>13} {'peak-import':>12} {'+RSS train':>11} "
        f"{'trainable':>10} {'frozen':>9} {'fp32 state MiB':>15}"
    )
    print()
    print(header)
    print("-" * len(header))
    for arm in arms:
        s = summary["arms"][arm]
        params = s["params"]
        print(
            f"{arm:<9} {s['process_peak_rss_mib_median']:>13.1f} {s['rss_after_import_mib_median']:>13.1f} "
            f"{s['peak_above_import_mib_median']:>12.1f} {s['train_plus_rss_mib_median']:>11.1f} "
            f"{params['trainable']:>10,d} {params['frozen']:>9,d} {params['state_bytes_fp32'] / 2**20:>15.2f}"
        )
    print("-" * len(header))
    if "ratios" in summary:
        ratios = summary["ratios"]
        print("ratio trl_ext/trl_1.12        median of rounds   ratio of medians   per round")
        labels = {
            "time": "time per update (wall)",
            "cpu": "cpu time per update",
            "time_without_gc": "wall w/o 1.12's gc.collect",
            "peak_rss": "peak RSS (process)",
            "peak_above_import": "peak RSS above imports",
            "train_plus_rss": "+RSS during train()",
        }
        for key, label in labels.items():
            r = ratios[key]
            per_round = " ".join(f"{x:.3f}" for x in r["per_round"])
            print(f"  {label:<27} {r['median_of_rounds']:>15.3f} {r['of_medians']:>18.3f}   {per_round}")
        print(f"  {'fp32 model state':<27} {'':>15} {ratios['model_state']['of_medians']:>18.3f}")
        met = {True: "MET", False: "NOT MET"}
        print(
            f"targets (issue): time ratio <= {TARGET_TIME_RATIO:.1f} -> wall {met[summary['meets_time_target']]}, "
            f"cpu {met[summary['meets_time_target_cpu']]}; peak-RSS ratio <= {TARGET_MEMORY_RATIO:.1f} -> "
            f"{met[summary['meets_memory_target']]}; reward over the last third at least 1.12's -> "
            f"{met[summary['meets_reward_target']]} (difference {summary['reward_last_third_diff_mean']:+.3f}, per "
            f"round {' '.join(f'{d:+.3f}' for d in summary['reward_last_third_diff_per_round'])})"
        )
    print()
    print("reward curves (mean score per update; mean over rounds, then each round):")
    for arm in arms:
        s = summary["arms"][arm]
        print(f"  {arm:<9} mean  {_curve(s['reward_curve_mean'])}")
        for i, curve in enumerate(s["reward_curves"]):
            print(f"  {'':<9} r{i + 1:<4} {_curve(curve)}")
    for arm in arms:
        s = summary["arms"][arm]
        if s["kl_curve_mean"]:
            print(f"  KL {arm:<6} {_curve(s['kl_curve_mean'])}  (k1, summed per completion, mean over rounds)")
    for arm in arms:
        s = summary["arms"][arm]
        gains = " ".join(f"{g:+.3f}" for g in s["reward_gain"])
        diag = ", ".join(f"{k} {v:.4g}" for k, v in s["diagnostics_last_third"].items())
        print(
            f"  {arm:<9} gain last third - first third {s['reward_gain_mean']:+.3f} (rounds {gains}; noise of a "
            f"third's mean ~{s['reward_third_stderr']:.3f}); last third: {diag}"
        )
    print()
    print("where an update's time goes (median ms per update; calls per update in brackets):")
    names = [p for p in (*PHASES, "other") if any(p in summary["arms"][a]["phases"] for a in arms)]
    print(f"  {'arm':<9} " + " ".join(f"{PHASE_LABELS[p]:>15}" for p in names))
    for arm in arms:
        phases = summary["arms"][arm]["phases"]
        cells = []
        for p in names:
            if p not in phases:
                cells.append(f"{'-':>15}")
                continue
            calls = f"({phases[p]['calls_per_update']:g})" if p != "other" else ""
            cells.append(f"{phases[p]['ms_median']:>9.1f}{calls:>6}")
        print(f"  {arm:<9} " + " ".join(cells))
    for arm in arms:
        s = summary["arms"][arm]
        check = s.get("reward_check_max_abs_diff")
        extra = f"; reward module vs python rule: max |diff| {check:.1e} on 64 sequences" if check is not None else ""
        print(
            f"{arm}: mean response {s['resp_len_mean']:.1f} tokens, {100 * s['eos_frac_mean']:.0f} % end with "
            f"<|im_end|>, {s['pad_rows_total']:g} response(s) with a sampled <|pad|>{extra}; "
            f"versions {s['versions']}"
        )


def save_plot(summary: dict[str, Any], arms: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colours = {"trl_ext": "tab:blue", "trl_1.12": "tab:orange"}
    for arm in arms:
        s = summary["arms"][arm]
        for curve in s["reward_curves"]:
            axes[0].plot(range(1, len(curve) + 1), curve, color=colours[arm], alpha=0.3, lw=1)
        mean = s["reward_curve_mean"]
        axes[0].plot(range(1, len(mean) + 1), mean, color=colours[arm], lw=2.5, label=f"{arm} (mean of rounds)")
        if s["kl_curve_mean"]:
            kl = s["kl_curve_mean"]
            axes[1].plot(range(1, len(kl) + 1), kl, color=colours[arm], lw=2, label=arm)
    axes[0].set(xlabel="PPO update", ylabel="mean reward (share of target tokens)", title="reward per update")
    axes[1].set(xlabel="PPO update", ylabel="KL(policy || ref), summed per completion", title="KL per update")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- main


CODE_FILES = (
    "trl_ext/ppo/trainer.py",
    "trl_ext/ppo/losses.py",
    "trl_ext/ppo/value_head.py",
    "trl_ext/ppo/kl_control.py",
    "trl_ext/ppo/_trl_compat.py",
)
"""The PPO code whose cost is measured (fingerprinted in the JSON)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags: the harness's (``--repeats``, ``--threads``, ``--seed``, ``--json``) and the PPO run's."""
    parser = bench_parser(
        __doc__,
        repeats=3,
        repeats_help="Rounds; each runs trl_ext then trl_1.12.",
        seed_help="Seed of round 1; round r uses seed + r - 1.",
        threads_help="torch threads per worker (and OMP_NUM_THREADS).",
    )
    parser.add_argument("--updates", type=int, default=25, help="PPO updates (rollout + its epochs) per run.")
    parser.add_argument("--skip_updates", type=int, default=2, help="Warm-up updates per run left out of the timing.")
    parser.add_argument("--rollout_batch", type=int, default=16, help="Completions per rollout (1 per prompt).")
    parser.add_argument("--mini_batches", type=int, default=1, help="Mini-batches per rollout (num_mini_batches).")
    parser.add_argument("--ppo_epochs", type=int, default=4, help="PPO epochs per rollout (num_ppo_epochs).")
    parser.add_argument("--response_length", type=int, default=16, help="Maximum response tokens.")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--kl_coef", type=float, default=0.05)
    parser.add_argument("--vf_coef", type=float, default=0.1)
    parser.add_argument("--cliprange", type=float, default=0.2)
    parser.add_argument("--cliprange_value", type=float, default=0.2)
    parser.add_argument("--gamma", type=float, default=1.0)
    parser.add_argument("--lam", type=float, default=0.95)
    parser.add_argument(
        "--hidden_size", type=int, default=64, help="Width of the tiny policy (64: the embedded default model)."
    )
    parser.add_argument("--layers", type=int, default=2, help="Layers of the tiny policy (2: the default model).")
    parser.add_argument(
        "--trl_ext_value",
        choices=sorted(TRL_EXT_VALUE_OPTIONS),
        default="head",
        help="Value function of the trl_ext arm: 'head' (default: MLP head on the shared trunk), 'detached' (head, "
        "trunk not trained by the value loss) or 'separate' (own trunk loaded from the policy folder, like 1.12).",
    )
    parser.add_argument(
        "--value_head_hidden_size",
        type=int,
        default=None,
        help="trl_ext arm: width of the value head's middle layer (default: the policy's hidden size; 0: a linear "
        "head, like 1.12's score layer).",
    )
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help="Arms to run (default both).")
    parser.add_argument("--trl112_venv", type=Path, default=DEFAULT_TRL112_VENV, help="Venv of the TRL 1.12 arm.")
    parser.add_argument(
        "--trl_ext_venv",
        type=Path,
        default=DEFAULT_TRL_EXT_VENV,
        help="Venv of the trl_ext arm: created once like the 1.12 one, with this venv's TRL version (the repository "
        "goes on PYTHONPATH), so both arms import the same packages. 'current': the current interpreter.",
    )
    parser.add_argument(
        "--find_links", type=Path, default=Path("/opt/wheels"), help="Wheel folder holding the CPU torch wheel."
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="Seconds allowed per worker run.")
    parser.add_argument("--plot", type=Path, default=None, help="Save a PNG of the reward and KL curves.")
    parser.add_argument("--profile", type=Path, default=None, help="Folder for cProfile dumps of round 1's runs.")
    parser.add_argument("--log_dir", type=Path, default=None, help="Keep the workers' specs and logs here.")
    parser.add_argument("--worker", choices=sorted(set(WORKER_OF_ARM.values())), help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.worker is not None:
        return opts
    check_common(parser, opts)
    require(parser, opts.updates > opts.skip_updates, "--updates must be larger than --skip_updates")
    require(
        parser,
        min(opts.ppo_epochs, opts.mini_batches, opts.response_length) >= 1,
        "--ppo_epochs, --mini_batches and --response_length must be >= 1",
    )
    require(
        parser, opts.rollout_batch % opts.mini_batches == 0, "--rollout_batch must be a multiple of --mini_batches"
    )
    require(
        parser,
        opts.rollout_batch <= NUM_PROMPTS,
        f"--rollout_batch must be at most {NUM_PROMPTS} (one completion per prompt)",
    )
    return opts


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    opts = parse_args(argv)
    if opts.worker is not None:
        worker_main(opts.worker, opts.spec)
        return None
    from trl_ext.common.noise import quiet_dependency_noise

    quiet_dependency_noise()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    session = BenchSession(opts, code_files=CODE_FILES)
    arms = [a for a in ARMS if a in opts.arms]

    import torch
    import transformers
    import trl
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from trl_ext.models import TinyModelConfig, get_tiny_model_path

    hf_logging.set_verbosity_error()
    size = {
        "hidden_size": opts.hidden_size,
        "intermediate_size": 2 * opts.hidden_size,
        "num_hidden_layers": opts.layers,
    }
    model_path = Path(get_tiny_model_path(TinyModelConfig(**size))).resolve()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    prompts, prompt_ids = make_prompts(tokenizer, NUM_PROMPTS, opts.seed)
    special = {tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens}
    special |= {i for i in range(len(tokenizer)) if tokenizer.convert_ids_to_tokens(i).startswith("<|")}
    targets = choose_targets(len(tokenizer), special, NUM_TARGET_TOKENS, TARGET_SEED)
    trl_ext_config, trl112_config = arm_configs(opts, model_path)
    base_spec = {
        "model_path": str(model_path),
        "prompts": prompts,
        "prompt_ids": prompt_ids,
        "targets": targets,
        "vocab_size": len(tokenizer),
        "pad_id": tokenizer.pad_token_id,
        "eos_id": tokenizer.eos_token_id,
        "response_length": opts.response_length,
        "threads": opts.threads,
        "trl_ext_config": trl_ext_config,
        "trl112_config": trl112_config,
    }
    find_links = opts.find_links if opts.find_links.is_dir() else None
    pythons = {"trl_ext": Path(sys.executable)}
    if "trl_ext" in arms and str(opts.trl_ext_venv) != "current":
        pythons["trl_ext"] = ensure_venv(
            opts.trl_ext_venv, trl.__version__, torch.__version__, transformers.__version__, find_links
        )
    if "trl_1.12" in arms:
        pythons["trl_1.12"] = ensure_venv(
            opts.trl112_venv, TRL112_VERSION, torch.__version__, transformers.__version__, find_links
        )
    print_settings(opts, base_spec, arms)

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_ppo_") as tmp:
        workdir = opts.log_dir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if opts.profile is not None:
            opts.profile.mkdir(parents=True, exist_ok=True)
        for rnd in range(opts.repeats):
            for arm in arms:
                spec = {**base_spec, "round": rnd, "seed": opts.seed + rnd, "output_dir": str(Path(tmp) / "out")}
                if opts.profile is not None and rnd == 0:
                    spec["profile"] = str(opts.profile.resolve() / f"{arm}.prof")
                res = run_worker(pythons[arm], arm, spec, workdir, opts.threads, opts.timeout)
                results.append(res)
                timed = res["update_s"][opts.skip_updates :]
                print(
                    f"round {rnd + 1}/{opts.repeats} {arm:<9} median update {statistics.median(timed):.3f} s  "
                    f"train() {res['train_s']:5.1f} s  process {res['process_wall_s']:5.1f} s  peak RSS "
                    f"{res['process_peak_rss_mib']:.0f} MiB  reward last third {last_third(res['scores']):.3f}",
                    flush=True,
                )

    summary = session.finish(summarise(results, arms, opts.skip_updates))
    print_report(summary, opts, arms)
    session.print_footer(summary, hint="see the cpu column")
    if opts.profile is not None:
        print(f"cProfile dumps of round 1 in {opts.profile} (python -m pstats FILE)")
    if opts.plot is not None:
        save_plot(summary, arms, opts.plot)
        print(f"wrote {opts.plot}")
    session.write(
        summary, results, spec=dict(base_spec), trl112_venv=str(opts.trl112_venv), trl112_version=TRL112_VERSION
    )
    return summary


if __name__ == "__main__":
    main()
