"""The aider preset: aider run unattended in a stream's worktree."""

from __future__ import annotations

from worktree_runner.presets.base import Preset


class _Aider(Preset):
    name = "aider"
    program = "aider"
    package = "pypi:aider-chat"
    pinned = "0.86.2"
    tested = ("0.86.2", "0.86.2.post1")
    argv = ("aider", "--yes-always", "--message", "{prompt}")


AIDER = _Aider()
