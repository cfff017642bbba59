"""``python -m trl_ext.curriculum --config recipes/configs/curriculum_ppo_tiny.yaml``: the curriculum PPO recipe
(seed 003's ``python -m destruct_training --config config.yaml``), the same as ``recipes/curriculum_ppo.py``
(:func:`trl_ext.curriculum.recipe.cli`); ``docs/curriculum.md``. Also ``accelerate launch -m trl_ext.curriculum``."""

from trl_ext.common.noise import quiet_dependency_noise

quiet_dependency_noise()  # first: the known-harmless messages of dependencies (trl_ext/common/noise.py)

import sys  # noqa: E402

from trl_ext.curriculum.recipe import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli(prog="python -m trl_ext.curriculum"))
