"""SafeLoRA: project each LoRA update ΔW_i = B_iA_i onto the aligned subspace of its layer when the update has
drifted from it; ``docs/selective.md`` (SafeLoRA).

V_i = W_aligned,i − W_base,i, C_i = V_iV_iᵀ / ‖V_i‖_F (``approx``) or the orthogonal projector onto V_i's column
space (``exact``); layers with cos(C_iΔW_i, ΔW_i) below the threshold (or the ``num_proj_layers`` lowest) get
B_i ← C_iB_i.

Public names (lazily imported): :func:`safelora_project`, :func:`safelora_from_paths`, :func:`load_state_dict_from`,
:class:`SafeLoRAReport`, :class:`SafeLoRACallback`; the console script ``trl-ext-safelora`` is :func:`main`.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
