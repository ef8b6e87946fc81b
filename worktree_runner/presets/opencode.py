"""The opencode preset: opencode run unattended in a stream's worktree."""

from __future__ import annotations

from worktree_runner.presets.base import Preset


class _Opencode(Preset):
    name = "opencode"
    program = "opencode"
    package = "npm:opencode-ai"
    pinned = "1.18.33"
    tested = ("1.18.33", "1.18.33.post1")
    argv = ("opencode", "run", "{prompt}")


OPENCODE = _Opencode()
