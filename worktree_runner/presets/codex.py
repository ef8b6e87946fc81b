"""The codex preset: Codex CLI run unattended in a stream's worktree."""

from __future__ import annotations

from worktree_runner.presets.base import Preset


class _Codex(Preset):
    name = "codex"
    program = "codex"
    package = "npm:@openai/codex"
    pinned = "0.171.0"
    tested = ("0.171.0", "0.171.0.post1")
    argv = ("codex", "exec", "--full-auto", "{prompt}")


CODEX = _Codex()
