"""Ownership at edit time: may an agent's file-writing tool call write where it aims?

A CLI with hooks (Claude Code's PreToolUse) asks before each Write or Edit; the answer is
a refusal the agent reads and can act on, or nothing. The check after the attempt stays
the guarantee: a shell command writes where no hook looks.

The stream's scope is a small JSON file its preset writes into the stream's state folder
(:meth:`Scope.dump`), named to the hook on its command line.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worktree_runner.plan.patterns import compile_patterns

VERSION = 1
# Claude Code's tools that write one file, and the input naming it.
WRITING_TOOLS = {"Write": "file_path", "Edit": "file_path", "MultiEdit": "file_path",
                 "NotebookEdit": "notebook_path"}


class ScopeError(ValueError):
    """The scope file cannot be read."""


@dataclass(frozen=True)
class Scope:
    """Where a stream's agent may edit files: its patterns inside its worktree, and
    elsewhere only its state folder (its report). Not the temporary folder: the user's
    checkout may lie there."""

    stream: str
    worktree: Path
    patterns: tuple[str, ...]
    elsewhere: tuple[Path, ...] = ()

    def dump(self) -> str:
        return json.dumps({"version": VERSION, "stream": self.stream,
                           "worktree": str(self.worktree), "patterns": list(self.patterns),
                           "elsewhere": [str(p) for p in self.elsewhere]}, indent=1)

    @classmethod
    def load(cls, path: Path) -> Scope:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(str(data["stream"]), Path(data["worktree"]),
                       tuple(str(p) for p in data["patterns"]),
                       tuple(Path(p) for p in data.get("elsewhere", ())))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ScopeError(f"cannot read the scope file {path}: {exc}") from exc


def target_of(call: Mapping[str, Any]) -> str | None:
    """The path a file-writing tool call writes, or None for any other call."""
    key = WRITING_TOOLS.get(str(call.get("tool_name")))
    tool_input = call.get("tool_input")
    if key is None or not isinstance(tool_input, Mapping):
        return None
    path = tool_input.get(key)
    return path if isinstance(path, str) and path else None


def refusal(scope: Scope, call: Mapping[str, Any]) -> str | None:
    """Why the tool call must not run, in words for the agent; None when it may."""
    target = target_of(call)
    if target is None:
        return None
    base = Path(str(call.get("cwd") or scope.worktree))
    path = _resolved(base / target)
    worktree = _resolved(scope.worktree)
    if path.is_relative_to(worktree):
        relative = path.relative_to(worktree).as_posix()
        if relative != "." and _owned(scope, relative):
            return None
        return _not_owned(scope, relative)
    if any(path.is_relative_to(_resolved(p)) for p in scope.elsewhere):
        return None
    return (f"{target} is outside your worktree {scope.worktree}: stream '{scope.stream}' "
            "edits files only there (and its report file). Leave that file alone; for "
            "scratch files use the shell.")


def _owned(scope: Scope, relative: str) -> bool:
    if relative == ".git" or relative.startswith(".git/"):
        return False
    return bool(scope.patterns) and compile_patterns(scope.patterns).match_file(relative)


def _not_owned(scope: Scope, relative: str) -> str:
    owned = ", ".join(scope.patterns) or "no file"
    return (f"{relative} is not yours: stream '{scope.stream}' owns only {owned} "
            "(gitignore patterns, relative to your worktree). Leave it unchanged; if the "
            "task needs it changed, ask the stream that owns it: wtr request "
            f"{shlex.quote(relative)} --what \"the change\" --why \"what it is for\" "
            "(add --wait to wait for it), or say so in your report.")


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(path))
