"""Diversity training moves a biased model's option shares toward uniform, for both loss types (empirical).

The tiny model is first fine-tuned to answer "cat" 90 % of the time (:func:`trl_ext.diversity.demo.make_biased_model`,
60 SFT steps, seed 0); its share of "cat" among the answers that name an animal, measured on 256 samples (top-p
0.95, temperature 1, sampling seed 1234), is 0.934. Then diversity training (batch 32, full fine-tune, constant
learning rate, w_c 0.8 / w_o 0.2, K = 3 clusters of a deterministic embedding) and the same measurement.

Measured over training seeds 0–9 (``TRL_EXT_EMPIRICAL_SEEDS=0-9``, 2 CPU cores, torch 2.13):

* ``loss_type="kl"`` (learning rate 5e-5, 30 steps): cat share 0.517–0.563 (before 0.934): asserted ≤ 0.75;
* ``loss_type="tb"`` (learning rate 1e-4, 45 steps): cat share 0.828–0.840: asserted ≤ 0.89.

Both bounds leave at least 0.05 between the worst seed and the bound, i.e. twice the standard deviation of a
256-sample share (√(0.85 · 0.15 / 256) ≈ 0.022); the before value is asserted ≥ 0.9 so the start is biased.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import diversity_fixed as fixed  # noqa: E402

pytestmark = [pytest.mark.empirical, pytest.mark.slow]

SETTINGS = {"kl": (5e-5, 30, 0.75), "tb": (1e-4, 45, 0.89)}  # learning rate, steps, bound on the cat share


def _cat_share(model, tokenizer) -> float:
    from trl_ext.diversity import Concept, segment
    from trl_ext.diversity.demo import DEFAULT_PROMPT
    from trl_ext.diversity.report import sample_completions

    texts = sample_completions(model, tokenizer, [DEFAULT_PROMPT], num_samples=256, seed=1234, show_progress=False)[0]
    concept = Concept("animal", ["cat", "dog"])
    counts: Counter = Counter()
    for text in texts:
        blocks = segment(tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer, [concept])
        counts.update(b.option for b in blocks if b.kind == "concept")
    named = counts["cat"] + counts["dog"]
    assert named >= 64, f"only {named} of 256 answers name an animal"
    return counts["cat"] / named


@pytest.fixture(scope="module")
def biased(tmp_path_factory, tiny_model_path):
    from trl_ext.diversity.demo import make_biased_model
    from trl_ext.models import load_causal_lm, load_tokenizer

    path = make_biased_model(tmp_path_factory.mktemp("biased"), base=str(tiny_model_path), max_steps=60)
    tokenizer = load_tokenizer(str(path))
    return path, tokenizer, _cat_share(load_causal_lm(str(path)), tokenizer)


@pytest.mark.parametrize("loss_type", ["kl", "tb"])
def test_diversity_training_moves_option_shares_toward_uniform(tmp_path, biased, loss_type, empirical_seed):
    from trl_ext.diversity import DiversityConfig, DiversityTrainer
    from trl_ext.diversity.demo import DEFAULT_PROMPT

    path, tokenizer, before = biased
    assert before >= 0.9
    lr, steps, bound = SETTINGS[loss_type]
    args = DiversityConfig(
        output_dir=str(tmp_path), concept_name="animal", concept_options=["cat", "dog"], prompts=[DEFAULT_PROMPT],
        per_device_train_batch_size=32, num_generations=32, max_steps=steps, num_samples=32, n_clusters=3,
        learning_rate=lr, lr_scheduler_type="constant", loss_type=loss_type, w_c=0.8, w_o=0.2, report_to="none",
        save_strategy="no", use_cpu=True, seed=empirical_seed, disable_tqdm=True, log_completions=False,
        logging_steps=10,
    )  # fmt: skip
    trainer = DiversityTrainer(str(path), args=args, embedder=fixed.embed)
    trainer.train()
    after = _cat_share(trainer.model, tokenizer)
    print(f"\n[empirical] {loss_type} seed {empirical_seed}: cat share {before:.3f} -> {after:.3f}")
    assert after <= bound, f"{loss_type}: cat share {before:.3f} -> {after:.3f} (bound {bound})"
