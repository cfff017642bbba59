"""Auto-curriculum over several datasets: sample dataset i with probability w_i and move the weights towards the
datasets that a rolling frozen copy of the model finds hard; ``docs/curriculum.md``.

m_i = μ_i + σ²_i of the frozen model's per-batch losses on a fixed subset of dataset i; w ← clip(w + η·g, ≥ w_min),
w ← w / Σw with g = m − mean(m) (or the upstream g = ∇_index m), on any TRL host (SFT, DPO, GRPO, PPO).

Public names (imported lazily, listed in ``__init__.pyi``): the configs, the trainers and :func:`with_curriculum`,
:class:`CurriculumSampler`, :class:`CurriculumCallback`, :class:`RollingFrozenModel` and the weight arithmetic.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
