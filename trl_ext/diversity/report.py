r"""Diversity report: sample N completions per prompt from one or more saved models (the base model "before", the
trained one "after") and measure how diverse they are (docs/diversity.md, "Diversity report").

Sampling (:func:`sample_completions`). Every prompt is repeated N = ``num_samples`` times and continued by
:func:`trl_ext.common.generation.generate_completions` (``do_sample=True``, ``temperature``, ``top_p``,
``max_new_tokens``, batched, in an RNG forked and seeded with ``seed``: every model is sampled with the same seed).
Prompts are plain text continuations unless ``chat_template``. Each completion is then cut at the *earliest*
occurrence of any stop string (default ``["\n", ".\n\n", ".\n"]``): the stop string and everything after it are
dropped, so with the defaults ``"Dogs are loyal.\nCats"`` is measured as ``"Dogs are loyal"``.

Per prompt x and model m, with the N cut completions y_1 … y_N (:func:`report_from_completions`):

* **option shares** per concept c. Each completion's text is tokenized without special tokens and cut into blocks by
  :func:`trl_ext.diversity.concepts.segment` (all concepts at once, ``max_window_size`` 2); o(y_i) is the option of
  c's concept block, or none.
  ``share_m(o) = #{i : o(y_i) = o} / N`` and ``no_match_m = #{i : y_i has no concept block of c} / N``;
  ``Σ_o share_m(o) + no_match_m = 1``.
* **continuations and clusters** per (x, c, option o). The continuation of a completion with option o is the open
  block directly after its concept block, decoded without special tokens and stripped; a completion whose concept
  block ends it or is followed by another concept's block, or whose continuation is blank, has none.
  T_m = the continuations of model m, T = T_1 ∪ … ∪ T_M (all models, in order). One
  ``KMeans(K, n_init=10, random_state=seed)`` is fitted on embed(T), so every model is measured against the same
  clusters. Cluster mass ``μ_m(k) = #{t ∈ T_m : label(t) = k} / |T_m|`` (``Σ_k μ_m(k) = 1``), cluster-mass
  entropy ``H_m = −Σ_{k: μ_m(k)>0} μ_m(k) ln μ_m(k)`` in nats, reported with its maximum ``ln K``.
  |T| < K: nothing is clustered, masses and entropies are null and ``reason`` says why. Fewer than K distinct
  embeddings in T: K' = their number of clusters is fitted (``note`` says so; the reference is then ln K').
  |T_m| = 0: that model's masses and entropy are null with a ``reason``. Clusters are renumbered by decreasing size
  over T (ties: k-means order); ``cluster_examples[k]`` is the text of T nearest to center k.
* **distinct-n** (n = 1, 2). w_{i,1} … w_{i,L_i} = ``y_i.split()`` (whitespace tokens, case and punctuation kept);
  G = the n-grams (w_{i,j}, …, w_{i,j+n−1}) inside each completion (none across completions);
  ``distinct-n = |set(G)| / |G|`` with ``|G| = Σ_i max(L_i − n + 1, 0)``; null when |G| = 0.
* **mean pairwise embedding distance** over the embeddings e_i = embed(y_i) of the full cut completions:
  ``d̄ = 2 / (N(N−1)) · Σ_{i<j} (1 − cos(e_i, e_j))``, ``cos(a, b) = a·b / (‖a‖ ‖b‖)`` (a zero vector has cosine 0
  with everything); null for N < 2.

The embedder is :class:`trl_ext.diversity.embedding.SentenceEmbedder` (default ``all-MiniLM-L6-v2``, offline) or any
injected ``embed(texts) -> (n, d)``; every distinct text is embedded once. The report is a JSON-able dict with the
settings, every metric and the cut completions; :func:`write_report` writes ``diversity_report.json`` and
``diversity_report.png`` (:func:`plot_report`: per prompt, the diversity metrics, the option shares and the cluster
masses of every option as grouped bars, one colour per model). Console script ``trl-ext-diversity-report``
(:func:`main`). Models given as folders are loaded one at a time (a PEFT adapter folder as base + adapter) and freed
after sampling; every input is checked before anything is loaded or sampled.

Layout: the metrics are in :mod:`trl_ext.diversity.report_metrics`, the files, figure and summary table in
:mod:`trl_ext.diversity.report_output`; this module (sampling, models, command line) re-exports their public names.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trl_ext.common.errors import ConfigError, InputTypeError
from trl_ext.diversity.concepts import CASE_VARIANTS, Concept
from trl_ext.diversity.embedding import DEFAULT_EMBEDDER
from trl_ext.diversity.report_metrics import (
    DEFAULT_STOP_STRINGS,
    Embed,
    _check_at_least,
    _check_concepts,
    _check_prompts,
    _check_sampling,
    _embedder_name,
    cluster_entropy,
    cut_at_stop_strings,
    distinct_n,
    mean_pairwise_distance,
    report_from_completions,
)
from trl_ext.diversity.report_output import JSON_NAME, PNG_NAME, format_summary, plot_report, write_report

__all__ = [
    "DEFAULT_PROMPT",
    "DEFAULT_STOP_STRINGS",
    "JSON_NAME",
    "PNG_NAME",
    "build_parser",
    "cluster_entropy",
    "cut_at_stop_strings",
    "distinct_n",
    "diversity_report",
    "format_summary",
    "main",
    "mean_pairwise_distance",
    "plot_report",
    "report_from_completions",
    "sample_completions",
    "write_report",
]

PROG = "trl-ext-diversity-report"
DEFAULT_PROMPT = "In 20 words, say whether you love dog or cat more, and give a reason; Answer:"
"""The document's open prompt (a plain text continuation)."""


# ----------------------------------------------------------------------------------------------------------------
# Sampling


def sample_completions(
    model: Any,
    tokenizer: Any,
    prompts: str | Sequence[str],
    *,
    num_samples: int = 64,
    max_new_tokens: int = 30,
    temperature: float = 1.0,
    top_p: float = 0.95,
    stop_strings: Sequence[str] = DEFAULT_STOP_STRINGS,
    seed: int | None = 0,
    batch_size: int = 16,
    chat_template: bool = False,
    show_progress: bool = True,
    desc: str = "sampling",
) -> list[list[str]]:
    """``num_samples`` sampled completions per prompt, each cut at its stop strings: ``result[p][i]``.

    The prompts, each repeated ``num_samples`` times, go through one seeded, batched
    :func:`~trl_ext.common.generation.generate_completions` call (it shows its own progress bar).
    """
    prompts = _check_prompts(prompts)
    stops = _check_sampling(num_samples, max_new_tokens, temperature, top_p, stop_strings, batch_size)
    repeated = [prompt for prompt in prompts for _ in range(num_samples)]
    from trl_ext.common.generation import generate_completions

    texts = generate_completions(
        model,
        tokenizer,
        repeated,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        do_sample=True,
        temperature=temperature,
        top_p=top_p,
        top_k=0,  # no top-k filter, as the trainer samples (GRPO's top_k=0), not the model's default of 50
        chat_template=chat_template,
        seed=seed,
        show_progress=show_progress,
        desc=desc,
    )
    cut = [cut_at_stop_strings(text, stops) for text in texts]
    return [cut[p * num_samples : (p + 1) * num_samples] for p in range(len(prompts))]


# ----------------------------------------------------------------------------------------------------------------
# From saved models


def _resolve_sources(models: Mapping[str, Any], tokenizer: Any) -> dict[str, Any]:
    """``{label: resolved path or model object}``; a missing path is a MissingPathError (nothing loaded)."""
    from trl_ext.models.loading import resolve_model_name_or_path

    if not isinstance(models, Mapping) or not models:
        raise ConfigError("models must be a non-empty mapping {label: model folder, hub id, 'tiny' or model}")
    sources: dict[str, Any] = {}
    for label, model in models.items():
        if not isinstance(label, str) or not label:
            raise ConfigError(f"model labels must be non-empty strings, got {label!r}")
        if isinstance(model, (str, os.PathLike)):
            sources[label] = resolve_model_name_or_path(str(model))
        elif hasattr(model, "generate"):
            tok = tokenizer.get(label) if isinstance(tokenizer, Mapping) else tokenizer
            if tok is None:
                raise ConfigError(f"model {label!r} is a model object: give its tokenizer (tokenizer=...)")
            sources[label] = model
        else:
            raise InputTypeError(f"model {label!r} must be a path, a hub id or a model, got {type(model).__name__}")
    return sources


def _load_tokenizer_of(path: str) -> Any:
    """The tokenizer saved in ``path``, else (a PEFT adapter folder without one) its base model's."""
    from trl_ext.models.loading import is_peft_adapter_dir, load_tokenizer, resolve_model_name_or_path

    folder = Path(path)
    has_own = any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))
    if folder.is_dir() and not has_own and is_peft_adapter_dir(path):
        base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if base:
            return load_tokenizer(resolve_model_name_or_path(base))
    return load_tokenizer(path)


def diversity_report(
    models: Mapping[str, Any],
    prompts: str | Sequence[str],
    concepts: Concept | Sequence[Concept],
    *,
    tokenizer: Any = None,
    num_samples: int = 64,
    n_clusters: int = 5,
    max_new_tokens: int = 30,
    temperature: float = 1.0,
    top_p: float = 0.95,
    stop_strings: Sequence[str] = DEFAULT_STOP_STRINGS,
    seed: int = 0,
    embed: Embed | None = None,
    embedder: str = DEFAULT_EMBEDDER,
    batch_size: int = 16,
    chat_template: bool = False,
    max_window_size: int = 2,
    device: str | None = None,
    dtype: str | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Sample ``num_samples`` completions per prompt from every model and measure their diversity.

    Args:
        models: ``{label: model}`` in the order to compare (e.g. ``{"before": base, "after": trained}``); a model is
            a folder (a PEFT adapter folder loads as base + adapter), a hub id, ``"tiny"``, or a loaded model
            (then give ``tokenizer``). Folders are loaded one at a time with
            :func:`~trl_ext.models.loading.load_causal_lm` and their tokenizer comes from the same folder (the base
            model's for an adapter folder without one).
        prompts: text prompts (plain continuations unless ``chat_template``).
        concepts: the concepts to measure (e.g. ``Concept("animal", ["dog", "cat"])``).
        tokenizer: a tokenizer for all models, or ``{label: tokenizer}``; default: each folder's own.
        num_samples, max_new_tokens, temperature, top_p, seed, batch_size, chat_template: the sampling
            (:func:`sample_completions`; every model is sampled with the same seed).
        stop_strings: a completion is cut at the earliest occurrence of any of them (the stop string dropped).
        n_clusters: K of each option's k-means (fitted once on all models' continuations, ``random_state=seed``).
        embed: an ``embed(texts) -> (n, d)`` callable; default a
            :class:`~trl_ext.diversity.embedding.SentenceEmbedder` of ``embedder`` loaded after sampling.
        max_window_size: the most tokens of a concept block.
        device, dtype: where and in which dtype folders are loaded (default: the first CUDA device, else MPS, else
            CPU; the checkpoint's dtype).
        show_progress: progress bars.

    Returns:
        The JSON-able report (module docstring; ``write_report`` saves it).

    Raises:
        ConfigError, InputTypeError, MissingPathError: bad arguments or a path that does not exist, before anything
            is loaded or sampled.
    """
    prompts = _check_prompts(prompts)
    concepts = _check_concepts(concepts)
    stops = _check_sampling(num_samples, max_new_tokens, temperature, top_p, stop_strings, batch_size)
    _check_at_least("n_clusters", n_clusters)
    _check_at_least("max_window_size", max_window_size)
    sources = _resolve_sources(models, tokenizer)
    if embed is None:
        from trl_ext.diversity.embedding import resolve_embedder_path

        resolve_embedder_path(embedder)  # a missing embedder path fails before sampling
    elif not callable(embed):
        raise InputTypeError(f"embed must be a callable embed(texts) -> (n, d), got {type(embed).__name__}")

    completions: dict[str, list[list[str]]] = {}
    tokenizers: dict[str, Any] = {}
    for label, source in sources.items():
        given = tokenizer.get(label) if isinstance(tokenizer, Mapping) else tokenizer
        if isinstance(source, str):
            from trl_ext.models.loading import default_device, load_causal_lm

            tok = given if given is not None else _load_tokenizer_of(source)
            model = load_causal_lm(source, dtype=dtype).to(device or default_device()).eval()
        else:
            tok, model = given, source
        completions[label] = sample_completions(
            model,
            tok,
            prompts,
            num_samples=num_samples,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            stop_strings=stops,
            seed=seed,
            batch_size=batch_size,
            chat_template=chat_template,
            show_progress=show_progress,
            desc=f"sampling {label}",
        )
        tokenizers[label] = tok
        if isinstance(source, str):
            del model
            _free_memory()

    if embed is None:
        from trl_ext.diversity.embedding import SentenceEmbedder

        embed = SentenceEmbedder(embedder, device=device)
    settings = {
        "num_samples": num_samples,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "stop_strings": stops,
        "seed": seed,
        "batch_size": batch_size,
        "chat_template": chat_template,
        "embedder": _embedder_name(embed),
    }
    report = report_from_completions(
        completions,
        prompts,
        concepts,
        tokenizer=tokenizers,
        embed=embed,
        n_clusters=n_clusters,
        seed=seed,
        max_window_size=max_window_size,
        settings=settings,
        show_progress=show_progress,
    )
    report["models"] = {
        label: {"source": source if isinstance(source, str) else f"<{type(source).__name__}>"}
        for label, source in sources.items()
    }
    return report


def _free_memory() -> None:
    gc.collect()
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------------------------
# Command line


def _unescape(text: str) -> str:
    r"""Decode backslash escapes (``\n``, ``\t``, ``\\``) of a command-line stop string; other text is kept."""
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``trl-ext-diversity-report``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Sample completions from a trained model (and its baseline) and report their diversity: option "
        "shares, cluster masses and entropy of the continuations, distinct-1/2, mean pairwise embedding distance.",
    )
    parser.add_argument("--model", required=True, help="the trained model (labelled 'after'): folder, adapter, hub id")
    parser.add_argument("--baseline", help="the model before training (labelled 'before'), compared with --model")
    parser.add_argument("--prompt", nargs="+", default=[DEFAULT_PROMPT], help="one or more text prompts")
    parser.add_argument("--concept_name", default="animal", help="the concept's name (default: animal)")
    parser.add_argument("--concept_options", nargs="*", default=["dog", "cat"], help="its options (default: dog cat)")
    parser.add_argument(
        "--case_variants",
        nargs="*",
        default=list(CASE_VARIANTS),
        help=f"surface forms of each option, a subset of {' '.join(CASE_VARIANTS)} (default: all)",
    )
    parser.add_argument("--num_samples", type=int, default=64, help="completions per prompt and model (default: 64)")
    parser.add_argument("--n_clusters", type=int, default=5, help="k-means clusters per option (default: 5)")
    parser.add_argument("--max_new_tokens", type=int, default=30)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top_p", type=float, default=0.95)
    parser.add_argument(
        "--stop_strings",
        nargs="*",
        default=None,
        help=r"cut each completion at the first of these (escapes such as \n decoded; default: '\n' '.\n\n' '.\n')",
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling and k-means seed (default: 0)")
    parser.add_argument("--embedder", default=DEFAULT_EMBEDDER, help="sentence-transformers name or folder")
    parser.add_argument("--batch_size", type=int, default=16, help="sequences per generate call (default: 16)")
    parser.add_argument("--max_window_size", type=int, default=2, help="most tokens of a concept block (default: 2)")
    parser.add_argument("--chat_template", action="store_true", help="send prompts through the chat template")
    parser.add_argument("--device", help="device of the models and embedder (default: cuda, else mps, else cpu)")
    parser.add_argument("--dtype", help="dtype the models are loaded in (e.g. bfloat16; default: the checkpoint's)")
    parser.add_argument("--output_dir", required=True, help=f"where to write {JSON_NAME} and {PNG_NAME}")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _run(args: argparse.Namespace) -> int:
    concept = Concept(args.concept_name, args.concept_options, case_variants=args.case_variants)
    models = {"before": args.baseline, "after": args.model} if args.baseline else {"after": args.model}
    stops = DEFAULT_STOP_STRINGS if args.stop_strings is None else [_unescape(s) for s in args.stop_strings]
    report = diversity_report(
        models,
        args.prompt,
        [concept],
        num_samples=args.num_samples,
        n_clusters=args.n_clusters,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        stop_strings=stops,
        seed=args.seed,
        embedder=args.embedder,
        batch_size=args.batch_size,
        chat_template=args.chat_template,
        max_window_size=args.max_window_size,
        device=args.device,
        dtype=args.dtype,
        show_progress=not args.quiet,
    )
    json_path, png_path = write_report(report, args.output_dir)
    print(format_summary(report))
    print(f"wrote {json_path} and {png_path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``trl-ext-diversity-report --model PATH [--baseline PATH] --output_dir DIR [...]``; a user error prints one
    line and gives exit status 2 (:func:`trl_ext.common.entry.run_main`)."""
    from trl_ext.common.entry import run_main

    args = build_parser().parse_args(argv)
    return run_main(lambda: _run(args), prog=PROG)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
