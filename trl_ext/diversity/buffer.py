"""The replay buffer of one option: texts, their embeddings, k-means clusters, an update counter
(docs/diversity.md, "Replay buffer").

``add(texts)``: embed once, append, ``counter += len(texts)``. The clusters are refitted when the buffer holds at
least ``min_samples_for_clustering`` texts and either it has no clusters yet or ``counter ≥ update_clusters_every``:
first evict down to ``buffer_size`` (newest first, at most ``buffer_size // K`` per old cluster, then the newest
leftovers), then fit ``KMeans(K, random_state=seed + refit_count)`` and reset the counter. The labels
of the new texts come from their stored embeddings (nearest center); below ``min_samples_for_clustering`` there are
no clusters and ``add`` returns None (the open-block loss of that option is then 0).

**Decision:** the buffer keeps the fitted cluster centers, not the ``KMeans`` object, and assigns labels itself
(nearest center in float64, ties to the lowest index, as ``KMeans.predict``); the centers are saved and restored,
so labels after a restore are identical to the labels before it, with no refit and no pickle.

**Decision** (warm refits): the first fit runs k-means++ ``N_INIT`` (10) times and keeps the best; every later refit
starts Lloyd's iterations once from the current centers (``init=centers, n_init=1``). A refit then costs one run
instead of ten (it happens every ``update_clusters_every`` texts, i.e. about every step at the defaults), and cluster
``k`` keeps meaning the same region of the embedding space from one refit to the next, so the open-block masses of
consecutive steps compare like with like.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file
from sklearn.cluster import KMeans

from trl_ext.common.errors import ConfigError, DataError, MissingPathError

__all__ = ["N_INIT", "ReplayBuffer"]

N_INIT = 10
"""k-means restarts per refit (fixed, so that a refit is a function of the data and the seed only)."""

Embedder = Callable[[list[str]], Any]
"""``embed(texts) -> (len(texts), d)`` array-like of embeddings."""

_CONFIG_KEYS = ("n_clusters", "buffer_size", "update_clusters_every", "min_samples_for_clustering", "seed")
_STATE_VERSION = 1


class ReplayBuffer:
    """Texts of one option with their embeddings and k-means clusters (docs/diversity.md, "Replay buffer").

    Args:
        embed: ``embed(texts) -> (n, d)`` embeddings (a sentence-transformer in training, any deterministic
            function in tests); called once per :meth:`add`/:meth:`prefill`, never on stored texts.
        n_clusters: K (default 5).
        buffer_size: the most texts kept after an eviction (default 500); ``buffer_size // K`` per old cluster
            are kept first.
        update_clusters_every: refit once this many texts were added since the last fit (default 20).
        min_samples_for_clustering: no clusters below this many texts (default 10); at least K.
        seed: the k-means seed of the first fit; refit ``r`` uses ``seed + r``.
        name: the option's name, used in messages.

    Raises:
        ConfigError: a value out of range (the message names it).
    """

    def __init__(
        self,
        embed: Embedder,
        n_clusters: int = 5,
        buffer_size: int = 500,
        update_clusters_every: int = 20,
        min_samples_for_clustering: int = 10,
        seed: int = 0,
        name: str = "option",
    ) -> None:
        self.embed = embed
        self.name = name
        self.n_clusters = int(n_clusters)
        self.buffer_size = int(buffer_size)
        self.update_clusters_every = int(update_clusters_every)
        self.min_samples_for_clustering = int(min_samples_for_clustering)
        self.seed = int(seed)
        self._check_config()
        self.texts: list[str] = []
        self.embeddings: np.ndarray = np.zeros((0, 0), dtype=np.float32)
        self.cluster_centers: np.ndarray | None = None
        self.counter = 0
        self.refit_count = 0

    # ------------------------------------------------------------------------------------------------ config
    def _check_config(self) -> None:
        where = f"replay buffer {self.name!r}"
        if self.n_clusters < 1:
            raise ConfigError(f"{where}: n_clusters must be at least 1, got {self.n_clusters}")
        if self.update_clusters_every < 1:
            raise ConfigError(f"{where}: update_clusters_every must be at least 1, got {self.update_clusters_every}")
        if self.min_samples_for_clustering < self.n_clusters:
            raise ConfigError(
                f"{where}: min_samples_for_clustering ({self.min_samples_for_clustering}) must be at least "
                f"n_clusters ({self.n_clusters})"
            )
        if self.buffer_size < self.min_samples_for_clustering:
            raise ConfigError(
                f"{where}: buffer_size ({self.buffer_size}) must be at least min_samples_for_clustering "
                f"({self.min_samples_for_clustering})"
            )

    def config(self) -> dict[str, int]:
        """The hyperparameters, as saved in :meth:`state_dict`."""
        return {key: getattr(self, key) for key in _CONFIG_KEYS}

    # ------------------------------------------------------------------------------------------------ state
    def __len__(self) -> int:
        return len(self.texts)

    @property
    def is_clustered(self) -> bool:
        """Whether the buffer has fitted clusters (labels are available)."""
        return self.cluster_centers is not None

    def _embed(self, texts: list[str]) -> np.ndarray:
        return self._check_embeddings(texts, self.embed(texts))

    def _check_embeddings(self, texts: list[str], embeddings: Any) -> np.ndarray:
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(texts):
            raise DataError(
                f"replay buffer {self.name!r}: embed returned shape {emb.shape} for {len(texts)} texts; "
                f"expected ({len(texts)}, d)"
            )
        if len(self.texts) and emb.shape[1] != self.embeddings.shape[1]:
            raise DataError(
                f"replay buffer {self.name!r}: embed returned width {emb.shape[1]}, the buffer holds width "
                f"{self.embeddings.shape[1]}"
            )
        if not np.isfinite(emb).all():
            raise DataError(f"replay buffer {self.name!r}: embed returned non-finite values")
        return emb

    def _append(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.embeddings.shape[1]), dtype=np.float32)
        emb = self._embed(texts) if embeddings is None else self._check_embeddings(texts, embeddings)
        self.embeddings = emb.copy() if not self.texts else np.concatenate([self.embeddings, emb], axis=0)
        self.texts.extend(texts)
        return emb

    def assign(self, embeddings: np.ndarray) -> np.ndarray | None:
        """Nearest-center labels ``argmin_k ‖x − c_k‖²`` (float64, ties to the lowest k); None without clusters."""
        if self.cluster_centers is None:
            return None
        x = np.asarray(embeddings, dtype=np.float64)
        c = self.cluster_centers.astype(np.float64)
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        d2 = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)
        return d2.argmin(axis=1).astype(np.int64)

    def labels(self) -> np.ndarray | None:
        """The labels of every stored text (oldest first), or None without clusters."""
        return self.assign(self.embeddings)

    # ----------------------------------------------------------------------------------------------- update
    def prefill(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> None:
        """Append texts (embedded once, or with their given ``embeddings``) without clustering and without counting
        them as updates."""
        self._append(texts, embeddings)

    def add(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray | None:
        """Embed ``texts`` once (or take their ``embeddings``, e.g. gathered from every process), append them, refit
        when due (see the module docstring); their labels or None.

        Returns:
            ``(len(texts),)`` int64 labels in ``[0, n_clusters)``, or None while the buffer has fewer than
            ``min_samples_for_clustering`` texts (no clusters yet).
        """
        emb = self._append(texts, embeddings)
        self.counter += len(texts)
        due = self.cluster_centers is None or self.counter >= self.update_clusters_every
        if due and len(self.texts) >= self.min_samples_for_clustering:
            self._evict()
            self._refit()
        return self.assign(emb)

    def _evict(self) -> None:
        """Keep at most ``buffer_size`` texts: newest first, ``buffer_size // K`` per old cluster, then the newest
        leftovers; the kept texts stay in their order. Without old clusters, the newest ``buffer_size``."""
        n = len(self.texts)
        if n <= self.buffer_size:
            return
        old = self.assign(self.embeddings)
        if old is None:
            keep = np.arange(n - self.buffer_size, n)
        else:
            quota = self.buffer_size // self.n_clusters
            counts = np.zeros(self.n_clusters, dtype=np.int64)
            kept = np.zeros(n, dtype=bool)
            for i in range(n - 1, -1, -1):
                if counts[old[i]] < quota:
                    counts[old[i]] += 1
                    kept[i] = True
            room = self.buffer_size - int(kept.sum())
            leftovers = np.flatnonzero(~kept)[::-1][:room]  # newest leftovers
            kept[leftovers] = True
            keep = np.flatnonzero(kept)
        self.texts = [self.texts[i] for i in keep]
        self.embeddings = self.embeddings[keep]

    def _refit(self) -> None:
        seed = self.seed + self.refit_count
        if self.cluster_centers is None or self.cluster_centers.shape[1] != self.embeddings.shape[1]:
            kmeans = KMeans(n_clusters=self.n_clusters, n_init=N_INIT, random_state=seed)
        else:  # warm refit from the current centers (see the module docstring)
            init = self.cluster_centers.astype(np.float64)
            kmeans = KMeans(n_clusters=self.n_clusters, init=init, n_init=1, random_state=seed)
        kmeans.fit(self.embeddings.astype(np.float64))
        self.cluster_centers = np.ascontiguousarray(kmeans.cluster_centers_, dtype=np.float32)
        self.refit_count += 1
        self.counter = 0

    # ------------------------------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """The whole state: JSON-able values plus the ``embeddings`` and ``cluster_centers`` float32 arrays."""
        return {
            "version": _STATE_VERSION,
            "name": self.name,
            "config": self.config(),
            "texts": list(self.texts),
            "counter": self.counter,
            "refit_count": self.refit_count,
            "embeddings": self.embeddings.copy(),
            "cluster_centers": None if self.cluster_centers is None else self.cluster_centers.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; the hyperparameters are taken from the state.

        Raises:
            DataError: a state whose arrays do not match its texts or its ``n_clusters``.
        """
        config = {key: int(state["config"][key]) for key in _CONFIG_KEYS}
        embeddings = np.asarray(state["embeddings"], dtype=np.float32)
        texts = [str(t) for t in state["texts"]]
        centers = state.get("cluster_centers")
        where = f"replay buffer state {state.get('name', self.name)!r}"
        if (len(texts) or embeddings.size) and (embeddings.ndim != 2 or embeddings.shape[0] != len(texts)):
            raise DataError(f"{where}: embeddings have shape {embeddings.shape} for {len(texts)} texts")
        if centers is not None:
            centers = np.asarray(centers, dtype=np.float32)
            if centers.ndim != 2 or centers.shape[0] != config["n_clusters"]:
                raise DataError(
                    f"{where}: cluster_centers have shape {centers.shape}, n_clusters is {config['n_clusters']}"
                )
        for key, value in config.items():
            setattr(self, key, value)
        self._check_config()
        self.name = str(state.get("name", self.name))
        self.texts = texts
        self.embeddings = embeddings.reshape(len(texts), -1) if len(texts) else np.zeros((0, 0), np.float32)
        self.cluster_centers = centers
        self.counter = int(state["counter"])
        self.refit_count = int(state["refit_count"])

    def save(self, folder: str | Path, prefix: str = "replay_buffer") -> None:
        """Write ``<prefix>.json`` (texts, counters, config) and ``<prefix>.safetensors`` (arrays) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        arrays = {"embeddings": state.pop("embeddings")}
        centers = state.pop("cluster_centers")
        if centers is not None:
            arrays["cluster_centers"] = centers
        save_file(arrays, str(folder / f"{prefix}.safetensors"))
        (folder / f"{prefix}.json").write_text(json.dumps(state, ensure_ascii=False, indent=1))

    def load(self, folder: str | Path, prefix: str = "replay_buffer") -> None:
        """Restore what :meth:`save` wrote (the embedder stays the one given to this buffer).

        Raises:
            MissingPathError: a missing file (named).
        """
        folder = Path(folder)
        paths = [folder / f"{prefix}.json", folder / f"{prefix}.safetensors"]
        for path in paths:
            if not path.is_file():
                raise MissingPathError(f"replay buffer file {path} does not exist")
        state = json.loads(paths[0].read_text())
        arrays = load_file(str(paths[1]))
        state["embeddings"] = arrays["embeddings"]
        state["cluster_centers"] = arrays.get("cluster_centers")
        self.load_state_dict(state)
