"""Reasoning tasks and agent environments: each one is generate -> prompt -> score (``docs/tasks.md``)."""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
