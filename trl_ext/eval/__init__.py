"""Evaluation: scoring, Beta intervals, dominance, Pareto frontier, reports (``docs/eval.md``)."""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
