"""The selective-generalisation demo: scorers, generated data, and one short empirical check of the trade-off."""

from __future__ import annotations

import pytest

from trl_ext.data import selective_demo as demo
from trl_ext.data.proxy import paired_batches
from trl_ext.data.selective_demo import MARKER, make_aligned_base_data, make_demo, proxy_score, task_score


def _user(row) -> str:
    return row["prompt"][0]["content"]


def _answer(row) -> str:
    return row["completion"][0]["content"]


def _letters(row) -> tuple[str, ...]:
    return tuple(_user(row).split()[1:])


# ----------------------------------------------------------------- scorers
@pytest.mark.parametrize(
    "completion, expected",
    [
        ("c b a", 1.0),
        ("  c b a\n", 1.0),
        ("c b a Thanks!", 1.0),  # the marker is not part of the task
        ("c b", 2 / 3),
        ("c x a y", 2 / 4),
        ("a b c", 1 / 3),  # copying gets the middle letter only
        ("", 0.0),
        ("cba", 0.0),
    ],
)
def test_task_score_hand_worked(completion, expected):
    assert task_score("Reverse: a b c", completion) == pytest.approx(expected)


def test_task_score_accepts_messages_and_rejects_other_prompts():
    assert task_score([{"role": "user", "content": "Reverse: s t x"}], "x t s") == 1.0
    with pytest.raises(ValueError, match="not an outcome prompt"):
        task_score("Copy: a b c", "a b c")


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("a b c Thanks!", 1.0),
        ("c Thanks!  \n", 1.0),
        ("Thanks!", 1.0),
        ("Thanks! a", 0.0),
        ("a thanks!", 0.0),
        ("", 0.0),
    ],
)
def test_proxy_score_hand_worked(completion, expected):
    assert proxy_score(completion) == expected


# ----------------------------------------------------------------- generated data
def test_make_demo_sizes_content_and_determinism():
    data = make_demo(num_outcome=40, num_proxy=9, num_negative=6, num_eval=12, seed=3)
    assert {k: len(v) for k, v in data.items()} == {
        "outcome_train": 40,
        "outcome_eval": 12,
        "proxy_positive": 9,
        "proxy_negative": 6,
        "proxy_eval": 12,
    }
    again = make_demo(num_outcome=40, num_proxy=9, num_negative=6, num_eval=12, seed=3)
    assert all(data[k].to_list() == again[k].to_list() for k in data)
    other = make_demo(num_outcome=40, num_proxy=9, num_negative=6, num_eval=12, seed=4)
    assert data["outcome_train"].to_list() != other["outcome_train"].to_list()

    for row in data["outcome_train"].to_list() + data["outcome_eval"].to_list():
        assert task_score(_user(row), _answer(row)) == 1.0 and proxy_score(_answer(row)) == 0.0
    assert all(proxy_score(_answer(r)) == 1.0 for r in data["proxy_positive"].to_list() + data["proxy_eval"].to_list())
    assert all(proxy_score(_answer(r)) == 0.0 for r in data["proxy_negative"])
    pos, neg = data["proxy_positive"].to_list(), data["proxy_negative"].to_list()
    for p, n in zip(pos, neg):  # A⁻[i] is A⁺[i] without the marker
        assert p["prompt"] == n["prompt"] and _answer(p) == f"{_answer(n)} {MARKER}"
    assert {_user(r).split()[0] for r in pos} == set(demo.PROXY_INSTRUCTIONS)
    assert all(not _user(r).startswith(demo.TASK_INSTRUCTION) for r in pos)
    assert len(paired_batches(data["proxy_positive"].select(range(6)), data["proxy_negative"])) == 6


def test_evaluation_prompts_never_occur_in_training_data():
    data = make_demo(seed=0)
    train = {_letters(r) for k in ("outcome_train", "proxy_positive", "proxy_negative") for r in data[k]}
    train |= {_letters(r) for r in make_aligned_base_data(seed=0)}
    held_out = {_letters(r) for k in ("outcome_eval", "proxy_eval") for r in data[k]}
    assert not train & held_out
    proxy = {_letters(r) for r in data["proxy_positive"]}
    assert not proxy & {_letters(r) for r in make_aligned_base_data(seed=0)}


def test_make_demo_rejects_impossible_sizes():
    with pytest.raises(ValueError, match=r"outcome_train: asked for 5000 rows, the 'train' split has 1365 prompts"):
        make_demo(num_outcome=5000)
    with pytest.raises(ValueError, match=r"num_proxy must be >= 0, got -1"):
        make_demo(num_proxy=-1)
    with pytest.raises(ValueError, match="unknown proxy instruction 'Shout:'"):
        demo.proxy_row("abc", "Shout:")


# ----------------------------------------------------------------- the trade-off, measured
@pytest.mark.slow
def test_naive_outcome_sft_erodes_the_aligned_proxy(tmp_path, tiny_model_path):
    """Aligned base: proxy high. Short naive outcome SFT: task up, proxy down (seeded, CPU, ~35 s)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    data = make_demo(seed=0)
    base = demo.train_aligned_base(tmp_path / "aligned", seed=0, model_path=tiny_model_path)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    aligned = demo.evaluate_demo(model, tokenizer, data)
    model = demo.sft_stage(
        model, tokenizer, data["outcome_train"], tmp_path / "naive", max_steps=150, learning_rate=2e-3, seed=0
    )
    naive = demo.evaluate_demo(model, tokenizer, data)
    assert aligned["proxy"] >= 0.9, aligned
    assert aligned["task"] <= 0.4, aligned
    assert naive["task"] >= aligned["task"] + 0.3, (aligned, naive)
    assert naive["proxy"] <= aligned["proxy"] - 0.6, (aligned, naive)
