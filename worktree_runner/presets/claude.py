"""The claude preset: Claude Code run unattended in a stream's worktree."""

from __future__ import annotations

from worktree_runner.presets.base import Preset


class _Claude(Preset):
    name = "claude"
    program = "claude"
    package = "npm:@anthropic-ai/claude-code"
    pinned = "2.1.197"
    tested = ("2.1.197", "2.1.197.post1")
    argv = ("claude", "-p", "{prompt}", "--permission-mode", "acceptEdits")


CLAUDE = _Claude()
