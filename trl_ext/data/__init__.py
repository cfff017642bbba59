"""Data: task-data rows and their collection (the affine JSONL format), dataset loading, multi-dataset specs."""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
