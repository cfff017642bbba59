"""Models: the embedded tiny model, loading (hub id, folder or adapter), policy initialisation, frozen copies."""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
