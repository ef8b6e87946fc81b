"""The agent presets: one module per CLI, each a table of facts (base.py)."""

from __future__ import annotations

from worktree_runner.presets.aider import AIDER
from worktree_runner.presets.base import PLACEHOLDERS, Launch, McpServer, Preset, StreamFacts
from worktree_runner.presets.claude import CLAUDE
from worktree_runner.presets.codex import CODEX
from worktree_runner.presets.gemini import GEMINI
from worktree_runner.presets.opencode import OPENCODE

PRESETS: dict[str, Preset] = {p.name: p for p in (CLAUDE, CODEX, AIDER, GEMINI, OPENCODE)}

__all__ = ["PLACEHOLDERS", "PRESETS", "Launch", "McpServer", "Preset", "StreamFacts"]
