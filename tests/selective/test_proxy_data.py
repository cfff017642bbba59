"""ProxyCycler: restart semantics of both cycling modes, seeding, DDP sharding, resuming, and every error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trl_ext.selective.proxy import ProxyCycler, paired_batches


def draw(cycler: ProxyCycler, steps: int) -> list[dict]:
    return [cycler.next_batches() for _ in range(steps)]


def stream(steps: list[dict], name: str) -> list:
    return [s[name] for s in steps]


# ----------------------------------------------------------------- hand-worked sequences (dataset order)
def test_continuous_restarts_each_stream_on_its_own():
    cycler = ProxyCycler({"positive": list(range(5)), "negative": list(range(10, 13))}, batch_size=2, shuffle=False)
    assert cycler.pass_lengths == {"positive": 3, "negative": 2}
    steps = draw(cycler, 7)
    assert stream(steps, "positive") == [[0, 1], [2, 3], [4], [0, 1], [2, 3], [4], [0, 1]]
    assert stream(steps, "negative") == [[10, 11], [12], [10, 11], [12], [10, 11], [12], [10, 11]]
    assert cycler.restarts == {"positive": 2, "negative": 3}
    assert cycler.epoch_length(7) == 7  # an epoch is a pass over T
    assert cycler.epoch == 0


def test_synchronized_exhausted_streams_wait_for_the_longest():
    data = {"positive": list(range(5)), "negative": list(range(10, 13))}
    cycler = ProxyCycler(data, batch_size=2, cycling="synchronized", shuffle=False, num_outcome_batches=2)
    assert cycler.epoch_length() == 3  # the longest pass: positive, 3 batches
    steps = draw(cycler, 7)
    assert stream(steps, "positive") == [[0, 1], [2, 3], [4], [0, 1], [2, 3], [4], [0, 1]]
    assert stream(steps, "negative") == [[10, 11], [12], None, [10, 11], [12], None, [10, 11]]
    assert cycler.epoch == 2
    assert cycler.restarts == {"positive": 2, "negative": 2}


def test_synchronized_epoch_counts_a_longer_outcome_stream():
    data = {"positive": list(range(5)), "negative": list(range(10, 13))}
    cycler = ProxyCycler(data, batch_size=2, cycling="synchronized", shuffle=False, num_outcome_batches=4)
    assert cycler.epoch_length() == 4
    assert cycler.epoch_length(2) == 3 and cycler.epoch_length(9) == 9
    steps = draw(cycler, 5)
    assert stream(steps, "positive") == [[0, 1], [2, 3], [4], None, [0, 1]]
    assert stream(steps, "negative") == [[10, 11], [12], None, None, [10, 11]]
    no_outcome = ProxyCycler(data, batch_size=2, cycling="synchronized", shuffle=False)
    assert no_outcome.epoch_length() == 3  # None counts no outcome stream


def test_drop_last_and_collate_fn():
    cycler = ProxyCycler({"p": list(range(5))}, batch_size=2, shuffle=False, drop_last=True, collate_fn=sum)
    assert cycler.pass_lengths == {"p": 2}
    assert [b["p"] for b in draw(cycler, 4)] == [0 + 1, 2 + 3, 0 + 1, 2 + 3]


def test_hf_dataset_rows_reach_the_collator():
    from datasets import Dataset

    ds = Dataset.from_list([{"x": i, "s": f"row{i}"} for i in range(4)])
    seen = []
    cycler = ProxyCycler(
        {"p": ds}, batch_size=3, shuffle=False, collate_fn=lambda rows: seen.append(rows) or len(rows)
    )
    assert [b["p"] for b in draw(cycler, 2)] == [3, 1]
    assert seen[0] == [{"x": 0, "s": "row0"}, {"x": 1, "s": "row1"}, {"x": 2, "s": "row2"}]
    assert cycler.next_indices() == {"p": [0, 1, 2]}


# ----------------------------------------------------------------- shuffling and seeding
def test_each_pass_is_the_documented_permutation():
    n, bs, seed = 7, 3, 11
    cycler = ProxyCycler({"a": list(range(n)), "b": list(range(n))}, batch_size=bs, seed=seed)
    got = [x for step in draw(cycler, 3 * 3) for x in step["a"]]  # 3 passes of 3 batches (3, 3, 1)
    expected = [int(i) for r in range(3) for i in np.random.default_rng(seed + r).permutation(n)]
    assert got == expected
    cycler2 = ProxyCycler({"a": list(range(n)), "b": list(range(n))}, batch_size=bs, seed=seed)
    steps = draw(cycler2, 6)
    assert stream(steps, "a") == stream(steps, "b")  # equal-length streams stay index-aligned


def test_synchronized_reshuffles_every_stream_with_the_epoch():
    cycler = ProxyCycler({"a": list(range(4)), "b": list(range(6))}, batch_size=2, cycling="synchronized", seed=5)
    steps = draw(cycler, 6)  # two epochs of 3 steps
    assert [x for s in stream(steps, "a")[3:5] for x in s] == [int(i) for i in np.random.default_rng(6).permutation(4)]
    assert [x for s in stream(steps, "b")[3:6] for x in s] == [int(i) for i in np.random.default_rng(6).permutation(6)]
    assert stream(steps, "a")[2] is None and stream(steps, "a")[5] is None


def test_determinism_by_seed_and_no_global_rng_use():
    data = {"positive": list(range(9)), "negative": list(range(4))}
    np.random.seed(0)
    a = draw(ProxyCycler(data, batch_size=2, seed=3), 12)
    np.random.seed(123)
    b = draw(ProxyCycler(data, batch_size=2, seed=3), 12)
    c = draw(ProxyCycler(data, batch_size=2, seed=4), 12)
    assert a == b
    assert a != c


# ----------------------------------------------------------------- sharding
@pytest.mark.parametrize("cycling", ["continuous", "synchronized"])
def test_two_processes_see_disjoint_slices_covering_each_pass(cycling):
    data = {"positive": list(range(12)), "negative": list(range(100, 108))}
    ranks = [ProxyCycler(data, batch_size=2, cycling=cycling, seed=1, shard=(i, 2)) for i in range(2)]
    assert ranks[0].pass_lengths == ranks[1].pass_lengths == {"positive": 3, "negative": 2}
    steps = [draw(r, 3) for r in ranks]  # one full pass of "positive"
    for name, n in (("positive", 12), ("negative", 8)):
        per_rank = [[x for b in stream(s, name)[: ranks[0].pass_lengths[name]] for x in b] for s in steps]
        assert not set(per_rank[0]) & set(per_rank[1])
        assert sorted(per_rank[0] + per_rank[1]) == sorted(data[name])
        assert len(per_rank[0]) == len(per_rank[1]) == n // 2
    assert ranks[0].state_dict() == ranks[1].state_dict()  # positions are identical on every process


def test_uneven_shards_are_padded_cyclically():
    data = {"p": list(range(5))}
    r0 = ProxyCycler(data, batch_size=2, shuffle=False, shard=(0, 2))
    r1 = ProxyCycler(data, batch_size=2, shuffle=False, shard=(1, 2))
    # padded order 0 1 2 3 4 0 -> rank 0 takes 0 2 4, rank 1 takes 1 3 0
    assert [b["p"] for b in draw(r0, 3)] == [[0, 2], [4], [0, 2]]
    assert [b["p"] for b in draw(r1, 3)] == [[1, 3], [0], [1, 3]]


# ----------------------------------------------------------------- resuming
@pytest.mark.parametrize("cycling", ["continuous", "synchronized"])
@pytest.mark.parametrize("saved_after", [0, 2, 5])
def test_state_round_trip_reproduces_the_next_batches(cycling, saved_after):
    data = {"positive": list(range(7)), "negative": list(range(20, 23))}
    kwargs = {"batch_size": 2, "cycling": cycling, "seed": 9, "num_outcome_batches": 3, "shard": (1, 2)}
    original = ProxyCycler(data, **kwargs)
    draw(original, saved_after)
    state = json.loads(json.dumps(original.state_dict()))  # survives a JSON checkpoint
    expected = draw(original, 8)
    resumed = ProxyCycler(data, **kwargs)
    resumed.load_state_dict(state)
    assert draw(resumed, 8) == expected
    rank0 = ProxyCycler(data, **{**kwargs, "shard": (0, 2)})
    draw(rank0, saved_after)
    rank0_resumed = ProxyCycler(data, **{**kwargs, "shard": (0, 2)})
    rank0_resumed.load_state_dict(state)  # rank 1's state restores rank 0 (and vice versa)
    assert draw(rank0_resumed, 8) == draw(rank0, 8)


def test_state_from_a_different_cycler_is_refused():
    state = ProxyCycler({"p": list(range(6))}, batch_size=2).state_dict()
    with pytest.raises(ValueError, match=r"batch_size: saved 2, here 3"):
        ProxyCycler({"p": list(range(6))}, batch_size=3).load_state_dict(state)
    with pytest.raises(ValueError, match=r"sizes: saved \{'p': 6\}, here \{'p': 7\}"):
        ProxyCycler({"p": list(range(7))}, batch_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match=r"cycling: saved 'continuous', here 'synchronized'"):
        ProxyCycler({"p": list(range(6))}, batch_size=2, cycling="synchronized").load_state_dict(state)


# ----------------------------------------------------------------- errors
def test_documented_errors():
    with pytest.raises(
        ValueError, match=r"unknown proxy cycling mode 'chaotic'; known modes: continuous, synchronized"
    ):
        ProxyCycler({"p": [1]}, batch_size=1, cycling="chaotic")
    with pytest.raises(ValueError, match=r"proxy dataset 'negative' is empty"):
        ProxyCycler({"positive": [1, 2], "negative": []}, batch_size=1)
    for bad in (0, -3):
        with pytest.raises(ValueError, match=rf"proxy batch_size must be an integer >= 1, got {bad}"):
            ProxyCycler({"p": [1]}, batch_size=bad)
    with pytest.raises(ValueError, match="at least one proxy dataset"):
        ProxyCycler({}, batch_size=1)
    with pytest.raises(ValueError, match=r"shard must be \(process_index, num_processes\)"):
        ProxyCycler({"p": [1]}, batch_size=1, shard=(2, 2))
    with pytest.raises(ValueError, match="num_outcome_batches must be >= 0"):
        ProxyCycler({"p": [1]}, batch_size=1, num_outcome_batches=-1)
    with pytest.raises(ValueError, match=r"proxy dataset 'p' has 3 examples: 2 per process over 2 process\(es\)"):
        ProxyCycler({"p": [1, 2, 3]}, batch_size=4, shard=(0, 2), drop_last=True)
    with pytest.raises(ValueError, match="continuous cycling: an epoch is one pass over the outcome data"):
        ProxyCycler({"p": [1]}, batch_size=1).epoch_length()
    with pytest.raises(IndexError, match="stream 'p' has 1 batches per pass, asked for 1"):
        ProxyCycler({"p": [1]}, batch_size=1).batch_indices("p", 0, 1)


# ----------------------------------------------------------------- pairs
def _rows(answers: list[str], prompts: list[str] | None = None) -> list[dict]:
    prompts = prompts or [f"q{i}" for i in range(len(answers))]
    return [
        {"prompt": [{"role": "user", "content": p}], "completion": [{"role": "assistant", "content": a}]}
        for p, a in zip(prompts, answers)
    ]


def test_paired_batches_builds_preference_rows():
    from datasets import Dataset

    pos, neg = _rows(["a!", "b!"]), _rows(["a", "b"])
    pairs = paired_batches(pos, neg)
    assert pairs == [
        {"prompt": pos[0]["prompt"], "chosen": pos[0]["completion"], "rejected": neg[0]["completion"]},
        {"prompt": pos[1]["prompt"], "chosen": pos[1]["completion"], "rejected": neg[1]["completion"]},
    ]
    as_dataset = paired_batches(Dataset.from_list(pos), Dataset.from_list(neg))
    assert isinstance(as_dataset, Dataset) and as_dataset.to_list() == pairs
    cycler = ProxyCycler({"pairs": as_dataset}, batch_size=2, seed=0)
    assert sorted(r["chosen"][0]["content"] for r in cycler.next_batches()["pairs"]) == ["a!", "b!"]


def test_paired_batches_errors():
    with pytest.raises(ValueError, match="equal lengths: positive has 3 rows, negative has 2"):
        paired_batches(_rows(["a", "b", "c"]), _rows(["a", "b"]))
    with pytest.raises(ValueError, match=r"pair 1: the prompts differ"):
        paired_batches(_rows(["a", "b"], ["x", "y"]), _rows(["a", "b"], ["x", "z"]))
    with pytest.raises(ValueError, match=r"negative row 0 has no field\(s\) \['completion'\]"):
        paired_batches(_rows(["a"]), [{"prompt": "x"}])
