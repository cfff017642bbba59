"""PPO pure functions (``trl_ext.ppo.losses``) and KL controllers (``trl_ext.ppo.kl_control``).

Checked against independent pure-Python/numpy references and hand-worked numbers (docs/ppo.md).
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from trl_ext.ppo.kl_control import AdaptiveKLController, FixedKLController, make_kl_controller
from trl_ext.ppo.losses import (
    explained_variance,
    gae,
    kl_estimate,
    masked_mean,
    masked_var,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)

HUGE = 1e30


def _right_padded_mask(gen: torch.Generator, batch: int, length: int) -> torch.Tensor:
    """Random prefix masks with lengths in [1, T]; row 0 always full, row 1 always a single token."""
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    lengths[0] = length
    if batch > 1:
        lengths[1] = 1
    return torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)


def _random_mask(gen: torch.Generator, batch: int, length: int) -> torch.Tensor:
    """Arbitrary 0/1 masks (holes, left padding), every row non-empty."""
    mask = torch.rand(batch, length, generator=gen) < 0.6
    mask[:, 0] |= ~mask.any(dim=1)
    return mask


def _pad_with(x: torch.Tensor, mask: torch.Tensor, value: float) -> torch.Tensor:
    return torch.where(mask, x, torch.full_like(x, value))


# ------------------------------------------------------------------------------------------------- GAE
def _gae_reference(rewards: list[list[float]], values: list[list[float]], lengths: list[int], gamma, lam):
    """From the definition, per row, iterating t from the last valid token down; zeros after it."""
    advantages, returns = [], []
    for r, v, n in zip(rewards, values, lengths):
        adv = [0.0] * len(r)
        next_value, next_adv = 0.0, 0.0
        for t in range(n - 1, -1, -1):
            delta = r[t] + gamma * next_value - v[t]
            adv[t] = delta + gamma * lam * next_adv
            next_value, next_adv = v[t], adv[t]
        advantages.append(adv)
        returns.append([adv[t] + v[t] if t < n else 0.0 for t in range(len(r))])
    return advantages, returns


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (1.0, 0.95), (0.99, 0.95), (0.9, 0.0), (0.5, 0.3), (0.0, 0.7)])
def test_gae_matches_pure_python_reference(gamma, lam):
    gen = torch.Generator().manual_seed(0)
    batch, length = 6, 9
    mask = _right_padded_mask(gen, batch, length)
    rewards = torch.randn(batch, length, generator=gen, dtype=torch.float64)
    values = torch.randn(batch, length, generator=gen, dtype=torch.float64)
    lengths = mask.sum(dim=1).tolist()
    # padding holds garbage that must not matter
    adv, ret = gae(_pad_with(rewards, mask, HUGE), _pad_with(values, mask, -HUGE), mask, gamma, lam)
    ref_adv, ref_ret = _gae_reference(rewards.tolist(), values.tolist(), lengths, gamma, lam)
    torch.testing.assert_close(adv, torch.tensor(ref_adv, dtype=torch.float64))
    torch.testing.assert_close(ret, torch.tensor(ref_ret, dtype=torch.float64))
    torch.testing.assert_close(ret, torch.where(mask, adv + values, torch.zeros_like(adv)))
    assert (adv[~mask] == 0).all() and (ret[~mask] == 0).all()


def test_gae_special_cases():
    gen = torch.Generator().manual_seed(1)
    batch, length = 5, 7
    mask = _right_padded_mask(gen, batch, length)
    rewards = torch.randn(batch, length, generator=gen, dtype=torch.float64) * mask
    values = torch.randn(batch, length, generator=gen, dtype=torch.float64) * mask
    # gamma = lambda = 1: A_t = (sum of rewards to go) - V_t, so R_t = rewards to go
    adv, ret = gae(rewards, values, mask, 1.0, 1.0)
    to_go = rewards.flip(1).cumsum(1).flip(1) * mask
    torch.testing.assert_close(adv, (to_go - values) * mask)
    torch.testing.assert_close(ret, to_go)
    # lambda = 0: A_t = delta_t = r_t + gamma V_{t+1} m_{t+1} - V_t
    gamma = 0.9
    adv, _ = gae(rewards, values, mask, gamma, 0.0)
    next_values = torch.cat([values[:, 1:], torch.zeros(batch, 1, dtype=values.dtype)], dim=1)
    torch.testing.assert_close(adv, (rewards + gamma * next_values - values) * mask)


def test_gae_left_padding_equals_shifted_right_padding():
    gen = torch.Generator().manual_seed(2)
    batch, length = 4, 6
    mask = _right_padded_mask(gen, batch, length)
    rewards = torch.randn(batch, length, generator=gen)
    values = torch.randn(batch, length, generator=gen)
    adv, ret = gae(rewards, values, mask, 0.95, 0.9)
    for b in range(batch):
        n = int(mask[b].sum())
        shift = length - n
        rows = [torch.roll(x[b : b + 1], shift, dims=1) for x in (rewards, values, mask)]
        adv_l, ret_l = gae(*rows, 0.95, 0.9)
        torch.testing.assert_close(adv_l[0, shift:], adv[b, :n])
        torch.testing.assert_close(ret_l[0, shift:], ret[b, :n])
        assert (adv_l[0, :shift] == 0).all()


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.99, 0.95), (0.5, 0.3)])
def test_gae_bridging_gaps_equals_gae_on_the_policy_tokens_alone(gamma, lam):
    """Multi-turn rows (policy tokens, environment text, policy tokens, ..., padding): with ``bridge_gaps`` each
    row's advantages are the pure-Python GAE of its masked tokens cut out and joined, scattered back in place."""
    gen = torch.Generator().manual_seed(3)
    batch, length = 5, 12
    mask = torch.rand(batch, length, generator=gen) < 0.6
    mask[:, 0] = True  # a completion starts with the policy's first turn
    mask[0, 5:] = False  # one row with a tail of padding only
    rewards = torch.randn(batch, length, generator=gen, dtype=torch.float64)
    values = torch.randn(batch, length, generator=gen, dtype=torch.float64)
    adv, ret = gae(_pad_with(rewards, mask, HUGE), _pad_with(values, mask, -HUGE), mask, gamma, lam, bridge_gaps=True)
    for b in range(batch):
        keep = mask[b].nonzero().flatten()
        ref_adv, ref_ret = _gae_reference([rewards[b, keep].tolist()], [values[b, keep].tolist()], [len(keep)],
                                          gamma, lam)  # fmt: skip
        torch.testing.assert_close(adv[b, keep], torch.tensor(ref_adv[0], dtype=torch.float64))
        torch.testing.assert_close(ret[b, keep], torch.tensor(ref_ret[0], dtype=torch.float64))
        assert (adv[b, ~mask[b]] == 0).all() and (ret[b, ~mask[b]] == 0).all()
    # without bridging a gap ends the episode: the first turn's advantage then differs
    plain, _ = gae(rewards, values, mask, gamma, lam)
    assert not torch.allclose(plain[mask], adv[mask])


def test_gae_validates_gamma_lam():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="gamma"):
        gae(x, x, x.bool(), 1.5, 0.9)
    with pytest.raises(ValueError, match="lam"):
        gae(x, x, x.bool(), 1.0, -0.1)


# ------------------------------------------------------------------------------------------ masked statistics
@pytest.mark.parametrize("mask_kind", ["right_padded", "arbitrary", "float"])
@pytest.mark.parametrize("pad", [HUGE, -HUGE, math.inf, math.nan])
def test_masked_stats_match_numpy(mask_kind, pad):
    gen = torch.Generator().manual_seed(3)
    batch, length = 5, 8
    if mask_kind == "arbitrary":
        mask = _random_mask(gen, batch, length)
    else:
        mask = _right_padded_mask(gen, batch, length)
    x = torch.randn(batch, length, generator=gen, dtype=torch.float64) * 3 + 1.5
    xm = x.numpy()[mask.numpy()]
    padded = _pad_with(x, mask, pad)
    m = mask.double() if mask_kind == "float" else mask

    np.testing.assert_allclose(masked_mean(padded, m).item(), xm.mean(), rtol=1e-12)
    rows = [x.numpy()[b][mask.numpy()[b]].mean() for b in range(batch)]
    np.testing.assert_allclose(masked_mean(padded, m, dim=1).numpy(), rows, rtol=1e-12)
    np.testing.assert_allclose(masked_var(padded, m).item(), xm.var(ddof=1), rtol=1e-12)
    np.testing.assert_allclose(masked_var(padded, m, unbiased=False).item(), xm.var(ddof=0), rtol=1e-12)

    eps = 1e-8
    white = masked_whiten(padded, m)
    expected = (xm - xm.mean()) / np.sqrt(xm.var(ddof=1) + eps)
    np.testing.assert_allclose(white.numpy()[mask.numpy()], expected, rtol=1e-10)
    assert (white[~mask] == 0).all()
    np.testing.assert_allclose(white[mask].mean().item(), 0.0, atol=1e-12)
    np.testing.assert_allclose(white[mask].var(unbiased=True).item(), 1.0, rtol=1e-6)

    kept = masked_whiten(padded, m, shift_mean=False)
    np.testing.assert_allclose(kept.numpy()[mask.numpy()], expected + xm.mean(), rtol=1e-10)
    np.testing.assert_allclose(kept[mask].mean().item(), xm.mean(), rtol=1e-10)
    assert (kept[~mask] == 0).all()


def test_masked_stats_gradients_ignore_padding():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    x = torch.tensor([[1.0, 2.0, math.inf], [4.0, math.nan, HUGE]], requires_grad=True)
    masked_whiten(x, mask).pow(2).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad[~mask] == 0).all()


def test_masked_stats_low_precision_and_edge_cases():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.bfloat16)
    mask = torch.tensor([[1, 1, 1, 0]])
    assert masked_mean(x, mask).dtype == torch.float32
    assert masked_mean(x, mask).item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="at least 2"):
        masked_var(x, torch.tensor([[0, 1, 0, 0]]))
    with pytest.raises(ValueError, match="at least 2"):
        masked_whiten(x, torch.tensor([[0, 1, 0, 0]]))
    assert masked_var(x, torch.tensor([[0, 1, 0, 0]]), unbiased=False).item() == 0.0
    with pytest.raises(ValueError, match="no entries"):
        masked_mean(x, torch.zeros(1, 4))
    assert torch.isnan(masked_mean(torch.ones(2, 3), torch.tensor([[1, 0, 0], [0, 0, 0]]), dim=1)[1])


# ------------------------------------------------------------------------------------------------------- KL
def test_kl_estimators_formulas():
    gen = torch.Generator().manual_seed(4)
    logp = -torch.rand(3, 7, generator=gen, dtype=torch.float64) * 5
    ref = -torch.rand(3, 7, generator=gen, dtype=torch.float64) * 5
    a, b = logp.numpy(), ref.numpy()
    np.testing.assert_allclose(kl_estimate(logp, ref).numpy(), a - b, rtol=1e-12)
    np.testing.assert_allclose(kl_estimate(logp, ref, "k1").numpy(), a - b, rtol=1e-12)
    np.testing.assert_allclose(kl_estimate(logp, ref, "k2").numpy(), 0.5 * (a - b) ** 2, rtol=1e-12)
    np.testing.assert_allclose(kl_estimate(logp, ref, "k3").numpy(), np.exp(b - a) - (b - a) - 1, rtol=1e-10)
    # k3 >= 0 always, also far from r = 1 and in float32
    wide_p = (torch.rand(1000, generator=gen) - 0.5) * 40
    wide_q = (torch.rand(1000, generator=gen) - 0.5) * 40
    assert (kl_estimate(wide_p, wide_q, "k3") >= 0).all()
    assert (kl_estimate(wide_p, wide_q, "k2") >= 0).all()


def test_kl_estimators_monte_carlo():
    gen = torch.Generator().manual_seed(5)
    num_classes, n = 10, 200_000
    log_p = torch.log_softmax(torch.randn(num_classes, generator=gen, dtype=torch.float64), dim=0)
    log_q = torch.log_softmax(torch.randn(num_classes, generator=gen, dtype=torch.float64), dim=0)
    exact = (log_p.exp() * (log_p - log_q)).sum().item()
    samples = torch.multinomial(log_p.exp(), n, replacement=True, generator=gen)
    for estimator in ("k1", "k3"):
        k = kl_estimate(log_p[samples], log_q[samples], estimator)
        tol = 5 * k.std().item() / math.sqrt(n)  # 5 standard errors
        assert abs(k.mean().item() - exact) < tol, (estimator, k.mean().item(), exact, tol)
    assert (kl_estimate(log_p[samples], log_q[samples], "k3") >= 0).all()


def test_kl_unknown_estimator():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"'k4'.*k1, k2, k3"):
        kl_estimate(x, x, "k4")


# ---------------------------------------------------------------------------------------------- token rewards
def test_token_rewards_right_padded():
    gen = torch.Generator().manual_seed(6)
    batch, length, kl_coef = 6, 8, 0.05
    mask = _right_padded_mask(gen, batch, length)
    kl = torch.randn(batch, length, generator=gen, dtype=torch.float64)
    scores = torch.randn(batch, generator=gen, dtype=torch.float64)
    rewards = token_rewards(scores, _pad_with(kl, mask, HUGE), mask, kl_coef)
    last = mask.sum(dim=1) - 1
    expected = torch.where(mask, -kl_coef * kl, torch.zeros_like(kl))
    expected[torch.arange(batch), last] += scores
    torch.testing.assert_close(rewards, expected)
    assert (rewards[~mask] == 0).all()
    # removing the score leaves exactly the KL part on masked tokens
    no_score = rewards.clone()
    no_score[torch.arange(batch), last] -= scores
    torch.testing.assert_close(no_score[mask], -kl_coef * kl[mask])


def test_token_rewards_arbitrary_mask_and_empty_row():
    mask = torch.tensor([[0, 1, 0, 1, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 1]])
    kl = torch.ones(3, 5)
    rewards = token_rewards(torch.tensor([10.0, 20.0, 30.0]), kl, mask, 0.5)
    expected = torch.tensor(
        [[0.0, -0.5, 0.0, 9.5, 0.0], [19.5, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 29.5]],
    )
    torch.testing.assert_close(rewards, expected)
    bad = mask.clone()
    bad[1] = 0
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        token_rewards(torch.zeros(3), kl, bad, 0.5)


# ----------------------------------------------------------------------------------------------- policy loss
def _policy_example():
    """Hand-worked (cliprange 0.2), per token ``max(-A*rho, -A*clip(rho, 0.8, 1.2))``:

    row 0: A=[1, 1, -1, -1], rho=[1.5, 0.9, 0.5, 1.5]
        (1, 1.5):  max(-1.5, -1.2) = -1.2  clipped
        (1, 0.9):  max(-0.9, -0.9) = -0.9
        (-1, 0.5): max( 0.5,  0.8) =  0.8  clipped
        (-1, 1.5): max( 1.5,  1.2) =  1.5
    row 1: A=[-1, 2, pad, pad], rho=[1.1, 0.7, pad, pad]
        (-1, 1.1): max( 1.1,  1.1) =  1.1
        (2, 0.7):  max(-1.4, -1.6) = -1.4
    loss = (-1.2 - 0.9 + 0.8 + 1.5 + 1.1 - 1.4) / 6 = -0.1 / 6; clipfrac = 2/6; ratio_mean = 6.2 / 6.
    """
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    ratio = torch.tensor([[1.5, 0.9, 0.5, 1.5], [1.1, 0.7, 3.0, 9.0]], dtype=torch.float64)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0], [-1.0, 2.0, 5.0, 7.0]], dtype=torch.float64)
    old = torch.tensor([[-1.0, -2.0, -0.5, -3.0], [-0.1, -1.5, -2.0, -2.0]], dtype=torch.float64)
    logp = old + ratio.log()
    logp[~mask] = HUGE  # padding garbage: exp would overflow if it leaked
    return logp, old, adv, mask, ratio


def test_policy_loss_hand_worked():
    logp, old, adv, mask, ratio = _policy_example()
    logp.requires_grad_(True)
    loss, stats = policy_loss(logp, old, adv, mask, cliprange=0.2)
    assert loss.item() == pytest.approx(-0.1 / 6)
    assert stats["clipfrac"].item() == pytest.approx(2 / 6)
    assert stats["ratio_mean"].item() == pytest.approx(6.2 / 6)
    log_r = ratio.log()[mask]
    assert stats["approx_kl"].item() == pytest.approx((0.5 * log_r**2).mean().item())
    assert stats["approx_kl_k3"].item() == pytest.approx((log_r.exp() - 1 - log_r).mean().item())
    assert stats["approx_kl_k3"].item() > 0
    assert all(not s.requires_grad and s.dim() == 0 for s in stats.values())

    loss.backward()
    # d/dlogp of -A*rho is -A*rho: unclipped tokens get pg_t / 6, clipped tokens (A > 0, rho > 1 + eps and
    # A < 0, rho < 1 - eps) and padding get exactly 0.
    expected_grad = torch.tensor([[0.0, -0.9, 0.0, 1.5], [1.1, -1.4, 0.0, 0.0]], dtype=torch.float64) / 6
    torch.testing.assert_close(logp.grad, expected_grad)


def test_policy_loss_clip_gradient_positive_advantage():
    mask = torch.ones(1, 2, dtype=torch.bool)
    adv = torch.tensor([[1.0, 1.0]])
    old = torch.zeros(1, 2)
    logp = torch.log(torch.tensor([[1.3, 1.1]])).requires_grad_(True)  # above / below 1 + eps
    loss, stats = policy_loss(logp, old, adv, mask, cliprange=0.2)
    loss.backward()
    assert logp.grad[0, 0].item() == 0.0
    assert logp.grad[0, 1].item() == pytest.approx(-1.1 / 2)
    assert stats["clipfrac"].item() == pytest.approx(0.5)


def test_policy_loss_cliprange_high():
    logp, old, adv, mask, _ = _policy_example()
    # eps_high = 0.6: token (1, 1.5) is no longer clipped: -1.5; (-1, 1.5) now max(1.5, 1.5) = 1.5
    loss, stats = policy_loss(logp, old, adv, mask, cliprange=0.2, cliprange_high=0.6)
    assert loss.item() == pytest.approx((-1.5 - 0.9 + 0.8 + 1.5 + 1.1 - 1.4) / 6)
    assert stats["clipfrac"].item() == pytest.approx(1 / 6)


def test_policy_loss_low_precision():
    logp, old, adv, mask, _ = _policy_example()
    logp = logp.clone()
    logp[~mask] = 0.0
    loss, _ = policy_loss(logp.bfloat16(), old.bfloat16(), adv.bfloat16(), mask, cliprange=0.2)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(-0.1 / 6, abs=0.02)


# ------------------------------------------------------------------------------------------------ value loss
def test_value_loss_hand_worked():
    """cliprange_value 0.2; V_clip = V_old + clip(V - V_old, -0.2, 0.2):

    (V, V_old, R) = (1.0, 0.5, 0.0):  V_clip = 0.7,  (V-R)^2 = 1.0,  (Vc-R)^2 = 0.49 -> 1.0
                    (0.0, 0.1, 1.0):  V_clip = 0.0,  1.0, 1.0                       -> 1.0
                    (2.5, 2.0, 3.0):  V_clip = 2.2,  0.25, 0.64                     -> 0.64 clipped
                    (-1., 0.0, -2.):  V_clip = -0.2, 1.0, 3.24                      -> 3.24 clipped
    loss = 0.5 * (1.0 + 1.0 + 0.64 + 3.24) / 4 = 0.735; vf_clipfrac = 2/4; value_mean = 2.5 / 4.
    """
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    values = torch.tensor([[1.0, 0.0, 2.5], [-1.0, HUGE, math.nan]], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[0.5, 0.1, 2.0], [0.0, -HUGE, 0.0]], dtype=torch.float64)
    returns = torch.tensor([[0.0, 1.0, 3.0], [-2.0, 5.0, math.inf]], dtype=torch.float64)
    loss, stats = value_loss(values, old, returns, mask, cliprange_value=0.2)
    assert loss.item() == pytest.approx(0.735)
    assert stats["vf_clipfrac"].item() == pytest.approx(0.5)
    assert stats["value_mean"].item() == pytest.approx(0.625)
    loss.backward()
    # unclipped: d/dV 0.5*(V-R)^2/4 = (V-R)/4; clipped tokens (V_clip constant in V) and padding: 0
    expected = torch.tensor([[0.25, -0.25, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(values.grad, expected)


# ----------------------------------------------------------------------------------------- explained variance
def test_explained_variance():
    gen = torch.Generator().manual_seed(7)
    mask = _random_mask(gen, 4, 6)
    returns = torch.randn(4, 6, generator=gen)
    assert explained_variance(_pad_with(returns, mask, HUGE), returns, mask) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(returns, 3.0), returns, mask) == pytest.approx(0.0, abs=1e-6)
    noisy = returns + 0.1 * torch.randn(4, 6, generator=gen)
    assert 0.9 < explained_variance(noisy, returns, mask) < 1.0
    assert math.isnan(explained_variance(returns, torch.ones(4, 6), mask))


# ---------------------------------------------------------------------------------------------- KL controllers
def test_adaptive_kl_controller_hand_computed():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    ctl.update(9.0, 256)  # 9/6 - 1 = 0.5 -> clipped to +0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 256 / 10_000))
    v = ctl.value
    ctl.update(0.6, 256)  # 0.6/6 - 1 = -0.9 -> clipped to -0.2
    assert ctl.value == pytest.approx(v * (1 - 0.2 * 256 / 10_000))
    v = ctl.value
    ctl.update(torch.tensor(6.6), 100)  # +0.1, inside the clip
    assert ctl.value == pytest.approx(v * (1 + 0.1 * 100 / 10_000))
    v = ctl.value
    ctl.update(6.0, 1000)  # on target: unchanged
    assert ctl.value == pytest.approx(v)
    with pytest.raises(ValueError, match="finite"):
        ctl.update(math.nan, 1)


def test_kl_controllers_fixed_state_and_factory():
    fixed = FixedKLController(0.05)
    fixed.update(100.0, 1000)
    assert fixed.value == 0.05
    for bad in ({"target": 0.0, "horizon": 1.0}, {"target": 1.0, "horizon": -1.0}):
        with pytest.raises(ValueError, match="target|horizon"):
            AdaptiveKLController(0.1, **bad)

    ctl = AdaptiveKLController(0.2, target=1.0, horizon=50)
    ctl.update(random.Random(0).uniform(0, 3), 10)
    state = ctl.state_dict()
    assert all(type(v) is float for v in state.values())
    restored = AdaptiveKLController(0.2, target=1.0, horizon=50)
    restored.load_state_dict(state)
    assert restored.state_dict() == state
    fixed2 = FixedKLController(1.0)
    fixed2.load_state_dict(fixed.state_dict())
    assert fixed2.value == 0.05 and fixed.state_dict() == {"value": 0.05}

    assert isinstance(make_kl_controller(0.05, adaptive=False), FixedKLController)
    adaptive = make_kl_controller(0.05, adaptive=True, target_kl=6.0, horizon=10_000)
    assert isinstance(adaptive, AdaptiveKLController) and adaptive.target == 6.0 and adaptive.horizon == 10_000
    with pytest.raises(ValueError, match="target_kl"):
        make_kl_controller(0.05, adaptive=True, horizon=10)


# ------------------------------------------------------------------------------------------ shape validation
def _t(*shape):
    return torch.zeros(*shape)


def _m(*shape):
    return torch.ones(*shape, dtype=torch.bool)


SHAPE_CASES = [
    ("masked_mean", lambda: masked_mean(_t(2, 5), _m(2, 4)), ["x", "mask", "(2, 5)", "(2, 4)"]),
    ("masked_var", lambda: masked_var(_t(3), _m(2)), ["x", "mask", "(3,)", "(2,)"]),
    ("masked_whiten", lambda: masked_whiten(_t(2, 5), _m(5, 2)), ["x", "mask", "(2, 5)", "(5, 2)"]),
    ("kl_estimate", lambda: kl_estimate(_t(2, 5), _t(2, 4), "k3"), ["logprobs", "ref_logprobs", "(2, 4)"]),
    ("token_rewards kl", lambda: token_rewards(_t(2), _t(2, 5), _m(2, 4), 0.1), ["kl", "mask", "(2, 5)", "(2, 4)"]),
    ("token_rewards scores", lambda: token_rewards(_t(3), _t(2, 5), _m(2, 5), 0.1), ["scores", "(3,)", "kl"]),
    ("token_rewards 2-D", lambda: token_rewards(_t(2), _t(2, 5, 1), _m(2, 5, 1), 0.1), ["kl", "2-D", "(2, 5, 1)"]),
    ("gae values", lambda: gae(_t(2, 5), _t(2, 4), _m(2, 5), 1.0, 0.95), ["rewards", "values", "(2, 4)"]),
    ("gae mask", lambda: gae(_t(2, 5), _t(2, 5), _m(2, 4), 1.0, 0.95), ["rewards", "mask", "(2, 4)"]),
    (
        "policy_loss advantages",
        lambda: policy_loss(_t(2, 5), _t(2, 5), _t(2, 4), _m(2, 5), 0.2),
        ["logprobs", "advantages", "(2, 4)"],
    ),
    (
        "policy_loss old",
        lambda: policy_loss(_t(2, 5), _t(5), _t(2, 5), _m(2, 5), 0.2),
        ["logprobs", "old_logprobs", "(5,)"],
    ),
    (
        "value_loss mask",
        lambda: value_loss(_t(2, 5), _t(2, 5), _t(2, 5), _m(2, 4), 0.2),
        ["values has shape (2, 5) but mask has shape (2, 4)"],
    ),
    (
        "value_loss returns",
        lambda: value_loss(_t(2, 5), _t(2, 5), _t(1, 5), _m(2, 5), 0.2),
        ["values", "returns", "(1, 5)"],
    ),
    (
        "explained_variance",
        lambda: explained_variance(_t(2, 5), _t(2, 5), _m(2, 6)),
        ["values", "mask", "(2, 6)"],
    ),
]


@pytest.mark.parametrize("call,fragments", [c[1:] for c in SHAPE_CASES], ids=[c[0] for c in SHAPE_CASES])
def test_shape_mismatch_raises_named_value_error(call, fragments):
    with pytest.raises(ValueError) as info:
        call()
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
