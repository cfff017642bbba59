"""The diversity losses against direct float64 numpy computations (SPEC §1 steps 4–5, trajectory balance)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trl_ext.common.errors import ConfigError, UnknownNameError
from trl_ext.diversity.losses import (
    block_logps,
    cluster_rarity_log_reward,
    cluster_rarity_reward,
    concept_distribution,
    concept_loss,
    open_block_loss,
    reduce_open_block_losses,
    trajectory_balance_loss,
)

TOL = {"rtol": 1e-12, "atol": 1e-12}  # float64 throughout: a few roundings of values of order 1


def np_kl_uniform(log_probs: np.ndarray, labels: np.ndarray, n: int) -> float:
    """Direct computation: m_j = Σ exp(log P), P̂ = m/Σm, KL(P̂‖U_n) over the P̂_j > 0."""
    m = np.array([np.exp(log_probs[labels == j]).sum() for j in np.unique(labels)])
    p = m / m.sum()
    return float((p * (np.log(p) - np.log(1.0 / n))).sum())


def test_block_logps_sum_and_mean():
    rng = np.random.default_rng(0)
    lp = np.log(rng.uniform(0.05, 1.0, size=(3, 7)))
    t = torch.tensor(lp)
    t[1, 6] = float("nan")  # outside every span: never reaches a result
    spans = [(0, 0, 2), (1, 3, 6), (2, 6, 7)]
    got = block_logps(t, spans)
    np.testing.assert_allclose(got.numpy(), [lp[0, 0:2].sum(), lp[1, 3:6].sum(), lp[2, 6]], **TOL)
    mean = block_logps(t, spans, normalize=True)
    np.testing.assert_allclose(mean.numpy(), [lp[0, 0:2].mean(), lp[1, 3:6].mean(), lp[2, 6]], **TOL)
    np.testing.assert_allclose(block_logps(t[0], [(1, 4)]).numpy(), [lp[0, 1:4].sum()], **TOL)
    assert block_logps(t, []).shape == (0,)
    with pytest.raises(ValueError, match=r"span \(0, 3, 3\) is empty"):
        block_logps(t, [(0, 3, 3)])
    x = torch.tensor(lp, requires_grad=True)
    block_logps(x, spans).sum().backward()
    assert x.grad[0, :2].eq(1).all() and x.grad[0, 2:].eq(0).all()


def test_concept_loss_matches_numpy_and_is_stable():
    rng = np.random.default_rng(1)
    lp = -rng.uniform(20, 90, size=12)  # P(b) as small as e^-90: stays finite in log space
    opts = rng.integers(0, 3, size=12)
    opts[:3] = [0, 1, 2]
    got = concept_loss(torch.tensor(lp), torch.tensor(opts), num_options=3)
    shift = lp - lp.max()  # the numpy reference is computed on shifted values: P̂ is shift-invariant
    np.testing.assert_allclose(got.item(), np_kl_uniform(shift, opts, 3), **TOL)
    p = concept_distribution(torch.tensor(lp), torch.tensor(opts), 3).numpy()
    m = np.array([np.exp(shift[opts == o]).sum() for o in range(3)])
    np.testing.assert_allclose(p, m / m.sum(), **TOL)


def test_uniform_over_all_vs_observed():
    lp = torch.tensor([-1.0, -2.0, -0.5], dtype=torch.float64)
    one = torch.tensor([1, 1, 1])
    np.testing.assert_allclose(concept_loss(lp, one, 2).item(), math.log(2), **TOL)
    np.testing.assert_allclose(concept_loss(lp, one, 4, uniform_over="all").item(), math.log(4), **TOL)
    assert concept_loss(lp, one, 4, uniform_over="observed").item() == 0.0
    two = torch.tensor([0, 1, 1])
    lpn = lp.numpy()
    np.testing.assert_allclose(
        concept_loss(lp, two, 3, uniform_over="observed").item(), np_kl_uniform(lpn, two.numpy(), 2), **TOL
    )
    np.testing.assert_allclose(concept_loss(lp, two, 3).item(), np_kl_uniform(lpn, two.numpy(), 3), **TOL)
    with pytest.raises(UnknownNameError, match="uniform_over='some'"):
        concept_loss(lp, two, 3, uniform_over="some")
    with pytest.raises(ValueError, match=r"option_ids must lie in \[0, 2\)"):
        concept_loss(lp, torch.tensor([0, 1, 2]), 2)


def test_empty_and_single_option_give_zero_not_nan():
    empty = torch.zeros(0, dtype=torch.float64, requires_grad=True)
    for loss in (
        concept_loss(empty, torch.zeros(0, dtype=torch.long), 2),
        open_block_loss(empty, torch.zeros(0, dtype=torch.long), 5),
        trajectory_balance_loss(torch.zeros((), requires_grad=True), empty, torch.zeros(0)),
    ):
        assert loss.item() == 0.0
        loss.backward()
    x = torch.tensor([-3.0, -4.0], dtype=torch.float64, requires_grad=True)
    loss = concept_loss(x, torch.tensor([0, 0]), num_options=1)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros(2, dtype=torch.float64))
    assert open_block_loss(x, None, 5).item() == 0.0  # buffer not clustered yet
    assert concept_distribution(empty, torch.zeros(0, dtype=torch.long), 3).tolist() == [0.0, 0.0, 0.0]
    # a gradient with an unobserved option is finite
    y = torch.tensor([-3.0, -4.0], dtype=torch.float64, requires_grad=True)
    concept_loss(y, torch.tensor([0, 2]), num_options=3).backward()
    assert torch.isfinite(y.grad).all()


def test_open_block_loss_matches_numpy():
    rng = np.random.default_rng(2)
    mean_lp = -rng.uniform(0.5, 6.0, size=10)
    labels = rng.integers(0, 4, size=10)
    got = open_block_loss(torch.tensor(mean_lp), torch.tensor(labels), n_clusters=5)
    np.testing.assert_allclose(got.item(), np_kl_uniform(mean_lp, labels, 5), **TOL)
    same = open_block_loss(torch.tensor(mean_lp), torch.zeros(10, dtype=torch.long), n_clusters=5)
    np.testing.assert_allclose(same.item(), math.log(5), **TOL)


def test_reduction_sum_and_weighted():
    losses = torch.tensor([0.3, 0.7, 0.0], dtype=torch.float64)
    weights = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64, requires_grad=True)
    np.testing.assert_allclose(reduce_open_block_losses(losses).item(), 1.0, **TOL)
    w = reduce_open_block_losses(losses, "weighted", weights)
    np.testing.assert_allclose(w.item(), 0.5 * 0.3 + 0.25 * 0.7, **TOL)
    assert not w.requires_grad  # the weights are detached
    with pytest.raises(ConfigError, match="needs weights"):
        reduce_open_block_losses(losses, "weighted")
    with pytest.raises(UnknownNameError, match="open_block_reduction='mean'"):
        reduce_open_block_losses(losses, "mean")


def test_trajectory_balance_matches_numpy_and_gradients():
    rng = np.random.default_rng(3)
    sum_lp = -rng.uniform(5, 40, size=6)
    log_r = rng.normal(size=6)
    log_z = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    x = torch.tensor(sum_lp, requires_grad=True)
    loss = trajectory_balance_loss(log_z, x, torch.tensor(log_r))
    expected = np.mean((1.5 + sum_lp - log_r) ** 2)
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-12)
    loss.backward()
    np.testing.assert_allclose(log_z.grad.item(), np.mean(2 * (1.5 + sum_lp - log_r)), rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), 2 * (1.5 + sum_lp - log_r) / 6, rtol=1e-12)


def test_cluster_rarity_reward():
    labels = torch.tensor([0, 0, 0, 1, 2, 2])
    log_r = cluster_rarity_log_reward(labels)
    share = np.array([3, 3, 3, 1, 2, 2]) / 6
    np.testing.assert_allclose(log_r.numpy(), -np.log(share), rtol=1e-6)
    np.testing.assert_allclose(cluster_rarity_reward(labels).numpy(), 1 / share, rtol=1e-6)
    assert cluster_rarity_log_reward(torch.zeros(4, dtype=torch.long)).tolist() == [0.0] * 4  # one cluster
    assert cluster_rarity_log_reward(torch.zeros(0, dtype=torch.long)).shape == (0,)
