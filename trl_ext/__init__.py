"""trl_ext: trainer extensions for Hugging Face TRL.

One sub-package per algorithm family (:mod:`trl_ext.ppo`, :mod:`trl_ext.selective`, :mod:`trl_ext.curriculum`)
over shared folders (:mod:`trl_ext.tasks`, :mod:`trl_ext.eval`, :mod:`trl_ext.models`, :mod:`trl_ext.data`,
:mod:`trl_ext.common`, :mod:`trl_ext.sweep`); ``docs/architecture.md`` draws the layout and its dependency rules.

The public names are listed once, in ``__init__.pyi``, and imported lazily (``lazy_loader``): ``import trl_ext``
loads no torch, transformers or TRL and touches no network; ``from trl_ext import LossLogCallback`` imports only
what that name needs.
"""

import lazy_loader as _lazy

__version__ = "0.1.0"

__getattr__, _dir, __all__ = _lazy.attach_stub(__name__, __file__)
__all__ = sorted([*__all__, "__version__"])


def __dir__() -> list[str]:
    return list(__all__)
