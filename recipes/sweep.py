"""Sweep a recipe over attribute combinations and seeds: the command ``trl-ext-sweep`` (:mod:`trl_ext.sweep`).

    python recipes/sweep.py --script recipes/selective_generalisation.py --base_config base.yaml \\
        --vary vary.yaml --seeds 0 1 2 --output_dir outputs/sweep_kl

``python recipes/sweep.py --help`` lists the options; the engine and its documentation are in ``trl_ext/sweep/``.
"""

import sys

from trl_ext.sweep.cli import main

if __name__ == "__main__":
    sys.exit(main())
