"""Agent presets: how each common coding-agent CLI is run non-interactively.

Kept as data in one place so that a changed flag is a one-line fix. ``{prompt}`` is the
rendered prompt text, passed as one argument.
"""

from __future__ import annotations

PRESETS: dict[str, tuple[str, ...]] = {
    "claude": ("claude", "-p", "{prompt}", "--permission-mode", "acceptEdits"),
    "codex": ("codex", "exec", "--full-auto", "{prompt}"),
    "aider": ("aider", "--yes-always", "--message", "{prompt}"),
    "gemini": ("gemini", "--yolo", "-p", "{prompt}"),
    "opencode": ("opencode", "run", "{prompt}"),
}

PLACEHOLDERS = ("prompt_file", "prompt", "stream", "worktree", "branch")
