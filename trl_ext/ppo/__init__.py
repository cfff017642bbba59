"""PPO with a learned value function, on TRL's online-RL machinery (``GRPOTrainer``); ``docs/ppo.md``.

Per token t of a rollout: r_t = −β·KL_t (+ the score at the last token), Â = GAE(γ, λ) over r_t + γV_{t+1} − V_t,
ρ = π/π_old, loss = mean max(−Â·ρ, −Â·clip(ρ, 1 − ε, 1 + ε)) + c_v·½·mean max((V − R)², (V_clip − R)²) − c_e·H,
with β fixed or adapted to a target KL.

Public names (imported lazily, listed in ``__init__.pyi``): :class:`PPOConfig`, :class:`PPOTrainer`,
:class:`ValueHead`, :class:`SeparateValueModel`, :func:`load_policy_with_value_head`, the KL controllers, the
pure losses of :mod:`trl_ext.ppo.losses`, and :class:`EpisodeRollout` (multi-turn episodes on the agent
environments, a TRL ``rollout_func``).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
