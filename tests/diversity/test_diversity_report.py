"""The diversity report (docs/diversity.md, "Diversity report"): the pure metrics against direct loops, option shares
and shared clusters on hand-written completions, sampling on the tiny model, clear errors before sampling, and the
console script end to end (tiny model vs a LoRA adapter folder, the real offline MiniLM embedder)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from trl_ext.common.errors import ConfigError, InputTypeError, MissingPathError
from trl_ext.diversity.concepts import Concept
from trl_ext.diversity.report import (
    DEFAULT_STOP_STRINGS,
    JSON_NAME,
    PNG_NAME,
    cluster_entropy,
    cut_at_stop_strings,
    distinct_n,
    diversity_report,
    format_summary,
    main,
    mean_pairwise_distance,
    report_from_completions,
    sample_completions,
    write_report,
)

ANIMAL = Concept("animal", ["dog", "cat"])


def letter_counts(texts):
    """A deterministic embedder: counts of a-z plus a constant (never a zero vector)."""
    rows = [[t.lower().count(c) for c in "abcdefghijklmnopqrstuvwxyz"] + [1.0] for t in texts]
    return np.asarray(rows, dtype=np.float32).reshape(len(texts), 27)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path)


# ----------------------------------------------------------------------------------------------------------------
# Pure metrics


def test_cut_at_the_earliest_stop_string_which_is_dropped():
    from trl_ext.diversity.config import DEFAULT_STOP_STRINGS as TRAINER_STOP_STRINGS

    assert DEFAULT_STOP_STRINGS == TRAINER_STOP_STRINGS == ("\n", ".\n\n", ".\n")  # the trainer's defaults
    assert cut_at_stop_strings(" Dogs are loyal.\nCats too") == " Dogs are loyal"  # ".\n" starts first
    assert cut_at_stop_strings(" Dogs, because\n\nthey") == " Dogs, because"
    assert cut_at_stop_strings(" no stop here.") == " no stop here."
    assert cut_at_stop_strings("\nleading") == ""
    assert cut_at_stop_strings("a because b. c", ["because", "."]) == "a "
    assert cut_at_stop_strings("a\nb", []) == "a\nb"


def _distinct_by_loop(texts, n):
    seen, total = set(), 0
    for text in texts:
        words = text.split()
        for j in range(len(words) - n + 1):
            seen.add(" ".join(words[j : j + n]))
            total += 1
    return len(seen) / total if total else None


def test_distinct_n_matches_a_direct_loop():
    texts = ["the cat sat", "the cat ran", "  I love   dogs, truly  ", "dogs, truly", "", "one"]
    for n in (1, 2, 3):
        assert distinct_n(texts, n) == pytest.approx(_distinct_by_loop(texts, n))
    assert distinct_n(["the cat sat", "the cat ran"], 1) == pytest.approx(4 / 6)
    assert distinct_n(["the cat sat", "the cat ran"], 2) == pytest.approx(3 / 4)  # "the cat" twice
    assert distinct_n(["a b", "b c"], 2) == 1.0  # no bigram "b b" across the two texts
    assert distinct_n(["one", ""], 2) is None and distinct_n([], 1) is None
    with pytest.raises(ConfigError, match="n >= 1"):
        distinct_n(["a"], 0)


def test_mean_pairwise_distance_matches_a_direct_loop():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(7, 5))
    pairs = [
        1 - float(np.dot(e[i], e[j]) / (np.linalg.norm(e[i]) * np.linalg.norm(e[j])))
        for i, j in itertools.combinations(range(7), 2)
    ]
    assert mean_pairwise_distance(e) == pytest.approx(sum(pairs) / len(pairs), rel=1e-12)
    assert mean_pairwise_distance(np.ones((4, 3))) == pytest.approx(0.0, abs=1e-12)
    assert mean_pairwise_distance([[1.0, 0.0], [0.0, 2.0]]) == pytest.approx(1.0)
    assert mean_pairwise_distance([[1.0, 0.0], [-3.0, 0.0]]) == pytest.approx(2.0)
    assert mean_pairwise_distance([[0.0, 0.0], [1.0, 0.0]]) == pytest.approx(1.0)  # a zero vector: cosine 0
    assert mean_pairwise_distance(np.ones((1, 3))) is None


def test_cluster_entropy_in_nats():
    assert cluster_entropy([0.5, 0.5, 0.0]) == pytest.approx(math.log(2))
    assert cluster_entropy([1.0]) == 0.0
    masses = [0.1, 0.2, 0.3, 0.4]
    assert cluster_entropy(masses) == pytest.approx(-sum(m * math.log(m) for m in masses))


# ----------------------------------------------------------------------------------------------------------------
# Option shares and clusters on completions written by hand

BEFORE = [
    " I love dogs because they are loyal",  # dog, "because they are loyal"
    " a cat and a dog",  # cat (a concept matches once), "and a dog"
    " neither really",  # no match
    " Dog is best",  # dog, "is best"
    " dog",  # dog, no continuation (the concept block ends the completion)
    " cat   ",  # cat, blank continuation: none
]
AFTER = [" dog is best", " dog runs fast", " dog because they are loyal", " dog sleeps all day"]


def test_option_shares_and_continuations_on_constructed_completions(tokenizer, tmp_path):
    report = report_from_completions(
        {"before": [BEFORE], "after": [AFTER]},
        ["In 20 words, say whether you love dog or cat more; Answer:"],
        [ANIMAL],
        tokenizer=tokenizer,
        embed=letter_counts,
        n_clusters=2,
        seed=0,
    )
    concept = report["prompts"][0]["concepts"]["animal"]
    before, after = concept["models"]["before"], concept["models"]["after"]
    assert before["option_counts"] == {"dog": 3, "cat": 2} and before["no_match_count"] == 1
    assert before["option_shares"] == {"dog": 3 / 6, "cat": 2 / 6} and before["no_match_share"] == 1 / 6
    assert after["option_shares"] == {"dog": 1.0, "cat": 0.0} and after["no_match_share"] == 0.0
    dog, cat = concept["clusters"]["dog"], concept["clusters"]["cat"]
    assert dog["models"]["before"]["texts"] == ["because they are loyal", "is best"]
    assert dog["models"]["after"]["texts"] == ["is best", "runs fast", "because they are loyal", "sleeps all day"]
    assert cat["models"]["before"]["texts"] == ["and a dog"] and cat["models"]["after"]["texts"] == []
    # one continuation after 'cat' over both models, fewer than K = 2: no clusters, null entropy and a reason
    assert cat["n_clusters"] is None and "fewer than n_clusters=2" in cat["reason"]
    assert all(m["entropy"] is None and m["cluster_masses"] is None for m in cat["models"].values())
    # diversity metrics per prompt and model, from the same embedder
    for label, texts in (("before", BEFORE), ("after", AFTER)):
        m = report["prompts"][0]["models"][label]
        assert m["completions"] == texts and m["num_samples"] == len(texts)
        assert m["distinct_1"] == pytest.approx(_distinct_by_loop(texts, 1))
        assert m["distinct_2"] == pytest.approx(_distinct_by_loop(texts, 2))
        e = letter_counts(texts).astype(np.float64)
        pairs = [
            1 - e[i] @ e[j] / np.linalg.norm(e[i]) / np.linalg.norm(e[j])
            for i, j in itertools.combinations(range(len(texts)), 2)
        ]
        assert m["mean_pairwise_distance"] == pytest.approx(np.mean(pairs), rel=1e-9)
    # strict JSON, a figure and a summary table
    json_path, png_path = write_report(report, tmp_path)
    assert (json_path.name, png_path.name) == (JSON_NAME, PNG_NAME)
    assert json.loads(json_path.read_text(encoding="utf-8")) == report
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = format_summary(report)
    assert "animal:dog" in summary and "H(cat)" in summary and summary.count("\nbefore") == 1


def test_clusters_are_shared_by_the_models_and_masses_are_counts_over_n(tokenizer):
    from sklearn.cluster import KMeans

    reasons_before = ["they are loyal", "they are loyal and kind", "woof woof", "zzz", "they fetch the ball"]
    reasons_after = ["woof woof", "zzz zzz", "they are loyal", "quiet and calm", "xyz", "loyal"]
    completions = {"before": [[" dog " + r for r in reasons_before]], "after": [[" dog " + r for r in reasons_after]]}
    k, seed = 3, 7
    report = report_from_completions(
        completions, ["P"], ANIMAL, tokenizer=tokenizer, embed=letter_counts, n_clusters=k, seed=seed
    )
    dog = report["prompts"][0]["concepts"]["animal"]["clusters"]["dog"]
    assert dog["reason"] is None and dog["note"] is None
    assert dog["n_clusters"] == k and dog["log_n_clusters"] == pytest.approx(math.log(k))
    assert dog["num_texts"] == len(reasons_before) + len(reasons_after)
    labels = dog["models"]["before"]["labels"] + dog["models"]["after"]["labels"]
    # the same partition as one independent k-means fit on the union of both models' continuations
    union = reasons_before + reasons_after
    reference = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(letter_counts(union).astype(np.float64)).labels_
    same = [[a == b for b in labels] for a in labels]
    assert same == [[a == b for b in reference] for a in reference]
    # renumbered by decreasing size over the union; identical texts share a label across models
    sizes = np.bincount(labels, minlength=k)
    assert list(sizes) == sorted(sizes, reverse=True)
    for i, text in enumerate(union):
        for j, other in enumerate(union):
            if text == other:
                assert labels[i] == labels[j]
    for label, reasons in (("before", reasons_before), ("after", reasons_after)):
        m = dog["models"][label]
        assert m["texts"] == reasons and m["cluster_counts"] == np.bincount(m["labels"], minlength=k).tolist()
        assert m["cluster_masses"] == [c / len(reasons) for c in m["cluster_counts"]]
        assert sum(m["cluster_masses"]) == pytest.approx(1.0)
        assert m["entropy"] == pytest.approx(-sum(p * math.log(p) for p in m["cluster_masses"] if p > 0))
    assert all(example in union for example in dog["cluster_examples"])


def test_few_distinct_continuations_fit_fewer_clusters_and_say_so(tokenizer):
    completions = {"before": [[" dog is best"] * 4], "after": [[" dog is best", " dog runs", " dog runs", " cat"]]}
    report = report_from_completions(
        completions, ["P"], ANIMAL, tokenizer=tokenizer, embed=letter_counts, n_clusters=5
    )
    dog = report["prompts"][0]["concepts"]["animal"]["clusters"]["dog"]
    assert dog["num_texts"] == 7 and dog["num_distinct"] == 2 and dog["n_clusters"] == 2
    assert "fitted 2 cluster(s) instead of 5" in dog["note"]
    assert dog["models"]["before"]["entropy"] == 0.0  # a collapsed model measures 0, not null
    assert dog["models"]["after"]["entropy"] == pytest.approx(-(1 / 3) * math.log(1 / 3) - (2 / 3) * math.log(2 / 3))
    cat = report["prompts"][0]["concepts"]["animal"]["clusters"]["cat"]
    assert cat["num_texts"] == 0 and cat["reason"].startswith("only 0 continuation(s) after option 'cat'")
    json.dumps(report, allow_nan=False)


def test_bad_completions_and_embedder_output_are_named(tokenizer):
    with pytest.raises(ValueError, match="completions for 2 prompts, expected 1"):
        report_from_completions({"m": [["a"], ["b"]]}, ["P"], ANIMAL, tokenizer=tokenizer, embed=letter_counts)
    with pytest.raises(ValueError, match="embed returned shape"):
        report_from_completions({"m": [["a", "b"]]}, ["P"], ANIMAL, tokenizer=tokenizer, embed=lambda t: np.ones(3))
    with pytest.raises(ConfigError, match="concept names must be unique"):
        report_from_completions({"m": [["a"]]}, ["P"], [ANIMAL, ANIMAL], tokenizer=tokenizer, embed=letter_counts)


# ----------------------------------------------------------------------------------------------------------------
# Sampling, errors, the console script


def test_sampling_repeats_each_prompt_cuts_and_is_seeded(tiny_model_path, tokenizer):
    from transformers import AutoModelForCausalLM

    from trl_ext.common.generation import generate_completions

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    prompts = ["Answer: x1=", "I love"]
    kwargs = dict(num_samples=3, max_new_tokens=12, seed=3, batch_size=4, show_progress=False)
    out = sample_completions(model, tokenizer, prompts, **kwargs)
    assert [len(p) for p in out] == [3, 3]
    assert out == sample_completions(model, tokenizer, prompts, **kwargs)
    raw = generate_completions(model, tokenizer, [p for p in prompts for _ in range(3)], batch_size=4,
                               max_new_tokens=12, do_sample=True, temperature=1.0, top_p=0.95, top_k=0,
                               chat_template=False, seed=3, show_progress=False)  # fmt: skip
    assert [t for p in out for t in p] == [cut_at_stop_strings(t) for t in raw]
    assert not any("\n" in t for p in out for t in p)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_samples": 0}, ConfigError, "num_samples must be an integer >= 1, got 0"),
        ({"temperature": 0.0}, ConfigError, "temperature must be > 0"),
        ({"top_p": 1.5}, ConfigError, r"top_p must be in \(0, 1\]"),
        ({"n_clusters": 0}, ConfigError, "n_clusters must be"),
        ({"stop_strings": ["\n", ""]}, ConfigError, "stop strings must be non-empty"),
        ({"prompts": []}, ConfigError, "no prompt"),
        ({"concepts": ["dog"]}, InputTypeError, "Concept objects"),
        ({"models": {"after": "./no/such/model"}}, MissingPathError, "model path './no/such/model' does not exist"),
        ({"embedder": "./no/such/embedder"}, MissingPathError, "embedder path './no/such/embedder' does not exist"),
    ],
)
def test_bad_input_is_refused_before_sampling(monkeypatch, tiny_model_path, kwargs, error, match):
    import trl_ext.diversity.report as report_module

    def no_sampling(*args, **kw):
        raise AssertionError("sampled before checking the input")

    monkeypatch.setattr(report_module, "sample_completions", no_sampling)
    call = {"models": {"after": str(tiny_model_path)}, "prompts": ["P"], "concepts": [ANIMAL], **kwargs}
    with pytest.raises(error, match=match):
        diversity_report(call.pop("models"), call.pop("prompts"), call.pop("concepts"), **call)


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys):
    missing = str(tmp_path / "missing_model")
    cases = [
        (["--model", missing], f"model path {missing!r} does not exist"),
        (["--model", "tiny", "--concept_options"], "concept 'animal' has no options"),
        (["--model", "tiny", "--num_samples", "0"], "num_samples must be an integer >= 1"),
        (["--model", "tiny", "--case_variants", "title"], "unknown case variant 'title'"),
    ]
    for argv, message in cases:
        assert main([*argv, "--output_dir", str(tmp_path / "out"), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("trl-ext-diversity-report: error: ") and message in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_cli_end_to_end_on_the_tiny_model_and_an_adapter(tiny_model_path, tmp_path, capsys):
    """--baseline: the tiny model; --model: a fresh LoRA adapter folder (B = 0, so the same function) without
    tokenizer files (its base model's tokenizer is used); same seed, so both sample the same completions."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from tests.conftest import small_lora

    adapter = tmp_path / "adapter"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_path), small_lora()).save_pretrained(adapter)
    out = tmp_path / "report"
    argv = ["--model", str(adapter), "--baseline", str(tiny_model_path), "--prompt", "Answer: x1=", "I love",
            "--concept_name", "animal", "--concept_options", "fox", "cat", "--num_samples", "12", "--n_clusters",
            "2", "--max_new_tokens", "16", "--seed", "1", "--stop_strings", r"\n", "--output_dir", str(out),
            "--device", "cpu", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / JSON_NAME).read_text(encoding="utf-8"))
    assert (out / PNG_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    settings = report["settings"]
    assert settings["num_samples"] == 12 and settings["n_clusters"] == 2 and settings["stop_strings"] == ["\n"]
    assert settings["embedder"] == "all-MiniLM-L6-v2" and settings["concepts"][0]["options"] == ["fox", "cat"]
    assert list(report["models"]) == ["before", "after"] and report["models"]["after"]["source"] == str(adapter)
    assert [p["prompt"] for p in report["prompts"]] == ["Answer: x1=", "I love"]
    for entry in report["prompts"]:
        before, after = entry["models"]["before"], entry["models"]["after"]
        assert len(before["completions"]) == 12 and not any("\n" in t for t in before["completions"])
        assert before == after  # the same function sampled with the same seed
        shares = entry["concepts"]["animal"]["models"]["after"]
        assert sum(shares["option_shares"].values()) + shares["no_match_share"] == pytest.approx(1.0)
    printed = capsys.readouterr().out
    assert "prompt 1: 'I love'" in printed and "\nbefore " in printed and "\nafter " in printed
    assert f"wrote {out / JSON_NAME}" in printed
