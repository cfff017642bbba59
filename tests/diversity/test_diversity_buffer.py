"""The replay buffer (docs/diversity.md, "Replay buffer") with a deterministic fake embedder."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from trl_ext.common.errors import ConfigError, MissingPathError
from trl_ext.diversity import buffer as buffer_module
from trl_ext.diversity.buffer import ReplayBuffer

CENTERS = {"A": (10.0, 0.0, 0.0), "B": (-10.0, 0.0, 0.0), "C": (0.0, 10.0, 0.0)}


def fake_embed(texts: list[str]) -> np.ndarray:
    """Text "A7" -> the center of group A plus small noise fixed by the text's hash."""
    out = []
    for text in texts:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        noise = np.random.default_rng(seed).normal(scale=0.5, size=3)
        out.append(np.asarray(CENTERS.get(text[:1], (0.0, 0.0, 10.0))) + noise)
    return np.asarray(out, dtype=np.float32)


def random_embed(texts: list[str]) -> np.ndarray:
    return np.stack([np.random.default_rng(int(t)).normal(size=4) for t in texts]).astype(np.float32)


class CountingEmbed:
    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, texts):
        self.calls.append(list(texts))
        return fake_embed(texts)


def test_min_samples_gives_none_then_labels():
    embed = CountingEmbed()
    buf = ReplayBuffer(embed, n_clusters=2, buffer_size=20, update_clusters_every=100, min_samples_for_clustering=6)
    assert buf.add(["A0", "B0", "A1"]) is None
    assert not buf.is_clustered
    labels = buf.add(["A2", "B1", "B2"])  # size 6: first fit
    assert labels is not None and labels.dtype == np.int64
    assert labels[0] != labels[1] and labels[1] == labels[2]
    assert buf.refit_count == 1 and buf.counter == 0
    assert embed.calls == [["A0", "B0", "A1"], ["A2", "B1", "B2"]]  # embedded once each
    centers = buf.cluster_centers.copy()
    more = buf.add(["A3", "B3"])  # counter 2 < 100: no refit, labels from the current centers
    assert np.array_equal(buf.cluster_centers, centers) and buf.counter == 2
    assert more[0] == labels[0] and more[1] == labels[1]


def test_prefill_does_not_cluster_or_count():
    buf = ReplayBuffer(fake_embed, n_clusters=2, buffer_size=20, min_samples_for_clustering=4)
    buf.prefill([f"A{i}" for i in range(5)] + [f"B{i}" for i in range(5)])
    assert len(buf) == 10 and not buf.is_clustered and buf.counter == 0
    assert buf.add(["A9"]).tolist() == [buf.assign(fake_embed(["A0"]))[0]]


def test_eviction_keeps_the_quota_and_the_newest():
    buf = ReplayBuffer(fake_embed, n_clusters=2, buffer_size=10, update_clusters_every=8, min_samples_for_clustering=4)
    buf.add([f"A{i}" for i in range(4)] + [f"B{i}" for i in range(4)])  # first fit, size 8
    new = [f"A{i}" for i in range(4, 12)]
    labels = buf.add(new)  # counter 8, size 16 > 10: evict, then refit
    # quota 10 // 2 = 5 per old cluster: the 5 newest A's and the 4 B's, then the newest leftover A (A6)
    assert buf.texts == ["B0", "B1", "B2", "B3", *[f"A{i}" for i in range(6, 12)]]
    assert len(buf) == 10 and buf.refit_count == 2 and buf.counter == 0
    assert len(labels) == len(new) and len(set(labels.tolist())) == 1  # labels of all new texts, evicted or not


def test_eviction_before_the_first_fit_keeps_the_newest():
    buf = ReplayBuffer(fake_embed, n_clusters=2, buffer_size=6, min_samples_for_clustering=4)
    buf.prefill([f"A{i}" for i in range(5)])
    buf.add(["B0", "B1", "B2"])
    assert buf.texts == ["A2", "A3", "A4", "B0", "B1", "B2"]


def _run(seed: int, record: list | None = None) -> ReplayBuffer:
    buf = ReplayBuffer(
        random_embed, n_clusters=3, buffer_size=30, update_clusters_every=5, min_samples_for_clustering=6, seed=seed
    )
    for step in range(6):
        buf.add([str(step * 7 + i) for i in range(7)])
    return buf


def test_refits_are_deterministic_per_seed(monkeypatch):
    seeds, inits = [], []
    real = buffer_module.KMeans

    def recording(**kwargs):
        seeds.append(kwargs["random_state"])
        inits.append((kwargs["n_init"], kwargs.get("init", "k-means++")))
        return real(**kwargs)

    monkeypatch.setattr(buffer_module, "KMeans", recording)
    centers = []
    original_refit = ReplayBuffer._refit

    def refit(self):
        centers.append(None if self.cluster_centers is None else self.cluster_centers.copy())
        original_refit(self)

    monkeypatch.setattr(ReplayBuffer, "_refit", refit)
    a = _run(seed=7)
    assert seeds == [7, 8, 9, 10, 11, 12]  # seed + refit count
    # the first fit: k-means++ N_INIT times; every later one: once, from the centers of the previous fit
    assert inits[0] == (buffer_module.N_INIT, "k-means++")
    for (n_init, init), previous in zip(inits[1:], centers[1:]):
        assert n_init == 1 and np.array_equal(init, previous.astype(np.float64))
    b = _run(seed=7)
    assert np.array_equal(a.cluster_centers, b.cluster_centers) and a.texts == b.texts
    assert np.array_equal(a.labels(), b.labels())


def test_state_round_trip_gives_identical_labels(tmp_path):
    a = _run(seed=3)
    a.add(["100", "101"])  # counter 2: clusters kept, the counter is part of the state
    probe = random_embed([str(i) for i in range(200, 240)])
    state = a.state_dict()
    b = ReplayBuffer(random_embed)
    b.load_state_dict(state)
    assert b.config() == a.config() and b.texts == a.texts and b.counter == a.counter == 2
    assert np.array_equal(b.assign(probe), a.assign(probe))
    a.save(tmp_path / "ckpt", prefix="replay_buffer_dog")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "replay_buffer_dog.json",
        "replay_buffer_dog.safetensors",
    ]
    c = ReplayBuffer(random_embed)
    c.load(tmp_path / "ckpt", prefix="replay_buffer_dog")
    assert c.texts == a.texts and c.refit_count == a.refit_count and c.counter == a.counter
    assert np.array_equal(c.embeddings, a.embeddings) and np.array_equal(c.cluster_centers, a.cluster_centers)
    assert np.array_equal(c.labels(), a.labels()) and np.array_equal(c.assign(probe), a.assign(probe))
    # both continue identically
    assert np.array_equal(c.add(["300", "301", "302"]), a.add(["300", "301", "302"]))
    assert np.array_equal(c.cluster_centers, a.cluster_centers)
    with pytest.raises(MissingPathError, match="replay_buffer_cat.json"):
        c.load(tmp_path / "ckpt", prefix="replay_buffer_cat")


def test_empty_buffer_round_trip(tmp_path):
    a = ReplayBuffer(fake_embed, name="cat")
    a.save(tmp_path)
    b = ReplayBuffer(fake_embed)
    b.load(tmp_path)
    assert len(b) == 0 and not b.is_clustered and b.name == "cat"
    assert b.add(["A0"]) is None


def test_config_errors():
    with pytest.raises(ConfigError, match=r"min_samples_for_clustering \(3\) must be at least n_clusters \(5\)"):
        ReplayBuffer(fake_embed, min_samples_for_clustering=3)
    with pytest.raises(ConfigError, match=r"'dog': buffer_size \(8\) must be at least min_samples_for_clustering"):
        ReplayBuffer(fake_embed, buffer_size=8, name="dog")
