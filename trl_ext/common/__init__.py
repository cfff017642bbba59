"""What every family shares: the LM-head vocabulary tile, the checkpoint/resume helper for extension state,
generation, the loss log and its plot, sample tables, callables named in configs, recipe helpers."""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
