"""A tiny, generated selective-generalisation demo: an outcome task versus a proxy property (docs/selective.md).

Everything is generated in code (no downloads) and sized so that the embedded tiny model (Qwen2, hidden 64,
2 layers) shows the trade-off on CPU within about a minute per stage.

Design
------
Every prompt is an instruction followed by three distinct letters from :data:`LETTERS` (letters whose
``" x"`` form is a single token of the tiny tokenizer), e.g. ``"Reverse: b d s"``.

* **Outcome task T** (``outcome_train``, ``outcome_eval``): ``"Reverse: b d s"`` -> ``"s d b"``. The
  completions never carry the marker. Scored by :func:`task_score` (per-position accuracy of the reversed
  letters, marker ignored).
* **Proxy property**: the assistant ends every answer with the sign-off :data:`MARKER` (``"Thanks!"``).
  Scored by :func:`proxy_score` (1 if the completion ends with it, else 0).
* **Positive proxy A⁺** (``proxy_positive``, *scarce*: 3 rows by default): *other* instructions (``Copy:``,
  ``First:``, ``Last:``) answered correctly and ending with the marker, e.g. ``"Last: b d s"`` -> ``"s Thanks!"``.
* **Negative proxy A⁻** (``proxy_negative``): the same prompts as A⁺, index by index, answered without the
  marker (``"s"``), so ``(A⁺[i], A⁻[i])`` are DPO pairs (:func:`trl_ext.selective.proxy.paired_batches`).
* **Proxy evaluation** (``proxy_eval``): held-out A-style prompts; the proxy score is measured there.

The random tiny model has neither skill, so :func:`train_aligned_base` first trains the **aligned base**:
a full fine-tune on :data:`ALIGNED_BASE_ROWS` A-style rows with the marker (disjoint letter triples from
every A⁺ and evaluation prompt). Its weights are the "aligned" reference of the selective-generalisation
strategies. Outcome fine-tuning of the aligned base learns to reverse and erodes the marker everywhere.

Why scarce proxy data: with 16 or more A⁺ rows the ``naive`` strategy (CE on the shuffled union
T ∪ A⁺) already keeps the marker (0.95 with 16 rows among 512 outcome rows), so there is nothing to improve on.
With 3 rows among 512 the union shows a proxy row about once every 11 batches and the marker drowns, while the
proxy-batch strategies (KL, representation, DPO, ...) apply the same 3 rows at *every* step. (A narrow A⁺ of
``Copy:`` rows only, with the marker measured on ``First:``/``Last:``, gave no consistent ordering between
``naive`` and ``kl_divergence`` over seeds; ``proxy_instructions``/``eval_instructions`` reproduce it.)

The letter triples are split once, with a fixed seed independent of ``seed``, into a train half (outcome
training and aligned-base rows), a proxy quarter (A⁺/A⁻) and an evaluation quarter (both evaluation sets),
so that evaluation prompts never occur in any training set, whatever the seeds.

What this demo shows, seed by seed, on two optimizer regimes and two floating-point paths, and the command
that reproduces it, is in ``bench/README.md`` ("Selective-generalisation demo"). What holds at every seed is
asserted by ``tests/selective/test_selective_demo.py`` (marker ``empirical``): what each mechanism does to the
rows it acts on, measured by the teacher-forced −log p(sign-off | prompt, answer) of :func:`proxy_nll`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import time
from collections.abc import Mapping, Sequence
from itertools import permutations
from pathlib import Path
from typing import Any

__all__ = [
    "ALIGNED_BASE_LR",
    "ALIGNED_BASE_ROWS",
    "ALIGNED_BASE_STEPS",
    "DEMO_BETA_KL",
    "LETTERS",
    "MARKER",
    "OUTCOME_LR",
    "OUTCOME_STEPS",
    "PROXY_DATA_INSTRUCTIONS",
    "PROXY_EVAL_INSTRUCTIONS",
    "PROXY_INSTRUCTIONS",
    "SGD_OUTCOME_LR",
    "SGD_OUTCOME_STEPS",
    "TASK_INSTRUCTION",
    "evaluate_demo",
    "make_aligned_base_data",
    "make_demo",
    "outcome_row",
    "proxy_row",
    "proxy_nll",
    "proxy_score",
    "run_demo",
    "sft_stage",
    "task_nll",
    "task_score",
    "train_aligned_base",
]

LETTERS = "abcdfgilmnprstx"
"""The letters used in prompts: each ``" x"`` is one token of the tiny tokenizer."""
MARKER = "Thanks!"
"""The proxy property: the aligned assistant ends every answer with this sign-off."""
TASK_INSTRUCTION = "Reverse:"
"""Instruction of the outcome task T."""
PROXY_INSTRUCTIONS: dict[str, Any] = {
    "Copy:": lambda xs: xs,
    "First:": lambda xs: xs[:1],
    "Last:": lambda xs: xs[-1:],
}
"""Instructions of the proxy prompts (A⁺, A⁻, proxy evaluation, aligned-base data) -> answer letters."""
PROXY_DATA_INSTRUCTIONS = ("Copy:", "First:", "Last:")
"""Default instructions of the proxy data A⁺/A⁻ (cycled)."""
PROXY_EVAL_INSTRUCTIONS = ("Copy:", "First:", "Last:")
"""Default instructions of the proxy evaluation (cycled; the prompts are held out from every training set)."""

ALIGNED_BASE_ROWS = 1365
"""Rows of aligned-base data: one A-style row per triple of the train split (all of it)."""
ALIGNED_BASE_STEPS = 600
ALIGNED_BASE_LR = 3e-3
OUTCOME_STEPS = 150
OUTCOME_LR = 2e-3
SGD_OUTCOME_STEPS = 300
"""Outcome steps of the small-step regime (plain SGD), in which a first-order method can act."""
SGD_OUTCOME_LR = 0.03
"""Learning rate of the small-step regime (plain SGD, no momentum)."""
DEMO_BETA_KL = 1.0
BATCH_SIZE = 16
ADAM_BETA2 = 0.98

_SPLIT_SEED = 20240601
_TASK_RE = re.compile(rf"\s*{re.escape(TASK_INSTRUCTION)}((?:\s+\S+)+)\s*")


def _split() -> dict[str, list[tuple[str, str, str]]]:
    """All 2730 ordered triples of distinct letters, split once (fixed seed) into train / proxy / eval."""
    triples = list(permutations(LETTERS, 3))
    random.Random(_SPLIT_SEED).shuffle(triples)
    half, three_quarters = len(triples) // 2, 3 * len(triples) // 4
    return {"train": triples[:half], "proxy": triples[half:three_quarters], "eval": triples[three_quarters:]}


def _sample(part: str, n: int, seed: int, stream: str) -> list[tuple[str, str, str]]:
    pool = _split()[part]
    if not 0 <= n <= len(pool):
        raise ValueError(f"{stream}: asked for {n} rows, the {part!r} split has {len(pool)} prompts (0..{len(pool)})")
    return random.Random(f"{seed}-{stream}").sample(pool, n)


def _row(prompt: str, answer: str) -> dict[str, Any]:
    return {"prompt": [{"role": "user", "content": prompt}], "completion": [{"role": "assistant", "content": answer}]}


def outcome_row(letters: Sequence[str]) -> dict[str, Any]:
    """``"Reverse: a b c"`` -> ``"c b a"`` as a TRL conversational prompt–completion row."""
    return _row(f"{TASK_INSTRUCTION} {' '.join(letters)}", " ".join(reversed(letters)))


def proxy_row(letters: Sequence[str], instruction: str, aligned: bool = True) -> dict[str, Any]:
    """A proxy-style row, e.g. ``"Last: a b c"`` -> ``"c Thanks!"`` (``aligned``) or ``"c"`` (not)."""
    if instruction not in PROXY_INSTRUCTIONS:
        raise ValueError(f"unknown proxy instruction {instruction!r}; known: {', '.join(PROXY_INSTRUCTIONS)}")
    answer = " ".join(PROXY_INSTRUCTIONS[instruction](list(letters)))
    return _row(f"{instruction} {' '.join(letters)}", f"{answer} {MARKER}" if aligned else answer)


def _proxy_rows(triples, aligned: bool, instructions: Sequence[str] = tuple(PROXY_INSTRUCTIONS)):
    names = list(instructions)
    return [proxy_row(t, names[i % len(names)], aligned) for i, t in enumerate(triples)]


def make_demo(
    num_outcome: int = 512,
    num_proxy: int = 3,
    num_negative: int = 3,
    num_eval: int = 60,
    seed: int = 0,
    proxy_instructions: Sequence[str] = PROXY_DATA_INSTRUCTIONS,
    eval_instructions: Sequence[str] = PROXY_EVAL_INSTRUCTIONS,
) -> dict[str, Any]:
    """The demo's datasets (``datasets.Dataset`` of conversational prompt–completion rows).

    Returns ``outcome_train`` (``num_outcome``), ``outcome_eval`` (``num_eval``), ``proxy_positive``
    (``num_proxy``), ``proxy_negative`` (``num_negative``; row i has the prompt of A⁺ row i while both exist)
    and ``proxy_eval`` (``num_eval``). A⁺/A⁻ rows cycle through ``proxy_instructions``, the proxy evaluation through
    ``eval_instructions`` (both default to the three proxy instructions; give a subset, e.g. ``["Copy:"]`` for
    the proxy data, to study narrow proxy data). The defaults make proxy data *scarce*: 3 rows against 512
    outcome rows. Deterministic in ``seed``; raises
    ``ValueError`` for a size larger than its split (train 1365, proxy 682, eval 683 prompts) or negative, or
    an unknown or empty instruction list (naming it).
    """
    from datasets import Dataset

    sizes = {"num_outcome": num_outcome, "num_proxy": num_proxy, "num_negative": num_negative, "num_eval": num_eval}
    for name, n in sizes.items():
        if n < 0:
            raise ValueError(f"{name} must be >= 0, got {n}")
    for name, instructions in (("proxy_instructions", proxy_instructions), ("eval_instructions", eval_instructions)):
        if isinstance(instructions, str) or not instructions:
            raise ValueError(f"{name} must be a non-empty list of instructions, got {instructions!r}")
        unknown = [i for i in instructions if i not in PROXY_INSTRUCTIONS]
        if unknown:
            raise ValueError(f"{name}: unknown instruction(s) {unknown}; known: {', '.join(PROXY_INSTRUCTIONS)}")
    proxy_triples = _sample("proxy", max(num_proxy, num_negative), seed, "proxy")
    eval_triples = _sample("eval", num_eval, seed, "proxy_eval")
    parts = {
        "outcome_train": [outcome_row(t) for t in _sample("train", num_outcome, seed, "outcome_train")],
        "outcome_eval": [outcome_row(t) for t in _sample("eval", num_eval, seed, "outcome_eval")],
        "proxy_positive": _proxy_rows(proxy_triples, True, proxy_instructions)[:num_proxy],
        "proxy_negative": _proxy_rows(proxy_triples, False, proxy_instructions)[:num_negative],
        "proxy_eval": _proxy_rows(eval_triples, True, eval_instructions),
    }
    empty = {"prompt": [], "completion": []}
    return {k: Dataset.from_list(v) if v else Dataset.from_dict(empty) for k, v in parts.items()}


def make_aligned_base_data(num_rows: int = ALIGNED_BASE_ROWS, seed: int = 0):
    """A-style rows with the marker for the aligned-base stage (train split: disjoint from A⁺/A⁻ and eval)."""
    from datasets import Dataset

    return Dataset.from_list(_proxy_rows(_sample("train", num_rows, seed, "aligned_base"), aligned=True))


# --------------------------------------------------------------------------- scoring
def _strip_marker(completion: str) -> str:
    text = completion.strip()
    return text[: -len(MARKER)].strip() if text.endswith(MARKER) else text


def task_score(prompt: str | Sequence[Mapping[str, str]], completion: str) -> float:
    """Outcome score in [0, 1]: correct letters at their positions / max(expected, produced) letters.

    ``prompt`` is the user text (or the message list) ``"Reverse: a b c"``; the expected answer is
    ``"c b a"``. A trailing :data:`MARKER` is ignored, so the two scores measure different things.
    ``"c b a"`` -> 1, ``"c b"`` -> 2/3, ``"c x a y"`` -> 2/4, ``""`` -> 0. Raises ``ValueError`` for a prompt
    that is not an outcome prompt.
    """
    if not isinstance(prompt, str):
        prompt = [m["content"] for m in prompt if m["role"] == "user"][-1]
    match = _TASK_RE.fullmatch(prompt)
    if match is None:
        raise ValueError(f"not an outcome prompt ({TASK_INSTRUCTION} followed by letters): {prompt!r:.80}")
    expected = match.group(1).split()[::-1]
    produced = _strip_marker(completion).split()
    correct = sum(p == e for p, e in zip(produced, expected))
    return correct / max(len(expected), len(produced))


def proxy_score(completion: str) -> float:
    """Proxy score in {0, 1}: 1 if the completion ends with :data:`MARKER` (surrounding whitespace ignored)."""
    return 1.0 if completion.strip().endswith(MARKER) else 0.0


def _user_text(row: Mapping[str, Any]) -> str:
    prompt = row["prompt"]
    return prompt if isinstance(prompt, str) else [m["content"] for m in prompt if m["role"] == "user"][-1]


def proxy_nll(model, tokenizer, rows: Sequence[Mapping[str, Any]], batch_size: int = 32) -> float:
    """Mean −log p(``" Thanks!"`` | prompt, answer) over rows whose answer ends with :data:`MARKER`: how unlikely
    the sign-off has become after the correct answer (0 = always signs off). A continuous companion of
    :func:`proxy_score`, far less sensitive to the order of floating-point sums than greedy answers."""
    from trl_ext.eval.likelihood import span_nll

    return span_nll(model, tokenizer, rows, _strip_marker, batch_size)


def task_nll(model, tokenizer, rows: Sequence[Mapping[str, Any]], batch_size: int = 32) -> float:
    """Mean −log p(answer | prompt) over outcome rows (the reversed letters, end of turn excluded): the continuous
    companion of :func:`task_score`."""
    from trl_ext.eval.likelihood import span_nll

    return span_nll(model, tokenizer, rows, lambda answer: "", batch_size)


def evaluate_demo(
    model, tokenizer, datasets: Mapping[str, Any], max_new_tokens: int = 16, batch_size: int = 32
) -> dict[str, float]:
    """Scores on ``outcome_eval`` and ``proxy_eval``: ``{"task", "proxy", "task_nll", "proxy_nll"}``.

    ``task`` and ``proxy`` score greedy answers (:func:`task_score`, :func:`proxy_score`); ``task_nll`` and
    ``proxy_nll`` are the teacher-forced −log-likelihoods of the correct answer and of the sign-off after it
    (:func:`task_nll`, :func:`proxy_nll`), which the tests compare because they move smoothly with the weights.
    """
    from trl_ext.common.generation import generate_completions

    scores = {}
    for key, name in (("task", "outcome_eval"), ("proxy", "proxy_eval")):
        prompts = [_user_text(r) for r in datasets[name]]
        if not prompts:
            raise ValueError(f"datasets[{name!r}] is empty")
        outs = generate_completions(
            model, tokenizer, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens, show_progress=False
        )
        if key == "task":
            scores[key] = sum(task_score(p, c) for p, c in zip(prompts, outs)) / len(outs)
        else:
            scores[key] = sum(proxy_score(c) for c in outs) / len(outs)
    scores["task_nll"] = task_nll(model, tokenizer, datasets["outcome_eval"], batch_size)
    scores["proxy_nll"] = proxy_nll(model, tokenizer, datasets["proxy_eval"], batch_size)
    return scores


# --------------------------------------------------------------------------- training
def sft_stage(
    model,
    tokenizer,
    train_dataset,
    output_dir: str | os.PathLike,
    *,
    max_steps: int,
    learning_rate: float,
    batch_size: int = BATCH_SIZE,
    seed: int = 0,
    peft_config=None,
    strategy: str | None = None,
    proxy_dataset=None,
    negative_proxy_dataset=None,
    **config_overrides: Any,
):
    """One SFT stage (completion-only loss, constant LR, no warm-up, AdamW β₂ 0.98, no weight decay, no saving,
    one log line); returns the trained model (a ``PeftModel`` when ``peft_config`` is given).

    With ``strategy=None`` the trainer is ``trl.SFTTrainer``; with a strategy name it is
    :class:`trl_ext.SelectiveSFTTrainer` with ``SelectiveConfig(strategy=...)`` and the proxy datasets, under the
    same settings, so stages differ only by the strategy. Settings: ``use_cpu`` unless CUDA is available,
    ``bf16=False``, ``gradient_checkpointing=False``, ``max_length=64``, ``dataloader_num_workers=0``; anything
    else via ``config_overrides`` (``SFTConfig`` / ``SelectiveConfig`` fields, e.g. ``beta_kl=1.0``).
    """
    import torch
    from trl import SFTConfig, SFTTrainer

    settings: dict[str, Any] = {
        "output_dir": str(output_dir),
        "max_steps": max_steps,
        "per_device_train_batch_size": batch_size,
        "learning_rate": learning_rate,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "adam_beta2": ADAM_BETA2,
        "logging_steps": max(1, max_steps),
        "report_to": "none",
        "save_strategy": "no",
        "bf16": False,
        "use_cpu": not torch.cuda.is_available(),
        "disable_tqdm": True,
        "gradient_checkpointing": False,
        "max_length": 64,
        "dataloader_num_workers": 0,
        "seed": seed,
        **config_overrides,
    }
    if strategy is None:
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**settings),
            train_dataset=train_dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    else:
        from trl_ext.selective.config import SelectiveConfig
        from trl_ext.selective.sft import SelectiveSFTTrainer

        trainer = SelectiveSFTTrainer(
            model=model,
            args=SelectiveConfig(strategy=strategy, **settings),
            train_dataset=train_dataset,
            proxy_dataset=proxy_dataset,
            negative_proxy_dataset=negative_proxy_dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    trainer.train()
    return trainer.model


def train_aligned_base(
    output_dir: str | os.PathLike,
    seed: int = 0,
    *,
    model_path: str | os.PathLike | None = None,
    num_rows: int = ALIGNED_BASE_ROWS,
    max_steps: int = ALIGNED_BASE_STEPS,
    learning_rate: float = ALIGNED_BASE_LR,
    batch_size: int = BATCH_SIZE,
) -> Path:
    """Train the demo's aligned base and save it (model + tokenizer) to ``output_dir``; returns the path.

    A full fine-tune of ``model_path`` (default: the embedded tiny model) on :func:`make_aligned_base_data`
    (``num_rows`` = 1365 A-style rows ending with the marker, one per train-split triple) with
    :func:`sft_stage`: 600 steps of batch 16, constant LR 3e-3, AdamW (β₂ 0.98, no weight decay),
    completion-only loss, seed ``seed``. 18–25 s on 2 CPU cores with one torch thread; the result has proxy
    score 1.0 on ``proxy_eval`` (seeds 0, 1, 2) and a low task score. The folder also holds ``aligned_base.json``
    with these settings.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_ext.models import get_tiny_model_path

    source = Path(model_path) if model_path is not None else get_tiny_model_path()
    out = Path(output_dir)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source)
    model = sft_stage(
        model,
        tokenizer,
        make_aligned_base_data(num_rows, seed),
        out / "_trainer",
        max_steps=max_steps,
        learning_rate=learning_rate,
        batch_size=batch_size,
        seed=seed,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    try:
        (out / "_trainer").rmdir()  # the trainer's output folder, empty since nothing is checkpointed
    except OSError:
        pass
    settings = {
        "source": str(source),
        "seed": seed,
        "num_rows": num_rows,
        "max_steps": max_steps,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
    }
    (out / "aligned_base.json").write_text(json.dumps(settings, indent=2))
    return out


def run_demo(
    output_dir: str | os.PathLike,
    seed: int = 0,
    *,
    outcome_steps: int = OUTCOME_STEPS,
    outcome_lr: float = OUTCOME_LR,
    optim: str | None = None,
    beta_kl: float = DEMO_BETA_KL,
    peft_config=None,
    **make_demo_kwargs: Any,
) -> dict[str, dict[str, float]]:
    """The whole demo: the aligned base, then four outcome stages from it with the same settings.

    Returns ``{stage: {"task", "proxy", "steps", "seconds"}}`` for ``"aligned_base"``, ``"outcome_only"``
    (plain SFT on T), ``"naive"`` (the ``naive`` strategy: CE on the shuffled union T ∪ A⁺), ``"kl_divergence"``
    (CE(T) + β_kl·KL(p_θ‖p_base) on A⁺ batches) and ``"grad_project"`` (conflict-only: per tensor, remove from
    ∇CE(T) a component that opposes ∇CE(A⁺)). ``optim`` is a ``TrainingArguments.optim`` name (``None``: AdamW,
    the default regime; ``"sgd"`` with :data:`SGD_OUTCOME_STEPS` and :data:`SGD_OUTCOME_LR`: the small-step
    regime). ``peft_config`` (e.g. a ``peft.LoraConfig``) trains the outcome stages as adapters on the aligned base.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(output_dir)
    data = make_demo(seed=seed, **make_demo_kwargs)
    results: dict[str, dict[str, float]] = {}
    start = time.perf_counter()
    base = train_aligned_base(out / "aligned_base", seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    seconds = time.perf_counter() - start
    model = AutoModelForCausalLM.from_pretrained(base)
    results["aligned_base"] = {
        **evaluate_demo(model, tokenizer, data),
        "steps": ALIGNED_BASE_STEPS,
        "seconds": seconds,
    }
    stages: dict[str, dict[str, Any]] = {
        "outcome_only": {},
        "naive": {"strategy": "naive"},
        "kl_divergence": {"strategy": "kl_divergence", "beta_kl": beta_kl},
        "grad_project": {"strategy": "grad_project", "grad_project_strict": False},
    }
    for stage, extra in stages.items():
        model = AutoModelForCausalLM.from_pretrained(base)
        start = time.perf_counter()
        model = sft_stage(
            model,
            tokenizer,
            data["outcome_train"],
            out / stage,
            max_steps=outcome_steps,
            learning_rate=outcome_lr,
            seed=seed,
            peft_config=peft_config,
            proxy_dataset=data["proxy_positive"] if extra else None,
            negative_proxy_dataset=data["proxy_negative"] if extra else None,
            **({"optim": optim} if optim else {}),
            **extra,
        )
        seconds = time.perf_counter() - start
        results[stage] = {**evaluate_demo(model, tokenizer, data), "steps": outcome_steps, "seconds": seconds}
    return results


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m trl_ext.selective.demo --output_dir DIR --seeds 0 1 2`` prints a JSON table."""
    parser = argparse.ArgumentParser(description="Run the selective-generalisation demo on the tiny model.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--sgd",
        action="store_true",
        help=f"the small-step regime: plain SGD, lr {SGD_OUTCOME_LR}, {SGD_OUTCOME_STEPS} steps (default AdamW)",
    )
    parser.add_argument(
        "--outcome_steps", type=int, default=None, help=f"default {OUTCOME_STEPS} ({SGD_OUTCOME_STEPS} with --sgd)"
    )
    parser.add_argument(
        "--outcome_lr", type=float, default=None, help=f"default {OUTCOME_LR} ({SGD_OUTCOME_LR} with --sgd)"
    )
    parser.add_argument("--beta_kl", type=float, default=DEMO_BETA_KL)
    parser.add_argument("--lora", action="store_true", help="outcome stages as LoRA r 32, alpha 64, rsLoRA")
    args = parser.parse_args(argv)
    peft_config = None
    if args.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=32, lora_alpha=64, use_rslora=True, target_modules="all-linear", task_type="CAUSAL_LM"
        )
    steps = args.outcome_steps if args.outcome_steps is not None else SGD_OUTCOME_STEPS if args.sgd else OUTCOME_STEPS
    lr = args.outcome_lr if args.outcome_lr is not None else SGD_OUTCOME_LR if args.sgd else OUTCOME_LR
    for seed in args.seeds:
        res = run_demo(
            Path(args.output_dir) / f"seed_{seed}",
            seed,
            outcome_steps=steps,
            outcome_lr=lr,
            optim="sgd" if args.sgd else None,
            beta_kl=args.beta_kl,
            peft_config=peft_config,
        )
        print(json.dumps({"seed": seed, **res}), flush=True)


if __name__ == "__main__":
    main()
