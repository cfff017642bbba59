"""The InfoNCE probe: its scores are the per-pair cross-entropies computed one pair at a time, the bound follows."""

from __future__ import annotations

import math

import pytest
import torch

from trl_ext.latent.adapter import LatentAdapter, LatentAdapterConfig
from trl_ext.latent.collator import LatentCollator
from trl_ext.latent.injection import add_latent_tokens
from trl_ext.latent.probe import infonce_probe, infonce_scores, per_row_ce
from trl_ext.latent.receiver import LatentReceiver


def test_scores_are_the_cross_entropies_of_each_pairing(tiny_model_path):
    from trl_ext.models import load_causal_lm, load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer(str(tiny_model_path))
    model = load_causal_lm(str(tiny_model_path))
    adapter = LatentAdapter(
        LatentAdapterConfig(hidden_size=model.config.hidden_size, sender_hidden_size=6, num_heads=4)
    )
    receiver = LatentReceiver(model, adapter, add_latent_tokens(tok, model)).eval()
    items = [
        {"id": str(i), "hidden_state": torch.randn(2 + i, 6) * 3,
         "messages": [{"role": "user", "content": f"Item {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]}
        for i in range(3)
    ]  # fmt: skip
    batch = LatentCollator(tok)(items)
    with torch.no_grad():
        scores = infonce_scores(receiver, batch)
        for j in range(3):
            for o in range(3):
                one = LatentCollator(tok)([{**items[j], "hidden_state": items[(j + o) % 3]["hidden_state"]}])
                logits, labels, _ = receiver(**{k: v for k, v in one.items() if k != "ids"})
                assert float(scores[j, o]) == pytest.approx(-float(per_row_ce(logits, labels)[0]), rel=1e-4)
    result = infonce_probe(receiver, batch, k=8)
    s = scores.double()
    want = -(s[:, 0] - torch.logsumexp(s, dim=1)).mean().item()
    assert result["k"] == 3 and result["loss"] == pytest.approx(want, rel=1e-5)
    assert result["mi_lower_bound"] == pytest.approx(math.log(3) - want, rel=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        infonce_scores(receiver, batch, k=1)
