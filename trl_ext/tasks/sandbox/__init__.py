"""Run untrusted Python programs isolated (bubblewrap) and limited (rlimits), many at once (docs/tasks.md)."""

from trl_ext.tasks.sandbox.isolation import (
    ISOLATION_MODES,
    Isolation,
    SandboxIsolationWarning,
    SandboxUnavailableError,
    detect_isolation,
    find_bwrap,
)
from trl_ext.tasks.sandbox.limits import LIMITS, SandboxLimits, SandboxResult
from trl_ext.tasks.sandbox.runner import Execution, Sandbox

__all__ = [
    "ISOLATION_MODES",
    "LIMITS",
    "Execution",
    "Isolation",
    "Sandbox",
    "SandboxIsolationWarning",
    "SandboxLimits",
    "SandboxResult",
    "SandboxUnavailableError",
    "detect_isolation",
    "find_bwrap",
]
