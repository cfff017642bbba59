"""PPO building blocks as pure functions: masked statistics, KL estimators, per-token rewards, GAE and the
clipped policy and value losses (docs/ppo.md).

Conventions shared by every function here:

- Shapes: ``B`` rollouts, ``T`` completion tokens. ``mask`` is a ``(B, T)`` completion mask (bool, or a 0/1
  integer/float tensor), normally 1 on a prefix of each row (right padding); every function is correct for an
  arbitrary 0/1 mask unless its docstring says otherwise.
- Masked-out positions never leak: inputs are replaced by 0 there *before* any arithmetic (``torch.where``, not
  multiplication), so padding may hold anything, even ``inf``/``nan``, without reaching a result or a gradient.
  Per-token outputs are exactly 0 at masked-out positions.
- Shapes are validated up front: a mismatch raises ``ValueError`` naming the arguments and their shapes
  (e.g. ``"values has shape (2, 5) but mask has shape (2, 4)"``), never a broadcasting error from inside torch.
- Precision: half/bfloat16 inputs are computed in float32 and results are float32 (float64 stays float64);
  gradients flow through the casts.
- Nothing here detaches its inputs: pass detached rollout tensors (old log-probs, old values, advantages, returns).
  The ``stats`` dicts hold detached 0-dim tensors (no device sync); call ``.item()`` when logging.
"""

from __future__ import annotations

import math

import torch

from trl_ext.common.tensor_checks import _as_bool, _check_same_shape, _check_tensors, _compute_dtype, _fill, _shape

__all__ = [
    "KL_ESTIMATORS",
    "explained_variance",
    "gae",
    "kl_estimate",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "policy_loss",
    "token_rewards",
    "value_loss",
]

KL_ESTIMATORS = ("k1", "k2", "k3")


# --------------------------------------------------------------------------------------------------- helpers


def _check_2d(**named: torch.Tensor) -> None:
    for name, t in named.items():
        if t.dim() != 2:
            raise ValueError(f"{name} must be 2-D (B, T), got shape {_shape(t)}")


def _count(m: torch.Tensor) -> int:
    return int(m.sum().item())


# ---------------------------------------------------------------------------------------------- statistics
def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """Masked mean ``Σ x·m / Σ m``, over all entries (``dim=None``) or along ``dim``.

    ``mask`` must have the shape of ``x``. With ``dim=None`` an all-zero mask raises ``ValueError`` (a mean over
    nothing is always a bug upstream); with ``dim`` given, slices without any masked entry are NaN (0/0).
    """
    _check_same_shape(x=x, mask=mask)
    dtype = _compute_dtype(x)
    m = _as_bool(mask)
    xs = _fill(x, m, dtype)
    if dim is None:
        if _count(m) == 0:
            raise ValueError("masked_mean: mask selects no entries (all zeros); the mean is undefined")
        return xs.sum() / m.sum().to(dtype)
    return xs.sum(dim=dim) / m.sum(dim=dim).to(dtype)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance over the masked entries of ``x`` (one scalar over the whole tensor).

    ``σ² = Σ m·(x − μ)² / n`` with ``μ = masked_mean(x, mask)`` and ``n = Σ m``; with ``unbiased=True``
    (default, as TRL) it is multiplied by Bessel's correction ``n / (n − 1)``.

    Raises ``ValueError`` when fewer than 2 entries are masked and ``unbiased=True`` (TRL raised too; the
    estimate would be 0/0 or inf), or when no entry is masked and ``unbiased=False``.
    """
    _check_same_shape(x=x, mask=mask)
    m = _as_bool(mask)
    n = _count(m)
    if unbiased and n < 2:
        raise ValueError(
            f"masked_var: the unbiased variance needs at least 2 masked entries, got {n} "
            "(e.g. a mini-batch of one single-token completion); use unbiased=False or a larger batch"
        )
    if n == 0:
        raise ValueError("masked_var: mask selects no entries (all zeros); the variance is undefined")
    dtype = _compute_dtype(x)
    xs = _fill(x, m, dtype)
    mean = xs.sum() / n
    centered = torch.where(m, xs - mean, torch.zeros((), dtype=dtype, device=xs.device))
    var = (centered**2).sum() / n
    if unbiased:
        var = var * (n / (n - 1))
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Whiten the masked entries: ``(x − μ) / sqrt(σ² + eps)``, ``μ = masked_mean``, ``σ² = masked_var`` (unbiased).

    With ``shift_mean=False`` the mean is added back, ``(x − μ)/sqrt(σ² + eps) + μ`` (TRL's reward whitening:
    rescale without re-centring). Masked-out positions are set to 0. Needs at least 2 masked entries (see
    :func:`masked_var`). Statistics are over all masked entries of the tensor (the whole batch), not per row.
    """
    _check_same_shape(x=x, mask=mask)
    m = _as_bool(mask)
    dtype = _compute_dtype(x)
    xs = _fill(x, m, dtype)
    mean = masked_mean(xs, m)
    var = masked_var(xs, m, unbiased=True)
    whitened = (xs - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(m, whitened, torch.zeros((), dtype=dtype, device=xs.device))


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """Explained variance of the value predictions, ``1 − Var[R − V] / Var[R]`` over the masked entries.

    1 for perfect predictions, 0 for a constant prediction, negative when worse than a constant. Population
    variances (the Bessel factor cancels). Returns NaN when ``Var[R] = 0`` (nothing to explain) or when no
    entry is masked. Computed in float64 without gradients; returns a Python float.
    """
    _check_same_shape(values=values, returns=returns, mask=mask)
    m = _as_bool(mask)
    n = _count(m)
    if n == 0:
        return math.nan
    with torch.no_grad():
        v = _fill(values.detach(), m, torch.float64)
        r = _fill(returns.detach(), m, torch.float64)
        var_r = masked_var(r, m, unbiased=False).item()
        var_diff = masked_var(r - v, m, unbiased=False).item()
    if var_r == 0.0:
        return math.nan
    return 1.0 - var_diff / var_r


# --------------------------------------------------------------------------------------------------- KL
def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(π‖π_ref) from log-probs of tokens sampled from π (Schulman's estimators).

    With ``d = logp − logp_ref`` (so ``log r = logp_ref − logp = −d``):

    - ``k1 = d``: unbiased, can be negative per token, high variance;
    - ``k2 = ½·d²``: biased, non-negative, low variance;
    - ``k3 = exp(−d) − (−d) − 1 = (r − 1) − log r``: unbiased and non-negative.

    Elementwise, any shape (the two inputs must have the same shape); no mask is applied. An unknown
    ``estimator`` raises ``ValueError`` naming it and the known ones.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"Unknown KL estimator {estimator!r}; known estimators: {', '.join(KL_ESTIMATORS)}")
    _check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
    dtype = _compute_dtype(logprobs)
    d = logprobs.to(dtype) - ref_logprobs.to(dtype)
    if estimator == "k1":
        return d
    if estimator == "k2":
        return 0.5 * d**2
    log_r = -d
    return torch.expm1(log_r) - log_r  # exp(log r) − 1 − log r, accurate near r = 1


# ------------------------------------------------------------------------------------------- rewards / GAE
def token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float | torch.Tensor
) -> torch.Tensor:
    """Per-token PPO rewards ``(B, T)``: ``r_t = −kl_coef·kl_t`` on masked tokens, 0 elsewhere, plus ``scores[b]``
    added at the last masked token of row ``b`` (the largest ``t`` with ``mask[b, t] = 1``).

    ``scores`` is ``(B,)`` (one sequence score per completion), ``kl`` and ``mask`` are ``(B, T)``. Any mask
    works; a row with an empty mask raises ``ValueError`` naming the row(s), since a completion always has at
    least one token. (TRL 1.12 put the score one position *after* the last token when it fitted; here it is on
    the last completion token itself, as docs/ppo.md says.)
    """
    _check_tensors(scores=scores, kl=kl, mask=mask)
    _check_2d(kl=kl)
    _check_same_shape(kl=kl, mask=mask)
    if scores.shape != kl.shape[:1]:
        raise ValueError(
            f"scores has shape {_shape(scores)} but kl has shape {_shape(kl)}; expected scores ({kl.shape[0]},)"
        )
    m = _as_bool(mask)
    empty = (~m.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"token_rewards: rows {empty} of mask have no completion token; cannot place their score")
    dtype = _compute_dtype(kl)
    rewards = -kl_coef * _fill(kl, m, dtype)
    positions = torch.arange(1, m.shape[1] + 1, device=m.device)
    last = (m * positions).argmax(dim=1, keepdim=True)  # unique max at the last masked position
    score_map = torch.zeros_like(rewards).scatter(1, last, scores.to(dtype).unsqueeze(1))
    return rewards + score_map


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
    bridge_gaps: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation on ``(B, T)`` tensors; returns ``(advantages, returns)``.

    On masked positions, with ``m`` the mask and everything beyond ``T`` taken as 0::

        δ_t = r_t + γ·V_{t+1}·m_{t+1} − V_t
        A_t = δ_t + γλ·A_{t+1}·m_{t+1}
        R_t = A_t + V_t

    i.e. the value and advantage after the last masked token are 0 (the episode ends there). Advantages and
    returns are 0 at masked-out positions. For a mask that is not a prefix, every maximal run of masked tokens
    is its own episode (a gap ends it); left padding works as is. With ``bridge_gaps=True`` the gaps are not
    episode ends but text the policy did not write (a multi-turn episode's environment turns, docs/ppo.md,
    "Multi-turn episodes"): ``t+1`` above then means the next masked position of the row, so the masked tokens of
    a row form one episode, as if the unmasked ones were cut out. Vectorised over ``B``, a reverse loop over
    ``T``. Not whitened (see :func:`masked_whiten`); pass detached rewards and values.
    """
    _check_tensors(rewards=rewards, values=values, mask=mask)
    _check_2d(rewards=rewards)
    _check_same_shape(rewards=rewards, values=values, mask=mask)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    m = _as_bool(mask)
    if bridge_gaps:
        # move each row's masked positions to the front (stable: in order), run GAE on the prefix, put them back
        order = torch.sort((~m).to(torch.int8), dim=1, stable=True).indices
        adv_c, ret_c = gae(rewards.gather(1, order), values.gather(1, order), m.gather(1, order), gamma, lam)
        return torch.zeros_like(adv_c).scatter(1, order, adv_c), torch.zeros_like(ret_c).scatter(1, order, ret_c)
    dtype = torch.promote_types(_compute_dtype(rewards), _compute_dtype(values))
    r = _fill(rewards, m, dtype)
    v = _fill(values, m, dtype)
    mf = m.to(dtype)
    n_tokens = r.shape[1]
    next_value = torch.zeros_like(r[:, 0])
    next_adv = torch.zeros_like(r[:, 0])
    advs = [next_adv] * n_tokens
    for t in reversed(range(n_tokens)):
        # next_value/next_adv are already 0 where m_{t+1} = 0 (or past the end)
        delta = r[:, t] + gamma * next_value - v[:, t]
        adv = (delta + gamma * lam * next_adv) * mf[:, t]
        advs[t] = adv
        next_value, next_adv = v[:, t], adv
    advantages = torch.stack(advs, dim=1)
    returns = (advantages + v) * mf
    return advantages, returns


# -------------------------------------------------------------------------------------------------- losses
def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
    cliprange_high: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate, token-level: returns ``(loss, stats)``.

    ``ρ = exp(logp − logp_old)``; per token ``pg_t = max(−A_t·ρ_t, −A_t·clip(ρ_t, 1 − ε, 1 + ε_high))`` with
    ``ε = cliprange`` and ``ε_high = cliprange_high`` (defaults to ``ε``; a larger value is DAPO's clip-higher);
    ``loss = Σ m·pg / Σ m`` over all tokens of the batch.

    ``stats`` (detached 0-dim tensors), all masked means over tokens:

    - ``clipfrac``: fraction of tokens where the clipped branch is taken, ``−A·clip(ρ) > −A·ρ`` (TRL's
      ``(pg_losses2 > pg_losses)``);
    - ``approx_kl``: ``½·(logp − logp_old)²`` (TRL 1.12's ``approxkl``; TRL averaged over padding too);
    - ``approx_kl_k3``: ``(ρ − 1) − log ρ``, the unbiased non-negative estimator of KL(π_old‖π);
    - ``ratio_mean``: ``ρ``.
    """
    _check_tensors(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    _check_2d(logprobs=logprobs)
    _check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    if cliprange < 0:
        raise ValueError(f"cliprange must be >= 0, got {cliprange}")
    eps_high = cliprange if cliprange_high is None else cliprange_high
    if eps_high < 0:
        raise ValueError(f"cliprange_high must be >= 0, got {cliprange_high}")
    m = _as_bool(mask)
    if _count(m) == 0:
        raise ValueError("policy_loss: mask selects no tokens")
    dtype = _compute_dtype(logprobs)
    logp = _fill(logprobs, m, dtype)
    old = _fill(old_logprobs, m, dtype)
    adv = _fill(advantages, m, dtype)
    log_ratio = logp - old
    ratio = torch.exp(log_ratio)
    pg_losses = -adv * ratio
    pg_losses2 = -adv * torch.clamp(ratio, 1.0 - cliprange, 1.0 + eps_high)
    loss = masked_mean(torch.maximum(pg_losses, pg_losses2), m)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((pg_losses2 > pg_losses).to(dtype), m),
            "approx_kl": masked_mean(0.5 * log_ratio**2, m),
            "approx_kl_k3": masked_mean(torch.expm1(log_ratio) - log_ratio, m),
            "ratio_mean": masked_mean(ratio, m),
        }
    return loss, {k: v.detach() for k, v in stats.items()}


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped value loss: returns ``(loss, stats)``.

    ``V_clip = V_old + clip(V − V_old, −ε_v, ε_v)``;
    ``loss = ½·masked_mean(max((V − R)², (V_clip − R)²))`` over all tokens of the batch.

    ``stats`` (detached 0-dim tensors): ``vf_clipfrac`` = masked fraction of tokens where the clipped term is the
    larger one, ``(V_clip − R)² > (V − R)²`` (TRL's ``vf_losses2 > vf_losses1``); ``value_mean`` = masked mean
    of ``V``.
    """
    _check_tensors(values=values, old_values=old_values, returns=returns, mask=mask)
    _check_2d(values=values)
    _check_same_shape(values=values, old_values=old_values, returns=returns, mask=mask)
    if cliprange_value < 0:
        raise ValueError(f"cliprange_value must be >= 0, got {cliprange_value}")
    m = _as_bool(mask)
    if _count(m) == 0:
        raise ValueError("value_loss: mask selects no tokens")
    dtype = _compute_dtype(values)
    v = _fill(values, m, dtype)
    v_old = _fill(old_values, m, dtype)
    ret = _fill(returns, m, dtype)
    v_clipped = v_old + torch.clamp(v - v_old, -cliprange_value, cliprange_value)
    vf_losses1 = (v - ret) ** 2
    vf_losses2 = (v_clipped - ret) ** 2
    loss = 0.5 * masked_mean(torch.maximum(vf_losses1, vf_losses2), m)
    with torch.no_grad():
        stats = {
            "vf_clipfrac": masked_mean((vf_losses2 > vf_losses1).to(dtype), m),
            "value_mean": masked_mean(v, m),
        }
    return loss, {k: s.detach() for k, s in stats.items()}
