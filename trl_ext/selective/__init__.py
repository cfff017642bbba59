"""Selective generalisation: learn the outcome data D while keeping the behaviour shown by proxy data A⁺ (and
A⁻), with one of twelve strategies on an SFT, DPO or PPO host; ``docs/selective.md``.

Loss terms: L = L_host + Σ_k λ_k·term_k (proxy CE, KL to p_base, hidden-state MSE, DPO on proxy pairs, penalties
on the alignment plane S = ḡ⁺ − ḡ⁻); gradient surgery: g ← g − (g·ḡ_A / ‖ḡ_A‖²)·ḡ_A (all or conflicting parts);
weight edits: θ ← θ + α·S; SafeLoRA: ΔW_i ← C_i·ΔW_i where cos(C_i·ΔW_i, ΔW_i) < τ, C_i = V_iV_iᵀ/‖V_i‖,
V_i = W_aligned − W_base.

Public names (imported lazily, listed in ``__init__.pyi``): the configs, one trainer per host, the strategy
registry (:func:`get_trainer`, :func:`register_strategy`, :func:`available_strategies`), SafeLoRA, and the pure
losses and projections.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
