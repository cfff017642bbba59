"""Cost of diversity training: ``DiversityTrainer`` against a plain ``GRPOTrainer`` step, and its memory.

The issue's targets (issue 15), at the ``DiversityConfig`` defaults:

1. **step ratio**: a ``DiversityTrainer`` step takes **at most 1.25x** a plain ``trl.GRPOTrainer`` step on the same
   model, prompt, batch and seed (median over rounds of the per-round ratio of median step times);
2. **memory**: the peak memory of the trainer's approach (generation without gradient, then one teacher-forced
   forward with gradient) is **at most 0.5x** that of generating with gradient, as upstream does (sampling token by
   token with the autograd graph kept through the KV cache; implemented here, in the bench only);
3. **embedding + clustering share**: the sentence embedding of the open blocks and the replay buffers' bookkeeping
   and k-means refits take **at most 25 %** of a diversity step.

What is run
    The policy is a Qwen2 of hidden 256 and 4 layers (2.5 M parameters) with the embedded tiny model's tokenizer
    (vocabulary 613), built through ``TinyModelConfig`` (``--hidden_size``/``--layers``; ``--hidden_size 0``: the
    embedded tiny model itself, hidden 64 x 2 layers, 0.11 M parameters, the default of ``--quick``), fine-tuned
    by ``trl_ext.diversity.demo.make_biased_model`` to answer the document's prompt with "cat" 90 % of the time (60
    SFT steps, seed 0, cached in ``$TRL_EXT_CACHE``): the untrained model names no animal, and the embedding and
    clustering cost depends on how many completions do (the share with a concept match is printed). Both arms: full
    fine-tuning, ``use_cpu``, fp32, no reporting, no checkpoints,
    ``log_completions=False``, ``logging_steps=1``, ``--steps`` optimizer steps per run, the same seed. Arms:

    * ``diversity``: ``trl_ext.DiversityTrainer`` with ``DiversityConfig`` at its defaults (32 completions per step =
      ``per_device_train_batch_size`` 32 x ``num_generations`` 32, ``max_completion_length`` 30, temperature 1.0,
      top-p 0.95, stop strings, ``loss_type="kl"``, w_c = w_o = 0.5, ``n_clusters`` 5, ``num_samples`` 100,
      ``buffer_size`` 500, ``update_clusters_every`` 20, ``min_samples_for_clustering`` 10, the default sentence
      embedder ``all-MiniLM-L6-v2``, offline, built by the trainer), concept ``animal`` = cat / dog, the document's
      prompt (``trl_ext.diversity.demo.DEFAULT_PROMPT``);
    * ``plain``: ``trl.GRPOTrainer`` with ``GRPOConfig`` holding the same batch, generation and optimisation values
      (read from the ``DiversityConfig``), ``beta`` 0, the default ``loss_type``, a one-row dataset of the same prompt
      and a cheap reward (the completion's length in tokens). It has no stop strings: its completions run to EOS or
      30 tokens (their mean length is printed). It runs under trl_ext's fused-LM-head tile (256 on CPU), as the
      diversity arm does inside its ``train()`` (``--plain_lm_head_tile trl``: TRL's own).

How
    (1) Step times. One process; ``--repeats`` rounds, the arm order alternating per round, after one untimed
    warm-up run of each arm (not with ``--quick``). Every run builds a fresh trainer from the saved weights;
    transformers' ``PrinterCallback`` is removed. ``harness.make_step_timer`` (registered last) takes ``perf_counter``
    and ``process_time`` from ``on_step_begin`` to the end of the step's ``on_log``: with GRPO's one generation per
    optimizer step that is generation, scoring, loss, backward, clipping, optimizer and scheduler step and logging.
    The first ``--skip_steps`` (1) steps of each run are dropped: the diversity arm prefills its replay buffers
    (``num_samples`` completions, embedded) in its first rollout, and the first embedding warms the embedder up.

    (2) Components, in every run, by wrapping methods of the trainer instance (``harness.instrument``) and adding
    each call's time to the optimizer step it runs in:

    * ``generation``: ``GRPOTrainer._generate`` (tokenise, ``generate``, cut at the stop strings, decode, metrics);
    * ``scoring forward``: ``DiversityTrainer._token_logps(..., grad=False)``, the teacher-forced no-grad forward on
      the whole batch that gives the loss's weights;
    * ``embedding``: the calls of ``trainer.embedder`` (the open block after each concept block, one batched call);
    * ``segmentation``: ``_following_items`` without its embedding call (concept/open blocks, decoding);
    * ``clustering``: ``ReplayBuffer.add`` of every option's buffer (append, eviction, k-means refit when due,
      labels; the embeddings are passed in, so no embedding is inside), of which ``k-means refit`` is ``_refit``;
    * ``rollout, other``: the rest of ``_generate_and_score_completions`` (rewards, gathers, block table, the
      objective and its weights, metrics);
    * ``train forward``: the forward with gradient (``_token_logps(..., grad=True)``; plain:
      ``_get_per_token_logps_and_entropies`` with gradient enabled);
    * ``backward``: ``accelerator.backward``;
    * ``rest``: the step minus all of the above (loss assembly, clipping, optimizer and scheduler step, logging).

    Each is the median over all timed steps of all rounds (0 in a step where it did not run) and its share of the
    diversity arm's median step. Target 3 is judged on ``Σ (embedding + clustering) / Σ step`` over the timed steps
    of a run (the mean share, which counts the steps with a refit), median over rounds.

    (3) Memory, in isolated worker processes (this file with ``--worker``; fresh allocator and peak), each on the same
    batch: the prompt x 32, exactly 30 sampled tokens (EOS suppressed, so both approaches hold the same B x T tokens),
    temperature 1.0, top-p 0.95, the same model in train mode, after a common small warm-up:

    * ``rescore`` (the trainer's approach): ``generate`` under ``torch.no_grad``, then one teacher-forced forward with
      gradient on the generated sequences through TRL's fused LM head (``add_fused_lm_head``, under trl_ext's tile, as
      the trainer scores) and the backward of the sum of the completion tokens' log-probs;
    * ``rescore_logits``: the same with the full logits and ``log_softmax`` (the LM head as upstream computes it:
      isolates the approach from the fused head);
    * ``upstream``: a manual sampling loop with gradient enabled: a forward of the prompt, then one forward per new
      token with ``past_key_values`` kept in the graph, top-p sampling from the temperature-scaled logits (the
      sampling itself detached), the sampled tokens' log-probs accumulated with gradient; the backward of their sum.

    ``+peak RSS``: ``VmHWM`` (reset through ``/proc/self/clear_refs`` just before) minus the RSS before the phase
    (generation + forward + backward). The workers run with ``MALLOC_MMAP_THRESHOLD_=65536``
    (``--malloc_mmap_threshold``; 0 keeps glibc's dynamic threshold): every block of 64 KiB or more is its own
    mapping, returned to the system when freed, so the peak RSS follows the live tensors rather than the heap's
    reuse of freed blocks (with the dynamic threshold, the freed blocks of ``generate`` stay resident and add ~10 MiB
    to the re-scoring approaches). ``saved``: the bytes the autograd graph saves for the backward, from
    ``torch.autograd.graph.saved_tensors_hooks`` (each distinct storage once, the parameters' storages left out):
    the activation memory, device-independent. ``--memory_repeats`` workers per approach, alternating; medians. Target
    2 is judged on both ratios rescore/upstream (``+peak RSS`` and ``saved``), each with its verdict.

Reading the output
    Table 1: per arm, step ms (median, p10/p90), CPU ms, mean completion length, peak RSS; the ratio diversity/plain
    (median of rounds, wall and CPU; per round) and TARGET 1. Table 2: the components (plain ms, diversity ms, share
    of the diversity step, mean ms), the share of completions with a concept match, texts embedded and refits per
    step, buffer sizes, and TARGET 3. Table 3: memory per approach and TARGET 2. When the 1-minute load average exceeds
    the number of cores the wall times are inflated by other processes: compare the CPU column. The k-means refits
    run in scikit-learn's OpenMP threads (every core, whatever ``--threads``), so the diversity arm's CPU time can
    exceed its wall time.

    .venv/bin/python bench/bench_diversity.py                 # about 3.5 minutes on 2 cores
    .venv/bin/python bench/bench_diversity.py --steps 30 --repeats 7 --json /tmp/bench_diversity.json
    .venv/bin/python bench/bench_diversity.py --hidden_size 0   # the embedded 0.11 M-parameter tiny policy
    .venv/bin/python bench/bench_diversity.py --quick          # smoke run, well under a minute; verdicts mean nothing
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import (
    BenchSession,
    StepTimes,
    bench_parser,
    check_common,
    current_rss_mib,
    emit_result,
    fmt,
    instrument,
    make_step_timer,
    paired_ratios,
    peak_rss_mib,
    quantile,
    quiet_offline_torch,
    record_peak,
    require,
    reset_peak_rss,
    run_rounds,
    run_worker_process,
    verdict,
)

TARGET_RATIO = 1.25
"""Diversity step over plain GRPO step: at most this."""
TARGET_MEMORY = 0.5
"""Peak memory of the re-scoring approach over generating with gradient: at most this."""
TARGET_SHARE = 0.25
"""Embedding + clustering: at most this share of a diversity step."""

PLAIN, DIVERSITY = "plain", "diversity"
ARMS = (PLAIN, DIVERSITY)
CONCEPT = {"concept_name": "animal", "concept_options": ["cat", "dog"]}
BIAS_STEPS = 60
DEFAULT_HIDDEN = 256  # with 4 layers: a 2.5 M-parameter policy (the embedded tiny one has 0.11 M; the embedder 22.7 M)
"""SFT steps of ``make_biased_model`` (its default: 90 % "cat")."""
MIRRORED = (
    "per_device_train_batch_size",
    "num_generations",
    "max_completion_length",
    "temperature",
    "top_p",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "max_grad_norm",
    "adam_beta1",
    "adam_beta2",
    "logging_steps",
)
"""``GRPOConfig`` fields the plain arm copies from the default ``DiversityConfig``."""
RUN_SETTINGS: dict[str, Any] = {
    "use_cpu": True,
    "bf16": False,
    "report_to": "none",
    "save_strategy": "no",
    "log_completions": False,
    "disable_tqdm": True,
    "dataloader_num_workers": 0,
}
"""Fields set in both arms (the rest of the diversity arm is ``DiversityConfig``'s defaults)."""

COMPONENTS = (
    "generation",
    "scoring_forward",
    "embedding",
    "segmentation",
    "clustering",
    "rollout_other",
    "train_forward",
    "backward",
    "rest",
)
"""The parts of a step, in the order of a step; they add up to the step time."""
LABELS = {
    "generation": "generation",
    "scoring_forward": "scoring forward (no grad)",
    "embedding": "embedding",
    "segmentation": "segmentation",
    "clustering": "clustering (buffer add)",
    "refit": "  of which k-means refit",
    "rollout_other": "rollout, other",
    "train_forward": "train forward (grad)",
    "backward": "backward",
    "rest": "rest (optimizer, clip, log)",
}
MEMORY_APPROACHES = ("rescore", "rescore_logits", "upstream")
MEMORY_MARKER = "BENCH_DIVERSITY_MEMORY "
LOGGED = ("completions/mean_length",)
"""Logged metrics kept per step, besides every ``diversity/*`` one."""


# ---------------------------------------------------------------------------------------------- runs


@dataclass
class DiversityRun(StepTimes):
    """One training run: the harness's step times plus the components, counts and logged metrics per step."""

    components: dict[str, dict[int, float]] = field(default_factory=dict)
    """Component (and ``refit``, ``rollout``, ``following_items``) -> step -> wall seconds summed over its calls."""
    counts: dict[str, dict[int, int]] = field(default_factory=dict)
    """``embedded_texts``, ``embed_calls``, ``refits``, ``buffer_adds`` -> step -> count."""
    logs: dict[int, dict[str, float]] = field(default_factory=dict)
    """Step -> the logged ``diversity/*`` metrics and the mean completion length."""
    buffer_sizes: dict[str, int] = field(default_factory=dict)
    """Texts per replay buffer at the end of the run."""

    def component(self, name: str, step: int) -> float:
        return self.components.get(name, {}).get(step, 0.0)

    def as_json(self) -> dict[str, Any]:
        out = super().as_json()
        for key in ("components", "counts"):
            out[key] = {k: {str(s): v for s, v in sorted(d.items())} for k, d in getattr(self, key).items()}
        out["logs"] = {str(s): v for s, v in sorted(self.logs.items())}
        return out


def make_log_capture(result: DiversityRun) -> Any:
    """A callback keeping the per-step ``diversity/*`` metrics and the mean completion length of each log."""
    from transformers import TrainerCallback

    class LogCapture(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                keep = {k: float(v) for k, v in logs.items() if k.startswith("diversity/") or k in LOGGED}
                result.logs[state.global_step] = keep

    return LogCapture()


class CountedEmbedder:
    """Stands in for ``trainer.embedder``: counts the calls and the texts, and calls the embedder."""

    def __init__(self, inner: Any, result: DiversityRun, step_of: Any) -> None:
        self.inner, self.result, self.step_of = inner, result, step_of

    def __call__(self, texts: Any) -> Any:
        step = self.step_of()
        for key, n in (("embed_calls", 1), ("embedded_texts", len(texts))):
            counts = self.result.counts.setdefault(key, {})
            counts[step] = counts.get(step, 0) + n
        return self.inner(texts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def instrument_trainer(trainer: Any, arm: str, result: DiversityRun) -> None:
    """Wrap the methods whose time makes the components (see the module docstring), on this instance only."""
    import torch

    def step_of() -> int:
        return trainer.state.global_step + 1  # the optimizer step in progress

    def sink(name: str) -> Any:
        def add(seconds: float, kwargs: dict[str, Any]) -> None:
            per_step = result.components.setdefault(name, {})
            per_step[step_of()] = per_step.get(step_of(), 0.0) + seconds

        return add

    def count(name: str) -> Any:
        def add(seconds: float, kwargs: dict[str, Any]) -> None:
            counts = result.counts.setdefault(name, {})
            counts[step_of()] = counts.get(step_of(), 0) + 1

        return add

    def both(*sinks: Any) -> Any:
        def add(seconds: float, kwargs: dict[str, Any]) -> None:
            for s in sinks:
                s(seconds, kwargs)

        return add

    instrument(trainer, "_generate", sink("generation"))
    instrument(trainer, "_generate_and_score_completions", sink("rollout"))
    instrument(trainer.accelerator, "backward", sink("backward"))
    if arm == PLAIN:
        train_fwd, scoring = sink("train_forward"), sink("scoring_forward")

        def logps_sink(seconds: float, kwargs: dict[str, Any]) -> None:
            # called inside the caller's grad mode: GRPO's own no-grad forwards (none with beta 0) would be scoring
            (train_fwd if torch.is_grad_enabled() else scoring)(seconds, kwargs)

        instrument(trainer, "_get_per_token_logps_and_entropies", logps_sink)
        return
    train_fwd, scoring = sink("train_forward"), sink("scoring_forward")
    instrument(
        trainer,
        "_token_logps",
        lambda s, kw: (train_fwd if kw.get("grad", torch.is_grad_enabled()) else scoring)(s, kw),
    )
    instrument(trainer, "_following_items", sink("following_items"))
    trainer.embedder = CountedEmbedder(trainer.embedder, result, step_of)
    instrument(trainer, "embedder", sink("embedding"))
    for buffer in trainer.buffers.values():
        instrument(buffer, "add", both(sink("clustering"), count("buffer_adds")))
        instrument(buffer, "_refit", both(sink("refit"), count("refits")))


def step_parts(run: DiversityRun, step: int) -> dict[str, float]:
    """The components of one step, in seconds (they add up to the step's wall time)."""
    c = run.component
    parts = {
        "generation": c("generation", step),
        "scoring_forward": c("scoring_forward", step),
        "embedding": c("embedding", step),
        "segmentation": max(0.0, c("following_items", step) - c("embedding", step)),
        "clustering": c("clustering", step),
        "refit": c("refit", step),
        "train_forward": c("train_forward", step),
        "backward": c("backward", step),
    }
    inside = ("generation", "scoring_forward", "embedding", "segmentation", "clustering")
    parts["rollout_other"] = c("rollout", step) - sum(parts[k] for k in inside)
    parts["rest"] = run.step_s[step] - c("rollout", step) - parts["train_forward"] - parts["backward"]
    return parts


def train_configs(workdir: Path, opts: argparse.Namespace) -> tuple[Any, Any]:
    """The two arms' configs: the default ``DiversityConfig`` (+ concept, prompt) and the mirrored ``GRPOConfig``."""
    from trl import GRPOConfig

    from trl_ext.diversity import DiversityConfig
    from trl_ext.diversity.demo import DEFAULT_PROMPT

    common = {"max_steps": opts.steps, "seed": opts.seed, **RUN_SETTINGS}
    diversity = DiversityConfig(output_dir=str(workdir / DIVERSITY), prompts=[DEFAULT_PROMPT], **CONCEPT, **common)
    mirrored = {k: getattr(diversity, k) for k in MIRRORED}
    mirrored["lr_scheduler_type"] = str(getattr(mirrored["lr_scheduler_type"], "value", mirrored["lr_scheduler_type"]))
    plain = GRPOConfig(output_dir=str(workdir / PLAIN), beta=0.0, **mirrored, **common)
    return diversity, plain


def completion_length(completion_ids: list[list[int]], **kwargs: Any) -> list[float]:
    """The plain arm's reward: the completion's length in tokens (cheap, no model)."""
    return [float(len(ids)) for ids in completion_ids]


def run_arm(arm: str, rnd: int, model_path: Path, workdir: Path, opts: argparse.Namespace, steps: int) -> DiversityRun:
    """Build a fresh trainer for ``arm`` from the saved weights and train ``steps`` optimizer steps."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, set_seed

    from trl_ext.common.lm_head_tiles import resolve_vocab_tile, vocab_tile
    from trl_ext.diversity.demo import DEFAULT_PROMPT

    result = DiversityRun(arm=arm, round=rnd)
    gc.collect()
    can_reset = reset_peak_rss()
    result.start_rss_mib = current_rss_mib()
    t0 = time.perf_counter()
    set_seed(opts.seed)
    run_dir = workdir / f"{arm}-{rnd}"
    diversity_args, plain_args = train_configs(run_dir, opts)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    tile = None
    if arm == DIVERSITY:
        from trl_ext import DiversityTrainer

        diversity_args.max_steps = steps
        trainer = DiversityTrainer(model, args=diversity_args, processing_class=tokenizer)
    else:
        from trl import GRPOTrainer

        plain_args.max_steps = steps
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=completion_length,
            args=plain_args,
            train_dataset=Dataset.from_dict({"prompt": [DEFAULT_PROMPT]}),
            processing_class=tokenizer,
        )
        if opts.plain_lm_head_tile == "trl_ext":
            tile = resolve_vocab_tile(None, trainer.accelerator.device)
    trainer.remove_callback(PrinterCallback)
    instrument_trainer(trainer, arm, result)
    timer = make_step_timer(result)
    trainer.add_callback(make_log_capture(result))
    trainer.add_callback(timer)  # last: its on_log runs after every other callback's
    t1 = time.perf_counter()
    with vocab_tile(tile):  # the diversity arm applies trl_ext's tile inside its own train()
        trainer.train()
    t2 = time.perf_counter()
    result.build_s, result.train_s = t1 - t0, t2 - t1
    if arm == DIVERSITY:
        result.buffer_sizes = {b.name: len(b) for b in trainer.buffers.values()}
    record_peak(result, can_reset, timer)
    del trainer, model, timer
    gc.collect()
    return result


# ---------------------------------------------------------------------------------------------- model


def prepare_model(opts: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The biased policy folder (built once per base model in ``$TRL_EXT_CACHE``) and a description of it."""
    from trl_ext.diversity.demo import make_biased_model
    from trl_ext.models import TinyModelConfig, get_tiny_model_path
    from trl_ext.models.tiny_model import default_cache_dir

    if not opts.hidden_size:
        base = get_tiny_model_path()
    else:
        size = TinyModelConfig(
            hidden_size=opts.hidden_size, intermediate_size=2 * opts.hidden_size, num_hidden_layers=opts.layers
        )
        base = get_tiny_model_path(size)
    folder = default_cache_dir() / f"diversity-biased-{base.name}-{BIAS_STEPS}steps"
    t0 = time.perf_counter()
    built = not (folder / "config.json").is_file()
    with contextlib.redirect_stdout(io.StringIO()):  # the SFT run's PrinterCallback lines
        path = make_biased_model(folder, base=str(base), max_steps=BIAS_STEPS)
    config = json.loads((path / "config.json").read_text())
    from safetensors import safe_open

    params = 0
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), "np") as f:
            for key in f.keys():
                params += math.prod(f.get_slice(key).get_shape())
    info = {
        "path": str(path),
        "base": str(base),
        "hidden_size": config["hidden_size"],
        "num_hidden_layers": config["num_hidden_layers"],
        "vocab_size": config["vocab_size"],
        "parameters": params,
        "bias_sft_steps": BIAS_STEPS,
        "built_now": built,
        "prepare_s": time.perf_counter() - t0,
    }
    return path, info


# ---------------------------------------------------------------------------------------------- memory worker


class SavedTensorBytes:
    """``saved_tensors_hooks`` pack hook: the bytes of each distinct storage the graph saves, parameters left out."""

    def __init__(self, parameters: Any) -> None:
        self.skip = {p.untyped_storage().data_ptr() for p in parameters}
        self.storages: dict[int, int] = {}
        self.saved = 0

    def pack(self, tensor: Any) -> Any:
        self.saved += 1
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.skip and ptr not in self.storages:
            self.storages[ptr] = storage.nbytes()
        return tensor

    @staticmethod
    def unpack(tensor: Any) -> Any:
        return tensor

    @property
    def mib(self) -> float:
        return sum(self.storages.values()) / 2**20


def memory_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One approach of the memory comparison (see the module docstring), in this fresh process."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.utils import add_fused_lm_head

    from trl_ext.common.lm_head_tiles import vocab_tile

    torch.set_num_threads(spec["threads"])
    approach, batch, new = spec["approach"], spec["batch"], spec["max_new_tokens"]
    temperature, top_p = spec["temperature"], spec["top_p"]
    tokenizer = AutoTokenizer.from_pretrained(spec["model_path"])
    model = AutoModelForCausalLM.from_pretrained(spec["model_path"])
    model.train()
    add_fused_lm_head(model, temperature=temperature, outputs=("log_probs", "entropy"))  # as GRPOTrainer does
    prompt = tokenizer([spec["prompt"]], return_tensors="pt")["input_ids"]
    gen = torch.Generator().manual_seed(spec["seed"])
    torch.manual_seed(spec["seed"])

    def sample_top_p(logits: Any) -> Any:
        probs = torch.softmax(logits, dim=-1)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < top_p  # the smallest prefix holding top_p of the mass
        sorted_probs = sorted_probs * keep
        pick = torch.multinomial(sorted_probs / sorted_probs.sum(-1, keepdim=True), 1, generator=gen)
        return order.gather(-1, pick)

    def rescore(b: int, t: int, saved: SavedTensorBytes, fused: bool) -> tuple[Any, float]:
        ids = prompt.expand(b, -1)
        with torch.no_grad():
            seqs = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=temperature,
                top_p=top_p, max_new_tokens=t, min_new_tokens=t, pad_token_id=tokenizer.pad_token_id,
            )  # fmt: skip
        mask = torch.ones_like(seqs)
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
            if fused:
                labels = seqs.clone()
                labels[:, :-t] = -100
                with vocab_tile(spec["tile"]):
                    out = model(input_ids=seqs, attention_mask=mask, labels=labels, fused_lm_head=True)
                    logps = out.log_probs[:, -t:]
            else:
                logits = model(input_ids=seqs, attention_mask=mask, use_cache=False, logits_to_keep=t + 1).logits
                logps = torch.log_softmax(logits[:, :-1].float() / temperature, -1)
                logps = logps.gather(-1, seqs[:, -t:, None]).squeeze(-1)
            loss = logps.sum()
        with vocab_tile(spec["tile"] if fused else None):
            loss.backward()
        return seqs, float(loss.detach())

    def upstream(b: int, t: int, saved: SavedTensorBytes) -> tuple[Any, float]:
        ids = prompt.expand(b, -1)
        mask = torch.ones_like(ids)
        picked = []
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
            out = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
            logps = []
            for i in range(t):
                logits = out.logits[:, -1].float() / temperature
                with torch.no_grad():
                    token = sample_top_p(logits.detach())
                logps.append(torch.log_softmax(logits, -1).gather(-1, token))
                picked.append(token)
                if i == t - 1:
                    break
                mask = torch.cat([mask, torch.ones_like(token)], dim=1)
                out = model(input_ids=token, attention_mask=mask, past_key_values=out.past_key_values, use_cache=True)
            loss = torch.cat(logps, dim=1).sum()
        loss.backward()
        return torch.cat([ids, *picked], dim=1), float(loss.detach())

    def run(name: str, b: int, t: int, saved: SavedTensorBytes) -> tuple[Any, float]:
        if name == "upstream":
            return upstream(b, t, saved)
        return rescore(b, t, saved, fused=name == "rescore")

    for name in MEMORY_APPROACHES:  # the same warm-up in every worker: each code path once on a small batch
        run(name, 2, 2, SavedTensorBytes(model.parameters()))
    model.zero_grad(set_to_none=True)
    gc.collect()
    before = current_rss_mib()
    can_reset = reset_peak_rss()
    saved = SavedTensorBytes(model.parameters())
    t0 = time.perf_counter()
    seqs, loss = run(approach, batch, new, saved)
    seconds = time.perf_counter() - t0
    peak = peak_rss_mib()
    grad_norm = float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters() if p.grad is not None)))
    return {
        "approach": approach,
        "peak_above_mib": (peak - before) if can_reset and peak is not None and before is not None else None,
        "rss_before_mib": before,
        "peak_rss_mib": peak,
        "saved_mib": saved.mib,
        "saved_storages": len(saved.storages),
        "saved_calls": saved.saved,
        "seconds": seconds,
        "shape": list(seqs.shape),
        "loss": loss,
        "grad_norm": grad_norm,
    }


def run_memory(model_path: Path, opts: argparse.Namespace, config: Any) -> list[dict[str, Any]]:
    """``--memory_repeats`` workers per approach, the approaches in a rotating order."""
    import torch

    from trl_ext.common.lm_head_tiles import resolve_vocab_tile
    from trl_ext.diversity.demo import DEFAULT_PROMPT

    spec = {
        "model_path": str(model_path),
        "prompt": DEFAULT_PROMPT,
        "batch": config.per_device_train_batch_size,
        "max_new_tokens": config.max_completion_length,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "seed": opts.seed,
        "threads": opts.threads,
        "tile": resolve_vocab_tile(None, torch.device("cpu")),
    }

    env = dict(os.environ)
    if opts.malloc_mmap_threshold > 0:  # glibc: no dynamic threshold, every block this large is its own mapping
        env["MALLOC_MMAP_THRESHOLD_"] = str(opts.malloc_mmap_threshold)

    def one(approach: str, rnd: int) -> dict[str, Any]:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps({**spec, "approach": approach})]
        res, wall = run_worker_process(
            cmd, MEMORY_MARKER, threads=opts.threads, timeout=opts.timeout, what=f"memory worker {approach}", env=env
        )
        res.update(round=rnd, worker_wall_s=wall)
        return res

    def describe(r: dict[str, Any]) -> str:
        return (
            f"+peak RSS {fmt(r['peak_above_mib'], '7.1f')} MiB  saved {r['saved_mib']:7.2f} MiB  "
            f"{1e3 * r['seconds']:7.1f} ms  (worker {r['worker_wall_s']:.1f} s)"
        )

    results, _ = run_rounds(MEMORY_APPROACHES, opts.memory_repeats, one, describe=describe, desc="memory workers")
    return results


# ---------------------------------------------------------------------------------------------- summary


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarise_steps(runs: list[DiversityRun], opts: argparse.Namespace) -> dict[str, Any]:
    """Table 1 and 2: step times, ratio, components, shares, counts."""
    by_arm = {arm: [r for r in runs if r.arm == arm] for arm in ARMS}
    skip = opts.skip_steps
    arms: dict[str, Any] = {}
    for arm, rs in by_arm.items():
        steps = [t for r in rs for t in r.timed_steps(skip)]
        lengths = [r.logs[s]["completions/mean_length"] for r in rs for s in r.logs if s > skip and r.logs[s]]
        arms[arm] = {
            "step_ms_median": 1e3 * statistics.median(steps),
            "step_ms_p10": 1e3 * quantile(steps, 0.1),
            "step_ms_p90": 1e3 * quantile(steps, 0.9),
            "cpu_step_ms_median": 1e3 * statistics.median([t for r in rs for t in r.timed_steps(skip, cpu=True)]),
            "timed_steps": len(rs[0].timed_steps(skip)),
            "per_round_step_ms": [r.median_step_ms(skip) for r in rs],
            "completion_mean_length": _mean(lengths),
            "peak_rss_mib": _median([r.peak_rss_mib for r in rs if r.peak_rss_mib is not None]),
            "build_s": _median([r.build_s for r in rs]),
            "train_s": _median([r.train_s for r in rs]),
            "first_step_ms": _median([1e3 * r.step_s[1] for r in rs if 1 in r.step_s]),
        }
        parts = [step_parts(r, s) for r in rs for s in sorted(r.step_s) if s > skip]
        arms[arm]["components"] = {
            name: {
                "median_ms": 1e3 * statistics.median([p[name] for p in parts]),
                "mean_ms": 1e3 * statistics.fmean([p[name] for p in parts]),
            }
            for name in (*COMPONENTS, "refit")
        }
    ratio = paired_ratios(
        [r.median_step_ms(skip) for r in by_arm[DIVERSITY]], [r.median_step_ms(skip) for r in by_arm[PLAIN]]
    )
    cpu_ratio = paired_ratios(
        [r.median_step_ms(skip, cpu=True) for r in by_arm[DIVERSITY]],
        [r.median_step_ms(skip, cpu=True) for r in by_arm[PLAIN]],
    )
    div_step = arms[DIVERSITY]["step_ms_median"]
    for arm in ARMS:
        for comp in arms[arm]["components"].values():
            comp["share_of_step"] = comp["median_ms"] / arms[arm]["step_ms_median"]

    # target 3: Σ(embedding + clustering) / Σ step over each run's timed steps, median over rounds
    shares, step_shares = [], []
    for r in by_arm[DIVERSITY]:
        timed = [s for s in sorted(r.step_s) if s > skip]
        ec = [r.component("embedding", s) + r.component("clustering", s) for s in timed]
        shares.append(sum(ec) / sum(r.step_s[s] for s in timed))
        step_shares += [x / r.step_s[s] for x, s in zip(ec, timed)]
    share = statistics.median(shares)

    div_runs = by_arm[DIVERSITY]

    def per_step(key: str) -> float | None:
        values = [r.counts.get(key, {}).get(s, 0) for r in div_runs for s in r.step_s if s > skip]
        return _mean(values)

    def logged(key: str) -> list[float]:
        return [r.logs[s][key] for r in div_runs for s in r.logs if s > skip and key in r.logs[s]]

    no_match = logged(f"diversity/no_match/{CONCEPT['concept_name']}")
    option_share = {
        option: _mean(logged(f"diversity/option_share/{CONCEPT['concept_name']}/{option}"))
        for option in CONCEPT["concept_options"]
    }
    return {
        "arms": arms,
        "ratio": ratio,
        "cpu_ratio": cpu_ratio,
        "ratio_median_of_rounds": ratio["median_of_rounds"],
        "meets_target_ratio": ratio["median_of_rounds"] <= TARGET_RATIO,
        "meets_target_ratio_cpu": cpu_ratio["median_of_rounds"] <= TARGET_RATIO,
        "embed_cluster_share": share,
        "embed_cluster_share_per_round": shares,
        "embed_cluster_share_median_step": statistics.median(step_shares),
        "embed_cluster_share_of_medians": (
            arms[DIVERSITY]["components"]["embedding"]["median_ms"]
            + arms[DIVERSITY]["components"]["clustering"]["median_ms"]
        )
        / div_step,
        "meets_target_share": share <= TARGET_SHARE,
        "concept_match_share": None if not no_match else 1.0 - statistics.fmean(no_match),
        "option_share": option_share,
        "embedded_texts_per_step": per_step("embedded_texts"),
        "embed_calls_per_step": per_step("embed_calls"),
        "refits_per_step": per_step("refits"),
        "buffer_adds_per_step": per_step("buffer_adds"),
        "buffer_sizes_at_end": div_runs[-1].buffer_sizes,
    }


def summarise_memory(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Table 3: medians per approach and the ratios against ``upstream``."""
    per: dict[str, Any] = {}
    for approach in MEMORY_APPROACHES:
        rs = [r for r in results if r["approach"] == approach]
        per[approach] = {
            "peak_above_mib": _median([r["peak_above_mib"] for r in rs if r["peak_above_mib"] is not None]),
            "saved_mib": _median([r["saved_mib"] for r in rs]),
            "seconds": _median([r["seconds"] for r in rs]),
            "saved_storages": _median([r["saved_storages"] for r in rs]),
            "shape": rs[0]["shape"],
            "runs": len(rs),
        }
    up = per["upstream"]
    out: dict[str, Any] = {"approaches": per}
    for approach in ("rescore", "rescore_logits"):
        a = per[approach]
        rss = a["peak_above_mib"] / up["peak_above_mib"] if a["peak_above_mib"] and up["peak_above_mib"] else None
        out[f"{approach}_over_upstream"] = {"peak_rss": rss, "saved": a["saved_mib"] / up["saved_mib"]}
    head = out["rescore_over_upstream"]
    out["meets_target_peak_rss"] = head["peak_rss"] is not None and head["peak_rss"] <= TARGET_MEMORY
    out["meets_target_saved"] = head["saved"] <= TARGET_MEMORY
    return out


# ---------------------------------------------------------------------------------------------- report


def print_report(summary: dict[str, Any], opts: argparse.Namespace) -> None:
    st, mem, model = summary["steps"], summary["memory"], summary["model"]
    arms = st["arms"]
    print()
    print(
        "(1) Step time, DiversityTrainer (DiversityConfig defaults) vs plain GRPOTrainer: policy "
        f"h{model['hidden_size']} x {model['num_hidden_layers']} layers ({model['parameters'] / 1e6:.2f} M "
        "parameters, biased to 'cat'), "
        f"32 completions x <= 30 tokens per step, {arms[PLAIN]['timed_steps']} timed steps x {opts.repeats} round(s)"
    )
    header = (
        f"{'arm':<10} {'step ms':>8} {'p10 / p90':>15} {'cpu ms':>8} {'1st step ms':>11} {'compl. len':>10} "
        f"{'peak RSS MiB':>12}"
    )
    print(header)
    print("-" * len(header))
    for arm in ARMS:
        a = arms[arm]
        print(
            f"{arm:<10} {a['step_ms_median']:>8.1f} {a['step_ms_p10']:>7.1f} / {a['step_ms_p90']:<5.1f} "
            f"{a['cpu_step_ms_median']:>8.1f} {fmt(a['first_step_ms'], '11.1f')} "
            f"{fmt(a['completion_mean_length'], '10.1f')} {fmt(a['peak_rss_mib'], '12.1f')}"
        )
    print("-" * len(header))
    per_round = " ".join(f"{x:.3f}" for x in st["ratio"]["per_round"])
    print(
        f"ratio diversity/plain: {st['ratio']['median_of_rounds']:.3f} wall, {st['cpu_ratio']['median_of_rounds']:.3f}"
        f" cpu (median of rounds); {st['ratio']['of_medians']:.3f} ratio of medians; per round {per_round}"
    )
    print(
        f"TARGET 1 (diversity step <= {TARGET_RATIO:.2f}x plain): {st['ratio']['median_of_rounds']:.3f} -> "
        f"{verdict(st['meets_target_ratio'])} (cpu {st['cpu_ratio']['median_of_rounds']:.3f} -> "
        f"{verdict(st['meets_target_ratio_cpu'])})"
    )

    print()
    print("(2) Components per step: median over the timed steps of all rounds (ms) and share of the median step")
    header = f"{'component':<30} {'plain ms':>9} {'share':>7} {'diversity ms':>12} {'share':>7} {'mean ms':>8}"
    print(header)
    print("-" * len(header))
    for name in (*COMPONENTS[:5], "refit", *COMPONENTS[5:]):
        p, d = arms[PLAIN]["components"][name], arms[DIVERSITY]["components"][name]
        print(
            f"{LABELS[name]:<30} {p['median_ms']:>9.1f} {100 * p['share_of_step']:>6.1f}% {d['median_ms']:>12.1f} "
            f"{100 * d['share_of_step']:>6.1f}% {d['mean_ms']:>8.1f}"
        )
    print("-" * len(header))
    print(
        f"{'step':<30} {arms[PLAIN]['step_ms_median']:>9.1f} {'':>7} {arms[DIVERSITY]['step_ms_median']:>12.1f}"
        "  (the components are medians: their sum differs from the median step)"
    )
    opt = ", ".join(f"{k} {fmt(v, '.2f')}" for k, v in st["option_share"].items())
    sizes = ", ".join(f"{k} {v}" for k, v in st["buffer_sizes_at_end"].items())
    print(
        f"completions with a concept match: {fmt(st['concept_match_share'], '.3f')} (option shares: {opt}); per step "
        f"{fmt(st['embedded_texts_per_step'], '.1f')} texts embedded in {fmt(st['embed_calls_per_step'], '.1f')} "
        f"call(s), {fmt(st['refits_per_step'], '.2f')} k-means refits; buffers at the end: {sizes}"
    )
    rounds = " ".join(f"{100 * x:.1f}" for x in st["embed_cluster_share_per_round"])
    print(
        f"embedding + clustering: {100 * st['embed_cluster_share']:.1f} % of the step time (sum over the timed steps, "
        f"median of rounds: {rounds}); median per step {100 * st['embed_cluster_share_median_step']:.1f} %, of the "
        f"medians {100 * st['embed_cluster_share_of_medians']:.1f} %"
    )
    print(
        f"TARGET 3 (embedding + clustering <= {100 * TARGET_SHARE:.0f} % of a step): "
        f"{100 * st['embed_cluster_share']:.1f} % -> {verdict(st['meets_target_share'])}"
    )

    print()
    ap = mem["approaches"]
    print(
        f"(3) Memory of one rollout + backward, batch {ap['upstream']['shape'][0]} x {ap['upstream']['shape'][1]} "
        f"tokens (exactly {summary['memory_settings']['max_new_tokens']} sampled), fresh worker process per run, "
        f"median of {opts.memory_repeats}"
    )
    header = (
        f"{'approach':<16} {'+peak RSS MiB':>13} {'saved MiB':>10} {'storages':>9} {'ms':>8} {'RSS ratio':>9} "
        f"{'saved ratio':>11}"
    )
    print(header)
    print("-" * len(header))
    for approach in MEMORY_APPROACHES:
        a = ap[approach]
        ratios = mem.get(f"{approach}_over_upstream", {"peak_rss": 1.0, "saved": 1.0})
        print(
            f"{approach:<16} {fmt(a['peak_above_mib'], '13.1f')} {a['saved_mib']:>10.2f} {a['saved_storages']:>9.0f} "
            f"{1e3 * a['seconds']:>8.1f} {fmt(ratios['peak_rss'], '9.3f')} {ratios['saved']:>11.3f}"
        )
    print("-" * len(header))
    print(
        "rescore: the trainer's (no-grad generate, teacher-forced forward through TRL's fused LM head); "
        "rescore_logits: the same with full logits; upstream: sampling with gradient through the KV cache"
    )
    head = mem["rescore_over_upstream"]
    print(
        f"TARGET 2 (rescore <= {TARGET_MEMORY:.1f}x upstream): +peak RSS {fmt(head['peak_rss'], '.3f')} -> "
        f"{verdict(mem['meets_target_peak_rss'])}; autograd-saved bytes {head['saved']:.3f} -> "
        f"{verdict(mem['meets_target_saved'])}"
    )


# ---------------------------------------------------------------------------------------------- main

CODE_FILES = (
    "trl_ext/diversity/trainer.py",
    "trl_ext/diversity/config.py",
    "trl_ext/diversity/buffer.py",
    "trl_ext/diversity/embedding.py",
    "trl_ext/diversity/objective.py",
    "trl_ext/diversity/concepts.py",
    "trl_ext/common/lm_head_tiles.py",
)
"""The code whose cost is measured (fingerprinted in the JSON, to tell versions apart)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags (``--quick``: 3 steps, 1 round, no warm-up runs, 1 memory worker per approach)."""
    parser = bench_parser(
        __doc__,
        repeats=5,
        repeats_help="Rounds of (plain, diversity) runs, the order alternating.",
        quick_help="Smoke run: 3 steps (1 dropped), 1 round, no warm-up runs, 1 memory worker per approach.",
    )
    parser.add_argument("--steps", type=int, default=20, help="Optimizer steps per run (default 20).")
    parser.add_argument(
        "--skip_steps", type=int, default=1, help="Steps dropped from the timing: the buffers' prefill (default 1)."
    )
    parser.add_argument("--warmup_steps", type=int, default=3, help="Steps of the untimed warm-up run of each arm.")
    parser.add_argument("--memory_repeats", type=int, default=3, help="Memory workers per approach (default 3).")
    parser.add_argument(
        "--hidden_size",
        type=int,
        default=None,
        help="Policy width (default 256; 0: the embedded tiny model, hidden 64 x 2 layers, the default of --quick).",
    )
    parser.add_argument("--layers", type=int, default=4, help="Decoder layers of a --hidden_size policy (default 4).")
    parser.add_argument(
        "--plain_lm_head_tile",
        choices=["trl_ext", "trl"],
        default="trl_ext",
        help="Fused-LM-head tile of the plain arm: trl_ext's (as the diversity arm runs; default) or TRL's own.",
    )
    parser.add_argument(
        "--malloc_mmap_threshold",
        type=int,
        default=65536,
        help="MALLOC_MMAP_THRESHOLD_ of the memory workers (bytes; 0: glibc's dynamic default). Default 65536: every "
        "tensor of 64 KiB or more is its own mapping, returned on free, so the peak RSS follows the live tensors.",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="Seconds allowed per memory worker.")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.worker is not None:
        return opts
    if opts.quick:
        opts.steps, opts.skip_steps, opts.repeats, opts.memory_repeats = 3, 1, 1, 1
    check_common(parser, opts)
    require(parser, opts.skip_steps >= 1, "--skip_steps must be >= 1 (the first step holds the buffers' prefill)")
    require(parser, opts.steps > opts.skip_steps, "--steps must exceed --skip_steps")
    require(parser, opts.memory_repeats >= 1 and opts.warmup_steps >= 1, "--memory_repeats, --warmup_steps >= 1")
    if opts.hidden_size is None:
        opts.hidden_size = 0 if opts.quick else DEFAULT_HIDDEN
    require(parser, opts.hidden_size == 0 or opts.hidden_size >= 8, "--hidden_size must be 0 or >= 8")
    require(parser, opts.layers >= 1, "--layers must be >= 1")
    return opts


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the report, optionally write JSON; returns the summary."""
    opts = parse_args(argv)
    quiet_offline_torch(opts.threads)
    warnings.filterwarnings("ignore", message=r"`gradient_checkpointing_\w+` is deprecated", category=FutureWarning)
    if opts.worker is not None:
        emit_result(MEMORY_MARKER, memory_worker(json.loads(opts.worker)))
        return {}
    session = BenchSession(opts, code_files=CODE_FILES)
    model_path, model = prepare_model(opts)
    built = f", biased now in {model['prepare_s']:.0f} s" if model["built_now"] else ""
    print(
        f"policy {model_path} ({model['parameters'] / 1e6:.2f} M parameters{built}); {opts.threads} torch thread(s); "
        f"load average {session.load_start}",
        flush=True,
    )

    def describe(r: DiversityRun) -> str:
        extra = ""
        if r.arm == DIVERSITY:
            timed = [s for s in r.step_s if s > opts.skip_steps]
            ec = sum(r.component("embedding", s) + r.component("clustering", s) for s in timed)
            extra = f"  embed+cluster {100 * ec / sum(r.step_s[s] for s in timed):5.1f} %"
        return (
            f"step {r.median_step_ms(opts.skip_steps):7.1f} ms  cpu {r.median_step_ms(opts.skip_steps, cpu=True):7.1f}"
            f" ms  first step {1e3 * r.step_s.get(1, 0.0):7.1f} ms{extra}  build {r.build_s:4.1f} s"
        )

    with tempfile.TemporaryDirectory(prefix="bench_diversity_") as tmp:
        workdir = Path(tmp)
        warmup = () if opts.quick else ARMS
        runs, _ = run_rounds(
            ARMS,
            opts.repeats,
            lambda arm, rnd: run_arm(arm, rnd, model_path, workdir, opts, opts.steps),
            describe=describe,
            warmup=warmup,
            run_warmup=lambda arm: run_arm(arm, -1, model_path, workdir, opts, opts.warmup_steps + 1),
            desc="training runs",
        )
        diversity_args, plain_args = train_configs(workdir / "settings", opts)
    memory = run_memory(model_path, opts, diversity_args)

    settings = {
        "diversity": {
            k: getattr(diversity_args, k)
            for k in (
                *MIRRORED,
                "n_clusters",
                "num_samples",
                "buffer_size",
                "update_clusters_every",
                "min_samples_for_clustering",
                "sentence_transformer",
                "embedding_batch_size",
                "loss_type",
                "w_c",
                "w_o",
                "w_kl",
                "stop_strings",
                "prompts",
                "concept_name",
                "concept_options",
            )
        },
        "plain": {k: getattr(plain_args, k) for k in (*MIRRORED, "beta", "loss_type")},
        "shared": RUN_SETTINGS,
    }
    settings = json.loads(json.dumps(settings, default=str))
    summary: dict[str, Any] = {
        "targets": {"step_ratio": TARGET_RATIO, "memory_ratio": TARGET_MEMORY, "embed_cluster_share": TARGET_SHARE},
        "model": model,
        "memory_settings": {"batch": memory[0]["shape"][0], "max_new_tokens": diversity_args.max_completion_length},
        "steps": summarise_steps(runs, opts),
        "memory": summarise_memory(memory),
    }
    summary["verdicts"] = {
        "step_ratio": verdict(summary["steps"]["meets_target_ratio"]),
        "memory_peak_rss": verdict(summary["memory"]["meets_target_peak_rss"]),
        "memory_saved_tensors": verdict(summary["memory"]["meets_target_saved"]),
        "embed_cluster_share": verdict(summary["steps"]["meets_target_share"]),
    }
    session.finish(summary)
    print_report(summary, opts)
    session.print_footer(summary, hint="see the cpu column")
    session.write(
        summary,
        [r.as_json() for r in runs],
        train_settings=settings,
        memory_runs=memory,
    )
    return summary


if __name__ == "__main__":
    main()
