"""Diversity losses as pure torch functions (docs/diversity.md: steps 4–5 and the GFlowNet objective).

- Block log-probability ``log P(b) = Σ_{t∈b} log p_t`` (:func:`block_logps`) and its length-normalised form
  ``log q(b) = (1/|b|) Σ_{t∈b} log p_t`` (``normalize=True``).
- Concept loss (:func:`concept_loss`): ``m_o = Σ_{b: option(b)=o} P(b)``, ``P̂ = m / Σm``,
  ``L_c = KL(P̂ ‖ U) = Σ_o P̂_o (log P̂_o − log(1/n))`` with ``n`` all options (default) or the observed ones.
- Open-block loss (:func:`open_block_loss`): ``m_k = Σ_{label_i=k} q_i``, ``P̂ = m / Σm``,
  ``L_o(o) = KL(P̂ ‖ U_K)``; the per-option losses are reduced by :func:`reduce_open_block_losses`.
- Trajectory balance (:func:`trajectory_balance_loss`): ``mean_i (log Z + Σ_t log p_θ(y_t) − log R_i)²`` with
  the rarity reward of :func:`cluster_rarity_log_reward`.

Every mass is kept in log space: ``log m_o = logsumexp_{b∈o} log P(b)`` and ``log P̂ = log m − logsumexp log m``,
so a block of 30 tokens (P(b) ≈ e^-90) neither underflows nor gives NaN. Only observed options/clusters enter the
KL sum (their ``P̂ > 0``; ``0·log 0 = 0`` for the others), so no ``-inf`` ever reaches a result or a gradient.
An input with no block, or a distribution over a single option or cluster, gives an exact 0 that still belongs
to the autograd graph (``backward()`` works and gives zero gradients). Half/bfloat16 inputs are computed in
float32; float64 stays float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

from trl_ext.common.errors import ConfigError, UnknownNameError
from trl_ext.common.tensor_checks import _compute_dtype

__all__ = [
    "OPEN_BLOCK_REDUCTIONS",
    "UNIFORM_OVER",
    "block_logps",
    "cluster_rarity_log_reward",
    "cluster_rarity_reward",
    "concept_distribution",
    "concept_loss",
    "kl_to_uniform",
    "open_block_loss",
    "reduce_open_block_losses",
    "trajectory_balance_loss",
]

UNIFORM_OVER = ("all", "observed")
OPEN_BLOCK_REDUCTIONS = ("sum", "weighted")


def _check_1d(**named: torch.Tensor) -> None:
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")


def _check_labels(name: str, labels: torch.Tensor, values: torch.Tensor, num: int, what: str) -> None:
    _check_1d(**{name: labels})
    if labels.shape != values.shape:
        raise ValueError(f"{name} has shape {tuple(labels.shape)} but the log-probs have shape {tuple(values.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num):
        raise ValueError(
            f"{name} must lie in [0, {num}) ({what}), got values in [{int(labels.min())}, {int(labels.max())}]"
        )


def _zero(x: torch.Tensor) -> torch.Tensor:
    """An exact scalar 0 attached to ``x``'s graph."""
    return x.sum() * 0.0


# ---------------------------------------------------------------------------------------- block probabilities
def block_logps(
    token_logps: torch.Tensor,
    spans: Sequence[tuple[int, int]] | Sequence[tuple[int, int, int]],
    normalize: bool = False,
) -> torch.Tensor:
    """Log-probability of each block: ``Σ_{t=start}^{end-1} log p_t`` (or the mean with ``normalize=True``).

    Args:
        token_logps: per-token log-probs, ``(T,)`` for one completion or ``(B, T)`` for a batch.
        spans: ``(start, end)`` pairs for a 1-D input, ``(row, start, end)`` triples for a 2-D input; ``end`` is
            exclusive and every span has at least one token.
        normalize: divide by the block length, ``log q(b) = (1/|b|) Σ_{t∈b} log p_t`` (open blocks, step 5).

    Returns:
        ``(N,)``, one value per span (empty for no span). Tokens outside a span never reach the result or its
        gradient, whatever they hold.
    """
    if token_logps.dim() not in (1, 2):
        raise ValueError(f"token_logps must be (T,) or (B, T), got shape {tuple(token_logps.shape)}")
    rows2d = token_logps if token_logps.dim() == 2 else token_logps.unsqueeze(0)
    dtype = _compute_dtype(token_logps)
    width = 3 if token_logps.dim() == 2 else 2
    rows, starts, ends = [], [], []
    for span in spans:
        if len(span) != width:
            raise ValueError(
                f"span {tuple(span)} must have {width} entries for token_logps of shape {tuple(token_logps.shape)}"
            )
        row, start, end = span if width == 3 else (0, *span)
        if not (0 <= row < rows2d.shape[0]) or not (0 <= start < end <= rows2d.shape[1]):
            raise ValueError(f"span {tuple(span)} is empty or outside token_logps of shape {tuple(token_logps.shape)}")
        rows.append(row)
        starts.append(start)
        ends.append(end)
    if not rows:
        return token_logps.new_zeros((0,), dtype=dtype) + _zero(token_logps).to(dtype)
    device = token_logps.device
    positions = torch.arange(rows2d.shape[1], device=device)
    start_t = torch.tensor(starts, device=device)[:, None]
    end_t = torch.tensor(ends, device=device)[:, None]
    inside = (positions >= start_t) & (positions < end_t)  # (N, T)
    values = rows2d[torch.tensor(rows, device=device)].to(dtype)
    sums = torch.where(inside, values, torch.zeros((), dtype=dtype, device=device)).sum(-1)
    if normalize:
        sums = sums / (end_t - start_t).squeeze(1).to(dtype)
    return sums


# -------------------------------------------------------------------------------------- distributions and KL
def _log_masses(logps: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(observed labels, log m)`` with ``log m_j = logsumexp_{i: label_i = j} logps_i`` for each observed j."""
    observed = torch.unique(labels)  # sorted
    members = labels[None, :] == observed[:, None]  # (J, N), every row has a member
    neg_inf = torch.full((), -math.inf, dtype=logps.dtype, device=logps.device)
    return observed, torch.logsumexp(torch.where(members, logps[None, :], neg_inf), dim=1)


def kl_to_uniform(log_masses: torch.Tensor, n: int) -> torch.Tensor:
    """``KL(P̂ ‖ U_n) = Σ_j P̂_j (log P̂_j + log n)`` with ``log P̂ = log m − logsumexp(log m)``.

    ``log_masses`` holds the finite log-masses of the observed entries only (the others have ``P̂ = 0`` and add
    nothing); ``n`` is the size of the uniform's support (at least the number of observed entries).
    """
    if log_masses.numel() == 0 or n <= 1:
        return _zero(log_masses)
    log_p = log_masses - torch.logsumexp(log_masses, dim=0)
    return (log_p.exp() * (log_p + math.log(n))).sum()


def concept_distribution(block_logps: torch.Tensor, option_ids: torch.Tensor, num_options: int) -> torch.Tensor:
    """``P̂_o = m_o / Σm`` over all ``num_options`` options (0 for an option without block), ``m_o = Σ_{b∈o} P(b)``.

    With no block at all the result is all zeros. Used for logging and for ``open_block_reduction="weighted"``.
    """
    _check_1d(block_logps=block_logps)
    _check_labels("option_ids", option_ids, block_logps, num_options, "option index")
    dtype = _compute_dtype(block_logps)
    out = block_logps.new_zeros((num_options,), dtype=dtype) + _zero(block_logps).to(dtype)
    if block_logps.numel() == 0:
        return out
    observed, log_m = _log_masses(block_logps.to(dtype), option_ids.to(block_logps.device))
    return out.index_put((observed,), (log_m - torch.logsumexp(log_m, dim=0)).exp())


def concept_loss(
    block_logps: torch.Tensor,
    option_ids: torch.Tensor,
    num_options: int,
    uniform_over: Literal["all", "observed"] = "all",
) -> torch.Tensor:
    """Concept loss ``L_c = KL(P̂ ‖ U)`` (docs/diversity.md, step 4).

    ``m_o = Σ_{b: option(b)=o} P(b)`` over the concept blocks of the batch, with ``log m_o`` computed as a
    ``logsumexp`` of the blocks' ``log P(b)``; ``P̂ = m/Σm``; ``L_c = Σ_o P̂_o (log P̂_o − log(1/n))``.

    **Decision:** ``uniform_over="all"`` (default) takes ``n = num_options``, so a batch in which one option
    takes all the mass costs ``log num_options``; ``uniform_over="observed"`` (upstream) takes ``n`` = the number
    of options seen in the batch, so a single observed option costs 0.

    Args:
        block_logps: ``(N,)`` log-probabilities ``log P(b)`` of the concept blocks (:func:`block_logps`).
        option_ids: ``(N,)`` integer option index of each block, in ``[0, num_options)``.
        num_options: the number of options of the concept.
        uniform_over: ``"all"`` or ``"observed"``.

    Returns:
        a scalar; exactly 0 (in the graph) with no concept block or a single option.
    """
    if uniform_over not in UNIFORM_OVER:
        raise UnknownNameError(f"uniform_over={uniform_over!r} is not known; known: {', '.join(UNIFORM_OVER)}")
    if num_options < 1:
        raise ConfigError(f"num_options must be at least 1, got {num_options}")
    _check_1d(block_logps=block_logps)
    _check_labels("option_ids", option_ids, block_logps, num_options, "option index")
    if block_logps.numel() == 0:
        return _zero(block_logps).to(_compute_dtype(block_logps))
    observed, log_m = _log_masses(block_logps.to(_compute_dtype(block_logps)), option_ids.to(block_logps.device))
    n = num_options if uniform_over == "all" else observed.numel()
    return kl_to_uniform(log_m, n)


def open_block_loss(mean_logps: torch.Tensor, cluster_labels: torch.Tensor | None, n_clusters: int) -> torch.Tensor:
    """Open-block loss of one option ``L_o(o) = KL(P̂ ‖ U_K)`` (docs/diversity.md, step 5).

    ``q_i = exp(mean_t log p_t)`` of the open block following each concept block with option ``o``
    (``mean_logps`` = ``log q_i``, :func:`block_logps` with ``normalize=True``); ``m_k = Σ_{label_i=k} q_i``
    (``logsumexp`` in log space); ``P̂ = m/Σm``; ``L_o(o) = Σ_k P̂_k (log P̂_k + log K)``.

    Args:
        mean_logps: ``(N,)`` length-normalised log-probabilities of the open blocks.
        cluster_labels: ``(N,)`` k-means label of each block in ``[0, n_clusters)``, or None when the option's
            replay buffer is not clustered yet (fewer than ``min_samples_for_clustering`` texts).
        n_clusters: K.

    Returns:
        a scalar; exactly 0 (in the graph) for None labels, no block, or K = 1.
    """
    if n_clusters < 1:
        raise ConfigError(f"n_clusters must be at least 1, got {n_clusters}")
    _check_1d(mean_logps=mean_logps)
    dtype = _compute_dtype(mean_logps)
    if cluster_labels is None or mean_logps.numel() == 0:
        return _zero(mean_logps).to(dtype)
    _check_labels("cluster_labels", cluster_labels, mean_logps, n_clusters, "cluster label")
    _, log_m = _log_masses(mean_logps.to(dtype), cluster_labels.to(mean_logps.device))
    return kl_to_uniform(log_m, n_clusters)


def reduce_open_block_losses(
    losses: torch.Tensor,
    reduction: Literal["sum", "weighted"] = "sum",
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """``L_o`` from the per-option losses: ``Σ_o L_o(o)`` (``"sum"``, default, as upstream) or
    ``Σ_o P̂_o · L_o(o)`` (``"weighted"``, ``weights`` = :func:`concept_distribution`).

    **Decision:** the weights are detached: they say how much each option counts, and the concept loss alone
    moves the option distribution (a gradient through them would reward collapsing onto the option whose open
    blocks are least diverse).
    """
    if reduction not in OPEN_BLOCK_REDUCTIONS:
        raise UnknownNameError(
            f"open_block_reduction={reduction!r} is not known; known: {', '.join(OPEN_BLOCK_REDUCTIONS)}"
        )
    _check_1d(losses=losses)
    if reduction == "sum":
        return losses.sum()
    if weights is None:
        raise ConfigError('open_block_reduction="weighted" needs weights (the concept distribution P̂)')
    _check_1d(weights=weights)
    if weights.shape != losses.shape:
        raise ValueError(f"weights has shape {tuple(weights.shape)} but losses has shape {tuple(losses.shape)}")
    return (weights.detach().to(losses.dtype) * losses).sum()


# ----------------------------------------------------------------------------------------- GFlowNet objective
def trajectory_balance_loss(log_z: torch.Tensor, sum_logps: torch.Tensor, log_rewards: torch.Tensor) -> torch.Tensor:
    """Trajectory balance ``mean_i (log Z + Σ_t log p_θ(y_t | y_<t, x) − log R_i)²``.

    Args:
        log_z: the learned ``log Z``, a scalar (0-dim or one element) tensor.
        sum_logps: ``(B,)`` completion log-probabilities ``Σ_t log p_θ`` (masked sums over completion tokens).
        log_rewards: ``(B,)`` ``log R`` (e.g. :func:`cluster_rarity_log_reward`); treated as constants (detached).

    Returns:
        a scalar; exactly 0 (in the graph) for an empty batch.
    """
    _check_1d(sum_logps=sum_logps, log_rewards=log_rewards)
    if sum_logps.shape != log_rewards.shape:
        raise ValueError(
            f"sum_logps has shape {tuple(sum_logps.shape)} but log_rewards has shape {tuple(log_rewards.shape)}"
        )
    if log_z.numel() != 1:
        raise ValueError(f"log_z must be a scalar, got shape {tuple(log_z.shape)}")
    dtype = _compute_dtype(sum_logps, log_z)
    if sum_logps.numel() == 0:
        return (_zero(sum_logps) + _zero(log_z)).to(dtype)
    residual = log_z.reshape(()).to(dtype) + sum_logps.to(dtype) - log_rewards.detach().to(dtype)
    return residual.pow(2).mean()


def cluster_rarity_log_reward(cluster_labels: torch.Tensor) -> torch.Tensor:
    """``log R_i = −log s(c_i)``, ``s(k) = |{j: c_j = k}| / B`` the share of the batch in cluster ``k``.

    **Decision:** the rarity reward is the inverse share, ``R = 1/s(c) = B/n_c ≥ 1``, so ``log R`` is finite
    for every completion (a reward ``1 − s`` would be 0, ``log R = −∞``, when the whole batch sits in one
    cluster) and TB's target ``p(y) ∝ R(y)`` gives every cluster present the same total mass. ``log R = 0``
    for all when the batch is one cluster (no preference), and ``log B`` for a cluster of one.

    Args:
        cluster_labels: ``(B,)`` integer labels (any non-negative ints).

    Returns:
        ``(B,)`` float32 ``log R`` (empty for an empty batch).
    """
    _check_1d(cluster_labels=cluster_labels)
    if cluster_labels.numel() == 0:
        return torch.zeros((0,), dtype=torch.float32, device=cluster_labels.device)
    _, inverse, counts = torch.unique(cluster_labels, return_inverse=True, return_counts=True)
    batch = float(cluster_labels.numel())
    return math.log(batch) - counts[inverse].to(torch.float32).log()


def cluster_rarity_reward(cluster_labels: torch.Tensor) -> torch.Tensor:
    """``R_i = 1 / s(c_i) = B / n_{c_i}`` (see :func:`cluster_rarity_log_reward` for the Decision)."""
    return cluster_rarity_log_reward(cluster_labels).exp()
