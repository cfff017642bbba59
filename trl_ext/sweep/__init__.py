"""The sweep engine: a recipe run over attribute combinations and seeds, locally or as one Slurm array job
(submitit), then collected into CSV/JSON summaries and a Pareto plot. Console script: ``trl-ext-sweep``
(:func:`trl_ext.sweep.cli.main`); ``recipes/sweep.py`` is the same command.

Modules: :mod:`~trl_ext.sweep.plan` (YAML, combinations, folders, commands), :mod:`~trl_ext.sweep.run` (local
execution and status), :mod:`~trl_ext.sweep.slurm` (submitit), :mod:`~trl_ext.sweep.collect` (results, summaries,
``pareto_front``: the non-dominated points of a two-metric scatter, unlike :func:`trl_ext.eval.pareto_frontier`,
which compares models through credible intervals), :mod:`~trl_ext.sweep.cli`. Public names are in ``__init__.pyi``;
the vary file (with its ``slurm:`` sbatch defaults) is described in docs/sweep.md.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
