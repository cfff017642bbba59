"""Selective-generalisation loss terms (``trl_ext.selective.losses``, docs/selective.md).

Each function is checked against an independent numpy / loop computation on random inputs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trl_ext.common.logprobs import sequence_logps
from trl_ext.selective.losses import (
    directional_penalty,
    dpo_regulariser,
    orth_penalty,
    positive_negative_proxy_loss,
    representation_mse,
    token_kl,
)


def _random_mask(gen: torch.Generator, batch: int, length: int) -> torch.Tensor:
    """Arbitrary 0/1 masks (holes, left padding), every row non-empty, at least one masked-out position."""
    mask = torch.rand(batch, length, generator=gen) < 0.6
    mask[:, 0] |= ~mask.any(dim=1)
    mask[-1, -1] = False
    return mask.long()


def _np_log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


# ------------------------------------------------------------------------------------------------- token_kl
def _kl_reference(logits, ref_logits, mask, direction="forward") -> float:
    """Loop over the tokens of the mask, KL over the vocabulary from the definition, in float64."""
    total, n = 0.0, 0
    batch, length, _ = logits.shape
    for b in range(batch):
        for t in range(length):
            if not mask[b, t]:
                continue
            log_p = _np_log_softmax(logits[b, t].astype(np.float64))
            log_q = _np_log_softmax(ref_logits[b, t].astype(np.float64))
            if direction == "reverse":
                log_p, log_q = log_q, log_p
            total += sum(math.exp(lp) * (lp - lq) for lp, lq in zip(log_p, log_q))
            n += 1
    return total / n


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_token_kl_matches_loop_and_ignores_padding(direction):
    gen = torch.Generator().manual_seed(0)
    batch, length, vocab = 3, 5, 11
    logits = torch.randn(batch, length, vocab, generator=gen) * 2
    ref_logits = torch.randn(batch, length, vocab, generator=gen) * 2
    mask = _random_mask(gen, batch, length)
    expected = _kl_reference(logits.numpy(), ref_logits.numpy(), mask.numpy(), direction)
    got = token_kl(logits, ref_logits, mask, direction=direction)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)

    # garbage (huge, inf, nan) at padding must not matter, neither in the value nor in the gradient
    pad = mask.bool().logical_not().unsqueeze(-1).expand_as(logits)
    noisy = logits.clone()
    noisy[pad] = float("nan")
    noisy_ref = ref_logits.clone()
    noisy_ref[pad] = float("inf")
    noisy.requires_grad_(True)
    got_noisy = token_kl(noisy, noisy_ref, mask, direction=direction)
    assert got_noisy.item() == pytest.approx(got.item(), rel=1e-6)
    got_noisy.backward()
    assert torch.isfinite(noisy.grad).all()
    assert (noisy.grad[pad] == 0).all()


def test_token_kl_zero_when_equal_and_half_precision():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 7, generator=gen)
    mask = torch.ones(2, 4, dtype=torch.long)
    assert token_kl(logits, logits.clone(), mask).item() == pytest.approx(0.0, abs=1e-7)
    ref = torch.randn(2, 4, 7, generator=gen)
    got = token_kl(logits.to(torch.bfloat16), ref.to(torch.bfloat16), mask)
    assert got.dtype == torch.float32
    expected = _kl_reference(
        logits.to(torch.bfloat16).float().numpy(), ref.to(torch.bfloat16).float().numpy(), mask.numpy()
    )
    assert got.item() == pytest.approx(expected, rel=1e-4)


def test_token_kl_zero_probability_vocab_entries():
    """``-inf`` logits (probability 0) contribute 0·log 0 = 0, with a finite gradient."""
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 3, 6, generator=gen)
    ref = torch.randn(1, 3, 6, generator=gen)
    logits[..., -1] = float("-inf")
    logits.requires_grad_(True)
    mask = torch.ones(1, 3)
    got = token_kl(logits, ref, mask)
    # the sum runs over the support of p only; log q keeps q's normalisation over the full vocabulary
    log_q = ref.log_softmax(-1)[..., :-1]
    log_p = logits.detach()[..., :-1].log_softmax(-1)
    expected = (log_p.exp() * (log_p - log_q)).sum(-1).mean().item()
    assert got.item() == pytest.approx(expected, rel=1e-5)
    got.backward()
    assert torch.isfinite(logits.grad).all()


def test_token_kl_gradient_only_through_logits():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 5, generator=gen, requires_grad=True)
    ref = torch.randn(2, 3, 5, generator=gen, requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    token_kl(logits, ref, mask).backward()
    assert ref.grad is None
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert (logits.grad[0, 2] == 0).all() and (logits.grad[1, 1:] == 0).all()

    # gradient check against autograd on the plain formula (ref as a constant)
    def plain(x):
        log_p, log_q = x.log_softmax(-1), ref.detach().log_softmax(-1)
        per_token = (log_p.exp() * (log_p - log_q)).sum(-1)
        return (per_token * mask).sum() / mask.sum()

    x = logits.detach().clone().requires_grad_(True)
    plain(x).backward()
    torch.testing.assert_close(logits.grad, x.grad)


def test_token_kl_errors():
    logits = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=r"ref_logits has shape \(2, 3, 5\)"):
        token_kl(logits, torch.zeros(2, 3, 5), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 4\)"):
        token_kl(logits, logits, torch.ones(2, 4))
    with pytest.raises(ValueError, match="3-D"):
        token_kl(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="no tokens"):
        token_kl(logits, logits, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="Unknown KL direction"):
        token_kl(logits, logits, torch.ones(2, 3), direction="sideways")


# ----------------------------------------------------------------------------------------- representation
def _mse_reference(hs, refs, mask, start) -> float:
    total = 0.0
    m = mask.astype(bool)
    for h, r in zip(hs[start:], refs[start:]):
        per_token = ((h.astype(np.float64) - r.astype(np.float64)) ** 2).mean(axis=-1)
        total += per_token[m].mean()
    return total


def _hidden(gen, n_layers, batch, length, hidden):
    return tuple(torch.randn(batch, length, hidden, generator=gen) for _ in range(n_layers + 1))


def test_representation_mse_matches_numpy_and_skips_embedding():
    gen = torch.Generator().manual_seed(4)
    batch, length, hidden, n_layers = 3, 6, 8, 3
    hs = _hidden(gen, n_layers, batch, length, hidden)
    refs = _hidden(gen, n_layers, batch, length, hidden)
    mask = _random_mask(gen, batch, length)
    np_h, np_r, np_m = [h.numpy() for h in hs], [r.numpy() for r in refs], mask.numpy()

    got = representation_mse(hs, refs, mask)
    assert got.item() == pytest.approx(_mse_reference(np_h, np_r, np_m, 1), rel=1e-5)
    got_all = representation_mse(hs, refs, mask, skip_embedding=False)
    assert got_all.item() == pytest.approx(_mse_reference(np_h, np_r, np_m, 0), rel=1e-5)

    # changing the embedding output (index 0) does not change the value; changing layer 1 does
    hs_emb = (hs[0] + 10.0, *hs[1:])
    assert representation_mse(hs_emb, refs, mask).item() == pytest.approx(got.item(), rel=1e-6)
    hs_l1 = (hs[0], hs[1] + 1.0, *hs[2:])
    assert representation_mse(hs_l1, refs, mask).item() != pytest.approx(got.item(), rel=1e-3)

    # padding positions hold garbage that must not matter
    pad = mask.bool().logical_not().unsqueeze(-1).expand(batch, length, hidden)
    noisy = tuple(torch.where(pad, torch.full_like(h, float("nan")), h) for h in hs)
    noisy_refs = tuple(torch.where(pad, torch.full_like(r, 1e30), r) for r in refs)
    assert representation_mse(noisy, noisy_refs, mask).item() == pytest.approx(got.item(), rel=1e-6)


def test_representation_mse_gradient_only_into_policy_states():
    gen = torch.Generator().manual_seed(5)
    hs = [h.requires_grad_(True) for h in _hidden(gen, 2, 2, 3, 4)]
    refs = [r.requires_grad_(True) for r in _hidden(gen, 2, 2, 3, 4)]
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    representation_mse(hs, refs, mask).backward()
    assert all(r.grad is None for r in refs)
    assert hs[0].grad is None  # embedding layer skipped
    # d/dh of mean_H (h − r)² / n_tokens = 2 (h − r) / (H · n_tokens) on masked tokens, 0 elsewhere
    expected = 2 * (hs[1] - refs[1]).detach() / (4 * 3) * mask.unsqueeze(-1)
    torch.testing.assert_close(hs[1].grad, expected)


def test_representation_mse_errors():
    gen = torch.Generator().manual_seed(6)
    hs = _hidden(gen, 2, 2, 3, 4)
    mask = torch.ones(2, 3)
    with pytest.raises(ValueError, match="hidden_states has 3 entries but ref_hidden_states has 2"):
        representation_mse(hs, hs[:2], mask)
    with pytest.raises(ValueError, match=r"hidden_states\[1\] has shape \(2, 3, 4\) but ref_hidden_states\[1\]"):
        representation_mse(hs, (hs[0], torch.zeros(2, 3, 5), hs[2]), mask)
    with pytest.raises(ValueError, match=r"mask has shape \(2, 4\)"):
        representation_mse(hs, hs, torch.ones(2, 4))
    with pytest.raises(ValueError, match="nothing to compare"):
        representation_mse(hs[:1], hs[:1], mask)
    with pytest.raises(ValueError, match="no tokens"):
        representation_mse(hs, hs, torch.zeros(2, 3))
    with pytest.raises(TypeError, match="sequences"):
        representation_mse(hs[1], hs[1], mask)


# ------------------------------------------------------------------------------------------------------ DPO
def test_sequence_logps_mean_and_sum():
    gen = torch.Generator().manual_seed(7)
    logps = -torch.rand(3, 5, generator=gen)
    mask = _random_mask(gen, 3, 5)
    noisy = torch.where(mask.bool(), logps, torch.full_like(logps, float("-inf")))
    mean = sequence_logps(noisy, mask)
    total = sequence_logps(noisy, mask, average=False)
    for b in range(3):
        vals = [logps[b, t].item() for t in range(5) if mask[b, t]]
        assert total[b].item() == pytest.approx(sum(vals), rel=1e-6)
        assert mean[b].item() == pytest.approx(sum(vals) / len(vals), rel=1e-6)
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        sequence_logps(logps[:2], torch.tensor([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]))
    with pytest.raises(ValueError, match=r"mask has shape \(3, 4\)"):
        sequence_logps(logps, torch.ones(3, 4))


def test_dpo_regulariser_matches_scalar_formula():
    beta = 0.3
    pc, pr, rc, rr = [-1.2, -0.4, -2.0], [-1.5, -0.3, -1.0], [-1.0, -0.5, -2.2], [-1.1, -0.6, -1.4]
    losses, margins, rewards_c, rewards_r = [], [], [], []
    for a, b, c, d in zip(pc, pr, rc, rr):
        r_c, r_r = beta * (a - c), beta * (b - d)
        z = r_c - r_r
        losses.append(-math.log(1.0 / (1.0 + math.exp(-z))))
        margins.append(z)
        rewards_c.append(r_c)
        rewards_r.append(r_r)
    policy_chosen = torch.tensor(pc, requires_grad=True)
    ref_chosen = torch.tensor(rc, requires_grad=True)
    loss, stats = dpo_regulariser(policy_chosen, torch.tensor(pr), ref_chosen, torch.tensor(rr), beta)
    assert loss.item() == pytest.approx(sum(losses) / 3, rel=1e-6)
    assert stats["reward_margin"].item() == pytest.approx(sum(margins) / 3, rel=1e-5)
    assert stats["rewards_chosen"].item() == pytest.approx(sum(rewards_c) / 3, rel=1e-5)
    assert stats["rewards_rejected"].item() == pytest.approx(sum(rewards_r) / 3, rel=1e-5)
    assert stats["reward_accuracy"].item() == pytest.approx(sum(m > 0 for m in margins) / 3)
    assert all(not s.requires_grad for s in stats.values())
    loss.backward()
    assert ref_chosen.grad is None
    # d loss / d ℓ_c,i = −β·σ(−z_i) / B
    expected = [-beta / (1.0 + math.exp(z)) / 3 for z in margins]
    assert policy_chosen.grad.tolist() == pytest.approx(expected, rel=1e-5)


def test_dpo_regulariser_stable_and_errors():
    big = torch.tensor([1e4])
    loss, _ = dpo_regulariser(-big, torch.zeros(1), torch.zeros(1), torch.zeros(1), beta=1.0)
    assert loss.item() == pytest.approx(1e4)
    with pytest.raises(ValueError, match=r"policy_chosen has shape \(2,\) but ref_rejected has shape \(3,\)"):
        dpo_regulariser(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(3), beta=0.1)
    with pytest.raises(ValueError, match="beta must be > 0"):
        dpo_regulariser(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2), beta=0.0)
    with pytest.raises(ValueError, match="1-D"):
        dpo_regulariser(torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, 1), beta=0.1)


# ------------------------------------------------------------------------------------------------ penalties
def _lora_dicts(gen, shapes):
    weights = {
        f"layers.{i}.q_proj.lora_A.default.weight": torch.randn(*s, generator=gen) for i, s in enumerate(shapes)
    }
    plane = {name: torch.randn(*w.shape, generator=gen) for name, w in weights.items()}
    plane["layers.0.q_proj.lora_B.default.weight"] = torch.randn(7, 2, generator=gen)  # extra entries are ignored
    return weights, plane


def _products_reference(weights, plane):
    """Loops over modules and matrix entries: (A·Sᵀ)_{ij} = Σ_k A_ik·S_jk."""
    abs_sum, signed_sum = 0.0, 0.0
    for name, a in weights.items():
        a_np, s_np = a.detach().double().numpy(), plane[name].double().numpy()
        for i in range(a_np.shape[0]):
            for j in range(s_np.shape[0]):
                v = float(sum(a_np[i, k] * s_np[j, k] for k in range(a_np.shape[1])))
                abs_sum += abs(v)
                signed_sum += v
    return abs_sum, signed_sum


def test_orth_and_directional_penalties_match_loops():
    gen = torch.Generator().manual_seed(8)
    weights, plane = _lora_dicts(gen, [(2, 5), (3, 4)])
    abs_sum, signed_sum = _products_reference(weights, plane)
    assert orth_penalty(weights, plane).item() == pytest.approx(abs_sum, rel=1e-5)
    assert directional_penalty(weights, plane).item() == pytest.approx(-signed_sum, rel=1e-5)


def test_penalty_gradients_flow_into_lora_only():
    gen = torch.Generator().manual_seed(9)
    weights, plane = _lora_dicts(gen, [(2, 3)])
    weights = {n: w.requires_grad_(True) for n, w in weights.items()}
    plane = {n: s.requires_grad_(True) for n, s in plane.items()}
    (name,) = weights
    directional_penalty(weights, plane).backward()
    # d/dA of −Σ_ij (A Sᵀ)_ij = −1ᵀ S broadcast to each row of A
    expected = -plane[name].detach().sum(dim=0).expand(2, 3)
    torch.testing.assert_close(weights[name].grad, expected)
    assert plane[name].grad is None


def test_penalty_name_and_shape_errors():
    gen = torch.Generator().manual_seed(10)
    weights, plane = _lora_dicts(gen, [(2, 5), (3, 4)])
    missing = dict(plane)
    del missing["layers.1.q_proj.lora_A.default.weight"]
    for fn in (orth_penalty, directional_penalty):
        with pytest.raises(ValueError, match=r"'layers\.1\.q_proj\.lora_A\.default\.weight' has no entry"):
            fn(weights, missing)
    bad = dict(plane)
    bad["layers.0.q_proj.lora_A.default.weight"] = torch.zeros(3, 5)
    with pytest.raises(ValueError, match=r"layers\.0\.q_proj.*shape \(2, 5\).*shape \(3, 5\)"):
        orth_penalty(weights, bad)
    with pytest.raises(ValueError, match="empty"):
        orth_penalty({}, plane)


# ------------------------------------------------------------------------------------------ positive/negative
def test_positive_negative_proxy_loss():
    ce_t, ce_p, ce_n, kl = torch.tensor(2.0), torch.tensor(1.5), torch.tensor(3.0), torch.tensor(0.2)
    got = positive_negative_proxy_loss(ce_t, ce_p, ce_n, kl, lambda_pos=0.5, lambda_neg=0.25, beta_kl=10.0)
    assert got.item() == pytest.approx(2.0 + 0.5 * (1.5 + 10.0 * 0.2) - 0.25 * 3.0)
    no_neg = positive_negative_proxy_loss(ce_t, ce_p, None, kl, lambda_pos=0.5, lambda_neg=0.25, beta_kl=10.0)
    assert no_neg.item() == pytest.approx(2.0 + 0.5 * (1.5 + 10.0 * 0.2))
    no_kl = positive_negative_proxy_loss(ce_t, ce_p, ce_n, None, lambda_pos=0.5, lambda_neg=0.25, beta_kl=10.0)
    assert no_kl.item() == pytest.approx(2.0 + 0.5 * 1.5 - 0.25 * 3.0)
    defaults = positive_negative_proxy_loss(ce_t, ce_p, ce_n, kl)  # λ_p 0.5, λ_n 0.5, β_kl 0
    assert defaults.item() == pytest.approx(2.0 + 0.5 * 1.5 - 0.5 * 3.0)
    with pytest.raises(ValueError, match=r"ce_neg must be a 0-dim"):
        positive_negative_proxy_loss(ce_t, ce_p, torch.zeros(2))
