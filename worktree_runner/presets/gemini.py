"""The gemini preset: Gemini CLI run unattended in a stream's worktree."""

from __future__ import annotations

from worktree_runner.presets.base import Preset


class _Gemini(Preset):
    name = "gemini"
    program = "gemini"
    package = "npm:@google/gemini-cli"
    pinned = "0.61.0"
    tested = ("0.61.0", "0.61.0.post1")
    argv = ("gemini", "--yolo", "-p", "{prompt}")


GEMINI = _Gemini()
