"""What every preset says about its CLI: how it is started, fed, watched and read.

A preset is a small table of facts about one agent CLI, kept in one file per CLI
(``claude.py``, ``codex.py``...), so that a new release of that CLI is a one-file change
together with its conformance test (``tests/conformance/``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

PLACEHOLDERS = ("prompt_file", "prompt", "stream", "worktree", "branch")


@dataclass(frozen=True)
class McpServer:
    """How an agent's CLI starts ``wtr mcp`` for its stream: the Python and worktree_runner
    the runner itself is, with the stream's variables (a CLI may start its servers with
    fewer variables than it has itself)."""

    command: str
    args: tuple[str, ...]
    env: Mapping[str, str]

    def to_json(self) -> dict[str, Any]:
        """The entry most CLIs' JSON configs take (``mcpServers``)."""
        return {"command": self.command, "args": list(self.args), "env": dict(self.env)}


MCP_NAME = "wtr"  # the server's name in every CLI's config: its tools are wtr's
MCP_START_SECONDS = 30  # what a CLI waits for the server to start (a busy machine is slow)
MCP_CALL_SECONDS = 660  # what it waits for one call: a lock may be waited for 600 s


@dataclass(frozen=True)
class StreamFacts:
    """What a preset may know of the stream it starts an agent for."""

    stream: str
    worktree: Path
    state_dir: Path  # the stream's own state folder: writable by its agent, sandboxed or not
    git_dir: Path  # the worktree's own git dir (<common>/worktrees/<id>)
    git_common_dir: Path  # objects and refs: the agent's commits are written there
    scope: tuple[str, ...]  # the stream's files and shared patterns (gitignore syntax)
    wtr_bin: Path  # the folder holding the `wtr` that runs this installation
    run_state_dir: Path  # the run's state folder (WTR_STATE_DIR: progress, events)
    locks_dir: Path  # where `wtr lock` keeps its locks
    as_root: bool = False
    # Under wtr's bubblewrap (``sandbox: true``): HOME and everything outside the paths above
    # are read-only, so a CLI that writes its own state under HOME must be given another home.
    sandbox: bool = False
    verify: tuple[str, ...] = ()  # the stream's verify commands (shell text, run in the worktree)
    mcp: McpServer | None = None  # the server to give the CLI; None: none (mcp: false)


@dataclass(frozen=True)
class Launch:
    """How one attempt starts: ``argv`` (placeholders not filled yet), variables added to
    the agent's environment, and files written into the stream's state folder first."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    files: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def usage_record(input_tokens: Any = None, output_tokens: Any = None, cost_usd: Any = None,
                 turns: Any = None) -> dict[str, float | None]:
    """``usage`` as status shows it: each field a number the agent said, or None (unknown)."""
    return {"input_tokens": number(input_tokens), "output_tokens": number(output_tokens),
            "cost_usd": number(cost_usd), "turns": number(turns)}


def number(value: Any) -> float | None:
    """A count or cost the agent reported; None when it wrote something else ("many")."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        result = float(value)
    except OverflowError:
        return None
    if not math.isfinite(result) or result < 0:
        return None
    return int(result) if result.is_integer() and isinstance(value, int) else result


def json_lines(output: str) -> Iterator[dict[str, Any]]:
    """The JSON objects an agent printed one per line, in order (other lines skipped)."""
    for line in output.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record


def carried_files(source: Path, names: Iterable[str], target: str) -> dict[str, str]:
    """The user's own CLI files (``source``/name) that a sandboxed agent's home starts with,
    as ``Launch.files`` under ``target``; files missing or unreadable are left out."""
    found = {}
    for name in names:
        try:
            found[f"{target}/{name}"] = (source / name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
    return found


_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


def session_id(value: Any) -> str | None:
    """A session id an agent printed, when it looks like one: it goes into the argv of the
    next attempt, so nothing that could read as an option or hold a path is taken."""
    text = text_of(value)
    return text if text is not None and _SESSION_ID.fullmatch(text) else None


def text_of(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


class Preset:
    """The facts about one CLI. Subclasses set the class attributes and may override
    :meth:`launch`, :meth:`usage` and :meth:`final_message`."""

    name: str = ""
    program: str = ""
    package: str = ""  # where it comes from: "npm:@scope/name" or "pypi:name"
    pinned: str = ""  # the exact version the conformance suite installs and proves
    tested: tuple[str, str] = ("", "")  # [lowest, first untested) versions
    version_argv: tuple[str, ...] = ("--version",)
    # Each group: at least one of these variables (names only) lets the CLI reach a model;
    # ``credentials`` are files under HOME that do the same (a login).
    needs_env: tuple[tuple[str, ...], ...] = ()
    credentials: tuple[str, ...] = ()
    argv: tuple[str, ...] = ()
    leftovers: tuple[str, ...] = ()  # what it leaves in a worktree, and how that is avoided
    cannot: tuple[str, ...] = ()  # what an agent of this CLI cannot do unattended
    permissions: str = ""  # the trade-off its argv makes with the CLI's own approvals
    broken: Mapping[str, str] = MappingProxyType({})  # version -> what breaks in it
    refused: Mapping[str, str] = MappingProxyType({})  # flag in `args` -> why it cannot work
    # How the CLI is given ``wtr mcp`` for a run, in words ("" when it is not).
    mcp_config: str = ""

    def gets_mcp(self, sandbox: bool) -> bool:
        """Whether an agent of this CLI gets ``wtr mcp`` (``sandbox``: the stream's)."""
        return bool(self.mcp_config)

    def launch(self, facts: StreamFacts) -> Launch:
        return Launch(self.argv)

    def home_of_its_own(self, facts: StreamFacts, variable: str, folder: str, source: Path,
                        carried: Iterable[str], inside: str = "") -> Launch:
        """``argv`` as it is; under ``sandbox: true`` (a read-only HOME) the CLI's home is
        ``folder`` in the stream's state folder, named by ``variable``, and starts with
        copies of the user's ``carried`` files from ``source`` (under ``inside`` there)."""
        if not facts.sandbox:
            return Launch(self.argv)
        target = f"{folder}/{inside}" if inside else folder
        return Launch(self.argv, env={variable: str(facts.state_dir / folder)},
                      files=carried_files(source, carried, target))

    def usage(self, output: str) -> dict[str, float | None] | None:
        """What the attempt's output says it used; None when it says nothing."""
        return None

    def live_usage(self, output: str) -> dict[str, float | None] | None:
        """What a running attempt's output says it used so far (for budgets); a CLI that
        reports usage only at its end says it then."""
        return self.usage(output)

    def final_message(self, output: str) -> str | None:
        """The agent's last word in the attempt's output (for its report), or None."""
        return None

    def denials(self, output: str) -> list[str]:
        """Tool calls the CLI refused the agent in the attempt, one line each: work the
        agent may say it did and did not."""
        return []

    # Continuing a conversation: what the runner's feedback rounds, ``wtr retry --message``,
    # ``wtr plan`` and ``wtr attach`` are built on. A preset whose CLI cannot continue a
    # session leaves these as they are: a fresh start is then told what went before.

    def session(self, output: str) -> str | None:
        """The id of the CLI session an attempt's output belongs to, or None."""
        return None

    def resume(self, facts: StreamFacts, session: str) -> Launch | None:
        """How to continue ``session`` unattended with a new message (the ``{prompt}`` and
        ``{prompt_file}`` placeholders are then that message); None when the CLI cannot."""
        return None

    @property
    def can_resume(self) -> bool:
        """Whether this CLI continues a session unattended (its preset says how)."""
        return type(self).resume is not Preset.resume

    def interactive(self, facts: StreamFacts, session: str | None) -> Launch | None:
        """How a person opens ``session`` (or, with None, a new session) in a terminal, in
        the stream's worktree; None when the CLI has no interactive mode to offer."""
        return None

    def version_of(self, text: str) -> str | None:
        """The version in what ``version_argv`` printed."""
        match = re.search(r"\d+\.\d+\.\d+", text)
        return match.group(0) if match else None
