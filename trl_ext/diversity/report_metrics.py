"""The metrics of the diversity report (docs/diversity.md, "Diversity report"; every formula is stated in
:mod:`trl_ext.diversity.report` and in the docstring of the function that computes it).

:func:`report_from_completions` measures given completions (no sampling): option shares per (prompt, concept),
the shared k-means clusters of each option's continuations with each model's cluster masses and cluster-mass
entropy, distinct-1/2 and the mean pairwise embedding distance per prompt. The pure metrics
(:func:`cut_at_stop_strings`, :func:`distinct_n`, :func:`mean_pairwise_distance`, :func:`cluster_entropy`) take
plain values, so each is tested against a direct computation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from trl_ext.common.errors import ConfigError, DataError, InputTypeError, ReturnValueError
from trl_ext.diversity.concepts import Concept, segment

__all__ = [
    "DEFAULT_STOP_STRINGS",
    "N_INIT",
    "REPORT_VERSION",
    "cluster_entropy",
    "cut_at_stop_strings",
    "distinct_n",
    "mean_pairwise_distance",
    "report_from_completions",
]

DEFAULT_STOP_STRINGS = ("\n", ".\n\n", ".\n")
"""The document's stop strings; a completion is cut at the earliest occurrence of any of them."""
N_INIT = 10
"""k-means restarts of each cluster fit."""
REPORT_VERSION = 1
"""The version of the report's JSON layout."""

Embed = Callable[[Sequence[str]], Any]
"""``embed(texts) -> (len(texts), d)`` array-like of embeddings."""


# ----------------------------------------------------------------------------------------------------------------
# Pure metrics


def cut_at_stop_strings(text: str, stop_strings: Sequence[str] = DEFAULT_STOP_STRINGS) -> str:
    """``text`` up to (not including) the earliest occurrence of any stop string; unchanged when none occurs."""
    cut = len(text)
    for stop in stop_strings:
        position = text.find(stop)
        if 0 <= position < cut:
            cut = position
    return text[:cut]


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Unique n-grams / all n-grams over the whitespace tokens of ``texts`` (n-grams never span two texts);
    None when the texts hold no n-gram."""
    if n < 1:
        raise ConfigError(f"distinct-n needs n >= 1, got {n}")
    grams: list[tuple[str, ...]] = []
    for text in texts:
        words = text.split()
        grams += [tuple(words[j : j + n]) for j in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def mean_pairwise_distance(embeddings: Any) -> float | None:
    """Mean over pairs i < j of ``1 − cos(e_i, e_j)`` (float64; a zero row has cosine 0); None below 2 rows."""
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2:
        raise ReturnValueError(f"embeddings must be a 2-d array (n, d), got shape {e.shape}")
    n = e.shape[0]
    if n < 2:
        return None
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    unit = np.divide(e, norms, out=np.zeros_like(e), where=norms > 0)
    upper = np.triu_indices(n, k=1)
    return float(np.mean(1.0 - (unit @ unit.T)[upper]))


def cluster_entropy(masses: Sequence[float]) -> float:
    """``−Σ_k m_k ln m_k`` in nats over the clusters with ``m_k > 0``."""
    return float(-sum(m * math.log(m) for m in masses if m > 0))


# ----------------------------------------------------------------------------------------------------------------
# Checks


def _check_prompts(prompts: str | Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise ConfigError("no prompt: give at least one")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise InputTypeError(f"prompt {i} must be a string, got {type(prompt).__name__}")
        if not prompt.strip():
            raise ConfigError(f"prompt {i} is empty")
    return prompts


def _check_concepts(concepts: Concept | Sequence[Concept]) -> list[Concept]:
    if isinstance(concepts, Concept):
        concepts = [concepts]
    concepts = list(concepts)
    for concept in concepts:
        if not isinstance(concept, Concept):
            raise InputTypeError(f"concepts must be Concept objects, got {type(concept).__name__}")
    names = [c.name for c in concepts]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"concept names must be unique; repeated: {', '.join(map(repr, duplicates))}")
    return concepts


def _check_at_least(name: str, value: int, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_sampling(
    num_samples: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    stop_strings: Sequence[str],
    batch_size: int,
) -> list[str]:
    _check_at_least("num_samples", num_samples)
    _check_at_least("max_new_tokens", max_new_tokens)
    _check_at_least("batch_size", batch_size)
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0 (sampling), got {temperature!r}")
    if not 0 < top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p!r}")
    if isinstance(stop_strings, str):
        stop_strings = [stop_strings]
    stops = list(stop_strings)
    for stop in stops:
        if not isinstance(stop, str) or stop == "":
            raise ConfigError(f"stop strings must be non-empty strings, got {stop!r}")
    return stops


# ----------------------------------------------------------------------------------------------------------------
# Measuring


def _matches(
    text: str, tokenizer: Any, concepts: Sequence[Concept], max_window_size: int
) -> dict[str, tuple[str, str | None]]:
    """``{concept name: (option, continuation or None)}`` for the concepts found in ``text``."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    blocks = segment(ids, tokenizer, concepts, max_window_size=max_window_size)
    found: dict[str, tuple[str, str | None]] = {}
    for j, block in enumerate(blocks):
        if block.kind != "concept":
            continue
        following = blocks[j + 1] if j + 1 < len(blocks) and blocks[j + 1].kind == "open" else None
        continuation = None
        if following is not None:
            continuation = tokenizer.decode(ids[following.start : following.end], skip_special_tokens=True).strip()
        found[block.concept] = (block.option, continuation or None)
    return found


def _embed_all(embed: Embed, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Embed every distinct text once; ``{text: row}``."""
    unique = list(dict.fromkeys(texts))
    if not unique:
        return {}
    out = np.asarray(embed(unique), dtype=np.float64)
    if out.ndim != 2 or out.shape[0] != len(unique):
        raise ReturnValueError(
            f"embed returned shape {out.shape} for {len(unique)} texts; expected ({len(unique)}, d)"
        )
    if not np.all(np.isfinite(out)):
        raise ReturnValueError("embed returned non-finite values")
    return dict(zip(unique, out))


def _cluster_option(
    option: str,
    texts: Mapping[str, list[str]],
    vectors: Mapping[str, np.ndarray],
    n_clusters: int,
    seed: int,
) -> dict[str, Any]:
    """The shared clusters of one option's continuations and each model's masses and entropy."""
    import warnings

    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    union = [t for model_texts in texts.values() for t in model_texts]
    entry: dict[str, Any] = {
        "num_texts": len(union),
        "num_distinct": None,
        "n_clusters": None,
        "log_n_clusters": None,
        "cluster_examples": None,
        "reason": None,
        "note": None,
        "models": {},
    }
    if len(union) < n_clusters:
        reason = (
            f"only {len(union)} continuation(s) after option {option!r} over all models, fewer than "
            f"n_clusters={n_clusters}: not clustered"
        )
        entry["reason"] = reason
        for label, model_texts in texts.items():
            entry["models"][label] = {
                "num_texts": len(model_texts),
                "cluster_counts": None,
                "cluster_masses": None,
                "entropy": None,
                "reason": reason,
                "texts": list(model_texts),
                "labels": None,
            }
        return entry
    x = np.stack([vectors[t] for t in union])
    distinct = int(np.unique(x, axis=0).shape[0])
    k = min(n_clusters, distinct)
    entry["num_distinct"] = distinct
    if k < n_clusters:
        entry["note"] = (
            f"only {distinct} distinct continuation(s) after option {option!r}: fitted {k} cluster(s) instead of "
            f"{n_clusters}; the reference entropy is ln {k}"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        kmeans = KMeans(n_clusters=k, n_init=N_INIT, random_state=seed).fit(x)
    raw = np.asarray(kmeans.labels_, dtype=np.int64)
    sizes = np.bincount(raw, minlength=k)
    order = sorted(range(k), key=lambda c: (-int(sizes[c]), c))  # new label j = old label order[j]
    relabel = np.empty(k, dtype=np.int64)
    relabel[order] = np.arange(k)
    labels = relabel[raw]
    distances = ((x[:, None, :] - kmeans.cluster_centers_[None, :, :]) ** 2).sum(-1)
    entry["n_clusters"] = k
    entry["log_n_clusters"] = math.log(k)
    entry["cluster_examples"] = [union[int(np.argmin(distances[:, old]))] for old in order]
    start = 0
    for label, model_texts in texts.items():
        own = labels[start : start + len(model_texts)]
        start += len(model_texts)
        counts = np.bincount(own, minlength=k).tolist()
        model_entry: dict[str, Any] = {
            "num_texts": len(model_texts),
            "cluster_counts": counts,
            "cluster_masses": None,
            "entropy": None,
            "reason": None,
            "texts": list(model_texts),
            "labels": own.tolist(),
        }
        if model_texts:
            masses = [c / len(model_texts) for c in counts]
            model_entry["cluster_masses"] = masses
            model_entry["entropy"] = cluster_entropy(masses)
        else:
            model_entry["reason"] = f"no continuation after option {option!r}"
        entry["models"][label] = model_entry
    return entry


def _tokenizer_for(tokenizer: Any, label: str) -> Any:
    tok = tokenizer.get(label) if isinstance(tokenizer, Mapping) else tokenizer
    if tok is None:
        raise ConfigError(f"no tokenizer for model {label!r}")
    return getattr(tok, "tokenizer", tok)


def _embedder_name(embed: Embed) -> str:
    name = getattr(embed, "name_or_path", None)
    return str(name) if name is not None else getattr(embed, "__name__", type(embed).__name__)


def report_from_completions(
    completions: Mapping[str, Sequence[Sequence[str]]],
    prompts: str | Sequence[str],
    concepts: Concept | Sequence[Concept],
    *,
    tokenizer: Any,
    embed: Embed,
    n_clusters: int = 5,
    seed: int = 0,
    max_window_size: int = 2,
    settings: Mapping[str, Any] | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """The diversity report of given completions (no sampling): see the module docstring for every formula.

    Args:
        completions: ``{model label: [completions of prompt 0, completions of prompt 1, ...]}``, measured as they
            are (already cut at their stop strings); the models may have different numbers of completions.
        prompts: the prompts, in the order of the completions.
        concepts: the concepts whose option shares and continuations are measured (may be empty).
        tokenizer: the tokenizer that cuts the completions into blocks, or ``{model label: tokenizer}``.
        embed: ``embed(texts) -> (n, d)``, called once on every distinct text (completions and continuations).
        n_clusters: K of the continuations' k-means.
        seed: the k-means ``random_state``.
        max_window_size: the most tokens of a concept block (:func:`~trl_ext.diversity.concepts.segment`).
        settings: more entries for the report's ``settings`` (the sampling parameters).
        show_progress: a tqdm bar over the prompts.

    Raises:
        ConfigError, InputTypeError, DataError: bad arguments; ReturnValueError: ``embed`` returned a wrong shape.
    """
    from tqdm.auto import tqdm

    prompts = _check_prompts(prompts)
    concepts = _check_concepts(concepts)
    _check_at_least("n_clusters", n_clusters)
    _check_at_least("max_window_size", max_window_size)
    if not isinstance(completions, Mapping) or not completions:
        raise ConfigError("completions must be a non-empty mapping {model label: completions per prompt}")
    for label, per_prompt in completions.items():
        if not isinstance(label, str) or not label:
            raise ConfigError(f"model labels must be non-empty strings, got {label!r}")
        if len(per_prompt) != len(prompts):
            raise DataError(f"model {label!r}: completions for {len(per_prompt)} prompts, expected {len(prompts)}")
        for p, texts in enumerate(per_prompt):
            if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
                raise DataError(f"model {label!r}, prompt {p}: completions must be a list of strings")
    labels = list(completions)
    tokenizers = {label: _tokenizer_for(tokenizer, label) for label in labels}

    # Segment every completion: {label: [[{concept: (option, continuation)} per completion] per prompt]}
    matches = {
        label: [[_matches(t, tokenizers[label], concepts, max_window_size) for t in texts] for texts in per_prompt]
        for label, per_prompt in completions.items()
    }
    all_texts = [t for per_prompt in completions.values() for texts in per_prompt for t in texts]
    all_texts += [
        cont
        for per_prompt in matches.values()
        for per_completion in per_prompt
        for found in per_completion
        for _, cont in found.values()
        if cont is not None
    ]
    vectors = _embed_all(embed, all_texts)

    entries = []
    for p in tqdm(range(len(prompts)), desc="measuring", unit="prompt", disable=not show_progress):
        models_entry = {}
        for label in labels:
            texts = list(completions[label][p])
            models_entry[label] = {
                "num_samples": len(texts),
                "distinct_1": distinct_n(texts, 1),
                "distinct_2": distinct_n(texts, 2),
                "mean_pairwise_distance": mean_pairwise_distance(
                    np.stack([vectors[t] for t in texts]) if texts else np.zeros((0, 1))
                ),
                "completions": texts,
            }
        concepts_entry = {}
        for concept in concepts:
            shares: dict[str, Any] = {}
            continuations: dict[str, dict[str, list[str]]] = {o: {} for o in concept.options}
            for label in labels:
                found = [m.get(concept.name) for m in matches[label][p]]
                n = len(found)
                counts = {o: sum(1 for f in found if f is not None and f[0] == o) for o in concept.options}
                no_match = sum(1 for f in found if f is None)
                shares[label] = {
                    "option_counts": counts,
                    "no_match_count": no_match,
                    "option_shares": {o: (c / n if n else None) for o, c in counts.items()},
                    "no_match_share": no_match / n if n else None,
                }
                for o in concept.options:
                    continuations[o][label] = [f[1] for f in found if f is not None and f[0] == o and f[1] is not None]
            concepts_entry[concept.name] = {
                "options": list(concept.options),
                "models": shares,
                "clusters": {
                    o: _cluster_option(o, continuations[o], vectors, n_clusters, seed) for o in concept.options
                },
            }
        entries.append({"prompt": prompts[p], "models": models_entry, "concepts": concepts_entry})

    report_settings: dict[str, Any] = dict(settings or {})
    report_settings.setdefault("seed", seed)
    report_settings.setdefault("embedder", _embedder_name(embed))
    report_settings.update(
        n_clusters=n_clusters,
        log_n_clusters=math.log(n_clusters),
        kmeans_n_init=N_INIT,
        kmeans_seed=seed,
        max_window_size=max_window_size,
        concepts=[
            {"name": c.name, "options": list(c.options), "case_variants": list(c.case_variants)} for c in concepts
        ],
    )
    return {
        "report": "trl_ext diversity report",
        "version": REPORT_VERSION,
        "settings": report_settings,
        "models": {label: {"source": None} for label in labels},
        "prompts": entries,
    }
