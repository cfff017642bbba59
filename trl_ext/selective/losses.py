"""Selective-generalisation loss terms as pure functions (docs/selective.md): token KL and hidden-state MSE against
the base model, sequence log-probs and the DPO regulariser, the LoRA alignment-plane penalties, and the
positive/negative-proxy combination.

Conventions (shared with :mod:`trl_ext.ppo.losses`):

- Shapes: ``B`` sequences, ``L`` tokens, ``V`` vocabulary, ``H`` hidden size. ``mask`` is a ``(B, L)`` 0/1 (or
  bool) attention mask or label mask.
- **Decision (docs/selective.md):** the KL and MSE terms are masked means over the tokens selected by ``mask``
  (upstream averaged over padding too). Masked-out positions never leak: inputs are replaced by 0 there *before* any
  arithmetic (``torch.where``), so padding may hold anything, even ``inf``/``nan``, without reaching a result or
  a gradient.
- The reference side (base-model logits / hidden states / log-probs, the alignment plane) is treated as a
  constant: every function ``detach()``-es it itself, so gradient flows only into the policy side.
- Shapes are validated up front: a mismatch raises ``ValueError`` naming the arguments and their shapes.
- Precision: half/bfloat16 inputs are computed in float32 and results are float32 (float64 stays float64).
- ``stats`` dicts hold detached 0-dim tensors (no device sync); call ``.item()`` when logging.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from trl_ext.common.tensor_checks import _as_bool, _check_same_shape, _check_tensors, _compute_dtype, _fill, _shape

__all__ = [
    "KL_DIRECTIONS",
    "directional_penalty",
    "dpo_regulariser",
    "orth_penalty",
    "positive_negative_proxy_loss",
    "representation_mse",
    "token_kl",
]

KL_DIRECTIONS = ("forward", "reverse")


# --------------------------------------------------------------------------------------------------- helpers


def _check_mask(mask: torch.Tensor, what: str) -> torch.Tensor:
    """Bool version of a ``(B, L)`` mask; an all-zero mask raises (a mean over nothing is a bug upstream)."""
    m = _as_bool(mask)
    if not bool(m.any()):
        raise ValueError(f"{what}: mask selects no tokens (all zeros); the masked mean is undefined")
    return m


def _check_scalar(name: str, x: object) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 0:
        raise ValueError(f"{name} must be a 0-dim (scalar) tensor, got shape {_shape(x)}")


# ------------------------------------------------------------------------------------------ KL against base
def token_kl(
    logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor, direction: str = "forward"
) -> torch.Tensor:
    """Masked mean over tokens of the full-vocabulary KL between the policy and the base model (0-dim tensor).

    With ``p = softmax(logits)`` (policy p_θ) and ``q = softmax(ref_logits)`` (base p_base), per token::

        forward:  KL(p‖q) = Σ_v p_v·(log p_v − log q_v)     (docs/selective.md, the default)
        reverse:  KL(q‖p) = Σ_v q_v·(log q_v − log p_v)

    and the result is ``Σ_t m_t·KL_t / Σ_t m_t`` over all tokens of the batch.

    ``logits`` and ``ref_logits`` are ``(B, L, V)``; ``mask`` is the ``(B, L)`` attention (or label) mask.
    **Decision (docs/selective.md):** tokens with ``mask = 0`` contribute nothing (upstream averaged over padding);
    their logits are replaced by 0 before the softmax, so garbage there never reaches the value or the gradient. The
    same position convention (shifted or not) must be used for both logits; the function does no shifting.

    Computed in float32 (float64 stays float64) with ``log_softmax``. Vocabulary entries with probability 0
    (``-inf`` logits) contribute 0 (``0·log 0 = 0``). ``ref_logits`` is detached here: the base model is a
    constant and the gradient flows into ``logits`` only. An all-zero mask raises ``ValueError``.
    """
    if direction not in KL_DIRECTIONS:
        raise ValueError(f"Unknown KL direction {direction!r}; known directions: {', '.join(KL_DIRECTIONS)}")
    _check_tensors(logits=logits, ref_logits=ref_logits, mask=mask)
    if logits.dim() != 3:
        raise ValueError(f"logits must be 3-D (B, L, V), got shape {_shape(logits)}")
    _check_same_shape(logits=logits, ref_logits=ref_logits)
    if mask.shape != logits.shape[:2]:
        raise ValueError(
            f"logits has shape {_shape(logits)} but mask has shape {_shape(mask)}; expected mask {_shape(logits)[:2]}"
        )
    m = _check_mask(mask, "token_kl")
    dtype = _compute_dtype(logits, ref_logits)
    m3 = m.unsqueeze(-1)
    log_p = F.log_softmax(_fill(logits, m3, dtype), dim=-1)
    log_q = F.log_softmax(_fill(ref_logits.detach(), m3, dtype), dim=-1)
    if direction == "reverse":
        log_p, log_q = log_q, log_p  # KL(q‖p): same formula with the roles swapped
    p = log_p.exp()
    support = p > 0
    zero = torch.zeros((), dtype=dtype, device=p.device)
    # where p = 0 both log-probs are replaced by 0 first, so neither the value nor the gradient sees 0·(−inf)
    per_token = (p * (torch.where(support, log_p, zero) - torch.where(support, log_q, zero))).sum(dim=-1)
    per_token = torch.where(m, per_token, zero)
    return per_token.sum() / m.sum().to(dtype)


# ---------------------------------------------------------------------------------------- hidden-state MSE
def representation_mse(
    hidden_states: Sequence[torch.Tensor],
    ref_hidden_states: Sequence[torch.Tensor],
    mask: torch.Tensor,
    skip_embedding: bool = True,
) -> torch.Tensor:
    """Sum over layers of the masked-mean squared distance between policy and base hidden states (0-dim tensor).

    ``hidden_states`` / ``ref_hidden_states`` are sequences as returned by transformers with
    ``output_hidden_states=True``: index 0 is the embedding output, 1..L the layer outputs, each ``(B, T, H)``::

        loss = Σ_{l=l0..L}  Σ_t m_t·MSE_t^l / Σ_t m_t,   MSE_t^l = (1/H)·Σ_h (h_θ^l[t, h] − h_base^l[t, h])²

    with ``l0 = 1`` when ``skip_embedding`` (docs/selective.md: the embedding layer is excluded) and ``l0 = 0``
    otherwise.

    **Decision (docs/selective.md):** masked by ``mask`` ``(B, T)`` (upstream averaged over padding); positions with
    ``mask = 0`` are replaced by 0 in both inputs before subtracting. The reference states are detached (gradient
    flows into ``hidden_states`` only). Both sequences must have the same number of entries and every layer the
    same shape, with ``(B, T)`` equal to the mask's shape; otherwise ``ValueError`` naming the layer and shapes.
    """
    if isinstance(hidden_states, torch.Tensor) or isinstance(ref_hidden_states, torch.Tensor):
        raise TypeError("hidden_states and ref_hidden_states must be sequences (tuple/list) of per-layer tensors")
    _check_tensors(mask=mask)
    hidden_states, ref_hidden_states = list(hidden_states), list(ref_hidden_states)
    if len(hidden_states) != len(ref_hidden_states):
        raise ValueError(
            f"hidden_states has {len(hidden_states)} entries but ref_hidden_states has {len(ref_hidden_states)}"
        )
    start = 1 if skip_embedding else 0
    if len(hidden_states) <= start:
        raise ValueError(
            f"hidden_states has {len(hidden_states)} entries; nothing to compare with skip_embedding={skip_embedding}"
        )
    if mask.dim() != 2:
        raise ValueError(f"mask must be 2-D (B, T), got shape {_shape(mask)}")
    for i, (h, r) in enumerate(zip(hidden_states, ref_hidden_states)):
        _check_same_shape(**{f"hidden_states[{i}]": h, f"ref_hidden_states[{i}]": r})
        if h.dim() != 3 or h.shape[:2] != mask.shape:
            raise ValueError(
                f"hidden_states[{i}] has shape {_shape(h)} but mask has shape {_shape(mask)}; expected (B, T, H) "
                f"with (B, T) = {_shape(mask)}"
            )
    m = _check_mask(mask, "representation_mse")
    m3 = m.unsqueeze(-1)
    dtype = _compute_dtype(*hidden_states[start:])
    n_tokens = m.sum().to(dtype)
    total = torch.zeros((), dtype=dtype, device=hidden_states[start].device)
    for h, r in zip(hidden_states[start:], ref_hidden_states[start:]):
        diff = _fill(h, m3, dtype) - _fill(r.detach(), m3, dtype)
        per_token = (diff**2).mean(dim=-1)  # 0 at masked-out positions
        total = total + (per_token.sum() / n_tokens).to(total.device)
    return total


# -------------------------------------------------------------------------------------------- DPO on proxy
def dpo_regulariser(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO loss on proxy pairs (A⁺[i] chosen, A⁻[i] rejected): returns ``(loss, stats)`` (docs/selective.md ``dpo``).

    Inputs are ``(B,)`` sequence log-probs ℓ, normally the *mean* log-prob per response token
    (:func:`sequence_logps` with ``average=True``)::

        r_c = β·(ℓ_c − ℓ_c^ref),   r_r = β·(ℓ_r − ℓ_r^ref)
        loss = mean_i −log σ(r_c,i − r_r,i)

    computed with ``logsigmoid`` (stable for large margins). ``ref_chosen`` / ``ref_rejected`` are detached.
    ``beta`` must be > 0. The caller multiplies by ``λ_dpo`` and adds ``CE(T)``.

    ``stats`` (detached 0-dim tensors, means over pairs): ``rewards_chosen`` (r_c), ``rewards_rejected`` (r_r),
    ``reward_margin`` (r_c − r_r) and ``reward_accuracy`` (fraction of pairs with r_c > r_r, as TRL).
    """
    _check_tensors(
        policy_chosen=policy_chosen, policy_rejected=policy_rejected, ref_chosen=ref_chosen, ref_rejected=ref_rejected
    )
    if policy_chosen.dim() != 1 or policy_chosen.numel() == 0:
        raise ValueError(f"policy_chosen must be 1-D (B,) with B >= 1, got shape {_shape(policy_chosen)}")
    _check_same_shape(
        policy_chosen=policy_chosen, policy_rejected=policy_rejected, ref_chosen=ref_chosen, ref_rejected=ref_rejected
    )
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    dtype = _compute_dtype(policy_chosen, policy_rejected)
    rewards_chosen = beta * (policy_chosen.to(dtype) - ref_chosen.detach().to(dtype))
    rewards_rejected = beta * (policy_rejected.to(dtype) - ref_rejected.detach().to(dtype))
    margin = rewards_chosen - rewards_rejected
    loss = -F.logsigmoid(margin).mean()
    with torch.no_grad():
        stats = {
            "rewards_chosen": rewards_chosen.mean(),
            "rewards_rejected": rewards_rejected.mean(),
            "reward_margin": margin.mean(),
            "reward_accuracy": (rewards_chosen > rewards_rejected).to(dtype).mean(),
        }
    return loss, {k: v.detach() for k, v in stats.items()}


# ----------------------------------------------------------------------------------- alignment-plane terms
def _plane_products(
    lora_A_weights: Mapping[str, torch.Tensor], plane: Mapping[str, torch.Tensor]
) -> list[torch.Tensor]:
    """``A·S_Aᵀ`` (r×r) per LoRA A tensor, matched with the plane by name; the plane side is detached."""
    if not isinstance(lora_A_weights, Mapping) or not isinstance(plane, Mapping):
        raise TypeError("lora_A_weights and plane must be mappings {parameter name: tensor}")
    if len(lora_A_weights) == 0:
        raise ValueError("lora_A_weights is empty: no LoRA A parameter to penalise")
    products = []
    for name, a in lora_A_weights.items():
        if name not in plane:
            raise ValueError(
                f"LoRA A parameter {name!r} has no entry in the alignment plane ({len(plane)} entries); "
                "planes are matched by name, never by order"
            )
        s = plane[name]
        _check_tensors(**{f"lora_A_weights[{name!r}]": a, f"plane[{name!r}]": s})
        if a.dim() != 2:
            raise ValueError(f"LoRA A parameter {name!r} must be 2-D (r, in), got shape {_shape(a)}")
        if s.shape != a.shape:
            raise ValueError(
                f"LoRA A parameter {name!r} has shape {_shape(a)} but its plane entry has shape {_shape(s)}"
            )
        dtype = _compute_dtype(a)
        products.append(a.to(dtype) @ s.detach().to(device=a.device, dtype=dtype).T)
    return products


def orth_penalty(lora_A_weights: Mapping[str, torch.Tensor], plane: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Orthogonality penalty (docs/selective.md ``orth_penalty``), λ-free, to be *added* to the loss (0-dim tensor)::

        orth = Σ_{modules} Σ_{i,j} |(A·S_Aᵀ)_{ij}|

    ``lora_A_weights`` maps parameter names to LoRA A matrices ``(r, in)``; ``plane`` maps the same names to the
    alignment-plane direction ``S_A``, which must have exactly the shape of ``A`` (the plane is built from the
    same LoRA parameters), so ``A·S_Aᵀ`` is ``r×r``. Matched by name: a LoRA A name without a plane entry
    raises ``ValueError`` naming it; extra plane entries (e.g. LoRA B) are ignored. The plane is detached.
    The caller computes ``CE(T) + λ₁·orth``.
    """
    products = _plane_products(lora_A_weights, plane)
    device = products[0].device
    return torch.stack([p.abs().sum().to(device) for p in products]).sum()


def directional_penalty(lora_A_weights: Mapping[str, torch.Tensor], plane: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Directional term (docs/selective.md ``directional_penalty``), λ-free, to be *added* to the loss (0-dim tensor)::

        directional = −Σ_{modules} Σ_{i,j} (A·S_Aᵀ)_{ij}

    i.e. the sign is already included: the caller computes ``CE(T) + λ₁·directional`` which equals the documented
    ``CE(T) − λ₁·Σ(A·S_Aᵀ)``. Same inputs, name matching and errors as :func:`orth_penalty`.
    """
    products = _plane_products(lora_A_weights, plane)
    device = products[0].device
    return -torch.stack([p.sum().to(device) for p in products]).sum()


# ------------------------------------------------------------------------------------ positive / negative
def positive_negative_proxy_loss(
    ce_outcome: torch.Tensor,
    ce_pos: torch.Tensor,
    ce_neg: torch.Tensor | None = None,
    kl_pos: torch.Tensor | None = None,
    lambda_pos: float = 0.5,
    lambda_neg: float = 0.5,
    beta_kl: float = 0.0,
) -> torch.Tensor:
    """docs/selective.md ``positive_negative_proxy`` combination of 0-dim losses::

        loss = CE(T) + λ_p·[CE(A⁺) + β_kl·KL(p_θ‖p_base)(A⁺)] − λ_n·CE(A⁻)

    ``ce_neg=None`` omits the ``−λ_n·CE(A⁻)`` term (no negative proxy data); ``kl_pos=None`` omits the
    ``β_kl·KL`` term (e.g. with the default ``β_kl = 0``, so the base-model forward can be skipped). ``kl_pos`` is
    normally :func:`token_kl` on the A⁺ batch. Defaults: λ_p 0.5, λ_n 0.5, β_kl 0 (docs/selective.md). Note that
    ``−λ_n·CE(A⁻)`` is unbounded below: it is the caller's choice to clip or schedule it.
    """
    _check_scalar("ce_outcome", ce_outcome)
    _check_scalar("ce_pos", ce_pos)
    proxy = ce_pos
    if kl_pos is not None:
        _check_scalar("kl_pos", kl_pos)
        proxy = proxy + beta_kl * kl_pos
    loss = ce_outcome + lambda_pos * proxy
    if ce_neg is not None:
        _check_scalar("ce_neg", ce_neg)
        loss = loss - lambda_neg * ce_neg
    return loss
