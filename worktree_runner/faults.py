"""Fault injection for crash tests: ``WTR_FAULT=<point>`` kills the runner at that point.

A point is ``<step>`` or ``<step>:<stream>``, the steps being after_branch,
after_worktree, agent_running, agent_ended and ownership_check.
The runner dies as with ``kill -9``: no cleanup, no state written, so tests can prove
that ``wtr resume`` recovers from each step.
"""

from __future__ import annotations

import os
import signal


def point(step: str, stream: str) -> None:
    wanted = os.environ.get("WTR_FAULT")
    if wanted and wanted in (step, f"{step}:{stream}"):
        os.kill(os.getpid(), signal.SIGKILL)
