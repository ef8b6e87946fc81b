"""Hooks an agent CLI calls while it works (hidden: presets set them up, people do not)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from worktree_runner.cli.base import cli

# Claude Code's hook protocol: exit 2 refuses the tool call and shows stderr to the model;
# any other non-zero exit is an error of the hook, shown to the user, and the call runs.
REFUSED = 2
HOOK_FAILED = 1


@cli.group(hidden=True)
def hook() -> None:
    """Hooks that agent CLIs call; set up by the presets."""


@hook.command("claude-pre-tool-use")
@click.option("--scope", "scope_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The stream's scope file, written by the claude preset.")
def claude_pre_tool_use(scope_path: Path) -> None:
    """Refuse a Write or Edit outside the stream's files (Claude Code PreToolUse)."""
    from worktree_runner.editguard import Scope, ScopeError, refusal

    try:
        call = json.loads(sys.stdin.read() or "null")
        scope = Scope.load(scope_path)
    except (ValueError, ScopeError) as exc:
        click.echo(f"wtr hook: {exc}", err=True)
        sys.exit(HOOK_FAILED)
    reason = refusal(scope, call) if isinstance(call, dict) else None
    if reason:
        click.echo(reason, err=True)
        sys.exit(REFUSED)
