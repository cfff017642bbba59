"""Diversity training: spread a model's probability evenly over a concept's options and, after each option, over
semantically different continuations; ``docs/diversity.md``.

Per batch: concept blocks b (the first span of at most 2 tokens matching an option's surface form) give
m_o = Σ_{b∈o} P(b), P(b) = Π_{t∈b} p_t, and L_c = KL(m/Σm ‖ U); the open blocks after option o, labelled by the
option's replay-buffer k-means, give m_k = Σ_{i∈k} exp(mean_t log p_t) and L_o(o) = KL(m/Σm ‖ U_K);
L = w_c·L_c + w_o·Σ_o L_o(o). GFlowNet alternative: trajectory balance (log Z + Σ_t log p_θ − log R)² with the
cluster-rarity reward R = 1/share.

Public names (imported lazily, listed in ``__init__.pyi``): :class:`DiversityConfig` and :class:`DiversityTrainer`
(a ``GRPOTrainer`` subclass), :class:`Concept`, :class:`Block`, :func:`segment`, :class:`ReplayBuffer`, the pure
losses of :mod:`trl_ext.diversity.losses` and the batch objective of :mod:`trl_ext.diversity.objective`, and the
diversity report (:func:`diversity_report`, CLI ``trl-ext-diversity-report``).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
