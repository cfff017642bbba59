"""Latent-communication losses against numpy / scipy: alignment, plan KL + cosine, JS, the hinge, InfoNCE, the
dynamic weights and ΔNLL."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import logsumexp, softmax

from trl_ext.latent.losses import (
    align_supervised,
    delta_nll_bits,
    dynamic_weights,
    infonce,
    js_divergence,
    plan_similarity_loss,
    random_contrast_loss,
)


def _logits(*shape, seed=0):
    return torch.tensor(np.random.default_rng(seed).normal(size=shape) * 2.0, dtype=torch.float64)


def test_align_pairs_the_first_supervised_positions():
    a, b = _logits(2, 6, 5, seed=1), _logits(2, 8, 5, seed=2)
    a_mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0]])
    b_mask = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0]])
    xa, xb, mask = align_supervised(a, a_mask, b, b_mask)
    assert xa.shape == (2, 3, 5) and mask.tolist() == [[True, True, True], [False, False, False]]
    torch.testing.assert_close(xa[0], a[0, 2:5])
    torch.testing.assert_close(xb[0], b[0, 4:7])  # the first 3 of b's 4 supervised tokens


def test_plan_similarity_matches_numpy():
    lat, plan = _logits(3, 4, 7, seed=3), _logits(3, 4, 7, seed=4)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    loss, parts = plan_similarity_loss(lat, plan, mask)
    p_lat, p_plan = softmax(lat.numpy(), -1), softmax(plan.numpy(), -1)
    kls, coss = [], []
    for b in range(3):
        idx = np.flatnonzero(mask[b].numpy())
        if not idx.size:
            continue
        for t in idx:
            kls.append(float(np.sum(p_plan[b, t] * (np.log(p_plan[b, t]) - np.log(p_lat[b, t])))))
        u, v = p_lat[b, idx].ravel(), p_plan[b, idx].ravel()
        coss.append(1 - float(u @ v / np.linalg.norm(u) / np.linalg.norm(v)))
    assert float(parts["kl"]) == pytest.approx(np.mean(kls), rel=1e-10)
    assert float(parts["cosine"]) == pytest.approx(np.mean(coss), rel=1e-10)
    assert float(loss) == pytest.approx(0.7 * np.mean(kls) + 0.3 * np.mean(coss), rel=1e-10)
    # the teacher gets no gradient; identical predictions give 0
    plan.requires_grad_(True)
    lat.requires_grad_(True)
    loss, _ = plan_similarity_loss(lat, plan, mask)
    loss.backward()
    assert plan.grad is None and lat.grad.abs().sum() > 0
    same, _ = plan_similarity_loss(plan.detach(), plan.detach(), mask)
    assert abs(float(same)) < 1e-12
    empty, _ = plan_similarity_loss(lat, plan, torch.zeros(3, 4))
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_js_matches_scipy_and_is_bounded():
    p, q = _logits(5, 9, seed=5), _logits(5, 9, seed=6)
    js = js_divergence(p, q)
    for i in range(5):
        want = jensenshannon(softmax(p[i].numpy()), softmax(q[i].numpy()), base=math.e) ** 2
        assert float(js[i]) == pytest.approx(want, rel=1e-9)
    far = js_divergence(torch.tensor([[50.0, -50.0]]), torch.tensor([[-50.0, 50.0]]))
    assert float(far) == pytest.approx(math.log(2), rel=1e-6)


def test_random_contrast_hinge():
    pos, neg = _logits(3, 4, 6, seed=7), _logits(3, 4, 6, seed=8)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    loss, per_row = random_contrast_loss(pos, neg, mask, margin=0.69)
    rows = []
    for b in range(2):
        idx = np.flatnonzero(mask[b].numpy())
        js = [jensenshannon(softmax(pos[b, t].numpy()), softmax(neg[b, t].numpy()), base=math.e) ** 2 for t in idx]
        rows.append(np.mean(js))
        assert float(per_row[b]) == pytest.approx(rows[-1], rel=1e-9)
    assert float(loss) == pytest.approx(np.mean([max(0.0, 0.69 - r) for r in rows]), rel=1e-9)
    # a margin below every JS: no loss; the negative gets no gradient
    assert float(random_contrast_loss(pos, neg, mask, margin=1e-9)[0]) == 0.0
    neg.requires_grad_(True)
    pos.requires_grad_(True)
    random_contrast_loss(pos, neg, mask)[0].backward()
    assert neg.grad is None and pos.grad.abs().sum() > 0


def test_infonce_matches_a_direct_computation():
    scores = _logits(4, 4, 1, seed=9)[..., 0]
    for tau in (1.0, 0.5):
        loss, bound = infonce(scores, tau)
        s = scores.numpy() / tau
        want = -np.mean(s[:, 0] - logsumexp(s, axis=1))
        assert float(loss) == pytest.approx(want, rel=1e-12)
        assert float(bound) == pytest.approx(math.log(4) - want, rel=1e-12)
    perfect = torch.tensor([[0.0, -100.0], [0.0, -100.0]], dtype=torch.float64)
    assert float(infonce(perfect)[1]) == pytest.approx(math.log(2), abs=1e-12)
    with pytest.raises(ValueError, match="K >= 2"):
        infonce(torch.zeros(1, 1))


def test_dynamic_weights_and_delta_nll():
    assert dynamic_weights(0.0, 0.0) == (0.01, 0.01)
    assert dynamic_weights(2.0, 0.345) == pytest.approx((0.03, 0.255))
    assert dynamic_weights(10.0, 5.0) == pytest.approx((0.05, 0.5))
    assert delta_nll_bits(2.0, 2.0 - math.log(2)) == pytest.approx(1.0)


def test_sums_give_the_means_of_the_loss_functions():
    """The trainer's sums (normalised over an accumulated batch) divided by their counts are the tested means."""
    from trl_ext.latent.losses import plan_similarity_sums, random_contrast_sums

    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(3, 4, 7, generator=g), torch.randn(3, 4, 7, generator=g)
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    loss, parts = plan_similarity_loss(a, b, mask)
    sums = plan_similarity_sums(a, b, mask)
    assert float(sums["tokens"]) == 6 and float(sums["rows"]) == 2
    assert float(0.7 * sums["kl_sum"] / sums["tokens"] + 0.3 * sums["cosine_sum"] / sums["rows"]) == pytest.approx(
        float(loss), rel=1e-6
    )
    rc, per_row = random_contrast_loss(a, b, mask, margin=0.3)
    rc_sums = random_contrast_sums(a, b, mask, margin=0.3)
    assert float(rc_sums["hinge_sum"] / rc_sums["rows"]) == pytest.approx(float(rc), rel=1e-6)
    torch.testing.assert_close(rc_sums["js"], per_row)
