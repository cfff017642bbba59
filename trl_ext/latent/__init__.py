"""Latent communication: a receiver model trained to act on another agent's hidden states (a latent message)
spliced into its input, guided by the sender's textual plan; ``docs/latent.md``.

Per batch: the adapter maps the sender's last-layer hidden states H (K × d) to input embeddings
(``LN → MHA → LN(x + a) → adaptive projection``), mixed with the plan's embeddings by a curriculum ratio, and
spliced between ``<bop>`` and ``<eop>`` at the end of the first user turn. Loss: CE on the assistant turns +
w_plan · (0.7 KL(p_plan ‖ p_latent) + 0.3 (1 − cos)) + w_rc · mean max(0, 0.69 − JS(p_pos ‖ p_neg)).

Public names (imported lazily, listed in ``__init__.pyi``): the trainer and its config
(:mod:`trl_ext.latent.trainer`, :mod:`trl_ext.latent.config`; also ``from trl_ext import ...``), the probe and its
callback, the pure losses (:mod:`trl_ext.latent.losses`), the adapter, the injection and mixing, the data and
batches, the receiver and its saving/loading (:mod:`trl_ext.latent.weights`), generation and the
true/shuffled/no-latent evaluation (:mod:`trl_ext.latent.generation`), the sender tool and the tiny demo.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
