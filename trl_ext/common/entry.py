"""Entry points of the recipes and console scripts: user errors as one line and exit status 2 (docs/architecture.md).

Standard library only, so that a console script that needs no torch (``trl-ext-sweep``) does not import it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from trl_ext.common.errors import UserInputError
from trl_ext.common.noise import quiet_dependency_noise

__all__ = ["run_main"]


def run_main(entry: Callable[[], Any], prog: str | None = None) -> int:
    """Run a recipe's or console script's ``entry()``: a user error prints one line and gives exit status 2.

    A :class:`~trl_ext.common.errors.UserInputError` (a bad config value, a missing file or model, an unknown
    name, a dataset without the columns it needs: every clear error of the package, and the parse errors of
    :func:`trl_ext.common.recipes.parse_or_config_error`) is printed as ``<prog>: error: <message>`` on stderr
    and returns 2; any other exception is a bug and keeps its traceback. ``entry`` returning an int gives that
    status, anything else 0. Installs :func:`~trl_ext.common.noise.quiet_dependency_noise` first. Use as
    ``sys.exit(run_main(lambda: main(...)))``.
    """
    quiet_dependency_noise()
    prog = prog or os.path.basename(sys.argv[0] or "trl_ext")
    try:
        status = entry()
    except UserInputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    return status if isinstance(status, int) and not isinstance(status, bool) else 0
