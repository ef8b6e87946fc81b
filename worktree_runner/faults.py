"""Fault injection for crash and race tests.

``WTR_FAULT=<point>`` kills the process at that point, as ``kill -9`` would: no cleanup,
no state written, so tests can prove that ``wtr resume`` (or a second ``wtr clean``)
recovers from each step. ``WTR_PAUSE=<point>`` with ``WTR_PAUSE_FILE=<path>`` instead
writes ``<path>.reached`` there and waits while ``<path>`` exists, so a test can run a
second command at exactly that moment.

A point is ``<step>`` or ``<step>:<stream>``. Steps: after_branch, after_worktree,
agent_starting (the attempt recorded, its agent not yet started), agent_started (its
supervisor started, its pid not yet recorded), agent_running, agent_ended,
ownership_check, guard_snapshot (the run's snapshot of what it must leave alone, taken
beside the streams' preparation); reconciled
(resume); clean_rescued, clean_branches (clean); pool_claimed (a stream holds a pooled
worktree, not yet switched to its base), pool_returning (clean has emptied a worktree,
not yet moved it into the pool), worktree_renamed (a worktree's folder renamed into or
out of the pool, git not yet told; ``<step>:<folder name>``), auto_merge_checked
(``run --merge`` has checked the ready streams for conflicts, not yet started their
landing), landing_checkout (a landing has moved the target, its checkout not yet
followed); candidates_planned (a best-of-N stream's candidates recorded, none started),
candidate_passed (under ``choose: first``, one has passed; the others not yet stopped),
candidate_chosen (the choice recorded, nothing archived yet) and candidate_branch (the
kept candidate's worktree is on the stream's branch, not yet moved to the stream's path);
overlay_registered (an overlay worktree registered and its layers ready, not mounted),
overlay_mounted (mounted, its index not yet written), reflink_cloned (a clone made, its
index not yet written), overlay_unmounted (a removal has unmounted it, the registration
and layers not yet removed; ``<step>:<worktree folder name>``).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

PAUSE_LIMIT_SECONDS = 300.0


def point(step: str, stream: str) -> None:
    names = (step, f"{step}:{stream}")
    wanted = os.environ.get("WTR_FAULT")
    if wanted and wanted in names:
        os.kill(os.getpid(), signal.SIGKILL)
    paused = os.environ.get("WTR_PAUSE")
    pause_file = os.environ.get("WTR_PAUSE_FILE")
    if paused and pause_file and paused in names:
        _pause(Path(pause_file))


def _pause(path: Path) -> None:
    Path(f"{path}.reached").write_text(str(os.getpid()))
    deadline = time.monotonic() + PAUSE_LIMIT_SECONDS
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
